#!/usr/bin/env python3
"""Exploration (issue 17, item 4): radius-adaptive bits inside a polar block, in float64 NumPy.

A fixed polar type spends bits[l] bits on every angle of level l. Here each level keeps its total (nodes x bits[l])
but spends it across its nodes by their decoded radii, top level first, so the decoder can repeat the allocation:
greedily, one bit at a time, to the node whose expected squared error 2 r^2 (1 - E[cos(angle error)]) drops most
(ties to the lower index). The angle codebooks are the generated Lloyd-Max ones (llama_polar.codebooks). Cheaper
allocations a decoder could afford: a fixed profile of bits per rank of the radii ("rank"), the same inside groups of
N consecutive nodes that share N x bits ("rankN"), greedy inside such groups ("groupN"), and two siblings splitting
2 x bits by the ratio of their radii, which their parent's angle alone gives ("siblings").

  explore_adaptive_bits.py --gaussian            relative MSE, fixed vs adaptive, for each family type's bits
  explore_adaptive_bits.py --by-level rank8      the same for one allocation at some levels only
  explore_adaptive_bits.py --kld --ctx 2048 --modes greedy,rank8
                                                 mean KLD in the simulator (SmolLM2, Paradise Lost), the polar
                                                 types replaced by their adaptive versions

This is a prototype to decide whether the codec is worth building; nothing in the product imports it.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from functools import lru_cache

import numpy as np

from llama_polar import _codebooks as gen
from llama_polar import codebooks as cbk

BLOCK = 64
LEVELS = 6
MAX_BITS = {1: cbk.MAX_BITS}                        # level 1 up to 8 bits, deeper levels up to 6
LEVEL1_MIN = 1


@lru_cache(maxsize=None)
def books() -> dict:
    """(level, bits) -> (centroids, mean cos of the angle error), float64; level 1 from 1 bit (half circles)."""
    out = {}
    for b in range(LEVEL1_MIN, cbk.MAX_BITS + 1):
        width = 2 * math.pi / 2**b
        half = width / 2
        out[1, b] = ((np.arange(2**b) + 0.5) * width, math.sin(half) / half)
    out[1, 0] = (np.array([0.0]), 0.0)              # no bits: the pair decodes to zero
    for level in range(2, LEVELS + 1):
        dens = cbk.LevelDensity(level)
        for b in range(0, cbk.MAX_DEEP_BITS + 1):
            c = dens.codebook(b)
            out[level, b] = (c.centroids, c.mean_cos_error)
    return out


def max_bits(level: int) -> int:
    return cbk.MAX_BITS if level == 1 else cbk.MAX_DEEP_BITS


def allocate(radii: np.ndarray, level: int, total: int) -> np.ndarray:
    """(n, nodes) decoded radii -> (n, nodes) bits summing to total per row: greedy by the drop in expected error."""
    bk = books()
    mc = np.array([bk[level, b][1] for b in range(max_bits(level) + 1)] + [np.nan])
    r2 = radii * radii
    bits = np.zeros(radii.shape, dtype=np.int64)
    rows = np.arange(radii.shape[0])
    for _ in range(total):
        gain = np.where(bits < max_bits(level), r2 * (mc[np.minimum(bits + 1, len(mc) - 1)] - mc[bits]), -np.inf)
        bits[rows, np.argmax(gain, axis=1)] += 1
    return bits


def expand(val: np.ndarray, ang: np.ndarray) -> np.ndarray:
    """The children of every node: (r cos a, r sin a), side by side."""
    children = np.empty((val.shape[0], 2 * val.shape[1]))
    children[:, 0::2] = val * np.cos(ang)
    children[:, 1::2] = val * np.sin(ang)
    return children


@lru_cache(maxsize=None)
def rank_profile(level_bits: tuple[int, ...], group: int = BLOCK, rows: int = 4096) -> dict[int, np.ndarray]:
    """Per level, the bits of each rank (largest decoded radius first) inside groups of `group` consecutive nodes:
    the greedy allocation's mean bits per rank on Gaussian blocks, rounded so that the group keeps its total. A
    decoder then needs only the ranks of the radii within each group."""
    x = np.random.default_rng(7).standard_normal((rows, BLOCK))
    top, angles = polar_tree(x)
    val = top.astype(np.float16).astype(np.float64)[:, None]
    profile = {}
    for level in range(LEVELS, 0, -1):
        nodes = min(BLOCK >> level, group)
        total = nodes * level_bits[level - 1]
        grouped = val.reshape(-1, nodes)
        bits = allocate(grouped, level, total)
        order = np.argsort(-grouped, axis=1, kind="stable")
        mean = np.take_along_axis(bits, order, axis=1).mean(axis=0)
        prof = np.floor(mean).astype(np.int64)
        for j in np.argsort(-(mean - prof), kind="stable")[:total - prof.sum()]:
            prof[j] += 1
        profile[level] = prof
        val = expand(val, quantize_angle(angles[level], level, bits.reshape(val.shape)))
    return profile


def ranked(radii: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Bits of each node from its rank among the block's radii (ties to the lower index)."""
    order = np.argsort(-radii, axis=1, kind="stable")
    bits = np.empty(radii.shape, dtype=np.int64)
    np.put_along_axis(bits, order, np.broadcast_to(profile, radii.shape), axis=1)
    return bits


