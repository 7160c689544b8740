"""ctypes binding to the ggml_polar C library, with the same signatures as the NumPy reference.

The library is found by llama_polar.paths.native_library(): $LLAMA_POLAR_NATIVE_LIB, then the package's lib/, then
build/bin/ (`make native`), then build-native/bin/; a missing or mismatched library raises paths.LibraryError.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np

from .paths import LibraryError, native_library
from .quants import TYPES, get_type

_to_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_from_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_vec_dot_t = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, ctypes.c_void_p,
                              ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class _TypeInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("block_size", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("group_size", ctypes.c_int64),
        ("from_float_ref", _from_float_t),
        ("to_float", _to_float_t),
        ("vec_dot", _vec_dot_t),
    ]


@lru_cache(maxsize=None)
def _types() -> dict[str, _TypeInfo]:
    path = native_library()
    lib = ctypes.CDLL(str(path))
    lib.ggml_polar_type_count.restype = ctypes.c_int
    lib.ggml_polar_get_type_info.restype = ctypes.POINTER(_TypeInfo)
    lib.ggml_polar_get_type_info.argtypes = [ctypes.c_int]
    infos = {}
    for i in range(lib.ggml_polar_type_count()):
        info = lib.ggml_polar_get_type_info(i).contents
        name = info.name.decode()
        ref = TYPES.get(name)
        if ref is None or (info.block_size, info.type_size, info.group_size) != (
                ref.block_size, ref.type_size, ref.group_size):
            raise LibraryError(f"{path} does not match the NumPy reference for type {name!r}: "
                               "rebuild it (make native)")
        infos[name] = info
    missing = set(TYPES) - set(infos)
    if missing:
        raise LibraryError(f"{path} lacks types {sorted(missing)}: rebuild it (make native)")
    _types.lib = lib  # keep the library alive with the function pointers
    return infos


def _lookup(name: str):
    """The NumPy class (for checks and shapes) and the C entry points of a type."""
    return get_type(name), _types()[name]


def quantize(x, name: str) -> np.ndarray:
    """C encoder; same contract as llama_polar.quantize."""
    qtype, info = _lookup(name)
    x = qtype.as_rows(x)
    out = np.zeros(qtype.encoded_shape(x.shape), dtype=np.uint8)
    if x.size:
        info.from_float_ref(x.ctypes.data, out.ctypes.data, x.size)
    return out


def dequantize(q, name: str) -> np.ndarray:
    """C decoder; same contract as llama_polar.dequantize."""
    qtype, info = _lookup(name)
    q = qtype.as_encoded(q)
    out = np.empty(qtype.decoded_shape(q.shape), dtype=np.float32)
    if out.size:
        info.to_float(q.ctypes.data, out.ctypes.data, out.size)
    return out


def vec_dot(q, y, name: str) -> float:
    """C dot product of one encoded row q with the float32 vector y (ggml vec_dot, vec_dot_type F32)."""
    qtype, info = _lookup(name)
    q = qtype.as_encoded(q)
    y = qtype.as_rows(y)
    if y.ndim != 1 or q.shape != qtype.encoded_shape(y.shape):
        raise ValueError(f"{name}: vec_dot needs one encoded row and a vector of the same length")
    s = ctypes.c_float()
    info.vec_dot(y.size, ctypes.byref(s), 0, q.ctypes.data, 0, y.ctypes.data, 0, 1)
    return s.value


def validate_row_data(data: bytes, ggml_id: int) -> bool:
    """ggml_polar_validate_row_data: whether data are whole blocks of the polar type with ggml id ggml_id whose
    radii are finite (what llama.cpp checks of the rows a state file brings)."""
    _types()
    lib = _types.lib
    lib.ggml_polar_validate_row_data.restype = ctypes.c_bool
    lib.ggml_polar_validate_row_data.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    return bool(lib.ggml_polar_validate_row_data(ggml_id, data, len(data)))
