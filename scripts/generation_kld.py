#!/usr/bin/env python3
"""Mean KLD of generation after a long prompt, as a user meets it: the first tokens of one chunk of the text go
through the cache as a prompt (in ubatches of --prompt-ubatch tokens), the last --decoded tokens are fed one at a
time, and the next-token distributions of those decode steps are scored against an f16 cache's, run the same way.

llama-perplexity scores tokens that were processed in batches (scripts/kld_runs.py), or, with -ub 1, a chunk fed
token by token from its first token; here the prompt is batched, as llama.cpp's tools batch it, and only what is
decoded after it is scored, so the figure includes what the prompt's batched processing wrote into the cache.

    scripts/generation_kld.py --ctx 8192 --decoded 1024 q4_0 pq42/pq37 pq37/pq32
    scripts/generation_kld.py --ctx 8192 --decoded 1024 --prompt-ubatch 1 q4_0 pq42/pq37   # the prompt decoded too

The f16 log-probabilities are kept in --base-dir (one file per model, text, context, decoded count and prompt
ubatch) and reused. One line per configuration: mean KLD, its 99.9th percentile, the ratio to q4_0 when q4_0 is
among them, bits per value at --ctx (llama_polar.cache_config).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from llama_polar import cache_config, models, texts
from llama_polar.perplexity import BATCH     # the prompt's logical batch, as llama-perplexity's
from llama_polar.simulate import log_softmax
from llama_polar import Llama



def log_probs(logits: np.ndarray) -> np.ndarray:
    return log_softmax(logits.astype(np.float64)).astype(np.float32)


def decode_log_probs(model: Path, tokens: list[int], n_decoded: int, cfg: cache_config.CacheConfig, ubatch: int,
                     threads: int) -> np.ndarray:
    """[n_decoded, vocab] log-probabilities of the decode steps after the prompt tokens[:-n_decoded]: row i is the
    distribution after token len(tokens) - n_decoded + i - 1 has been read (the first row, after the prompt)."""
    saved = {k: os.environ.get(k) for k in cfg.env()}
    os.environ.update(cfg.env())              # llama.cpp reads its settings when the context is created
    try:
        llm = Llama(model_path=str(model), n_ctx=len(tokens), n_batch=BATCH, n_ubatch=ubatch,
                                type_k=cfg.type_k, type_v=cfg.type_v, flash_attn=True, n_threads=threads,
                                n_threads_batch=threads, verbose=False)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    last = lambda: log_probs(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)))  # noqa: E731
    prompt = len(tokens) - n_decoded
    llm.eval(tokens[:prompt])            # llama_get_logits: Llama.scores keeps logits only with logits_all
    rows = [last()]
    for t in tokens[prompt:-1]:
        llm.eval([t])
        rows.append(last())
    llm.close()
    return np.stack(rows)


def kld(base: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-step KL divergence of other's distributions from base's."""
    return (np.exp(base.astype(np.float64)) * (base.astype(np.float64) - other)).sum(axis=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", help="cache configurations (llama_polar.cache_config strings)")
    ap.add_argument("--model", default=None, help="GGUF model, a path or a name (default: SmolLM2)")
    ap.add_argument("--text", default=None, help="text, a path or a name (default: Paradise Lost)")
    ap.add_argument("--ctx", type=int, default=8192, help="prompt and decoded tokens together (default %(default)s)")
    ap.add_argument("--decoded", type=int, default=1024, help="tokens fed one at a time and scored (default "
                    "%(default)s)")
    ap.add_argument("--prompt-ubatch", type=int, default=512, help="the prompt's ubatch (default %(default)s, "
                    "llama.cpp's; 1: the prompt decoded too)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base-dir", type=Path, default=Path(".cache/kld-base"), help="where the f16 runs are kept")
    args = ap.parse_args(argv)
    configs = [cache_config.parse(c) for c in args.configs]       # bad strings fail before any run
    if not 0 < args.decoded < args.ctx or args.prompt_ubatch < 1:
        ap.error("--decoded must be between 0 and --ctx, --prompt-ubatch at least 1")
    model, text = models.from_argument(ap, args.model, configs), texts.from_argument(ap, args.text)
    vocab = Llama(model_path=str(model), vocab_only=True, verbose=False)
    tokens = vocab.tokenize(text.read_bytes()[:args.ctx * 8], add_bos=True)[:args.ctx]
    if len(tokens) < args.ctx:
        ap.error(f"{text} has {len(tokens)} tokens, fewer than --ctx {args.ctx}")

    args.base_dir.mkdir(parents=True, exist_ok=True)
    base_file = args.base_dir / (f"{model.stem}-{text.stem}-{args.ctx}-gen{args.decoded}-pub{args.prompt_ubatch}"
                                 ".npy")
    if not base_file.exists():
        t0 = time.monotonic()
        np.save(base_file, decode_log_probs(model, tokens, args.decoded, cache_config.parse("f16"),
                                            args.prompt_ubatch, args.threads))
        print(f"f16 base: {base_file} ({time.monotonic() - t0:.0f} s)", flush=True)
    base = np.load(base_file)
    n_layer = models.metadata(str(model))["n_layer"]
    q4_0 = None
    for cfg in configs:
        t0 = time.monotonic()
        d = kld(base, decode_log_probs(model, tokens, args.decoded, cfg, args.prompt_ubatch, args.threads))
        mean = float(d.mean())
        q4_0 = mean if cfg.spec == "q4_0" else q4_0
        ratio = f", {mean / q4_0:.2f}x q4_0" if q4_0 else ""
        print(f"{cfg.spec}: KLD {mean:.5f} (99.9% {np.quantile(d, 0.999):.3f}){ratio}, "
              f"{cfg.bits(args.ctx, n_layer=n_layer):.3f} bits/value ({time.monotonic() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
