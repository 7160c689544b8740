"""Key scales (llama_polar.key_scales, `llama-polar scale-keys`): a copy of a model whose keys are scaled per RoPE pair
and whose queries are divided by the same scales. q.k is unchanged, so the copy with an unquantized cache is the
model itself within rounding; a polar K cache loses less with it."""
import gguf
import numpy as np
import pytest

from llama_polar import key_scales, models, perplexity

F16_EPS = 2.0 ** -11          # an f16 block scale rounds to within this, relative


def test_scales_make_query_and_key_energies_proportional():
    rng = np.random.default_rng(0)
    eq, ek = rng.uniform(0.01, 10, 32), rng.uniform(0.01, 10, 32)
    for neox in (True, False):
        s = key_scales.scales_of(eq, ek, neox).astype(np.float64)
        pair = s[:32] if neox else s[0::2]
        assert np.array_equal(s, np.concatenate([pair, pair]) if neox else np.repeat(pair, 2)), "one scale per pair"
        ratio = (eq / pair ** 2) / (ek * pair ** 2)       # query energy over key energy, both scaled
        assert np.allclose(ratio, ratio[0], rtol=1e-5)
        assert abs(np.log(pair).mean()) < 1e-6, "geometric mean 1"
    assert np.allclose(key_scales.scales_of(eq, eq * 3.0, True), 1.0), "proportional energies: nothing to scale"
    assert key_scales.alignment(eq, eq * 3.0) == pytest.approx(1.0)
    assert key_scales.alignment(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.0
    wild = key_scales.scales_of(np.array([1e12, 1.0, 1.0, 0.0]), np.ones(4), False)
    assert wild.max() <= key_scales.MAX_SCALE and wild.min() >= 1 / key_scales.MAX_SCALE and np.isfinite(wild).all()


@pytest.mark.parametrize("type_name", sorted(key_scales._F16_SCALE_OFFSETS))
def test_a_quantized_row_is_scaled_through_its_block_scales(type_name):
    qtype = gguf.GGMLQuantizationType[type_name]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(1)
    rows, blocks = 4, 2
    data = rng.integers(0, 256, (rows, blocks * size), dtype=np.uint8)
    for off in key_scales._F16_SCALE_OFFSETS[type_name]:        # finite block scales where the type keeps them
        d = rng.uniform(0.01, 1.0, (rows, blocks)).astype(np.float16)
        data.reshape(rows, blocks, size)[:, :, off:off + 2] = d[..., None].view(np.uint8)
    before = gguf.quants.dequantize(data, qtype)
    scales = np.array([0.5, 2.0, 3.7, 0.11], dtype=np.float32)
    key_scales.scale_rows(data, type_name, scales)
    after = gguf.quants.dequantize(data, qtype)
    want = before * scales[:, None]
    assert np.abs(after - want).max() <= 4 * F16_EPS * np.abs(want).max()


def test_an_unsupported_type_or_target_is_a_clear_error(model_path, tmp_path):
    with pytest.raises(ValueError, match="of type IQ4_NL are not supported"):
        key_scales.scale_rows(np.zeros((2, 18), np.uint8), "IQ4_NL", np.ones(2, np.float32))
    with pytest.raises(ValueError, match="is the model itself"):
        key_scales.write_scaled_model(model_path, model_path, np.ones((30, 64), np.float32))
    with pytest.raises(ValueError, match="3 layers of scales for a model of 30"):
        key_scales.write_scaled_model(model_path, tmp_path / "x.gguf", np.ones((3, 64), np.float32))
    assert not list(tmp_path.iterdir()), "nothing written"


@pytest.fixture(scope="module")
def random_scales(model_path):
    meta = models.metadata(model_path)
    rng = np.random.default_rng(2)
    pairs = np.exp(rng.normal(0, 1, (meta["n_layer"], meta["head_k"] // 2)))
    return np.repeat(pairs, 2, axis=1).astype(np.float32)      # SmolLM2: RoPE pairs (2i, 2i + 1)


def test_the_copy_changes_the_q_and_k_projections_only(model_path, tmp_path, random_scales):
    out = key_scales.write_scaled_model(model_path, tmp_path / "ks.gguf", random_scales)
    meta = models.metadata(model_path)
    a = {t.name: t for t in gguf.GGUFReader(model_path).tensors}
    b = {t.name: t for t in gguf.GGUFReader(out).tensors}
    assert a.keys() == b.keys()
    for name in a:
        side = next((s for s in ("attn_q", "attn_k") if name.endswith(f".{s}.weight")), None)
        if side is None:
            assert np.array_equal(a[name].data, b[name].data), name
            continue
        il, s = int(name.split(".")[1]), random_scales[int(name.split(".")[1])]
        rows = np.tile(s, meta["n_head_kv"]) if side == "attn_k" else np.tile(1 / s, meta["n_head"])
        want = gguf.quants.dequantize(a[name].data, a[name].tensor_type) * rows[:, None]
        got = gguf.quants.dequantize(b[name].data, b[name].tensor_type)
        assert np.abs(got - want).max() <= 4 * F16_EPS * np.abs(want).max(), name


def test_with_an_f32_cache_the_f32_copy_is_the_model(f32_model, text_path, tmp_path, random_scales):
    """On F32 weights the projections' rows are scaled in float32 and an f32 cache rounds nothing: the logits agree to
    float32's rounding (KLD below 1e-5; any change of the model's function measures 1e-3 or more)."""
    out = key_scales.write_scaled_model(f32_model, tmp_path / "ks.gguf", random_scales)
    base = tmp_path / "f32.kld"
    perplexity.base_logits(f32_model, text_path, 1, base, cache="f32", timeout=900)
    same = perplexity.kl_divergence(out, text_path, 1, base, "f32", timeout=900)
    assert same.kld < 1e-5, same


def test_gemma3_keys_scaled_in_their_norm_weights_lose_less_in_a_polar_k_cache(gemma_path, text_path, tmp_path):
    """Gemma-3 has QK-norm weights: the scales go there (every other tensor as it was). With an f16 cache the copy
    reads as the model (KLD at the floor of the Q4 model's activation rounding, 0.006 measured); with a pq32 K cache it
    loses much less (0.0095 against 0.078 measured, 2 x 512 tokens of Paradise Lost)."""
    scales = key_scales.key_scales(gemma_path, chunks=1, n_ctx=256, progress=False)
    out = key_scales.write_scaled_model(gemma_path, tmp_path / "ks.gguf", scales)
    a = {t.name: t for t in gguf.GGUFReader(gemma_path).tensors}
    b = {t.name: t for t in gguf.GGUFReader(out).tensors}
    changed = [n for n in a if not np.array_equal(a[n].data, b[n].data)]
    assert changed and all(n.endswith(("attn_k_norm.weight", "attn_q_norm.weight")) for n in changed), changed
    assert np.allclose(b["blk.5.attn_k_norm.weight"].data, a["blk.5.attn_k_norm.weight"].data * scales[5])
    base = tmp_path / "f16.kld"
    perplexity.base_logits(gemma_path, text_path, 2, base, timeout=900)
    f16 = perplexity.kl_divergence(out, text_path, 2, base, "f16", timeout=900)
    plain = perplexity.kl_divergence(gemma_path, text_path, 2, base, "pq32", "f16", timeout=900)
    scaled = perplexity.kl_divergence(out, text_path, 2, base, "pq32", "f16", timeout=900)
    assert f16.kld < 0.01, f16
    assert scaled.kld < 0.5 * plain.kld, (scaled, plain)


def test_the_command_writes_the_copy_and_says_how_aligned_the_layers_are(model_path, tmp_path):
    from test_cli import polar
    out = tmp_path / "ks.gguf"
    result = polar("scale-keys", "--model", model_path, "--out", out, "--chunks", 1, "--ctx", 128)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: keys of 30 layers scaled per RoPE pair" in result.stdout
    assert "query/key alignment per layer" in result.stdout and "median 0." in result.stdout
    assert out.stat().st_size == model_path.stat().st_size and out.read_bytes() != model_path.read_bytes()
    assert not (tmp_path / "ks.gguf.partial").exists()