def siblings(radii: np.ndarray, level: int, bits: int) -> np.ndarray:
    """Bits of each node when two siblings share 2 * bits: b + k and b - k with k = round(log2(r1 / r2) / 2), the
    high-rate optimum for their radii. Every pair's field keeps its place in the stream; only its split moves."""
    if radii.shape[1] == 1:
        return np.full(radii.shape, bits)
    lo = LEVEL1_MIN if level == 1 else 0
    room = min(bits - lo, max_bits(level) - bits)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log2(radii[:, 0::2] / radii[:, 1::2])
    k = np.clip(np.round(np.nan_to_num(ratio, nan=0.0, posinf=room, neginf=-room) / 2), -room, room).astype(np.int64)
    out = np.empty(radii.shape, dtype=np.int64)
    out[:, 0::2] = bits + k
    out[:, 1::2] = bits - k
    return out


def quantize_angle(angle: np.ndarray, level: int, bits: np.ndarray) -> np.ndarray:
    """Nearest centroid (circular at level 1) of each angle at its own bit count; returns the decoded angles."""
    bk = books()
    out = np.zeros_like(angle)
    for b in np.unique(bits):
        sel = bits == b
        cent = bk[level, int(b)][0]
        a = angle[sel][:, None]
        d = np.abs(a - cent[None, :])
        if level == 1:
            d = np.minimum(d, 2 * math.pi - d)
        out[sel] = cent[np.argmin(d, axis=1)]
    return out


def polar_tree(x: np.ndarray):
    """(n, 64) -> top radius (n,) and per level (1..6) the true angles (n, nodes)."""
    angles = {1: np.mod(np.arctan2(x[:, 1::2], x[:, 0::2]), 2 * math.pi)}
    r = np.hypot(x[:, 0::2], x[:, 1::2])
    for level in range(2, LEVELS + 1):
        a, b = r[:, 0::2], r[:, 1::2]
        angles[level] = np.arctan2(b, a)
        r = np.hypot(a, b)
    return r[:, 0], angles


def roundtrip(x: np.ndarray, level_bits: tuple[int, ...], adaptive: str | bool,
              levels: frozenset[int] | None = None) -> np.ndarray:
    """Encode and decode (n, 64) values with a type's bits per level, fixed (False), radius-adaptive ("greedy") or
    by rank ("rank": rank_profile) at the given levels (1 = pairs), fixed at the others; fp16 top radius."""
    top, angles = polar_tree(x.astype(np.float64))
    val = top.astype(np.float16).astype(np.float64)[:, None]
    rank_group = None
    if isinstance(adaptive, str) and adaptive.startswith("rank"):
        rank_group = int(adaptive[4:] or BLOCK)
        profile = rank_profile(tuple(level_bits), rank_group)
    for level in range(LEVELS, 0, -1):
        nodes = BLOCK >> level
        total = nodes * level_bits[level - 1]
        if levels is not None and level not in levels:
            bits = np.full(val.shape, level_bits[level - 1])
        elif isinstance(adaptive, str) and adaptive.startswith("group"):
            size = min(int(adaptive[5:]), nodes)
            bits = allocate(val.reshape(-1, size), level, size * level_bits[level - 1]).reshape(val.shape)
        elif adaptive == "siblings":
            bits = siblings(val, level, level_bits[level - 1])
        elif rank_group:
            size = min(rank_group, nodes)
            bits = ranked(val.reshape(-1, size), profile[level]).reshape(val.shape)
        elif adaptive:
            bits = allocate(val, level, total)
        else:
            bits = np.full(val.shape, level_bits[level - 1])
        val = expand(val, quantize_angle(angles[level], level, bits))
    return val


def rel_mse(x, y) -> float:
    return float(np.sum((x - y) ** 2) / np.sum(x * x))


