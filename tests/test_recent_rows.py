"""An exact recent window (patch 0015, LLAMA_KV_RECENT_ROWS=N): the last N positions of every sequence keep their K
(and a quantized V) in f16 in the exact-row slots beside the sink rows, and flash attention reads those rows; a
position goes back to its quantized row when the window moves past it.

In decode every step reads its last N keys exact. In batched prompt processing each query reads the window as it
was before its ubatch and the ubatch's own rows exact (f16 copies in the compute graph, not in the KV buffer): at
least its last N positions, as in decode, and its ubatch's earlier ones; the ubatch's rows take their slots after
its attention.
"""
import os
import re
import threading

import numpy as np
import pytest

from conftest import F32_BASE_CHUNKS, completion_error, greedy_text, next_logits, polar_context
from llama_polar import perplexity
from test_server import free_port, request, serving

CHUNKS = F32_BASE_CHUNKS


def window(n: int, sink: int = 0) -> dict:
    return {"LLAMA_KV_RECENT_ROWS": str(n), "LLAMA_KV_SINK_ROWS": str(sink)}


def test_a_window_over_the_whole_context_makes_a_polar_cache_an_f16_cache(f32_model, text_path, f32_base):
    f16 = perplexity.kl_divergence(f32_model, text_path, CHUNKS, f32_base, "f16", timeout=900)
    polar = perplexity.kl_divergence(f32_model, text_path, CHUNKS, f32_base, "pq46", timeout=900, env=window(0))
    exact = perplexity.kl_divergence(f32_model, text_path, CHUNKS, f32_base, "pq46", timeout=900, env=window(512))
    # as with every row a sink row (test_sink_rows.py): f16 rounding of k - c against f16 rounding of k
    assert abs(exact.kld) <= 2 * abs(f16.kld) + 1e-6 and exact.kld_p999 <= 2 * f16.kld_p999 + 1e-6, (f16, exact)
    assert exact.kld < 0.02 * polar.kld, (polar, exact)


def test_a_ubatch_reads_its_own_rows_exact(f32_model, text_path, f32_base):
    """With -b 512 each chunk of 512 tokens is one ubatch (a larger batch would split its chunks across ubatches,
    one stream each): with a window its queries read every earlier position of the chunk exact, whatever the
    window's size, as an f16 cache would; without one they read the quantized rows."""
    run = lambda cache, env=None: perplexity.kl_divergence(  # noqa: E731
        f32_model, text_path, CHUNKS, f32_base, cache, timeout=900, env=env, args=("-b", 512))
    f16, plain, own = run("f16"), run("pq46", window(0, sink=1)), run("pq46", window(16, sink=1))
    assert abs(own.kld) <= 2 * abs(f16.kld) + 1e-6 and own.kld_p999 <= 2 * f16.kld_p999 + 1e-6, (f16, own)
    assert own.kld < 0.02 * plain.kld, (plain, own)


def test_the_window_moves_with_the_ubatches(model_path, text_path, tmp_path):
    """-ub 64 with a window of 64: each ubatch's rows replace the last one's, in the slots the last one freed, after
    its attention has read the last one's (a sequence that kept its old rows would run out of slots, which the debug
    log says; rows read from slots already refilled would be other positions' keys)."""
    base = tmp_path / "f16.kld"
    perplexity.base_logits(model_path, text_path, 4, base, timeout=900)
    run = lambda env: perplexity.divergence_log(model_path, text_path, 4, base, "pq46", timeout=900,  # noqa: E731
                                                env=env, args=("-ub", 64, "-v"))
    none, recent = run(window(0, sink=1)), run(window(64, sink=1))
    assert "exact recent rows: the last 64 positions of every sequence keep their K and V in f16" in recent
    assert "no free exact sink row" not in recent
    # measured: 0.0200 without the window, 0.0070 with it (4 chunks of Paradise Lost)
    kld_none, kld_recent = (perplexity.parse_divergence(log).kld for log in (none, recent))
    assert kld_recent < 0.5 * kld_none, (kld_none, kld_recent)


def test_decode_keeps_the_window_exact_and_frees_what_it_leaves(model_path):
    """300 tokens of decode with a window of 16: every step takes a row its sequence freed."""
    result = greedy_text(model_path, window(16, sink=1), "-n", 300, "--ignore-eos", "-ctk", "pq46", "-ctv", "pq46")
    assert "exact recent rows: the last 16 positions" in result.stderr
    assert "no free exact sink row" not in result.stderr
    assert len(result.stdout) > 300


def test_context_shift_moves_the_window(f32_model):
    """Past the context (-c 128, padded to 256 cells) the cache is shifted, window rows included: with the window
    over every cell the greedy text is the f16 cache's."""
    args = ("-n", 300, "-c", 128, "--context-shift", "--ignore-eos", "-ctv", "f16")
    f16 = greedy_text(f32_model, None, *args, "-ctk", "f16")
    exact = greedy_text(f32_model, window(256), *args, "-ctk", "pq46")
    assert "applying K-shift" in exact.stderr and "exact recent rows" in exact.stderr
    assert exact.stdout == f16.stdout


