"""NumPy reference codecs for the PolarQuant KV-cache types, one class per type, as gguf-py's ``gguf/quants.py``.

Each class encodes rows of float32 values into ggml blocks of 64 values and back, vectorised over blocks. The
arithmetic is the C reference's (``ggml_polar/ggml-polar.c``) step for step in float32, so codes and decoded values
are identical bit for bit; the parity tests hold both to that.

``TYPES`` follows the generated type list (``_codebooks.TYPE_LIST``: every polar type in ggml's type order, with its
kind): importing this module fails if a generated type has no class here, or a class has no generated type.
"""
from __future__ import annotations

from collections import Counter
from typing import ClassVar

import numpy as np

from . import _codebooks as cb
from . import trellis
from .type_names import check_types

BLOCK = cb.BLOCK
_F32 = np.float32
_FLT_MAX = np.finfo(np.float32).max
_FP16_MAX = np.float32(65504.0)



_CLASSES: list[type["PolarQuant"]] = []      # every named subclass, in definition order


def _prepare_groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sanitize (NaN -> 0, +-Inf -> +-FLT_MAX) and scale each group (last axis) by 2^k with amax * 2^k in [1, 4)."""
    v = np.nan_to_num(x, nan=0.0, posinf=_FLT_MAX, neginf=-_FLT_MAX)
    amax = np.max(np.abs(v), axis=-1)
    e = ((np.ascontiguousarray(amax).view(np.uint32) >> 23) & 0xFF).astype(np.int32)
    k = np.where(e > 253, -126, 127 - e).astype(np.int32)
    return v * np.ldexp(_F32(1.0), k)[..., None], k


def _unscale(r: np.ndarray, k: np.ndarray) -> np.ndarray:
    return r * np.ldexp(_F32(1.0), -k)


def _pair_sums_of_squares(v: np.ndarray) -> np.ndarray:
    return v[..., 0::2] * v[..., 0::2] + v[..., 1::2] * v[..., 1::2]


def _count_above(b: np.ndarray, bounds: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Number of boundaries t with b > t * a (float32), elementwise."""
    if len(bounds) == 0:
        return np.zeros(b.shape, dtype=np.int64)
    return np.sum(b[..., None] > bounds * a[..., None], axis=-1)


def _level1_codes(x: np.ndarray, y: np.ndarray, bits: int, tan_bounds: np.ndarray) -> np.ndarray:
    """Quadrant in the top 2 bits; inside it, (u > 0, v >= 0) and the bin count of v > tan(b) * u."""
    q0 = (x > 0) & (y >= 0)
    q1 = (x <= 0) & (y > 0)
    q2 = (x < 0) & (y <= 0)
    q3 = (x >= 0) & (y < 0)
    quadrant = np.select([q1, q2, q3], [1, 2, 3], 0)
    zero = _F32(0.0)
    u = np.select([q0, q1, q2, q3], [x, y, -x, -y], zero)
    v = np.select([q0, q1, q2, q3], [y, -x, -y, x], zero)
    return (quadrant << (bits - 2)) | _count_above(v, tan_bounds, u)


def _log8_encode(r: np.ndarray) -> np.ndarray:
    return np.searchsorted(cb.LOG8_BOUND, r, side="left").astype(np.uint8)


