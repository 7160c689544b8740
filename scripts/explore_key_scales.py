#!/usr/bin/env python3
"""Exploration: where queries and keys carry their energy, per RoPE pair, and what key scales (llama_polar.key_scales)
do to one layer's attention through a quantized K cache, in the simulator (float32 NumPy, llama_polar.simulate).

Per layer of one chunk of the text (an f16-cache forward pass):
- "aligned": (sum_i sqrt(Eq_i Ek_i))^2 / (sum Eq_i)(sum Ek_i) over the RoPE pairs i, keys centered as the cache
  centers them. 1 when the two energies are proportional (scales change nothing); the smaller, the more an error of
  fixed relative size in the keys costs in q.k, and the more scales can remove (for an error of the same size in
  every direction, the ratio of E(q.e)^2 with scales to without is this figure);
- the relative error of the layer's attention output, K through the cache type and V exact, with the model's keys and
  with keys scaled by the scales of that chunk (queries divided by them).

  explore_key_scales.py [--model gemma3] [--ctx 2048] [--types pq32,pq22] [--layers 5,11,17,0,4]

This measures; nothing in the product imports it.
"""
from __future__ import annotations

import argparse

import numpy as np

from llama_polar import key_scales, models, simulate, texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--types", default="pq32,pq22")
    ap.add_argument("--layers", default=None, help="layers to show (default: all)")
    args = ap.parse_args()

    model = simulate.Model(models.from_argument(ap, args.model))
    hp = model.hp
    chunk = simulate.text_chunks(model, texts.get_text(), n_chunks=1, n_ctx=args.ctx)[0]
    seen = {}
    qkv = model.qkv

    def record(il, h, pos):
        seen[il] = qkv(il, h, pos)
        return seen[il]

    model.qkv = record
    model.forward(chunk, simulate.CacheSim(), out_from=len(chunk) - 1)
    model.qkv = qkv
    later = slice(len(chunk) // 2, None)
    layers = range(hp.n_layer) if args.layers is None else map(int, args.layers.split(","))
    for il in layers:
        q, k, v = seen[il]
        eq = key_scales.pair_energy(q, hp.rope_neox)
        ek = key_scales.pair_energy(key_scales.centered_keys(k, hp, il), hp.rope_neox)
        aligned = key_scales.alignment(eq, ek)
        s = key_scales.scales_of(eq, ek, hp.rope_neox)
        exact = model.attention(il, q, k, v, simulate.CacheSim(), None)[later]
        line = [f"layer {il:2d} (window {hp.window[il] or 'none'}): aligned {aligned:.3f}"]
        for t in args.types.split(","):
            cache = simulate.CacheSim.of(f"{t}/f16")
            errs = []
            for qq, kk in ((q, k), (q / s, k * s)):
                out = model.attention(il, qq.astype(np.float32), kk.astype(np.float32), v, cache, None)[later]
                errs.append(((out - exact) ** 2).sum() / (exact ** 2).sum())
            line.append(f"{t} {errs[0]:.4f} -> {errs[1]:.4f}")
        print("  ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
