#!/usr/bin/env python3
"""Mean KLD of cache configurations against an f16 cache, in one run of llama-perplexity each (the figures of
docs/measurements.md's long-context tables):

    scripts/kld_runs.py --ctx 8192 --chunks 2 q4_0 pq46/pq37 pq42/pq32+recent64
    scripts/kld_runs.py --model .cache/models/gemma-3-270m-q4_k_m.gguf --ctx 8192 --chunks 1 pq46+plain pq46
    scripts/kld_runs.py --ctx 8192 --chunks 1 --ubatch 1 q4_0 pq42/pq32 pq42/pq32+recent64    # as decode reads

The f16 base logits are written once per model, context and chunk count (--base-dir) and reused, with its KV buffer
size beside them (<base>.json); each configuration is a cache_config string, run with its environment. One line per
configuration: mean KLD, 99.9th percentile, PPL, same-top share, the KV buffer llama.cpp logged, bits per value (16
x that buffer / the base's), its ratio to q4_0 when q4_0 is among them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from llama_polar import cache_config, models, perplexity, texts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", help="cache configurations (llama_polar.cache_config strings)")
    ap.add_argument("--model", default=None, help="GGUF model, a path or a name (default: SmolLM2)")
    ap.add_argument("--text", default=None, help="text, a path or a name (default: Paradise Lost)")
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--base-dir", type=Path, default=Path(".cache/kld-base"), help="where the f16 logits are kept")
    ap.add_argument("--ubatch", type=int, default=None,
                    help="llama-perplexity's -ub for every run, base included (1: token by token, as generation "
                         "reads the cache; default: llama-perplexity's)")
    args = ap.parse_args(argv)

    configs = [cache_config.parse(c) for c in args.configs]       # bad strings fail before any run
    model, text = models.from_argument(ap, args.model, configs), texts.from_argument(ap, args.text)
    args.base_dir.mkdir(parents=True, exist_ok=True)
    if args.ubatch is not None and args.ubatch < 1:
        ap.error(f"--ubatch must be at least 1, not {args.ubatch}")
    extra = ("-ub", args.ubatch) if args.ubatch else ()
    ub = f"-ub{args.ubatch}" if args.ubatch else ""
    base = args.base_dir / f"{model.stem}-{text.stem}-{args.ctx}x{args.chunks}{ub}.kld"
    sizes = base.with_name(base.name + ".json")     # the base's KV buffers: the 16 bits/value the others are against
    if not base.exists():
        t0 = time.monotonic()
        run = perplexity.base_run(model, text, args.chunks, base, ctx=args.ctx, args=extra)
        sizes.write_text(json.dumps({"kv_mib": run.kv_mib}))
        print(f"f16 base: PPL {run.ppl:.3f}, KV {run.kv_mib:.2f} MiB ({time.monotonic() - t0:.0f} s)", flush=True)
    f16_mib = json.loads(sizes.read_text())["kv_mib"] if sizes.exists() else None
    q4_0 = None
    n_layer = models.metadata(str(model))["n_layer"]
    for cfg in configs:
        t0 = time.monotonic()
        r = perplexity.kl_divergence(model, text, args.chunks, base, cfg.type_k, cfg.type_v, env=cfg.env(),
                                     ctx=args.ctx, args=extra)
        q4_0 = r.kld if cfg.spec == "q4_0" else q4_0
        ratio = f", {r.kld / q4_0:.2f}x q4_0" if q4_0 else ""
        # bits from the buffers where the base's are known: a formula cannot count a sliding-window cache's cells
        bits = (f"{16 * r.kv_mib / f16_mib:.3f} bits/value" if f16_mib else
                f"{cfg.bits(args.ctx, n_layer=n_layer):.3f} bits/value (cache_config's count: no {sizes.name})")
        print(f"{cfg.spec}: KLD {r.kld:.5f} (99.9% {r.kld_p999:.3f}){ratio}, PPL {r.ppl:.3f}, same top "
              f"{r.same_top:.2f}%, KV {r.kv_mib:.2f} MiB, {bits} ({time.monotonic() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
