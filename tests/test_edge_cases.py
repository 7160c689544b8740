"""The documented behaviour for zeros, NaN/Inf, out-of-range radii and arbitrary bytes (both implementations)."""
import numpy as np
import pytest

import llama_polar
from conftest import FLT_MAX, TYPE_NAMES

IMPLEMENTATIONS = ["numpy", "native"]


def codec(impl, native_lib):
    if impl == "native":
        return native_lib.quantize, native_lib.dequantize
    return llama_polar.quantize, llama_polar.dequantize


def radius_bytes(name):
    qtype = llama_polar.TYPES[name]
    return qtype._radius_bytes if hasattr(qtype, "_radius_bytes") else 1


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", TYPE_NAMES)
def test_zero_vector_decodes_to_exact_zeros(native_lib, impl, name):
    quantize, dequantize = codec(impl, native_lib)
    q = quantize(np.zeros((2, 64), np.float32), name)
    assert not q[:, :radius_bytes(name)].any(), "a zero group has radius 0"
    assert np.all(dequantize(q, name) == 0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", TYPE_NAMES)
def test_nan_encodes_as_zero_and_inf_saturates(native_lib, impl, rng, name):
    quantize, _ = codec(impl, native_lib)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    with_bad = x.copy()
    with_bad[0, 5] = np.nan
    with_bad[1, 9] = np.inf
    with_bad[2, 0] = -np.inf
    expected = x.copy()
    expected[0, 5] = 0.0
    expected[1, 9] = FLT_MAX
    expected[2, 0] = -FLT_MAX
    np.testing.assert_array_equal(quantize(with_bad, name), quantize(expected, name))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", TYPE_NAMES)
def test_huge_values_saturate_the_radius_and_stay_finite(native_lib, impl, name):
    quantize, dequantize = codec(impl, native_lib)
    x = np.full((2, 64), 1e30, np.float32)
    x[1] = FLT_MAX
    q = quantize(x, name)
    y = dequantize(q, name)
    assert np.all(np.isfinite(y))
    if llama_polar.TYPES[name].radius_format == "fp16":
        radii = q[:, :radius_bytes(name)].copy().view("<f2")
        assert np.all(radii == np.float16(65504))
    else:
        assert np.all(q[:, 0] == 255)
        assert np.max(np.linalg.norm(y, axis=1)) == pytest.approx(2 ** 15.75, rel=1e-5)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", TYPE_NAMES)
def test_tiny_values_round_to_zero_radius(native_lib, impl, name):
    quantize, dequantize = codec(impl, native_lib)
    x = np.full((1, 64), 1e-40, np.float32)                  # subnormal inputs, radius far below both formats
    q = quantize(x, name)
    assert not q[:, :radius_bytes(name)].any()
    assert np.all(dequantize(q, name) == 0)


@pytest.mark.parametrize("name", TYPE_NAMES)
def test_decoding_arbitrary_bytes_is_total(native_lib, rng, name):
    """Every byte pattern decodes; the 8-bit log norm can only give finite values, fp16 radii decode as written."""
    size = llama_polar.TYPES[name].type_size
    q = rng.integers(0, 256, size=(20000, size), dtype=np.uint8)
    y = native_lib.dequantize(q, name)
    if llama_polar.TYPES[name].radius_format == "log8":
        assert np.all(np.isfinite(y))
    else:
        radii = np.ascontiguousarray(q[:, :radius_bytes(name)]).view("<f2").astype(np.float32)
        finite_rows = np.all(np.isfinite(radii), axis=1)
        assert np.all(np.isfinite(y[finite_rows]))


def test_scaling_keeps_angles_exact():
    """A group scaled by a power of two gets the same codes (radius aside): the encoder's 2^k scaling is exact."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    for name in TYPE_NAMES:
        skip = radius_bytes(name)
        base = llama_polar.quantize(x, name)[:, skip:]
        for p in (-60, -10, 10, 60):
            scaled = llama_polar.quantize(x * np.float32(2.0 ** p), name)[:, skip:]
            np.testing.assert_array_equal(scaled, base)
