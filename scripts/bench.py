#!/usr/bin/env python3
"""`llama-polar bench` (llama_polar.cli), kept for the commands in the docs and the Makefile; --help for its options."""
import sys

from llama_polar.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
