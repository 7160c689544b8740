"""The project's scripts: source preparation fails loudly on a bad patch; the demo runs."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_prepare_refuses_a_patch_that_does_not_apply(tmp_path):
    patches = tmp_path / "patches"
    patches.mkdir()
    shutil.copy(ROOT / "patches" / "0001-ggml-register-polar-types.patch", patches)
    (patches / "0002-broken.patch").write_text(
        "--- a/ggml/include/ggml.h\n+++ b/ggml/include/ggml.h\n@@ -1,3 +1,3 @@\n-no such line\n+replacement\n context\n")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_llama_cpp.py"), "--patches", str(patches),
                             "--dest", str(tmp_path / "tree")], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "patch 0002-broken.patch does not apply" in result.stderr
    assert not (tmp_path / "tree" / "ggml").exists(), "nothing is written when a patch fails"


def test_prepared_tree_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_llama_cpp.py")], capture_output=True,
                            text=True, timeout=600)
    series = sorted((ROOT / "patches").glob("*.patch"))
    assert result.returncode == 0 and f"up to date with {len(series)} patches" in result.stdout


def test_demo_runs_a_polar_cache_end_to_end(bin_dir, model_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--chunks", "1", "--kld-types",
                             "q4_0,pq46"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "[pq46 K and V cache]" in out and "assistant: " in out
    assert "pq46         4.625    52.03   3.46x" in out          # 8192 x 30 layers x 192 values x 4.625 bits
    assert "f16         16.000   180.00   1.00x" in out
    assert any(line.split()[:1] == ["pq46"] and len(line.split()) == 4 for line in out.splitlines())


def test_demo_rejects_bad_arguments():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--type", "q4_0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--type must be a polar type" in result.stderr
