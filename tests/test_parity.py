"""C (ggml_polar) and NumPy (llama_polar.quants) produce identical codes and identical decoded values."""
import numpy as np
import pytest

import llama_polar
from conftest import INPUTS, TYPE_NAMES
from llama_polar._codebooks import GGML_TYPE_IDS


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize("name", TYPE_NAMES)
def test_codes_and_decoded_values_are_bit_identical(native_lib, rng, name, kind):
    x = INPUTS[kind](rng)
    q_c = native_lib.quantize(x, name)
    q_np = llama_polar.quantize(x, name)
    assert q_c.shape == q_np.shape == (x.shape[0], x.shape[1] // 64 * llama_polar.TYPES[name].type_size)
    np.testing.assert_array_equal(q_c, q_np)

    y_c = native_lib.dequantize(q_c, name)
    y_np = llama_polar.dequantize(q_np, name)
    np.testing.assert_array_equal(bits(y_c), bits(y_np))
    assert np.all(np.isfinite(y_c)), "encoded data must always decode to finite values"


@pytest.mark.parametrize("name", TYPE_NAMES)
def test_arbitrary_bytes_decode_identically(native_lib, rng, name):
    size = llama_polar.TYPES[name].type_size
    q = rng.integers(0, 256, size=(4096, size), dtype=np.uint8)
    np.testing.assert_array_equal(bits(native_lib.dequantize(q, name)), bits(llama_polar.dequantize(q, name)))


@pytest.mark.parametrize("name", TYPE_NAMES)
def test_float64_input_is_rounded_to_float32_first(native_lib, rng, name):
    x = rng.standard_normal((8, 128))
    np.testing.assert_array_equal(native_lib.quantize(x, name), llama_polar.quantize(x.astype(np.float32), name))


@pytest.mark.parametrize("dim", [64, 128, 256])
@pytest.mark.parametrize("name", TYPE_NAMES)
def test_vec_dot_matches_decoded_dot_within_summation_bound(native_lib, rng, name, dim):
    """vec_dot sums dim float32 products in order: |error| <= gamma_dim * sum |x_i y_i|, gamma_n = n u / (1 - n u)."""
    u = 2.0 ** -24
    gamma = dim * u / (1 - dim * u)
    x = rng.standard_normal((64, dim)).astype(np.float32)
    y = rng.standard_normal((64, dim)).astype(np.float32)
    q = llama_polar.quantize(x, name)
    decoded = llama_polar.dequantize(q, name).astype(np.float64)
    for row in range(x.shape[0]):
        exact = float(np.dot(decoded[row], y[row].astype(np.float64)))
        bound = gamma * float(np.sum(np.abs(decoded[row] * y[row])))
        assert abs(native_lib.vec_dot(q[row], y[row], name) - exact) <= bound


@pytest.mark.parametrize("name", sorted(GGML_TYPE_IDS))
def test_validate_row_data_refuses_an_infinite_or_nan_radius(native_lib, rng, name):
    """ggml_polar_validate_row_data (patch 0016's state checks): encoded rows pass; an fp16 radius of Inf or NaN
    fails where the type has fp16 radii (an 8-bit log norm is finite whatever its bits); a partial block, or an id
    that is no polar type, fails."""
    ggml_id = GGML_TYPE_IDS[name]
    good = native_lib.quantize(rng.standard_normal((4, 128)).astype(np.float32), name).tobytes()
    assert native_lib.validate_row_data(good, ggml_id)
    assert not native_lib.validate_row_data(good[:-1], ggml_id)
    assert not native_lib.validate_row_data(good, 2)                   # q4_0's id
    for bad in (b"\x00\x7c", b"\x01\x7e"):                              # +Inf, a NaN (little-endian fp16)
        broken = bytearray(good)
        broken[0:2] = bad                                               # the first block's first radius bytes
        assert native_lib.validate_row_data(bytes(broken), ggml_id) == (name == "pqk1"), name
