#!/usr/bin/env python3
"""`llama-polar text` (llama_polar.cli), kept for the Makefile; --help for its options."""
import sys

from llama_polar.cli import main

sys.exit(main(["text", *sys.argv[1:]]))
