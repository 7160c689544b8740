#!/usr/bin/env python3
"""Check the ggml_polar C library against the NumPy reference, and report each type's quality.

  scripts/validate.py                        random K-like vectors (outlier channels), head size 128
  scripts/validate.py --random gaussian      i.i.d. Gaussian vectors: the setting of the closed form
  scripts/validate.py --npy keys.npy         your own K/V vectors: an array (..., head_size), head_size % 64 == 0

Vectors are preconditioned with the Hadamard transform llama.cpp applies to quantized K/V caches (--precondition
none to skip it). Per type it prints: the share of blocks whose codes are identical in C and NumPy, the share of
decoded values identical bit for bit, relative MSE (and the closed form for preconditioned data), mean cosine
similarity, and the relative RMS error of inner products with random queries. q8_0 and q4_0 (NumPy versions of
ggml's reference codecs) are listed for comparison. Exits 1 if C and NumPy disagree anywhere.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

import llama_polar  # noqa: E402
from llama_polar import native  # noqa: E402


def hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def precondition(x: np.ndarray) -> np.ndarray:
    """llama.cpp's rotation of quantized K: a Hadamard transform over the largest power of two (>= 64) dividing d."""
    d = x.shape[-1]
    n = 64
    while d % (2 * n) == 0:
        n *= 2
    return (x.reshape(-1, d // n, n) @ hadamard(n)).reshape(x.shape).astype(np.float32)


def k_like(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    scales = 10.0 ** rng.uniform(-1, 1, dim)
    scales[rng.choice(dim, max(1, dim // 32), replace=False)] *= 20     # outlier channels, as in real keys
    return (rng.standard_normal((rows, dim)) * scales).astype(np.float32)


def q8_0_roundtrip(x: np.ndarray) -> np.ndarray:
    b = x.reshape(-1, 32).astype(np.float32)
    d = (np.max(np.abs(b), axis=1) / 127).astype(np.float16).astype(np.float32)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    return (np.round(b * inv[:, None]) * d[:, None]).reshape(x.shape)


def q4_0_roundtrip(x: np.ndarray) -> np.ndarray:
    b = x.reshape(-1, 32).astype(np.float32)
    signed_max = b[np.arange(len(b)), np.argmax(np.abs(b), axis=1)]
    d = (signed_max / -8).astype(np.float16).astype(np.float32)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, np.floor(b * inv[:, None] + 8.5))
    return ((q - 8) * d[:, None]).reshape(x.shape)


def quality(x: np.ndarray, y: np.ndarray, queries: np.ndarray) -> tuple[float, float, float]:
    s, s_hat = queries @ x.T.astype(np.float64), queries @ y.T.astype(np.float64)
    ip_err = float(np.sqrt(np.mean((s_hat - s) ** 2) / np.mean(s ** 2)))
    return llama_polar.relative_mse(x, y), float(np.mean(llama_polar.cosine_similarity(x, y))), ip_err


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npy", type=Path, help="array of K or V vectors, last axis = head size (multiple of 64)")
    ap.add_argument("--types", default=",".join(llama_polar.TYPES), help="comma-separated polar types")
    ap.add_argument("--random", choices=["k-like", "gaussian"], default="k-like",
                    help="random data without --npy (default %(default)s)")
    ap.add_argument("--rows", type=int, default=8192, help="random vectors to generate (default %(default)s)")
    ap.add_argument("--dim", type=int, default=128, help="head size of random vectors (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precondition", choices=["hadamard", "none"], default="hadamard")
    ap.add_argument("--queries", type=int, default=64, help="random queries for the inner-product error")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.types.split(",") if n.strip()]
    unknown = [n for n in names if n not in llama_polar.TYPES]
    if unknown:
        ap.error(f"unknown type(s) {', '.join(unknown)}; known: {', '.join(llama_polar.TYPES)}")
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
            x = k_like(args.rows, args.dim, rng)
            source = f"{args.rows} random K-like vectors of {args.dim} (outlier channels)"
    if args.precondition == "hadamard":
        x = precondition(x)
        source += ", Hadamard-preconditioned"
    queries = rng.standard_normal((args.queries, x.shape[1]))

    print(source)
    print(f"{'type':7s} {'bits/value':>10s} {'codes C=NumPy':>14s} {'values C=NumPy':>15s} {'rel.MSE':>9s} "
          f"{'(closed form)':>13s} {'cos.sim':>8s} {'IP error':>9s}")
    failed = False
    for name in names:
        qtype = llama_polar.TYPES[name]
        q_c, q_np = native.quantize(x, name), llama_polar.quantize(x, name)
        y_c, y_np = native.dequantize(q_c, name), llama_polar.dequantize(q_np, name)
        codes_equal = float(np.mean(np.all((q_c == q_np).reshape(-1, qtype.type_size), axis=1)))
        values_equal = float(np.mean(y_c.view(np.uint32) == y_np.view(np.uint32)))
        failed |= codes_equal < 1 or values_equal < 1
        mse, cos, ip = quality(x, y_c, queries)
        print(f"{name:7s} {qtype.bits_per_value:10.3f} {codes_equal:14.2%} {values_equal:15.2%} {mse:9.5f} "
              f"{qtype.expected_rel_mse:13.5f} {cos:8.5f} {ip:9.5f}")
    for name, bpv, roundtrip in (("q8_0", 8.5, q8_0_roundtrip), ("q4_0", 4.5, q4_0_roundtrip)):
        mse, cos, ip = quality(x, roundtrip(x), queries)
        print(f"{name:7s} {bpv:10.3f} {'':>14s} {'':>15s} {mse:9.5f} {'':>13s} {cos:8.5f} {ip:9.5f}")
    if failed:
        print("FAIL: the C library and the NumPy reference disagree", file=sys.stderr)
        return 1
    print("C and NumPy agree bit for bit on every type")
    return 0


if __name__ == "__main__":
    sys.exit(main())
