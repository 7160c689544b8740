"""The trellis-coded block (the pqt types): its NumPy codec and the training of its tables.

A block of 64 values is an fp16 scale and a circular stream of 64/V steps of k bits (a bitshift trellis, QTIP's in
its plainest form). The state of step i is the L-bit window of the stream that ends with step i's k bits; the step
emits the V values table[state]. The encoder is a Viterbi search for the least squared error over the 2^L states,
run twice so that the stream closes on itself (tail-biting), and the scale keeps the block's norm; the decoder reads
any value with one window and one table lookup.

Everything here is float32, step for step as polar-codec.h's pq_trellis_* functions, so codes and decoded values
agree bit for bit with C and Metal (tests/test_parity.py). The functions take values already sanitized and scaled by
a power of two (quants.PolarTrellis does that), which leaves the unit-scale values and the search unchanged.

Bit layout (LSB-first): with N = (64/V) * k code bits, step i's k bits sit at bit N - (i+1)*k, so its window starts
there and runs up into the older steps' bits, wrapping from bit N to bit 0. State of step i = ((state of step i-1)
<< k | step i's bits) mod 2^L, and step 0 follows the last step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 64
_F32 = np.float32


@dataclass(frozen=True)
class TrellisShape:
    L: int      # state bits
    k: int      # bits per step
    V: int      # values per step

    def __post_init__(self):
        # a state's window lies inside two bytes (polar-codec.h reads it so), and V divides the block evenly
        assert 1 <= self.k < self.L <= 8 and self.V in (1, 2), self

    @property
    def states(self) -> int:
        return 1 << self.L

    @property
    def steps(self) -> int:
        return BLOCK // self.V

    @property
    def shared(self) -> int:
        """Windows that share their predecessors: a state's predecessors depend on its top L - k bits only."""
        return 1 << (self.L - self.k)

    @property
    def code_bits(self) -> int:
        return self.steps * self.k

    @property
    def type_size(self) -> int:
        return 2 + self.code_bits // 8


