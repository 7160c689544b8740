"""Check the ggml_polar C library against the NumPy reference, and report each type's quality.

  llama-polar validate                        random K-like vectors (outlier channels), head size 128
  llama-polar validate --random gaussian      i.i.d. Gaussian vectors: the setting of the closed form
  llama-polar validate --npy keys.npy         your own K/V vectors: an array (..., head_size), head_size % 64 == 0

Vectors are preconditioned with the Hadamard transform llama.cpp applies to quantized K/V caches (--precondition
none to skip it). Per type it prints: the share of blocks whose codes are identical in C and NumPy, the share of
decoded values identical bit for bit, relative MSE (and the closed form for preconditioned data), mean cosine
similarity, and the relative RMS error of inner products with random queries. q8_0 and q4_0 (ggml's reference
codecs, through gguf-py's gguf.quants) are listed for comparison. Exits 1 if C and NumPy disagree anywhere.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llama_polar import validate
from llama_polar.type_names import POLAR_TYPES, parse_types


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npy", type=Path, help="array of K or V vectors, last axis = head size (multiple of 64)")
    ap.add_argument("--types", default=",".join(POLAR_TYPES), help="comma-separated polar types")
    ap.add_argument("--random", choices=["k-like", "gaussian"], default="k-like",
                    help="random data without --npy (default %(default)s)")
    ap.add_argument("--rows", type=int, default=8192, help="random vectors to generate (default %(default)s)")
    ap.add_argument("--dim", type=int, default=128, help="head size of random vectors (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precondition", choices=["hadamard", "none"], default="hadamard")
    ap.add_argument("--queries", type=int, default=64, help="random queries for the inner-product error")
    args = ap.parse_args(argv)

    try:
        names = parse_types(args.types)
    except ValueError as e:
        ap.error(str(e))
    rng = np.random.default_rng(args.seed)
    if args.npy:
        try:
            data = np.load(args.npy)
        except (OSError, ValueError) as e:
            ap.error(f"cannot read {args.npy}: {e}")
        if data.dtype.kind != "f" or data.ndim < 1 or data.shape[-1] % 64:
            ap.error(f"{args.npy}: need a float array whose last axis is a multiple of 64, got {data.dtype} "
                     f"{data.shape}")
        x = data.reshape(-1, data.shape[-1]).astype(np.float32)
        bad = int(np.sum(~np.isfinite(x)))
        source = f"{args.npy}: {x.shape[0]} vectors of {x.shape[1]}" + (f", {bad} non-finite values" if bad else "")
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0) if bad else x
    else:
        if args.dim % 64 or args.dim <= 0 or args.rows <= 0:
            ap.error("--dim must be a positive multiple of 64 and --rows positive")
        if args.random == "gaussian":
            x = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
            source = f"{args.rows} random Gaussian vectors of {args.dim}"
        else:
            x = validate.k_like(args.rows, args.dim, rng)
            source = f"{args.rows} random K-like vectors of {args.dim} (outlier channels)"
    if args.precondition == "hadamard":
        x = validate.precondition(x)
        source += ", Hadamard-preconditioned"
    queries = rng.standard_normal((args.queries, x.shape[1]))

    print(source)
    print(f"{'type':7s} {'bits/value':>10s} {'codes C=NumPy':>14s} {'values C=NumPy':>15s} {'rel.MSE':>9s} "
          f"{'(closed form)':>13s} {'cos.sim':>8s} {'IP error':>9s}")
    rows = [validate.compare(x, name, queries) for name in tqdm(names, desc="C against NumPy", unit="type",
                                                                 leave=False)]
    for r in rows:
        print(f"{r.name:7s} {r.bits_per_value:10.3f} {r.codes_equal:14.2%} {r.values_equal:15.2%} {r.rel_mse:9.5f} "
              f"{r.closed_form:13.5f} {r.cosine:8.5f} {r.ip_error:9.5f}")
    for name in ("q8_0", "q4_0"):
        r = validate.upstream(x, name, queries)
        print(f"{r.name:7s} {r.bits_per_value:10.3f} {'':>14s} {'':>15s} {r.rel_mse:9.5f} {'':>13s} {r.cosine:8.5f} "
              f"{r.ip_error:9.5f}")
    if not all(r.agrees for r in rows):
        print("FAIL: the C library and the NumPy reference disagree", file=sys.stderr)
        return 1
    print("C and NumPy agree bit for bit on every type")
    return 0
