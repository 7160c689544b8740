"""Corrupted state files (issue 20; patch 0016 makes loading all-or-nothing): a real pq46 state (centers per position,
one sink row, a recent window of 4) is loaded in corrupted copies through the llama state API (llama_state_set_data,
what session and slot files go through): truncations and 32-bit overwrites (0, 1, 2^31-1, 2^32-1) at every field of
the header and the cells, random bit flips, zeroed runs and overwritten words. Each copy must be refused, the context
then holding exactly the state it held before (its saved bytes are the same); none may crash the process.

Three checks refuse them: each field's own (counts, layouts, the cells), the rows' values (no NaN or Inf, finite
polar radii), and the cache's checksum (patch 0016), which alone catches a flipped bit in a quantized row.

POLAR_STATE_FUZZ_CASES sets the number of random cases (default 300; docs/testing.md gives the long run's figures);
the truncations and 32-bit overwrites at the header's fields always run.
"""
import ctypes
import os

import numpy as np
import pytest

from conftest import polar_context

RANDOM_CASES = int(os.environ.get("POLAR_STATE_FUZZ_CASES", "300"))
PROMPT = b"Once upon a time, in a land far away, there lived a king who had three daughters."
WORDS = (0, 1, 2**31 - 1, 2**32 - 1)


def field_starts(state: bytes, n_cells: int) -> list[int]:
    """Where the fields of the state's start sit: the architecture string, the stream count, the key centers' count
    and flag, the sink and recent layout, the cell count, and every 4 bytes through the cells' positions and
    sequences (patches 0013 and 0015 write them in this order)."""
    arch_len = int.from_bytes(state[0:4], "little")
    at = 4 + arch_len                       # n_stream
    n_values = int.from_bytes(state[at + 4:at + 8], "little")
    starts = [0, 4, at, at + 4, at + 8, at + 12]
    after = at + 12 + 4 * n_values          # sink rows, V flag, recent rows, cell count, the cells' meta
    starts += range(after, min(len(state), after + 16 + 16 * n_cells), 4)
    return sorted(set(s for s in starts if s < len(state)))


