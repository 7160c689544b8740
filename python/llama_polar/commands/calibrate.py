"""Calibrate key centers for a polar K cache and write them as a GGUF for llama.cpp's LLAMA_K_CENTERS.

    llama-polar calibrate --model model.gguf --out model.k-centers.gguf [--text file.txt]
    LLAMA_K_CENTERS=model.k-centers.gguf build/bin/llama-cli -m model.gguf -ctk pq46 -ctv pq46 -fa on
"""
import argparse
from pathlib import Path

from llama_polar import calibrate, models


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF path or a known model name (default: SmolLM2)")
    ap.add_argument("--out", type=Path, required=True, help="the centers file to write")
    ap.add_argument("--text", type=Path, default=None,
                    help="calibration text (default: Python standard-library docstrings)")
    ap.add_argument("--chunks", type=int, default=8, help="chunks of --ctx tokens (default: %(default)s)")
    ap.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.chunks < 1 or args.ctx < 2:
        ap.error("--chunks must be positive and --ctx at least 2")

    model = models.from_argument(ap, args.model)
    text = args.text.read_bytes() if args.text else None
    centers, identity = calibrate.key_centers(model, text, args.chunks, args.ctx)
    source = f"{args.text or 'stdlib docstrings'}, {args.chunks} x {args.ctx} tokens"
    calibrate.write_centers(args.out, centers, identity, source)
    print(f"wrote {args.out}: {centers.shape[0]} layers x {centers.shape[1]} KV heads x {centers.shape[2]} ({identity.arch}, K fingerprint {identity.fingerprint})")
    return 0