@pytest.mark.parametrize("env,args,rows", [
    ({}, ("-c", 4096, "-ctk", "pq46"), 64),
    ({}, ("-c", 2048, "-ctk", "pq46"), 0),                           # 64 rows would cost 0.5 bits/value there
    ({"LLAMA_KV_RECENT_ROWS": "0"}, ("-c", 4096, "-ctk", "pq46"), 0),
    ({"LLAMA_K_CENTER": "off"}, ("-c", 4096, "-ctk", "pq46"), 0),    # no key treatment: the codec alone
    ({}, ("-c", 4096, "-ctk", "q4_0"), 0),                           # upstream types as upstream stores them
])
def test_a_long_polar_context_keeps_64_recent_rows_by_default(model_path, env, args, rows):
    result = greedy_text(model_path, env, "-n", 2, "-ctv", "pq46", *args)
    logged = "exact recent rows: the last 64 positions of every sequence keep their K and V in f16" in result.stderr
    assert logged == (rows > 0), result.stderr[-1500:]
    if rows:     # in the KV buffer: K and V rows of 30 layers x 3 heads x 64 values in f16 (SmolLM2-135M)
        off = greedy_text(model_path, {**env, "LLAMA_KV_RECENT_ROWS": "0"}, "-n", 2, "-ctv", "pq46", *args)
        added = perplexity.kv_buffer_mib(result.stderr) - perplexity.kv_buffer_mib(off.stderr)
        assert added == pytest.approx(2 * 30 * rows * 192 * 2 / 2**20, abs=0.02)


def test_a_sliding_window_cache_keeps_16_recent_rows_by_default(gemma_path):
    """Gemma-3 at 8192 tokens: 64 rows in the global layers' cache, 16 in the sliding-window layers' (about 770
    cells per sequence: its layers read only their last 512 positions, the recent ones most)."""
    args = ("-n", 2, "-c", 8192, "-ctk", "pq42", "-ctv", "pq27", "-fit", "off")   # one context, not a trial one first
    result, off = greedy_text(gemma_path, {}, *args), greedy_text(gemma_path, {"LLAMA_KV_RECENT_ROWS": "0"}, *args)
    rows = re.findall(r"exact recent rows: the last (\d+) positions of every sequence keep their K and V", result.stderr)
    assert rows == ["64", "16"], result.stderr[-3000:]
    assert "exact recent rows" not in off.stderr
    # in the KV buffers: K and V rows of 3 global layers x 64 and 15 sliding-window layers x 16, 1 head x 256 values
    added = perplexity.kv_buffer_mib(result.stderr) - perplexity.kv_buffer_mib(off.stderr)
    assert added == pytest.approx(2 * (3 * 64 + 15 * 16) * 256 * 2 / 2**20, abs=0.02)


@pytest.mark.parametrize("env,args,message", [
    ({"LLAMA_KV_RECENT_ROWS": "some"}, ("-ctk", "pq46"), "LLAMA_KV_RECENT_ROWS must be a whole number from 0 to the "
                                                         "context size, not 'some'"),
    ({"LLAMA_KV_RECENT_ROWS": "-1"}, ("-ctk", "pq46"), "LLAMA_KV_RECENT_ROWS must be a whole number"),
    ({"LLAMA_KV_RECENT_ROWS": "16"}, ("-ctk", "f16"), "exact recent rows need a quantized K cache of its own, not f16"),
    ({"LLAMA_KV_RECENT_ROWS": "256"}, ("-ctk", "pq46", "-c", "256"),
     "with 1 sink rows, 257 exact rows (257 per sequence) are more than the 256 cells of the cache"),
])
def test_a_bad_setting_is_a_clear_error(bin_dir, model_path, env, args, message):
    stderr = completion_error(model_path, env, *args)
    assert message in stderr, stderr[-1500:]


def _context(monkeypatch, model_path, recent: str):
    return polar_context(monkeypatch, model_path, LLAMA_KV_RECENT_ROWS=recent)


def test_a_state_keeps_its_window(bin_dir, model_path, monkeypatch):
    """A state saved after the window has moved (40 positions, a window of 8) restores its rows: the next logits are
    bit-identical to the saving context's, and a context with another window refuses the state."""
    prompt = b"Once upon a time, in a land far away, there lived a king who had three daughters, and the youngest"
    first = _context(monkeypatch, model_path, "8")
    tokens = first.tokenize(prompt)
    assert len(tokens) > 16
    for t in tokens:                                   # decode: the window moves a position at a time
        first.eval([t])
    state = first.save_state()
    token = first.tokenize(b" one", add_bos=False)[0]
    expected = next_logits(first, token)
    assert np.isfinite(expected).all() and expected.std() > 0.1

    restored = _context(monkeypatch, model_path, "8")
    restored.load_state(state)
    np.testing.assert_array_equal(next_logits(restored, token), expected)

    # the control: without the window the same tokens give other logits
    plain = _context(monkeypatch, model_path, "0")
    for t in tokens:
        plain.eval([t])
    assert not np.array_equal(next_logits(plain, token), expected)

    with pytest.raises(RuntimeError, match="Failed to set llama state data"):
        _context(monkeypatch, model_path, "16").load_state(state)


def test_server_slots_share_the_window_rows(bin_dir, model_path, tmp_path):
    """Four slots decoding together, each with its own window of 16 rows."""
    port = free_port()
    cmd = [str(bin_dir / "llama-server"), "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port),
           "--parallel", "4", "-c", "2048", "-ctk", "pq46", "-ctv", "pq37", "-fa", "on", "-t", "2", "-v"]
    results = [None] * 4
    with serving(cmd, port, tmp_path / "server.log", "/health", env=dict(os.environ, **window(16, sink=1))):
        def run(i):
            results[i] = request(port, "/completion", {"prompt": f"Story number {i}: once", "n_predict": 48,
                                                        "temperature": 0, "ignore_eos": True, "cache_prompt": False})
        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    log = (tmp_path / "server.log").read_text()
    assert all(r is not None and r[0] == 200 and r[1]["tokens_predicted"] == 48 for r in results), results
    assert "exact recent rows: the last 16 positions of every sequence" in log
    assert "no free exact sink row" not in log
    assert len({int(s) for s in re.findall(r"slot\s+launch_slot_: id\s+(\d+)", log)}) > 1
