"""Encoder/decoder convenience with a quality report, in the manner of the MLX PolarQuant API."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quants import PolarQuant, get_type


def cosine_similarity(a, b) -> np.ndarray:
    """Cosine similarity of corresponding vectors (last axis); 1 where both are zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dot = np.sum(a * b, axis=-1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    both_zero = norms == 0
    return np.where(both_zero, 1.0, dot / np.where(both_zero, 1.0, norms))


def relative_mse(x, decoded) -> float:
    """sum ||x - x'||^2 / sum ||x||^2."""
    x = np.asarray(x, dtype=np.float64)
    err = x - np.asarray(decoded, dtype=np.float64)
    return float(np.sum(err * err) / np.sum(x * x))


@dataclass(frozen=True)
class Encoded:
    type_name: str
    shape: tuple[int, ...]
    data: np.ndarray          # uint8, (..., n_blocks * type_size)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


@dataclass(frozen=True)
class QualityReport:
    type_name: str
    bits_per_value: float
    compression_vs_f16: float
    relative_mse: float
    cosine_similarity_mean: float
    cosine_similarity_min: float

    def __str__(self) -> str:
        return (f"{self.type_name}: {self.bits_per_value:.3f} bits/value (x{self.compression_vs_f16:.2f} vs f16), "
                f"relative MSE {self.relative_mse:.5f}, cosine similarity mean {self.cosine_similarity_mean:.5f} "
                f"min {self.cosine_similarity_min:.5f}")


class PolarQuantizer:
    """PolarQuantizer("pq38p").encode(keys) -> Encoded; .decode(enc) -> float32; .report(keys) -> QualityReport.

    backend="native" runs the C library instead of the NumPy reference (same results, bit for bit)."""

    def __init__(self, type_name: str = "pq38p", backend: str = "numpy"):
        qtype = get_type(type_name)
        if backend not in ("numpy", "native"):
            raise ValueError(f"backend must be 'numpy' or 'native', not {backend!r}")
        self.qtype: type[PolarQuant] = qtype
        self.backend = backend

    def encode(self, x) -> Encoded:
        x = np.asarray(x)
        if self.backend == "native":
            from . import native
            data = native.quantize(x, self.qtype.name)
        else:
            data = self.qtype.quantize(x)
        return Encoded(self.qtype.name, tuple(x.shape), data)

    def decode(self, encoded: Encoded) -> np.ndarray:
        if encoded.type_name != self.qtype.name:
            raise ValueError(f"data was encoded as {encoded.type_name}, this quantizer is {self.qtype.name}")
        if self.backend == "native":
            from . import native
            return native.dequantize(encoded.data, self.qtype.name)
        return self.qtype.dequantize(encoded.data)

    def report(self, x) -> QualityReport:
        x = np.asarray(x, dtype=np.float32)
        decoded = self.decode(self.encode(x))
        cos = cosine_similarity(x, decoded)
        return QualityReport(self.qtype.name, self.qtype.bits_per_value, 16.0 / self.qtype.bits_per_value,
                             relative_mse(x, decoded), float(np.mean(cos)), float(np.min(cos)))