ALLOCATIONS = ("greedy", "rank", "group8", "rank8", "rank4", "siblings")
LEVEL_SETS = {"all": range(1, 7), "1": (1,), "1-2": (1, 2), "2-6": range(2, 7), "3-6": range(3, 7)}


def ratio_rows(n: int, variants: list[tuple[str, frozenset[int] | None]]):
    """Per single-group family type on n Gaussian blocks: (name, spec, bits per level, the fixed allocation's
    relative MSE, each (allocation, levels) variant's ratio to it)."""
    x = np.random.default_rng(0).standard_normal((n, BLOCK))
    for name, spec in gen.TREE_TYPES.items():
        if spec["groups"] != 1:
            continue
        lb = tuple(spec["level_bits"])
        f = rel_mse(x, roundtrip(x, lb, False))
        yield name, spec, lb, f, [rel_mse(x, roundtrip(x, lb, mode, levels)) / f for mode, levels in variants]


def gaussian_table(n: int) -> None:
    """Relative MSE of the fixed allocation and each adaptive one's ratio to it."""
    print("| type | bits/value | bits per level | rel. MSE fixed | " + " | ".join(ALLOCATIONS) + " |")
    print("|---|---:|---|---:|" + "---:|" * len(ALLOCATIONS))
    for name, spec, lb, f, ratios in ratio_rows(n, [(a, None) for a in ALLOCATIONS]):
        cells = " | ".join(f"{r:.2f}x" for r in ratios)
        print(f"| {name} | {spec['type_size'] * 8 / BLOCK:.3f} | {'/'.join(map(str, lb))} | {f:.5f} | {cells} |")


def level_table(n: int, mode: str) -> None:
    """Which levels an allocation's gain comes from: its ratio to the fixed one when only some levels adapt."""
    print(f"| type | {mode} at levels " + " | ".join(LEVEL_SETS) + " |")
    print("|---|" + "---:|" * len(LEVEL_SETS))
    for name, _, _, _, ratios in ratio_rows(n, [(mode, frozenset(s)) for s in LEVEL_SETS.values()]):
        print(f"| {name} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")


def kld(ctx: int, chunks: int, configs: list[str], modes: list[str]) -> None:
    """Mean KLD of each configuration in the simulator, with the polar types as built and then with each allocation
    mode (greedy, rankN, groupN, siblings)."""
    from llama_polar import models, simulate, texts

    class AdaptiveCodec:                 # the simulator's codec interface: quantize returns what dequantize takes
        def __init__(self, mode):
            self.mode = mode

        def quantize(self, x, name):
            return roundtrip(np.asarray(x, dtype=np.float32).reshape(-1, BLOCK),
                             tuple(gen.TREE_TYPES[name]["level_bits"]), self.mode).astype(np.float32).reshape(x.shape)

        def dequantize(self, q, name):
            return q

    model = simulate.Model(models.model_path())
    data = list(simulate.text_chunks(model, texts.text_path(), chunks, ctx))
    built = simulate.evaluate(model, data, configs)
    adapted = {}
    for mode in modes:
        simulate.polar_codec = lambda mode=mode: AdaptiveCodec(mode)
        adapted[mode] = simulate.evaluate(model, data, configs)
    print(f"| configuration ({chunks} x {ctx} tokens, simulator) | KLD as built | "
          + " | ".join(f"{m} | ratio" for m in modes) + " |")
    print("|---|---:|" + "---:|---:|" * len(modes))
    for c in configs:
        b = built[c].kld
        cells = " | ".join(f"{adapted[m][c].kld:.4f} | {adapted[m][c].kld / b:.2f}x" for m in modes)
        print(f"| {c} | {b:.4f} | {cells} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gaussian", action="store_true")
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--by-level", metavar="MODE", help="relative MSE of one allocation adapting only some levels")
    ap.add_argument("--kld", action="store_true")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--configs", default="q4_0,pq46,pq42/pq32,pq37/pq27")
    ap.add_argument("--modes", default="greedy", help="allocations for --kld, comma-separated: greedy, rankN, "
                    "groupN, siblings")
    args = ap.parse_args()
    for mode in args.modes.split(",") + ([args.by_level] if args.by_level else []):
        if not re.fullmatch(r"greedy|rank\d*|group\d+|siblings", mode):
            ap.error(f"unknown allocation '{mode}': greedy, rank, rankN, groupN or siblings")
    if args.gaussian:
        gaussian_table(args.rows)
    if args.by_level:
        level_table(args.rows, args.by_level)
    if args.kld:
        kld(args.ctx, args.chunks, args.configs.split(","), args.modes.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
