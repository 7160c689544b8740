"""`python -m llama_polar COMMAND ...`: the `llama-polar` command line."""
import sys

from .cli import main

sys.exit(main())
