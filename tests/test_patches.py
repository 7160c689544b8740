"""The patch series and its workflow (scripts/patches.py): patches/ as git commits and back, byte for byte, and the
rule that no patch changes a line an earlier patch added."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERIES = sorted((ROOT / "patches").glob("*.patch"))


def patches_py(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "patches.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=dict(os.environ, PYTHONPATH=str(ROOT / "python")))


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True, env=env).stdout


def test_no_patch_changes_a_line_an_earlier_patch_added(llama_tree):
    result = patches_py("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(SERIES)} patches apply in order; 0 lines added by one patch are changed" in result.stdout


def test_the_series_exports_byte_for_byte(llama_tree, tmp_path):
    repo, out = tmp_path / "llama.cpp-edit", tmp_path / "patches"
    assert patches_py("edit", "--repo", repo).returncode == 0
    assert git(repo, "log", "--format=%s", "base..HEAD").count("\n") == len(SERIES)
    result = patches_py("export", "--repo", repo, "--patches", out)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in sorted(out.glob("*.patch"))] == [p.name for p in SERIES]
    for p in SERIES:
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name


def one_patch_repository(tmp_path: Path) -> tuple[Path, Path]:
    """(a series of the first patch alone, its repository made by `edit`)."""
    series, repo = tmp_path / "one", tmp_path / "repo"
    series.mkdir()
    (series / SERIES[0].name).write_bytes(SERIES[0].read_bytes())
    assert patches_py("edit", "--repo", repo, "--patches", series).returncode == 0
    return series, repo


def test_an_edit_that_rewrites_an_earlier_patch_is_found_and_kept_safe(llama_tree, tmp_path):
    first, repo = one_patch_repository(tmp_path)
    # change a line the first patch added, as a new commit: a patch that rewrites another's
    added = git(repo, "diff", "-U0", "base", "HEAD")
    path = next(line[6:] for line in added.splitlines() if line.startswith("+++ b/"))
    line = next(line[1:] for line in added.splitlines() if line.startswith("+") and not line.startswith("+++")
                and line.strip())
    text = (repo / path).read_text()
    (repo / path).write_text(text.replace(line, line + "  // changed", 1))
    git(repo, "commit", "-q", "-am", "rewrite a line of the first patch")

    refused = patches_py("edit", "--repo", repo, "--patches", first)
    assert refused.returncode != 0 and "has commits that" in refused.stderr, "unexported work is not replaced"
    two = tmp_path / "two"
    assert patches_py("export", "--repo", repo, "--patches", two).returncode == 0
    assert len(list(two.glob("*.patch"))) == 2
    result = patches_py("check", "--patches", two)
    assert result.returncode == 1
    assert "'rewrite a line of the first patch' changes " + path in result.stdout


def test_export_refuses_uncommitted_changes(llama_tree, tmp_path):
    _, repo = one_patch_repository(tmp_path)
    (repo / "README.md").write_text("changed\n")
    result = patches_py("export", "--repo", repo, "--patches", tmp_path / "out")
    assert result.returncode != 0 and "uncommitted changes" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_readme_lists_the_series():
    readme = (ROOT / "patches" / "README.md").read_text()
    listed = [line.split("|")[1].strip() for line in readme.splitlines() if line.startswith("| 00")]
    assert listed == [p.stem for p in SERIES]