def _codes_to_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    return ((codes[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(codes.shape[0], -1)


def _bits_to_codes(stream: np.ndarray, offset: int, count: int, bits: int) -> np.ndarray:
    if bits == 0:
        return np.zeros((stream.shape[0], count), dtype=np.int64)
    field = stream[:, offset:offset + count * bits].reshape(stream.shape[0], count, bits).astype(np.int64)
    return field @ (1 << np.arange(bits))


class PolarQuant:
    """Base of the per-type classes: the row <-> block plumbing. A subclass with a name is a type."""

    name: ClassVar[str]
    kind: ClassVar[str]                   # the generated list's kind: "tree", "key" or "trellis" (_codebooks)
    block_size: ClassVar[int] = BLOCK
    type_size: ClassVar[int]
    group_size: ClassVar[int]
    level_bits: ClassVar[tuple[int, ...]]
    bits_per_value: ClassVar[float]
    radius_format: ClassVar[str]
    expected_rel_mse: ClassVar[float]     # closed form on randomly preconditioned data
    description: ClassVar[str] = ""

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            _CLASSES.append(cls)

    @classmethod
    def _configure(cls) -> None:
        """Reads the type's layout from the generated tables (once the registry has matched it to the list)."""
        raise NotImplementedError

    @classmethod
    def quantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """(n, 64) float32 -> (n, type_size) uint8."""
        raise NotImplementedError

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """(n, type_size) uint8 -> (n, 64) float32."""
        raise NotImplementedError

    @classmethod
    def as_rows(cls, data) -> np.ndarray:
        """Checks values to encode: real numbers, last axis a multiple of 64. Returns contiguous float32."""
        x = np.asarray(data)
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{cls.name}: expected real numbers, got dtype {x.dtype}")
        if x.ndim == 0 or x.shape[-1] % cls.block_size != 0:
            raise ValueError(f"{cls.name}: the last axis ({x.shape[-1] if x.ndim else 'scalar'}) must be a "
                             f"multiple of the block size {cls.block_size}")
        return np.ascontiguousarray(x, dtype=np.float32)

    @classmethod
    def as_encoded(cls, data) -> np.ndarray:
        """Checks encoded data: uint8, last axis a multiple of type_size. Returns a contiguous array."""
        q = np.asarray(data)
        if q.dtype != np.uint8:
            raise TypeError(f"{cls.name}: encoded data must be uint8, got dtype {q.dtype}")
        if q.ndim == 0 or q.shape[-1] % cls.type_size != 0:
            raise ValueError(f"{cls.name}: the last axis ({q.shape[-1] if q.ndim else 'scalar'}) must be a "
                             f"multiple of the type size {cls.type_size}")
        return np.ascontiguousarray(q)

    @classmethod
    def encoded_shape(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape[:-1] + (shape[-1] // cls.block_size * cls.type_size,)

    @classmethod
    def decoded_shape(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape[:-1] + (shape[-1] // cls.type_size * cls.block_size,)

    @classmethod
    def quantize(cls, data) -> np.ndarray:
        """(..., k) floats, k a multiple of 64 -> (..., k / 64 * type_size) uint8."""
        x = cls.as_rows(data)
        with np.errstate(over="ignore"):     # a radius past float32 is Inf, then saturates (as in C)
            q = cls.quantize_blocks(x.reshape(-1, cls.block_size))
        return q.reshape(cls.encoded_shape(x.shape))

    @classmethod
    def dequantize(cls, data) -> np.ndarray:
        """(..., m) uint8, m a multiple of type_size -> (..., m / type_size * 64) float32."""
        q = cls.as_encoded(data)
        with np.errstate(invalid="ignore", over="ignore"):   # raw fp16 radii may be Inf/NaN: decoded as written
            y = cls.dequantize_blocks(q.reshape(-1, cls.type_size))
        return y.reshape(cls.decoded_shape(q.shape))


class PolarTree(PolarQuant):
    """Recursive polar transform over groups of 2^levels values (paper, Definition 1), one radius per group."""

    kind = "tree"
    levels: ClassVar[int]
    groups: ClassVar[int]
    _layout: ClassVar[dict]

    @classmethod
    def _configure(cls) -> None:
        spec = cb.TREE_TYPES[cls.name]
        cls._layout = spec
        cls.level_bits = tuple(spec["level_bits"])
        cls.levels = len(cls.level_bits)
        cls.groups = spec["groups"]
        cls.group_size = BLOCK // cls.groups
        cls.type_size = spec["type_size"]
        cls.radius_format = "fp16" if spec["radius_format"] == cb.RADIUS_FP16 else "log8"
        cls.expected_rel_mse = spec["expected_rel_mse"]
        cls._radius_bytes = cls.groups * (2 if cls.radius_format == "fp16" else 1)

    @classmethod
    def _bounds(cls, level: int) -> np.ndarray:
        """Decision boundaries of level (0-based): tan inside a quadrant for level 0, tan^2 above."""
        bits = cls.level_bits[level]
        count = (1 << (bits - 2)) - 1 if level == 0 else (1 << bits) - 1
        start = cls._layout["bound_offset"][level]
        return cb.BOUND[start:start + count]

    @classmethod
    def _trig(cls, level: int) -> tuple[np.ndarray, np.ndarray]:
        start = cls._layout["table_offset"][level]
        end = start + (1 << cls.level_bits[level])
        return cb.COS[start:end], cb.SIN[start:end]

    @classmethod
    def quantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        n_blocks = blocks.shape[0]
        v, k = _prepare_groups(blocks.reshape(n_blocks, cls.groups, cls.group_size))
        codes = [_level1_codes(v[..., 0::2], v[..., 1::2], cls.level_bits[0], cls._bounds(0))]
        sq = _pair_sums_of_squares(v)
        for level in range(1, cls.levels):
            a, b = sq[..., 0::2], sq[..., 1::2]
            codes.append(_count_above(b, cls._bounds(level), a))
            sq = a + b
        r = _unscale(np.sqrt(sq[..., 0]), k)
        if cls.radius_format == "fp16":
            radius = np.minimum(r, _FP16_MAX).astype("<f2").view(np.uint8).reshape(n_blocks, -1)
        else:
            radius = _log8_encode(r)
        stream = np.concatenate([_codes_to_bits(c.reshape(n_blocks, -1), bits)
                                 for c, bits in zip(codes, cls.level_bits)], axis=1)
        return np.concatenate([radius, np.packbits(stream, axis=1, bitorder="little")], axis=1)

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        n_blocks = blocks.shape[0]
        head = np.ascontiguousarray(blocks[:, :cls._radius_bytes])
        if cls.radius_format == "fp16":
            r = head.view("<f2").astype(np.float32)
        else:
            r = cb.LOG8_VALUE[head]
        stream = np.unpackbits(blocks[:, cls._radius_bytes:], axis=1, bitorder="little")
        val = r[..., None]                                      # (blocks, groups, 1): the top of each tree
        for level in range(cls.levels - 1, -1, -1):
            nodes = cls.group_size >> (level + 1)
            bits = cls.level_bits[level]
            code = _bits_to_codes(stream, cls._layout["code_offset"][level], cls.groups * nodes, bits)
            cos, sin = cls._trig(level)
            code = code.reshape(n_blocks, cls.groups, nodes)
            children = np.empty((n_blocks, cls.groups, 2 * nodes), dtype=np.float32)
            children[..., 0::2] = val * cos[code]
            children[..., 1::2] = val * sin[code]
            val = children
        return val.reshape(n_blocks, BLOCK)


class PQ22(PolarTree, name="pq22"):
    description = "rate-optimised, 64-value groups"


class PQ25(PolarTree, name="pq25"):
    description = "rate-optimised, 64-value groups"


class PQ27(PolarTree, name="pq27"):
    description = "rate-optimised, 64-value groups"


class PQ32(PolarTree, name="pq32"):
    description = "rate-optimised, 64-value groups"


class PQ37(PolarTree, name="pq37"):
    description = "rate-optimised, 64-value groups"


class PQ38P(PolarTree, name="pq38p"):
    description = "the paper's configuration: groups of 16, bits 4/2/2/2, fp16 radius"


class PQ42(PolarTree, name="pq42"):
    description = "rate-optimised, 64-value groups"


class PQ46(PolarTree, name="pq46"):
    description = "rate-optimised, 64-value groups"


class PQK1(PolarQuant, name="pqk1"):
    """Key mode: hyperspherical angles at 1 bit each (so: sign bits) plus an 8-bit log norm.

    A high-compression mode: relative MSE about 0.43 on preconditioned data, far from a quality type."""

    kind = "key"
    description = "high-compression key mode: 1-bit hyperspherical angles, 8-bit norm"

    @classmethod
    def _configure(cls) -> None:
        spec = cb.KEY_TYPES[cls.name]
        cls.type_size = spec["type_size"]
        cls.group_size = BLOCK
        cls.level_bits = (1,) * (BLOCK - 2) + (2,)     # bits per hyperspherical angle, first angle first
        cls.radius_format = "log8"
        cls.expected_rel_mse = spec["expected_rel_mse"]

    @classmethod
    def quantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        v, k = _prepare_groups(blocks)
        sq = _pair_sums_of_squares(v)
        while sq.shape[-1] > 1:
            sq = sq[..., 0::2] + sq[..., 1::2]
        norm = _log8_encode(_unscale(np.sqrt(sq[..., 0]), k))
        negative = np.nan_to_num(blocks, nan=0.0, posinf=_FLT_MAX, neginf=-_FLT_MAX) < 0
        return np.concatenate([norm[:, None], np.packbits(negative, axis=1, bitorder="little")], axis=1)

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        r = cb.LOG8_VALUE[blocks[:, 0]]
        negative = np.unpackbits(blocks[:, 1:], axis=1, bitorder="little").astype(bool)
        return r[:, None] * np.where(negative, -cb.KEY_MAGNITUDE, cb.KEY_MAGNITUDE)


class PolarTrellis(PolarQuant):
    """A trellis-coded block (llama_polar.trellis): an fp16 scale and a circular stream of 64/V steps of k bits, each
    step's L-bit window a state whose V values come from a trained table."""

    kind = "trellis"
    shape: ClassVar[trellis.TrellisShape]
    _table: ClassVar[np.ndarray]
    description = "trellis-coded, 64-value blocks"

    @classmethod
    def _configure(cls) -> None:
        spec = cb.TRELLIS_TYPES[cls.name]
        cls.shape = trellis.TrellisShape(spec["L"], spec["k"], spec["V"])
        start = spec["table_offset"]
        planar = cb.TRELLIS_TABLE[start:start + cls.shape.states * cls.shape.V].reshape(cls.shape.V, -1)
        cls._table = np.ascontiguousarray(planar.T)            # (2^L, V): state s's values in row s
        cls.type_size = spec["type_size"]
        cls.group_size = BLOCK
        cls.level_bits = ()
        cls.radius_format = "fp16"                    # the scale, signed, in the radius's place
        cls._radius_bytes = 2
        cls.expected_rel_mse = spec["expected_rel_mse"]

    @classmethod
    def quantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        v, k = _prepare_groups(blocks)
        return trellis.encode(cls.shape, cls._table, v, k)

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        return trellis.decode(cls.shape, cls._table, blocks)


class PQT22(PolarTrellis, name="pqt22"):
    pass


class PQT27(PolarTrellis, name="pqt27"):
    pass


class PQT32(PolarTrellis, name="pqt32"):
    pass


def _registry(classes: list[type[PolarQuant]], type_list: tuple[tuple[str, str], ...]) -> dict[str, type[PolarQuant]]:
    """name -> class in the generated list's order; ImportError unless classes and list match one to one, kinds
    included."""
    by_name = {c.name: c for c in classes}
    problems = [f"{k} classes are named {n!r}" for n, k in Counter(c.name for c in classes).items() if k > 1]
    for name, kind in type_list:
        if name not in by_name:
            problems.append(f"generated type {name!r} ({kind}) has no NumPy class")
        elif by_name[name].kind != kind:
            problems.append(f"{by_name[name].__name__} is a {by_name[name].kind} type, the generated list says {kind}")
    listed = dict(type_list)
    problems += [f"{c.__name__} ({c.name!r}) is not in the generated type list" for c in classes if c.name not in listed]
    if problems:
        raise ImportError("llama_polar.quants and _codebooks.TYPE_LIST (scripts/gen_codebooks.py) disagree: "
                          + "; ".join(problems))
    for name, _ in type_list:
        cls = by_name[name]
        cls._configure()
        cls.bits_per_value = cls.type_size * 8 / cls.block_size
    return {name: by_name[name] for name, _ in type_list}


TYPES: dict[str, type[PolarQuant]] = _registry(_CLASSES, cb.TYPE_LIST)


def get_type(name: str) -> type[PolarQuant]:
    """The NumPy class of polar type `name`; UnknownTypeError (a ValueError) for any other name."""
    check_types([name], TYPES)
    return TYPES[name]
