"""PolarQuant KV-cache types for llama.cpp: the NumPy reference codecs and their registry.

    import llama_polar
    q = llama_polar.quantize(x, "pq46")       # (..., k) float -> (..., k / 64 * type_size) uint8
    y = llama_polar.dequantize(q, "pq46")     # -> float32
    llama_polar.TYPES["pq46"].bits_per_value  # 4.625
    print(llama_polar.PolarQuantizer("pq46").report(keys))
"""
from __future__ import annotations

import numpy as np

from .quality import Encoded, PolarQuantizer, QualityReport, cosine_similarity, relative_mse
from .quants import TYPES, PolarQuant

__all__ = ["TYPES", "PolarQuant", "quantize", "dequantize", "PolarQuantizer", "Encoded", "QualityReport",
           "cosine_similarity", "relative_mse", "get_type"]


def get_type(name: str) -> type[PolarQuant]:
    try:
        return TYPES[name]
    except KeyError:
        raise ValueError(f"unknown polar type {name!r}; known: {', '.join(TYPES)}") from None


def quantize(x, name: str) -> np.ndarray:
    """Encode the last axis of x (a multiple of 64) into uint8 ggml blocks of type `name`."""
    return get_type(name).quantize(x)


def dequantize(q, name: str) -> np.ndarray:
    """Decode uint8 ggml blocks of type `name` (last axis a multiple of the type size) to float32."""
    return get_type(name).dequantize(q)
