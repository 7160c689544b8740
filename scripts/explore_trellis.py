#!/usr/bin/env python3
"""Exploration (issue 17): a trellis-coded block codec against the polar types at the same bits, in NumPy.

The polar types are at the limit of their decoder: the encoder that is optimal for it (`--encoder`: each node's
angle chosen for its children's decoded directions, the radius a least-squares scale) lowers their relative MSE by
only 0.2-4%. Below 3 bits they are far from the rate-distortion bound (pq27: 0.071 at 2.75 bits/value, where a
Gaussian source allows 0.022), so the next gain has to come from another decoder. This one is the bitshift trellis
of QTIP (Tseng et al., 2024), in its plainest form:

- a block of 64 values, scaled by its RMS; an fp16 scale (the least-squares one after the search) and a circular
  bitstream of 64/V steps of k bits: the state of a step is the last L bits of the stream up to it, and a step emits
  the V values table[state] (a table of 2^L x V values, trained by Lloyd iterations on Gaussian blocks);
- the decoder reads each value with a shift, a mask and a table lookup, the same for every value, so its cost does
  not grow with the depth of a tree;
- the encoder is a Viterbi search over the 2^L states (2^k branches each), run twice for the circular stream
  (tail-biting: the second run starts and ends on the overlap bits that a first, free run chose for the block
  rotated by half), so a block is exactly 2 bytes + 64k/V bits: (8, 2, 1) is pq22's 18 bytes, (8, 5, 2) pq27's
  22, (8, 3, 1) pq32's 26, (8, 7, 2) pq37's 30. scripts/explore_trellis_cost.c times that encoder and a lane
  decoder in C.

  explore_trellis.py --gaussian            relative MSE on Gaussian blocks, trellis against the polar types
  explore_trellis.py --encoder             the polar decoder's optimal encoder against the shipped one
  explore_trellis.py --kld --ctx 1024      mean KLD in the simulator with the polar types replaced by the trellis of
                                           the same size (SmolLM2 or --model gemma3)

This is a prototype to decide whether a codec is worth building; nothing in the product imports it.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from llama_polar import quants

BLOCK = 64
CHUNK = 2048                       # blocks per Viterbi batch: (CHUNK, 2^L, 2^k) float32 fits in memory


@dataclass
class Trellis:
    L: int                          # state bits
    k: int                          # bits shifted in per step
    V: int = 1                      # values per step
    table: np.ndarray = field(default=None, repr=False)

    @property
    def steps(self) -> int:
        return BLOCK // self.V

    @property
    def overlap_mask(self) -> int:
        """The L - k bits a state shares with the next one (its low bits, the next one's high bits)."""
        return (1 << (self.L - self.k)) - 1

    @property
    def type_size(self) -> int:
        return 2 + self.steps * self.k // 8

    def preds(self) -> np.ndarray:
        """(2^L, 2^k): the states that step into each state, the lowest shifted-out bits first."""
        ns = np.arange(1 << self.L)
        return (ns[:, None] >> self.k) + (np.arange(1 << self.k)[None, :] << (self.L - self.k))

    def viterbi(self, x: np.ndarray, overlap: np.ndarray | None = None) -> np.ndarray:
        """States (N, steps) of the least-squared-error path for unit-scale blocks x (N, 64). With overlap (N,), the
        path starts in a state whose high L-k bits are it and ends in one whose low L-k bits are it (tail-biting)."""
        n, n_states = x.shape[0], 1 << self.L
        xs = x.reshape(n, self.steps, self.V).astype(np.float32)
        tab = self.table.astype(np.float32)
        preds = self.preds()

        def emit(i):
            d = xs[:, i, None, :] - tab[None]
            return np.einsum("nsv,nsv->ns", d, d)

        cost = emit(0)
        if overlap is not None:
            cost = np.where((np.arange(n_states)[None] >> self.k) == overlap[:, None], cost, np.inf)
        back = np.empty((self.steps, n, n_states), dtype=np.uint8)
        for i in range(1, self.steps):
            c = cost[:, preds]
            p = np.argmin(c, axis=2)
            back[i] = p
            cost = np.take_along_axis(c, p[..., None], 2)[..., 0] + emit(i)
        if overlap is not None:
            low = np.arange(n_states)[None] & self.overlap_mask
            cost = np.where(low == overlap[:, None], cost, np.inf)
        s = np.argmin(cost, axis=1)
        states = np.empty((n, self.steps), dtype=np.int64)
        rows = np.arange(n)
        for i in range(self.steps - 1, -1, -1):
            states[:, i] = s
            if i:
                s = preds[s, back[i, rows, s]]
        return states

    def encode_states(self, x: np.ndarray, tail_biting: bool = True) -> np.ndarray:
        out = []
        for a in range(0, x.shape[0], CHUNK):
            xc = x[a:a + CHUNK]
            if not tail_biting:
                out.append(self.viterbi(xc))
                continue
            # The wrap's overlap bits from a free search of the block rotated by half, where the last step has
            # values on both sides (QTIP's way; 0.0809 against 0.0803 for the best of all 64 overlaps at (8, 2, 1),
            # where the last step of a free search of the block as it is gives 0.0911)
            half = self.steps // 2
            rotated = np.roll(xc.reshape(len(xc), self.steps, self.V), -half, axis=1).reshape(len(xc), -1)
            last = self.viterbi(rotated)[:, self.steps - half - 1]
            out.append(self.viterbi(xc, last & self.overlap_mask))
        return np.concatenate(out)

    def roundtrip(self, x: np.ndarray, tail_biting: bool = True) -> np.ndarray:
        """What the cache returns for blocks x (N, 64): the path's values times the fp16 least-squares scale."""
        x = np.asarray(x, dtype=np.float64)
        rms = np.sqrt(np.mean(x * x, axis=1, keepdims=True))
        unit = x / np.where(rms > 0, rms, 1.0)
        y = self.table[self.encode_states(unit, tail_biting)].reshape(x.shape)
        scale = np.sum(x * y, axis=1, keepdims=True) / np.maximum(np.sum(y * y, axis=1, keepdims=True), 1e-30)
        return scale.astype(np.float16).astype(np.float64) * y


@lru_cache(maxsize=None)
def trained(L: int, k: int, V: int, blocks: int = 4096, iters: int = 8) -> Trellis:
    """A trellis whose table went through Lloyd iterations on Gaussian blocks (fixed seed): each entry becomes the
    mean of the values its state emitted."""
    rng = np.random.default_rng(0)
    t = Trellis(L, k, V, rng.standard_normal((1 << L, V)))
    x = rng.standard_normal((blocks, BLOCK))
    x /= np.sqrt(np.mean(x * x, axis=1, keepdims=True))
    for _ in range(iters):
        st = t.encode_states(x, tail_biting=False).ravel()
        sums = np.zeros_like(t.table)
        np.add.at(sums, st, x.reshape(-1, V))
        count = np.bincount(st, minlength=1 << L)[:, None]
        t.table = np.where(count > 0, sums / np.maximum(count, 1), t.table)
    return t


# Trellises of each polar type's size (bytes per block the same), the one --kld uses first; L = 6 is the cheaper
# encoder (64 states, 2.4x fewer operations than 256 in scripts/explore_trellis_cost.c).
SAME_SIZE = {"pq22": [(8, 2, 1), (6, 2, 1)], "pq27": [(8, 5, 2), (6, 5, 2)], "pq32": [(8, 3, 1), (6, 3, 1)],
             "pq37": [(8, 7, 2)]}


def rel_mse(x, y) -> float:
    return float(np.sum((x - y) ** 2) / np.sum(x * x))


def gaussian_table(rows: int) -> None:
    x = np.random.default_rng(1).standard_normal((rows, BLOCK))
    print("| polar type | bits/value | rel. MSE | trellis of the same size (L, k, V) | rel. MSE | ratio |")
    print("|---|---:|---:|---|---:|---:|")
    for name, shapes in SAME_SIZE.items():
        pq = quants.get_type(name)
        p = rel_mse(x, pq.dequantize(pq.quantize(x.astype(np.float32))))
        for lkv in shapes:
            t = trained(*lkv)
            assert t.type_size == pq.type_size, (name, t.type_size, pq.type_size)
            r = rel_mse(x, t.roundtrip(x))
            print(f"| {name} | {pq.type_size * 8 / BLOCK:.3f} | {p:.4f} | {lkv} | {r:.4f} | {r / p:.2f}x |", flush=True)


def optimal_polar_encode(cls, x: np.ndarray) -> np.ndarray:
    """The polar decoder's best input for x (float64 prototype): each pair's angle the nearest, each node above
    the nearest to the angle of its children's projections on their decoded directions, and the group's radius the
    projection of x on its decoded direction (least squares)."""
    n = x.shape[0]
    v = x.reshape(n, cls.groups, cls.group_size).astype(np.float64)
    a, b = v[..., 0::2], v[..., 1::2]
    ang = np.mod(np.arctan2(b, a), 2 * np.pi)
    codes, proj = [], None
    for level in range(cls.levels):
        cos, sin = (t.astype(np.float64) for t in cls._trig(level))
        centroids = np.mod(np.arctan2(sin, cos), 2 * np.pi)
        if level:
            a, b = proj[..., 0::2], proj[..., 1::2]
            ang = np.arctan2(b, a)
        gap = np.abs(np.angle(np.exp(1j * (ang[..., None] - centroids))))
        c = np.argmin(gap, axis=-1)
        codes.append(c)
        proj = a * cos[c] + b * sin[c]
    val = proj[..., :1].astype(np.float16).astype(np.float64)        # the fp16 radius
    for level in range(cls.levels - 1, -1, -1):
        cos, sin = cls._trig(level)
        children = np.empty(val.shape[:-1] + (2 * val.shape[-1],))
        children[..., 0::2] = val * cos[codes[level]]
        children[..., 1::2] = val * sin[codes[level]]
        val = children
    return val.reshape(n, BLOCK)


def encoder_table(rows: int) -> None:
    x = np.random.default_rng(1).standard_normal((rows, BLOCK)).astype(np.float32)
    print("| polar type | rel. MSE, shipped encoder | optimal encoder | ratio |")
    print("|---|---:|---:|---:|")
    for name in ("pq22", "pq25", "pq27", "pq32", "pq37", "pq42", "pq46"):
        cls = quants.get_type(name)
        p = rel_mse(x, cls.dequantize(cls.quantize(x)))
        o = rel_mse(x, optimal_polar_encode(cls, x))
        print(f"| {name} | {p:.5f} | {o:.5f} | {o / p:.3f}x |")


def kld(model_name: str, ctx: int, chunks: int, configs: list[str]) -> None:
    """Mean KLD of each configuration in the simulator as built and with pq22, pq27, pq32 and pq37 replaced by the
    trellis of the same size."""
    from llama_polar import models, simulate, texts

    native = simulate.polar_codec()

    class TrellisCodec:              # the simulator's codec interface: quantize returns what dequantize takes
        def quantize(self, x, name):
            if name not in SAME_SIZE:
                return native.dequantize(native.quantize(x, name), name)
            rows = np.asarray(x, dtype=np.float32).reshape(-1, BLOCK)
            return trained(*SAME_SIZE[name][0]).roundtrip(rows).astype(np.float32).reshape(np.shape(x))

        def dequantize(self, q, name):
            return q

    model = simulate.Model(models.resolve(model_name))
    data = list(simulate.text_chunks(model, texts.text_path(), chunks, ctx))
    built = simulate.evaluate(model, data, configs)
    simulate.polar_codec = lambda: TrellisCodec()
    start = time.perf_counter()
    trellis = simulate.evaluate(model, data, configs)
    print(f"({model_name}, {chunks} x {ctx} tokens; the trellis run took {time.perf_counter() - start:.0f} s)")
    print("| configuration | bits/value | KLD as built | vs q4_0 | trellis of the same sizes | vs q4_0 | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    q = built["q4_0"].kld if "q4_0" in built else float("nan")
    for c in configs:
        b, t = built[c].kld, trellis[c].kld
        bits = simulate.CacheSim.of(c).config.bits(ctx) if simulate.CacheSim.of(c).config else float("nan")
        print(f"| {c} | {bits:.3f} | {b:.4f} | {b / q:.2f}x | {t:.4f} | {t / q:.2f}x | {t / b:.2f}x |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gaussian", action="store_true")
    ap.add_argument("--encoder", action="store_true")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--kld", action="store_true")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--configs", default="q4_0,pq27/pq22,pq32/pq22,pq32/pq27")
    args = ap.parse_args()
    if args.gaussian:
        gaussian_table(args.rows)
    if args.encoder:
        encoder_table(args.rows)
    if args.kld:
        kld(args.model, args.ctx, args.chunks, args.configs.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