def corruptions(state: bytes, n_cells: int, n_random: int, seed: int = 0):
    """(what, bytes) for every corrupted copy."""
    rng = np.random.default_rng(seed)
    starts = field_starts(state, n_cells)
    for cut in starts + [int(c) for c in np.linspace(starts[-1], len(state) - 1, 64)]:
        yield f"truncated at {cut}", state[:cut]
    for at in starts:
        for word in WORDS:
            yield f"bytes {at}-{at + 3} = {word}", state[:at] + word.to_bytes(4, "little") + state[at + 4:]
    for i in range(n_random):
        copy = bytearray(state)
        kind = ("flip", "flips", "zeros", "word")[i % 4]
        if kind in ("flip", "flips"):
            for bit in rng.integers(0, 8 * len(state), 1 if kind == "flip" else 8):
                copy[bit // 8] ^= 1 << (bit % 8)
        elif kind == "zeros":
            at = int(rng.integers(0, len(state)))
            end = min(len(copy), at + int(rng.integers(1, 65)))
            copy[at:end] = bytes(end - at)
        else:
            at = int(rng.integers(0, len(state) - 4))
            copy[at:at + 4] = int(rng.choice(WORDS)).to_bytes(4, "little")
        yield f"random {kind} #{i}", bytes(copy)


class Context:
    def __init__(self, llm):
        import llama_cpp
        self.api, self.llm, self.ctx = llama_cpp, llm, llm._ctx.ctx

    def state(self) -> bytes:
        size = self.api.llama_state_get_size(self.ctx)
        buf = (ctypes.c_uint8 * size)()
        n = self.api.llama_state_get_data(self.ctx, buf, size)
        return bytes(buf[:n])

    def load(self, data: bytes) -> bool:
        buf = (ctypes.c_uint8 * max(1, len(data))).from_buffer_copy(data or b"\0")
        return self.api.llama_state_set_data(self.ctx, buf, len(data)) > 0

    def decode(self, token: int, pos: int) -> np.ndarray | None:
        """The logits of one more token at pos, or None where llama_decode refuses it."""
        batch = self.api.llama_batch_init(1, 0, 1)
        try:
            batch.n_tokens = 1
            batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.seq_id[0][0], batch.logits[0] = token, pos, 1, 0, 1
            if self.api.llama_decode(self.ctx, batch) != 0:
                return None
        finally:
            self.api.llama_batch_free(batch)
        return np.ctypeslib.as_array(self.api.llama_get_logits_ith(self.ctx, -1), shape=(self.llm.n_vocab(),)).copy()


@pytest.fixture
def saved(bin_dir, model_path, monkeypatch):
    llm = polar_context(monkeypatch, model_path, LLAMA_KV_RECENT_ROWS="4")
    tokens = llm.tokenize(PROMPT)
    llm.eval(tokens)
    ctx = Context(llm)
    return ctx, ctx.state(), len(tokens)


def test_every_corrupted_state_is_refused_whole(saved):
    """Every copy that differs from the saved state is refused (the cache's checksum, the checks of each field and
    row) and leaves the context holding exactly what it held."""
    ctx, state, n_cells = saved
    cases = 0
    for what, data in corruptions(state, n_cells, RANDOM_CASES):
        if data == state:              # a field overwritten with the value it had
            continue
        cases += 1
        assert not ctx.load(data), f"{what}: a corrupted state loaded"
        assert ctx.state() == state, f"{what}: refused, but the context changed"
    assert cases > RANDOM_CASES, cases


def test_a_refused_state_leaves_the_context_working(saved):
    """After a refused load the context decodes as before: bit-identical logits."""
    ctx, state, n_cells = saved
    token = ctx.llm.tokenize(b" The", add_bos=False)[0]
    expected = ctx.decode(token, n_cells)
    assert expected is not None and expected.std() > 0.1
    assert ctx.load(state)
    assert not ctx.load(state[:len(state) // 2])                  # cut in the cells' data: read past the centers
    np.testing.assert_array_equal(ctx.decode(token, n_cells), expected)


def test_a_session_file_with_bytes_past_its_state_is_refused_whole(saved, tmp_path):
    import llama_cpp
    ctx, state, n_cells = saved
    path = tmp_path / "session.bin"
    tokens = (llama_cpp.llama_token * 1)(1)
    assert llama_cpp.llama_state_save_file(ctx.ctx, str(path).encode(), tokens, 1)
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    out = (llama_cpp.llama_token * 8)()
    n = ctypes.c_size_t(0)
    assert not llama_cpp.llama_state_load_file(ctx.ctx, str(path).encode(), out, 8, ctypes.byref(n))
    assert ctx.state() == state


def _main(random_cases: int) -> int:
    """The fuzz loop alone, for a run under AddressSanitizer (docs/testing.md): python tests/test_state_fuzz.py N."""
    import time

    import llama_polar.llama as llama
    from llama_polar import models
    os.environ["LLAMA_KV_RECENT_ROWS"] = "4"
    llm = llama.Llama(model_path=str(models.model_path()), n_ctx=256, type_k="pq46", type_v="pq46", flash_attn=True,
                      verbose=False)
    tokens = llm.tokenize(PROMPT)
    llm.eval(tokens)
    ctx = Context(llm)
    state = ctx.state()
    t0, cases, wrong = time.monotonic(), 0, 0
    for what, data in corruptions(state, len(tokens), random_cases):
        if data != state:
            cases += 1
            if ctx.load(data) or ctx.state() != state:
                wrong += 1
                print(f"not refused whole: {what}", flush=True)
    print(f"{cases} corrupted copies, {wrong} not refused whole, {time.monotonic() - t0:.0f} s")
    return 1 if wrong else 0


if __name__ == "__main__":
    import sys
    sys.exit(_main(int(sys.argv[1]) if len(sys.argv) > 1 else RANDOM_CASES))
