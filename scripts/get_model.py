#!/usr/bin/env python3
"""`llama-polar model` (llama_polar.cli), kept for the commands in the docs and the Makefile; --help for its options."""
import sys

from llama_polar.cli import main

sys.exit(main(["model", *sys.argv[1:]]))
