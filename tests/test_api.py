"""The llama_polar Python API: registry, module functions, errors, the quantizer and its report."""
import numpy as np
import pytest

import llama_polar
from llama_polar import native, paths


def test_registry_attributes():
    assert set(llama_polar.TYPES) == {"pq38p", "pq22", "pq25", "pq27", "pq32", "pq37", "pq42", "pq46", "pqk1",
                                      "pqt22", "pqt27", "pqt32"}
    for name, t in llama_polar.TYPES.items():
        assert t.name == name
        assert t.block_size == 64
        assert t.bits_per_value == t.type_size * 8 / t.block_size
        assert t.block_size % t.group_size == 0
        assert all(isinstance(b, int) for b in t.level_bits)
    paper = llama_polar.TYPES["pq38p"]
    assert (paper.group_size, paper.level_bits, paper.radius_format) == (16, (4, 2, 2, 2), "fp16")
    assert paper.bits_per_value == 3.875 and paper.type_size == 31
    assert llama_polar.TYPES["pqk1"].bits_per_value == 1.125
    assert [llama_polar.TYPES[n].bits_per_value for n in ("pq22", "pq25", "pq27", "pq32", "pq37", "pq42")] == [2.25, 2.5, 2.75, 3.25, 3.75, 4.25]
    # each trellis type is the size of the tree type whose number it shares
    for n in ("pqt22", "pqt27", "pqt32"):
        assert llama_polar.TYPES[n].type_size == llama_polar.TYPES[n.replace("pqt", "pq")].type_size


def test_level_bits_account_for_every_bit():
    for t in llama_polar.TYPES.values():
        if t.kind == "trellis":
            assert 16 + t.shape.steps * t.shape.k == t.type_size * 8        # fp16 scale + one field per step
            continue
        if t.name == "pqk1":
            angle_bits = sum(t.level_bits)                                  # one entry per hyperspherical angle
        else:
            angle_bits = sum(b * (t.group_size >> (l + 1)) for l, b in enumerate(t.level_bits)) * (64 // t.group_size)
        radius_bits = (16 if t.radius_format == "fp16" else 8) * (64 // t.group_size)
        assert angle_bits + radius_bits == t.type_size * 8


@pytest.mark.parametrize("shape", [(64,), (3, 128), (2, 5, 256)])
def test_shapes_round_trip(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for name, t in llama_polar.TYPES.items():
        q = llama_polar.quantize(x, name)
        assert q.dtype == np.uint8 and q.shape == shape[:-1] + (shape[-1] // 64 * t.type_size,)
        y = llama_polar.dequantize(q, name)
        assert y.dtype == np.float32 and y.shape == shape


@pytest.mark.parametrize("module", [llama_polar, native])
def test_bad_inputs_raise_clear_errors(native_lib, module):
    with pytest.raises(ValueError, match="unknown polar type"):
        module.quantize(np.zeros(64, np.float32), "q4_0")
    with pytest.raises(ValueError, match="multiple of the block size 64"):
        module.quantize(np.zeros((2, 96), np.float32), "pq46")
    with pytest.raises(ValueError, match="multiple of the block size 64"):
        module.quantize(np.float32(1.0), "pq46")
    with pytest.raises(TypeError, match="real numbers"):
        module.quantize(np.array(["a"] * 64), "pq46")
    with pytest.raises(TypeError, match="must be uint8"):
        module.dequantize(np.zeros(37, np.int16), "pq46")
    with pytest.raises(ValueError, match="multiple of the type size 37"):
        module.dequantize(np.zeros(36, np.uint8), "pq46")


def test_native_vec_dot_rejects_mismatched_lengths(native_lib):
    q = llama_polar.quantize(np.ones(128, np.float32), "pq46")
    with pytest.raises(ValueError, match="same length"):
        native_lib.vec_dot(q, np.ones(64, np.float32), "pq46")


def test_native_library_path_error_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMA_POLAR_NATIVE_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(paths.LibraryError, match="is not a file"):
        paths.native_library()


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_quantizer_encode_decode_report(native_lib, backend):
    x = np.random.default_rng(1).standard_normal((256, 128)).astype(np.float32)
    pq = llama_polar.PolarQuantizer("pq46", backend=backend)
    enc = pq.encode(x)
    assert enc.type_name == "pq46" and enc.shape == x.shape and enc.nbytes == 256 * 2 * 37
    np.testing.assert_array_equal(pq.decode(enc), llama_polar.dequantize(enc.data, "pq46"))
    report = pq.report(x)
    assert report.relative_mse == pytest.approx(llama_polar.TYPES["pq46"].expected_rel_mse, rel=0.1)
    assert 0.99 < report.cosine_similarity_mean <= 1.0 and report.cosine_similarity_min <= report.cosine_similarity_mean
    assert report.compression_vs_f16 == pytest.approx(16 / 4.625)
    assert "pq46" in str(report)
    with pytest.raises(ValueError, match="encoded as pq46"):
        llama_polar.PolarQuantizer("pq42", backend=backend).decode(enc)


def test_quantizer_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown polar type"):
        llama_polar.PolarQuantizer("polar9")
    with pytest.raises(ValueError, match="backend"):
        llama_polar.PolarQuantizer("pq46", backend="cuda")


def test_cosine_similarity_handles_zero_vectors():
    a = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(llama_polar.cosine_similarity(a, b), [1.0, 0.0, 1.0])
