"""The `llama-polar` command line: `llama-polar COMMAND [options]`, one subcommand per job (llama_polar.commands).

    llama-polar codebooks --check
    llama-polar validate --npy keys.npy
    llama-polar calibrate --model model.gguf --out model.k-centers.gguf
    llama-polar bench --types f16,q4_0,pq46
    llama-polar serve --model model.gguf --type_k pq46 --type_v pq46 --flash_attn true

`python -m llama_polar` is the same. Exit status: 0 on success, 2 for bad arguments (with the usage line), 1 for a
failure the command reports as `error: ...` (a missing build, a failed llama.cpp run, a file it cannot read).
Standard library only until a command runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMANDS
from .paths import LibraryError


def parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:10s} {help}" for name, (_, help) in COMMANDS.items())
    ap = argparse.ArgumentParser(prog="llama-polar", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="PolarQuant KV-cache types for llama.cpp.",
                                 epilog=f"commands:\n{listing}\n\n`llama-polar COMMAND --help`: its options.")
    ap.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the command's options")
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = parser()
    if not argv:
        ap.print_usage(sys.stderr)
        ap.exit(2, f"{ap.prog}: error: which command? ({', '.join(COMMANDS)}; --help says what each does)\n")
    args = ap.parse_args(argv)
    module, _ = COMMANDS[args.command]
    try:
        return importlib.import_module(module).main(args.args, prog=f"llama-polar {args.command}")
    except (RuntimeError, ValueError, OSError, LibraryError) as e:    # what a command reports, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