def unit_scale(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, ss): blocks (n, 64) divided by their RMS, and their sums of squares (summed in value order, float32)."""
    ss = np.zeros(v.shape[0], dtype=_F32)
    for i in range(BLOCK):
        ss = ss + v[:, i] * v[:, i]
    nonzero = ss > 0
    rms = np.sqrt(ss * _F32(1.0 / BLOCK))
    inv = np.where(nonzero, _F32(1.0) / np.where(nonzero, rms, _F32(1.0)), _F32(0.0))
    return v * inv[:, None], ss


def _emit(shape: TrellisShape, table: np.ndarray, u: np.ndarray, step: int) -> np.ndarray:
    """(n, 2^L): each state's squared error on step's V values."""
    d = u[:, step * shape.V, None] - table[None, :, 0]
    e = d * d
    for v in range(1, shape.V):
        d = u[:, step * shape.V + v, None] - table[None, :, v]
        e = e + d * d
    return e


def viterbi(shape: TrellisShape, table: np.ndarray, u: np.ndarray, overlap: np.ndarray | None = None) -> np.ndarray:
    """States (n, steps) of the least-squared-error path for unit-scale blocks u (n, 64), table (2^L, V) float32.

    overlap (n,): the path starts in a state whose top L - k bits are it and ends in one whose low L - k bits are it.
    Ties go to the lowest predecessor and the lowest end state."""
    n, nj = u.shape[0], shape.shared
    cost = _emit(shape, table, u, 0)
    if overlap is not None:
        start = (np.arange(shape.states)[None] >> shape.k) == overlap[:, None]
        cost = np.where(start, cost, _F32(np.inf))
    back = np.empty((shape.steps, n, nj), dtype=np.uint8)
    for i in range(1, shape.steps):
        c = cost.reshape(n, 1 << shape.k, nj)        # predecessor j + p * nj of every state with top bits j
        back[i] = np.argmin(c, axis=1)
        cost = np.repeat(np.min(c, axis=1), 1 << shape.k, axis=1) + _emit(shape, table, u, i)
    if overlap is None:
        s = np.argmin(cost, axis=1)
    else:
        ends = overlap[:, None] + np.arange(1 << shape.k)[None] * nj
        s = ends[np.arange(n), np.argmin(np.take_along_axis(cost, ends, axis=1), axis=1)]
    states = np.empty((n, shape.steps), dtype=np.int64)
    rows = np.arange(n)
    for i in range(shape.steps - 1, -1, -1):
        states[:, i] = s
        if i:
            s = (s >> shape.k) | (back[i, rows, s >> shape.k].astype(np.int64) << (shape.L - shape.k))
    return states


def encode_states(shape: TrellisShape, table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The tail-biting path of unit-scale blocks u: a free search of each block rotated by half (where its wrap lies
    mid-path, with values on both sides) gives the overlap bits, and a second search is held to them."""
    half = BLOCK // 2
    rotated = np.concatenate([u[:, half:], u[:, :half]], axis=1)
    last = viterbi(shape, table, rotated)[:, shape.steps - shape.steps // 2 - 1]
    return viterbi(shape, table, u, last & (shape.shared - 1))


def encode(shape: TrellisShape, table: np.ndarray, v: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Blocks (n, type_size) uint8 for values v (n, 64) that were scaled by 2^k (sanitized, amax * 2^k in [1, 4))."""
    u, ss = unit_scale(v)
    states = encode_states(shape, table, u)
    states[ss == 0] = 0                                   # an all-zero block: a zero scale and zero codes
    y = table[states].reshape(v.shape)
    xy = np.zeros(v.shape[0], dtype=_F32)
    yy = np.zeros(v.shape[0], dtype=_F32)
    xx = np.zeros(v.shape[0], dtype=_F32)
    for i in range(BLOCK):
        xy = xy + v[:, i] * y[:, i]
        yy = yy + y[:, i] * y[:, i]
        xx = xx + v[:, i] * v[:, i]
    mag = np.where((yy > 0) & (ss > 0), np.sqrt(xx / np.where(yy > 0, yy, _F32(1.0))), _F32(0.0))
    scale = np.where(xy < 0, -mag, mag)
    scale = scale * np.ldexp(_F32(1.0), -k)
    h = np.minimum(np.abs(scale), _F32(65504.0)).astype("<f2").view(np.uint16) | np.where(scale < 0, 0x8000, 0)
    head = h.astype("<u2").view(np.uint8).reshape(-1, 2)
    return np.concatenate([head, pack(shape, states)], axis=1)


def pack(shape: TrellisShape, states: np.ndarray) -> np.ndarray:
    """The code bytes of paths (n, steps): step i's low k bits at bit N - (i+1)*k."""
    low = states[:, ::-1] & ((1 << shape.k) - 1)           # the last step first, at bit 0
    bits = ((low[..., None] >> np.arange(shape.k)) & 1).astype(np.uint8).reshape(states.shape[0], -1)
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_states(shape: TrellisShape, codes: np.ndarray) -> np.ndarray:
    """States (n, steps) from code bytes: each step's L-bit window, read circularly."""
    bits = np.unpackbits(codes, axis=1, bitorder="little").astype(np.int64)
    n_bits = shape.code_bits
    start = n_bits - (np.arange(shape.steps) + 1) * shape.k
    at = (start[:, None] + np.arange(shape.L)[None]) % n_bits             # (steps, L)
    return (bits[:, at] << np.arange(shape.L)).sum(axis=2)


def decode(shape: TrellisShape, table: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """(n, type_size) uint8 -> (n, 64) float32: table values times the fp16 scale (raw bytes decode as written)."""
    scale = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(_F32)
    y = table[unpack_states(shape, blocks[:, 2:])].reshape(blocks.shape[0], BLOCK)
    return y * scale


def train(shape: TrellisShape, seed: int, blocks: int, iters: int) -> np.ndarray:
    """A (2^L, V) float32 table trained by Lloyd iterations on Gaussian blocks: start from Gaussian values, then
    each entry becomes the mean of the unit-scale values its state was chosen for (an unused state keeps its own).
    Deterministic: the samples come from a seeded PCG64, the search is exact float32, the means sum in order."""
    rng = np.random.default_rng(seed)
    u, _ = unit_scale(rng.standard_normal((blocks, BLOCK)).astype(_F32))
    table = rng.standard_normal((shape.states, shape.V)).astype(_F32)
    for _ in range(iters):
        states = encode_states(shape, table, u).ravel()
        count = np.bincount(states, minlength=shape.states)
        values = u.reshape(-1, shape.V).astype(np.float64)
        sums = np.stack([np.bincount(states, weights=values[:, v], minlength=shape.states)
                         for v in range(shape.V)], axis=1)
        table = np.where(count[:, None] > 0, sums / np.maximum(count, 1)[:, None], table).astype(_F32)
    return table


def gaussian_rel_mse(shape: TrellisShape, table: np.ndarray, seed: int, blocks: int) -> float:
    """Relative MSE of the codec on Gaussian blocks (which need no power-of-two scaling: k = 0)."""
    x = np.random.default_rng(seed).standard_normal((blocks, BLOCK)).astype(_F32)
    y = decode(shape, table, encode(shape, table, x, np.zeros(blocks, dtype=np.int32)))
    return float(np.sum((x.astype(np.float64) - y) ** 2) / np.sum(x.astype(np.float64) ** 2))
