"""Calibrate key centers for a polar K cache and write them as a GGUF for llama.cpp's LLAMA_K_CENTERS.

    llama-polar calibrate --model model.gguf --out model.k-centers.gguf [--text file.txt]
    LLAMA_K_CENTERS=model.k-centers.gguf build/bin/llama-cli -m model.gguf -ctk pq46 -ctv pq46 -fa on
"""
import argparse
from pathlib import Path

from llama_polar import calibrate, models


def calibration_arguments(argv, prog, doc: str, out_help: str, chunks: int, ctx: int, min_ctx: int = 2):
    """Parse the options every calibration over a text shares: (model file, text bytes or None, arguments)."""
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF path or a known model name (default: SmolLM2)")
    ap.add_argument("--out", type=Path, required=True, help=out_help)
    ap.add_argument("--text", type=Path, default=None,
                    help="calibration text (default: Python standard-library docstrings)")
    ap.add_argument("--chunks", type=int, default=chunks, help="chunks of --ctx tokens (default: %(default)s)")
    ap.add_argument("--ctx", type=int, default=ctx, help="tokens per chunk (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.chunks < 1 or args.ctx < min_ctx:
        ap.error(f"--chunks must be positive and --ctx at least {min_ctx}")
    model = models.from_argument(ap, args.model)
    return model, args.text.read_bytes() if args.text else None, args


def main(argv=None, prog=None) -> int:
    model, text, args = calibration_arguments(argv, prog, __doc__, "the centers file to write", 8, 512)
    centers, identity = calibrate.key_centers(model, text, args.chunks, args.ctx)
    source = f"{args.text or 'stdlib docstrings'}, {args.chunks} x {args.ctx} tokens"
    calibrate.write_centers(args.out, centers, identity, source)
    print(f"wrote {args.out}: {centers.shape[0]} layers x {centers.shape[1]} KV heads x {centers.shape[2]} ({identity.arch}, K fingerprint {identity.fingerprint})")
    return 0
