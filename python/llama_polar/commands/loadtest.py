"""llama-server under load, one configuration after another: N concurrent streaming clients for a fixed time against
`llama-server --parallel P -c CTX --context-shift`, with prompts of mixed lengths and some generations past a slot's
context (llama_polar.loadtest). Prints requests ok/failed, p50/p95 time to first token and per token, generated
tokens/s, and the server's RSS after a warm-up request, a minute into the load and at the end; exits 1 if a request failed or the server
stopped serving.

  llama-polar loadtest                                    # SmolLM2-135M: f16, q4_0, pq46, q8_0/pq46; 8 clients, 60 s
  llama-polar loadtest --configs pq46,pq46/pq37+calib --centers model.k-centers.gguf --duration 600
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from llama_polar import cache_config, loadtest, models, texts


def table(rows: list[dict]) -> str:
    lines = ["| K / V | ok | failed | TTFT p50 s | TTFT p95 s | per token p50 ms | per token p95 ms | tokens/s | "
             "RSS start MiB | RSS at 1 min MiB | RSS end MiB | context shifts |", "|---|" + "---:|" * 11]
    for r in rows:
        lines.append(f"| {r['config']} | {r['ok']} | {r['failed']} | {r['ttft_p50']:.2f} | {r['ttft_p95']:.2f} | "
                     f"{1e3 * r['token_p50']:.1f} | {1e3 * r['token_p95']:.1f} | {r['tokens_per_s']:.1f} | "
                     f"{r['rss_start']:.0f} | {r['rss_1min']:.0f} | {r['rss_end']:.0f} | {r['context_shifts']} |")
    return "\n".join(lines)


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help=f"GGUF file, or a model name ({', '.join(models.MODELS)}; default: smollm2)")
    ap.add_argument("--configs", default="f16,q4_0,pq46,q8_0/pq46",
                    help="cache configurations, comma-separated (K[/V][+plain|center|calib|sinkN]; default %(default)s)")
    ap.add_argument("--centers", type=Path, help="calibrated key centers for the +calib configurations")
    texts.add_argument(ap, "text the prompts are cut from")
    ap.add_argument("--clients", type=int, default=8, help="concurrent streaming clients (default %(default)s)")
    ap.add_argument("--duration", type=float, default=60, help="seconds of load per configuration (default %(default)s)")
    ap.add_argument("--parallel", type=int, default=4, help="server slots (default %(default)s)")
    ap.add_argument("--ctx", type=int, default=2048, help="server context, shared by the slots (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="server threads (default %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)

    try:
        configs = cache_config.parse_list(args.configs)
        envs = [c.env(args.centers) for c in configs]
    except ValueError as e:
        ap.error(str(e))
    if not configs or args.clients < 1 or args.duration <= 0 or args.parallel < 1 or args.ctx < 64 * args.parallel:
        ap.error("--configs must name one or more, --clients, --duration and --parallel must be positive, and --ctx "
                 "at least 64 per slot")
    args.text = texts.from_argument(ap, args.text)
    model = models.from_argument(ap, args.model, configs)
    text = args.text.read_text(errors="replace")

    rows = []
    for cfg, env in tqdm(list(zip(configs, envs)), desc="load", unit="config"):
        r = loadtest.run(model, cfg.type_k, cfg.type_v, text, args.clients, args.duration, args.parallel, args.ctx,
                         args.threads, env)
        rows.append({"config": cfg.spec, **r})
    print(f"model: {model.name}, llama-server -np {args.parallel} -c {args.ctx} -t {args.threads}, "
          f"{args.clients} clients, {args.duration:g} s per configuration")
    print(table(rows))
    for r in rows:
        for e in r["errors"]:
            print(f"{r['config']}: failed: {e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["failed"] == 0 and r["alive"] for r in rows) else 1
