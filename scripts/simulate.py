#!/usr/bin/env python3
"""`llama-polar simulate` (llama_polar.cli), kept for the commands in the docs and the Makefile; --help for its options."""
import sys

from llama_polar.cli import main

sys.exit(main(["simulate", *sys.argv[1:]]))
