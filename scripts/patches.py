#!/usr/bin/env python3
"""Edit the llama.cpp patch series with git: patches/ <-> a repository whose commits are the patches.

  scripts/patches.py edit     llama.cpp-edit/: a git repository whose first commit (tag `base`) is the untouched
                              llama.cpp 0c1e570 from the llama-cpp-python 0.3.36 sdist and whose commits are
                              patches/*.patch, one each (git am). Change a feature there with ordinary git: commit,
                              `git rebase -i base`, fixup, reword. Refuses to replace a repository that has commits
                              patches/ does not have (--force replaces it).
  scripts/patches.py export   writes patches/ back from base..HEAD of llama.cpp-edit/ (git format-patch with fixed
                              options: an unchanged series exports byte for byte).
  scripts/patches.py check    applies patches/ as commits in a scratch repository and fails if a patch removes or
                              changes a line that an earlier patch added (each patch adds one feature; none rewrites
                              another's).

`make patches-edit`, `make patches-export` and `make patches-check` run these. Standard library only.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import prepare_llama_cpp as prep          # scripts/: the sdist, its extraction, the patch list

EDIT = prep.ROOT / "llama.cpp-edit"
BASE_TAG = "base"
IDENTITY = {"GIT_AUTHOR_NAME": "llama-polar", "GIT_AUTHOR_EMAIL": "llama-polar@users.noreply.example",
            "GIT_COMMITTER_NAME": "llama-polar", "GIT_COMMITTER_EMAIL": "llama-polar@users.noreply.example",
            "GIT_AUTHOR_DATE": "2026-11-23T12:00:00+0000", "GIT_COMMITTER_DATE": "2026-11-23T12:00:00+0000"}
# Options that make the export independent of the developer's git configuration and of the repository's size
# (the abbreviated hashes in the index lines would otherwise grow with it).
EXPORT_CONFIG = ["-c", "core.abbrev=12", "-c", "diff.algorithm=myers", "-c", "diff.renames=false",
                 "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false", "-c", "format.signature=",
                 "-c", "format.coverLetter=false", "-c", "format.suffix=.patch"]


def git(repo: Path, *args: str, capture: bool = True) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=capture, text=True,
                         env=dict(os.environ, **IDENTITY))
    if out.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {repo}:\n{out.stderr}")
    return out.stdout if capture else ""


def make_repository(repo: Path, patches: list[Path]) -> None:
    """The untouched tree as commit `base`, then one commit per patch (git am keeps each patch's message)."""
    repo.mkdir(parents=True)
    prep.extract(prep.fetch_sdist(), repo)
    git(repo, "init", "-q")
    git(repo, "config", "core.autocrlf", "false")
    git(repo, "add", "-A", "-f")
    git(repo, "commit", "-q", "--no-verify", "-m", "llama.cpp 0c1e570, as llama-cpp-python 0.3.36 vendors it")
    git(repo, "tag", BASE_TAG)
    for p in patches:
        out = subprocess.run(["git", "am", "-q", "--whitespace=nowarn", "--committer-date-is-author-date", str(p)],
                             cwd=repo, capture_output=True, text=True, env=dict(os.environ, **IDENTITY))
        if out.returncode != 0:
            raise SystemExit(f"{p.name} does not apply on top of the patches before it:\n{out.stdout}{out.stderr}")


def series_subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--reverse", "--format=%s", f"{BASE_TAG}..HEAD").splitlines()


def patch_subject(patch: Path) -> str:
    """The subject a patch file gives its commit (git am drops the [PATCH n/m] prefix and unfolds the line)."""
    header = patch.read_text().split("\n\n", 1)[0]
    m = re.search(r"^Subject: (.*(?:\n .*)*)", header, re.M)
    return re.sub(r"^\[PATCH[^]]*\]\s*", "", m.group(1).replace("\n ", " ")) if m else ""


def edit(args) -> int:
    patches = prep.patch_list(args.patches)
    repo = args.repo
    if repo.exists():
        if not args.force and series_subjects(repo) != [patch_subject(p) for p in patches]:
            raise SystemExit(f"{repo} has commits that {args.patches} does not: export them (make patches-export) "
                             "or pass --force to replace it")
        shutil.rmtree(repo)
    make_repository(repo, patches)
    print(f"{repo}: base + {len(patches)} commits; edit with git, then `make patches-export`")
    return 0


def export(args) -> int:
    repo = args.repo
    if not (repo / ".git").is_dir():
        raise SystemExit(f"no {repo}: run `make patches-edit` first")
    if git(repo, "status", "--porcelain", "--untracked-files=no").strip():
        raise SystemExit(f"{repo} has uncommitted changes: commit them (or stash them) first")
    with tempfile.TemporaryDirectory() as tmp:
        git(repo, *EXPORT_CONFIG, "format-patch", "-q", "--zero-commit", "--no-signature", "--numbered",
            "--no-binary", "--filename-max-length=100", "-o", tmp, f"{BASE_TAG}..HEAD")
        written = sorted(Path(tmp).glob("*.patch"))
        if not written:
            raise SystemExit(f"{repo} has no commits after {BASE_TAG}")
        args.patches.mkdir(parents=True, exist_ok=True)
        for old in args.patches.glob("*.patch"):
            old.unlink()
        for p in written:
            shutil.copyfile(p, args.patches / p.name)
    print(f"{args.patches}: {len(written)} patches from {repo}")
    return 0


def rewritten_lines(repo: Path) -> list[str]:
    """Lines that a commit after `base` removes although an earlier commit after `base` added them."""
    base = git(repo, "rev-parse", BASE_TAG).strip()
    found = []
    for commit in git(repo, "rev-list", "--reverse", f"{BASE_TAG}..HEAD").split():
        subject = git(repo, "log", "-1", "--format=%s", commit).strip()
        diff = git(repo, "diff", "-U0", "--no-renames", f"{commit}^", commit)
        for path, start, count in _removed_ranges(diff):
            blame = git(repo, "blame", "--porcelain", "-L", f"{start},+{count}", f"{commit}^", "--", path)
            for line in blame.splitlines():
                m = re.match(r"^([0-9a-f]{40}) \d+ (\d+)", line)
                if m and m.group(1) != base:
                    adder = git(repo, "log", "-1", "--format=%s", m.group(1)).strip()
                    found.append(f"{subject!r} changes {path}:{m.group(2)}, added by {adder!r}")
    return found


def _removed_ranges(diff: str):
    """(path, first line, count) of each run of removed lines in a -U0 diff, in the old file's numbering."""
    path = None
    for line in diff.splitlines():
        if line.startswith("--- "):
            path = line[6:] if line.startswith("--- a/") else None
        m = re.match(r"^@@ -(\d+)(?:,(\d+))? \+", line)
        if m and path is not None:
            count = 1 if m.group(2) is None else int(m.group(2))
            if count:
                yield path, int(m.group(1)), count


def check(args) -> int:
    patches = prep.patch_list(args.patches)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "llama.cpp"
        make_repository(repo, patches)
        found = rewritten_lines(repo)
    for f in found:
        print(f)
    print(f"{len(patches)} patches apply in order; {len(found)} lines added by one patch are changed by a later one")
    return 1 if found else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("edit", help="patches/ -> llama.cpp-edit/, a commit per patch")
    e.add_argument("--force", action="store_true", help="replace a llama.cpp-edit/ with commits not exported")
    x = sub.add_parser("export", help="llama.cpp-edit/ -> patches/")
    c = sub.add_parser("check", help="fail if a patch changes a line an earlier patch added")
    for p in (e, x, c):
        p.add_argument("--patches", type=Path, default=prep.PATCHES, help="the series (default %(default)s)")
    for p in (e, x):
        p.add_argument("--repo", type=Path, default=EDIT, help="the repository (default %(default)s)")
    args = ap.parse_args(argv)
    return {"edit": edit, "export": export, "check": check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
