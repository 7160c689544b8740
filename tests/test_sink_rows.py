"""Exact sink rows (patch 0013): the first positions of every sequence keep their K (and a polar V) in f16 beside a
polar cache, and flash attention reads those rows instead of the quantized ones (ggml_flash_attn_ext_set_exact_rows;
the CPU paths are checked against the reference path by test-backend-ops, test_backend_ops.py).

After key centering the first key sits far from the others and takes much of the attention, so its quantization
error is what costs most: one f16 row per sequence (LLAMA_KV_SINK_ROWS=1, the default for a centered polar K cache)
removes it. With every row exact (LLAMA_KV_SINK_ROWS = the context) a polar cache must behave as an f16 cache:
that checks the bookkeeping end to end (writes, the cell of every row, the tiled and decode paths, context shift).
"""
import numpy as np
import pytest

from conftest import F32_BASE_CHUNKS, completion_error, greedy_text, next_logits, polar_context
from llama_polar import perplexity

CHUNKS = F32_BASE_CHUNKS
NO_SINK = {"LLAMA_KV_SINK_ROWS": "0"}


def all_exact(ctx: int) -> dict:
    """Every position of a context of ctx tokens per sequence exact (more sink rows than cells is an error)."""
    return {"LLAMA_KV_SINK_ROWS": str(ctx)}


def test_every_row_exact_makes_a_polar_cache_an_f16_cache(f32_model, text_path, f32_base):
    f16 = perplexity.kl_divergence(f32_model, text_path, CHUNKS, f32_base, "f16", timeout=900)
    polar = perplexity.kl_divergence(f32_model, text_path, CHUNKS, f32_base, "pq46", timeout=900, env=NO_SINK)
    exact = perplexity.kl_divergence(f32_model, text_path, CHUNKS, f32_base, "pq46", timeout=900, env=all_exact(512))
    # f16 rounding of k - c in the rotated basis, against f16 rounding of k: the same size (a mean this small prints
    # as +-0.000000 or -0.000001 by CPU, so the tail is compared too)
    assert abs(exact.kld) <= 2 * abs(f16.kld) + 1e-6 and exact.kld_p999 <= 2 * f16.kld_p999 + 1e-6, (f16, exact)
    assert exact.kld < 0.02 * polar.kld, (polar, exact)


def test_one_sink_row_lowers_the_kld(model_path, text_path, tmp_path):
    # 8 chunks: on 2 the mean KLD of one configuration moves by 10% with the CPU's rounding of the model (an Intel
    # Xeon measured pq46/pq37 at 0.0409 with the sink row against 0.0372 without, where an AMD EPYC had 0.90x)
    chunks = 8
    base = tmp_path / "f16.kld"
    perplexity.base_logits(model_path, text_path, chunks, base, timeout=900)
    kld = {(k, v, label): perplexity.kl_divergence(model_path, text_path, chunks, base, k, v, timeout=900, env=env).kld
           for k, v in (("pq46", "pq46"), ("pq46", "pq37"), ("pq46", "f16"))
           for label, env in (("none", NO_SINK), ("default", None))}
    # measured on these 8 chunks of Paradise Lost (Intel Xeon): 0.66x (pq46/pq46, 0.0270 -> 0.0178), 0.86x
    # (pq46/pq37), 0.66x (pq46/f16); on tinyshakespeare the gain was larger (the simulator's 4 chunks: pq46 0.59x ->
    # 0.43x q4_0's KLD). Without sink rows the ratio is 1.
    for k, v in (("pq46", "pq46"), ("pq46", "pq37"), ("pq46", "f16")):
        assert kld[k, v, "default"] < 0.95 * kld[k, v, "none"], kld


def test_sink_rows_are_the_default_for_centered_polar_k_only(bin_dir, model_path):
    polar = greedy_text(model_path, None, "-n", 4, "-ctk", "pq46", "-ctv", "pq37")
    assert "exact sink rows: the first 1 position of every sequence" in polar.stderr
    for env, args in ((None, ("-ctk", "q4_0", "-ctv", "q4_0")), ({"LLAMA_K_CENTER": "off"}, ("-ctk", "pq46"))):
        assert "exact sink rows" not in greedy_text(model_path, env, "-n", 4, *args).stderr


def test_context_shift_moves_the_exact_rows(f32_model):
    """Past the context (-c 128, which llama.cpp pads to 256 cells) the cache is shifted, exact rows included: with
    every row exact the greedy text is the f16 cache's."""
    args = ("-n", 300, "-c", 128, "--context-shift", "--ignore-eos", "-ctv", "f16")
    f16 = greedy_text(f32_model, None, *args, "-ctk", "f16")
    exact = greedy_text(f32_model, all_exact(256), *args, "-ctk", "pq46")   # llama.cpp pads -c 128 to 256
    assert "applying K-shift" in exact.stderr and "exact sink rows" in exact.stderr
    assert exact.stdout == f16.stdout


@pytest.mark.parametrize("env,args,message", [
    ({"LLAMA_KV_SINK_ROWS": "one"}, ("-ctk", "pq46"), "LLAMA_KV_SINK_ROWS must be a whole number from 0 to 1024, not 'one'"),
    ({"LLAMA_KV_SINK_ROWS": "2000"}, ("-ctk", "pq46"), "LLAMA_KV_SINK_ROWS must be a whole number from 0 to 1024"),
    ({"LLAMA_KV_SINK_ROWS": "1"}, ("-ctk", "f16"), "exact sink rows need a quantized K cache of its own, not f16"),
    ({"LLAMA_KV_SINK_ROWS": "300"}, ("-ctk", "pq46", "-c", "256"), "are more than the 256 cells of the cache"),
])
def test_a_bad_setting_is_a_clear_error(bin_dir, model_path, env, args, message):
    stderr = completion_error(model_path, env, *args)
    assert message in stderr, stderr[-1500:]


def _context(monkeypatch, model_path, sink_rows: str):
    return polar_context(monkeypatch, model_path, LLAMA_KV_SINK_ROWS=sink_rows)


def test_a_state_keeps_its_exact_rows(bin_dir, model_path, monkeypatch):
    """The logits after a restore are bit-identical to the saving context's: the f16 rows came back with the cells."""
    first = _context(monkeypatch, model_path, "1")
    first.eval(first.tokenize(b"Once upon a time, in a land far away,"))
    state = first.save_state()
    token = first.tokenize(b" there", add_bos=False)[0]
    expected = next_logits(first, token)

    assert np.isfinite(expected).all() and expected.std() > 0.1        # real logits

    restored = _context(monkeypatch, model_path, "1")
    restored.load_state(state)
    np.testing.assert_array_equal(next_logits(restored, token), expected)

    # the control: the same text without sink rows (the quantized first row) gives other logits
    plain = _context(monkeypatch, model_path, "0")
    plain.eval(plain.tokenize(b"Once upon a time, in a land far away,"))
    assert not np.array_equal(next_logits(plain, token), expected)

    with pytest.raises(RuntimeError, match="Failed to set llama state data"):
        _context(monkeypatch, model_path, "0").load_state(state)
