"""llama-cpp-python with the PolarQuant KV-cache types.

    from llama_polar import Llama            # the same class, imported lazily
    llm = Llama(model_path="model.gguf", type_k="pq46", type_v="pq46", flash_attn=True)

`Llama` is llama_cpp.Llama that also takes cache types by name: every polar type and every upstream cache type
(f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1); ints still work. It checks, before llama.cpp runs, what
would otherwise end in a bare "failed to create context": a polar (or quantized V) cache without flash attention,
and a head size that is not a multiple of the cache type's block.

Importing this module points llama-cpp-python at the polar-enabled llama.cpp build (llama_polar.paths:
$LLAMA_CPP_LIB_PATH, then the installed package's lib/, then build/bin), so import it before anything imports
llama_cpp; paths.LibraryError (an ImportError) if that build is missing, or llama_cpp was already loaded from
another one (the message says what to do).
"""
from __future__ import annotations

import ctypes
import os
import sys
from functools import lru_cache
from pathlib import Path

from .models import metadata
from .paths import LLAMA_LIB_ENV, LibraryError, llama_library_dir, shared_library
from .quants import TYPES
from .type_names import CACHE_TYPES, check_types


def _check_loaded_llama_cpp(ours: Path) -> None:
    """The one error for the import-order trap: llama_cpp already loaded another libllama, which cannot be undone."""
    module = sys.modules.get("llama_cpp")
    if module is None:
        return
    loaded = getattr(getattr(module, "llama_cpp", None), "_base_path", None)
    if loaded is None or Path(loaded).resolve() != ours.resolve():
        raise LibraryError(f"llama_cpp was imported before llama_polar and loaded libllama from {loaded}, not the "
                           f"polar-enabled build in {ours}. Import llama_polar first (`from llama_polar import Llama` "
                           f"before anything imports llama_cpp), or start Python with {LLAMA_LIB_ENV}={ours}")


_check_loaded_llama_cpp(llama_library_dir())
os.environ[LLAMA_LIB_ENV] = str(llama_library_dir())

import llama_cpp  # noqa: E402  (must follow LLAMA_CPP_LIB_PATH)


@lru_cache(maxsize=None)
def _ggml() -> ctypes.CDLL:
    path = llama_library_dir() / shared_library("ggml-base")
    lib = ctypes.CDLL(str(path))
    if not hasattr(lib, "quantize_row_pq46_ref"):
        raise LibraryError(f"{path} has no PolarQuant types: it is not the patched build")
    lib.ggml_type_name.restype = ctypes.c_char_p
    lib.ggml_type_name.argtypes = [ctypes.c_int]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    return lib


def bits_per_value(type_name: str) -> float:
    """Storage bits per cached value of a cache type, from the library's type traits."""
    t = cache_types()[type_name]
    return _ggml().ggml_type_size(t) * 8 / _ggml().ggml_blck_size(t)


@lru_cache(maxsize=None)
def cache_types() -> dict[str, int]:
    """KV cache type name -> ggml_type id, as the loaded library names them."""
    lib = _ggml()
    # The patch appends the polar types after upstream's last type, so these ids are all in range.
    count = llama_cpp.GGML_TYPE_COUNT + len(TYPES)
    names = {lib.ggml_type_name(i).decode(): i for i in range(count) if lib.ggml_blck_size(i) > 0}
    missing = [n for n in CACHE_TYPES if n not in names]
    if missing:
        raise LibraryError(f"{llama_library_dir()} does not know the cache types {missing}")
    return {n: names[n] for n in CACHE_TYPES}


def cache_type_name(type_id: int, where: str | None = None) -> str:
    """The name of a KV cache type id; UnknownTypeError for an id that is not one."""
    names = {i: n for n, i in cache_types().items()}
    check_types([type_id], names, "cache type id", where, shown=[f"{n}={i}" for i, n in names.items()])
    return names[type_id]


def resolve_cache_type(value, what: str) -> int | None:
    """A cache type given by name or ggml_type id -> its id (None stays None: llama.cpp's default, f16)."""
    if value is None:
        return None
    types = cache_types()
    if isinstance(value, str):
        return types[check_types([value.lower()], types, "cache type", where=what)[0]]
    if isinstance(value, int) and not isinstance(value, bool):
        cache_type_name(value, where=what)
        return value
    raise TypeError(f"{what} must be a cache type name or a ggml_type id, not {type(value).__name__}")


def model_head_sizes(model_path: str) -> tuple[int, int]:
    """(K head size, V head size) from the model's GGUF metadata."""
    meta = metadata(model_path)
    return meta["head_k"], meta["head_v"]


def kv_cache_bytes(meta: dict, type_k: str, type_v: str, n_ctx: int | None = None) -> float:
    """n_layer * n_ctx * (n_embd_k_gqa * bits_k + n_embd_v_gqa * bits_v) / 8."""
    n_ctx = meta["n_ctx"] if n_ctx is None else n_ctx
    k = meta["n_head_kv"] * meta["head_k"] * bits_per_value(type_k)
    v = meta["n_head_kv"] * meta["head_v"] * bits_per_value(type_v)
    return meta["n_layer"] * n_ctx * (k + v) / 8


def check_cache_types(model_path: str, type_k: int | None, type_v: int | None, flash_attn: bool,
                      flash_attn_hint: str = "pass flash_attn=True") -> None:
    """Raise ValueError for combinations llama.cpp would refuse (or, for polar types, not support)."""
    polar_ids = {cache_types()[n] for n in TYPES}
    unquantized = {cache_types()[n] for n in ("f32", "f16", "bf16")}
    for what, t in (("type_k", type_k), ("type_v", type_v)):
        if t is None:
            continue
        name = cache_type_name(t)
        if not flash_attn and (t in polar_ids or (what == "type_v" and t not in unquantized)):
            kind = "a PolarQuant cache type" if t in polar_ids else "a quantized V cache type"
            raise ValueError(f"{what}={name!r} is {kind} and needs flash attention: {flash_attn_hint}")
    head_k, head_v = None, None
    for what, t in (("type_k", type_k), ("type_v", type_v)):
        if t is None or t in unquantized:
            continue
        if head_k is None:
            head_k, head_v = model_head_sizes(model_path)
        head = head_k if what == "type_k" else head_v
        block = _ggml().ggml_blck_size(t)
        if head % block:
            raise ValueError(f"{what}={cache_type_name(t)!r} stores blocks of {block} values, but this model's "
                             f"{'K' if what == 'type_k' else 'V'} head size is {head}: pick a type whose block "
                             f"divides {head} (f16, q8_0, ...)")


class Llama(llama_cpp.Llama):
    """llama_cpp.Llama that takes KV cache types by name, PolarQuant ones included."""

    def __init__(self, model_path: str, *, type_k=None, type_v=None, flash_attn: bool = False, **kwargs):
        type_k = resolve_cache_type(type_k, "type_k")
        type_v = resolve_cache_type(type_v, "type_v")
        if not Path(model_path).is_file():
            raise ValueError(f"model_path {model_path!r} is not a file")
        check_cache_types(model_path, type_k, type_v, flash_attn)
        super().__init__(model_path, type_k=type_k, type_v=type_v, flash_attn=flash_attn, **kwargs)

    def __del__(self):
        if hasattr(self, "_stack"):       # not when our checks refused the arguments before llama.cpp ran
            super().__del__()
