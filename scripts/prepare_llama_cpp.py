#!/usr/bin/env python3
"""Get the llama.cpp tree that llama-cpp-python 0.3.36 vendors (commit 0c1e570) and apply patches/ in order.

The sdist comes from PyPI once (`pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36`) and is kept in
.cache/; its checksum is verified. The patched tree goes to build/src/llama.cpp. Files whose contents did not change
keep their timestamps, so a changed patch rebuilds only what it touches. Exits non-zero, naming the patch, if a
patch does not apply.

Standard library only: the Makefile runs it as `PYTHONPATH=python python3 scripts/prepare_llama_cpp.py`, before
.venv exists.
"""
from __future__ import annotations

import argparse
import filecmp
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from llama_polar.paths import CACHE, LLAMA_TREE, ROOT
from llama_polar.pypi import pip_download, sha256

PATCHES = ROOT / "patches"
DEST = LLAMA_TREE
SDIST_NAME = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VENDORED = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
STAMP = ".llama-polar-patches"


def fetch_sdist() -> Path:
    sdist = CACHE / SDIST_NAME
    if not sdist.exists():
        pip_download(["llama-cpp-python==0.3.36"], "--no-binary", ":all:")
    digest = sha256(sdist)
    if digest != SDIST_SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest} is not the expected {SDIST_SHA256}; delete it and retry")
    return sdist


def patch_list(folder: Path) -> list[Path]:
    patches = sorted(folder.glob("*.patch"))
    if not patches:
        raise SystemExit(f"no patches in {folder}")
    return patches


def series_digest(patches: list[Path]) -> str:
    h = hashlib.sha256(SDIST_SHA256.encode())
    h.update(Path(__file__).read_bytes())            # a change to how the tree is made remakes it
    for p in patches:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def extract(sdist: Path, into: Path) -> None:
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            if m.name.startswith(VENDORED) and (m.isfile() or m.isdir() or m.issym()):
                m.name = m.name[len(VENDORED):]
                if m.name and m.name != ".git":          # .git is a submodule pointer to nowhere
                    members.append(m)
        tar.extractall(into, members=members, filter="tar" if hasattr(tarfile, "tar_filter") else None)


def apply(patches: list[Path], tree: Path) -> None:
    # A repository of its own: inside another one (this checkout), `git apply` resolves paths from that
    # repository's top and silently skips files outside the current folder.
    subprocess.run(["git", "init", "-q"], cwd=tree, check=True)
    for p in patches:
        result = subprocess.run(["git", "apply", "--verbose", "--whitespace=nowarn", str(p)], cwd=tree,
                                capture_output=True, text=True)
        touched = [line for line in result.stdout.splitlines() + result.stderr.splitlines()
                   if line.startswith("Applied patch")]
        if result.returncode != 0 or not touched:
            raise SystemExit(f"patch {p.name} does not apply to llama.cpp 0c1e570:\n{result.stderr}")
        print(f"applied {p.name} ({len(touched)} files)")
    shutil.rmtree(tree / ".git")


def sync(src: Path, dst: Path) -> int:
    """Make dst a copy of src, rewriting only files whose contents differ. Returns how many files were written."""
    written = 0
    wanted = set()
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        wanted.add(rel)
        target = dst / rel
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists() or not filecmp.cmp(path, target, shallow=False):
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            shutil.copy2(path, target, follow_symlinks=False)
            written += 1
    for path in sorted(dst.rglob("*"), reverse=True):
        if path.relative_to(dst) not in wanted and path.name != STAMP:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, default=DEST, help="where the patched tree goes (default: %(default)s)")
    ap.add_argument("--patches", type=Path, default=PATCHES, help="patch folder (default: %(default)s)")
    ap.add_argument("--sdist-only", action="store_true", help="only download and verify the sdist; print its path")
    args = ap.parse_args(argv)
    if args.sdist_only:
        print(fetch_sdist())
        return 0

    patches = patch_list(args.patches)
    digest = series_digest(patches)
    stamp = args.dest / STAMP
    if stamp.exists() and stamp.read_text().strip() == digest:
        print(f"{args.dest} is up to date with {len(patches)} patches")
        return 0
    sdist = fetch_sdist()
    with tempfile.TemporaryDirectory(dir=ROOT / "build" if (ROOT / "build").exists() else None) as tmp:
        tree = Path(tmp) / "llama.cpp"
        tree.mkdir()
        extract(sdist, tree)
        apply(patches, tree)
        args.dest.mkdir(parents=True, exist_ok=True)
        written = sync(tree, args.dest)
    stamp.write_text(digest + "\n")
    print(f"{args.dest}: {written} files updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
