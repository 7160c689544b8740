"""The C library against the NumPy reference, with each type's quality, on vectors shaped like a KV cache's.

Per polar type, compare() gives the share of blocks whose codes are identical in C and NumPy, the share of decoded
values identical bit for bit, relative MSE (and the closed form for preconditioned data), mean cosine similarity,
and the relative RMS error of inner products with random queries; ggml_roundtrip() puts q8_0 and q4_0 beside them
(ggml's reference codecs, as gguf-py's NumPy port gguf.quants has them). scripts/validate.py prints the table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import native
from .quality import cosine_similarity, relative_mse
from .quants import get_type


def hadamard(n: int) -> np.ndarray:
    """The orthonormal n x n Hadamard matrix (Sylvester's construction; n a power of two)."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def k_rotation_size(head_dim: int) -> int | None:
    """llama.cpp's K rotation block: the largest power of two >= 64 dividing the head size (None: no rotation)."""
    if head_dim % 64:
        return None
    n = 64
    while head_dim % (2 * n) == 0:
        n *= 2
    return n


def precondition(x: np.ndarray) -> np.ndarray:
    """llama.cpp's rotation of quantized K: a Hadamard transform over the largest power of two (>= 64) dividing d."""
    d = x.shape[-1]
    n = k_rotation_size(d)
    return (x.reshape(-1, d // n, n) @ hadamard(n)).reshape(x.shape).astype(np.float32)


def k_like(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Random vectors with channel scales over two decades and a few outlier channels, as in real keys."""
    scales = 10.0 ** rng.uniform(-1, 1, dim)
    scales[rng.choice(dim, max(1, dim // 32), replace=False)] *= 20
    return (rng.standard_normal((rows, dim)) * scales).astype(np.float32)


def ggml_roundtrip(x: np.ndarray, name: str) -> np.ndarray:
    """x (last axis a multiple of 32) through one of ggml's own block types and back: "q8_0", "q4_0", ..."""
    from gguf import GGMLQuantizationType, quants

    qtype = GGMLQuantizationType[name.upper()]
    x = np.ascontiguousarray(x, dtype=np.float32)
    return quants.dequantize(quants.quantize(x, qtype), qtype).reshape(x.shape)


@dataclass(frozen=True)
class Row:
    name: str
    bits_per_value: float
    codes_equal: float | None       # share of blocks with identical codes in C and NumPy (None: not a polar type)
    values_equal: float | None      # share of decoded values identical bit for bit
    rel_mse: float
    closed_form: float | None       # the type's relative MSE on preconditioned data, in closed form
    cosine: float                   # mean cosine similarity of decoded and original vectors
    ip_error: float                 # relative RMS error of inner products with the queries

    @property
    def agrees(self) -> bool:
        return self.codes_equal in (None, 1.0) and self.values_equal in (None, 1.0)


def quality(x: np.ndarray, y: np.ndarray, queries: np.ndarray) -> tuple[float, float, float]:
    """(relative MSE, mean cosine similarity, relative RMS inner-product error) of y as a copy of x."""
    s, s_hat = queries @ x.T.astype(np.float64), queries @ y.T.astype(np.float64)
    ip_err = float(np.sqrt(np.mean((s_hat - s) ** 2) / np.mean(s ** 2)))
    return relative_mse(x, y), float(np.mean(cosine_similarity(x, y))), ip_err


def compare(x: np.ndarray, name: str, queries: np.ndarray) -> Row:
    """Polar type `name` in C and in NumPy on the rows of x; the quality figures are the C decoder's."""
    qtype = get_type(name)
    q_c, q_np = native.quantize(x, name), qtype.quantize(x)
    y_c, y_np = native.dequantize(q_c, name), qtype.dequantize(q_np)
    codes_equal = float(np.mean(np.all((q_c == q_np).reshape(-1, qtype.type_size), axis=1)))
    values_equal = float(np.mean(y_c.view(np.uint32) == y_np.view(np.uint32)))
    mse, cos, ip = quality(x, y_c, queries)
    return Row(name, qtype.bits_per_value, codes_equal, values_equal, mse, qtype.expected_rel_mse, cos, ip)


def upstream(x: np.ndarray, name: str, queries: np.ndarray) -> Row:
    """ggml's q8_0 or q4_0 on the rows of x, for comparison."""
    mse, cos, ip = quality(x, ggml_roundtrip(x, name), queries)
    from .cache_config import type_bits
    return Row(name, type_bits(name), None, None, mse, None, cos, ip)
