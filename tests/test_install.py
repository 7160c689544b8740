"""`pip install <checkout>` into a fresh virtual environment, as a user does (docs/build.md): the package bundles the
polar build in llama_polar/lib, llama-cpp-python comes in without a llama.cpp of its own, and from outside the
checkout `from llama_polar import Llama` generates text with a pq46 cache, and the command line runs.

The install builds in the checkout's build/ (pyproject.toml: build-dir), which `make test` has just built: CMake
configures again and nothing recompiles, so this takes a minute or two instead of a second llama.cpp build."""
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import prepare_llama_cpp_module

from llama_polar import _codebooks, paths

BUILD = paths.ROOT / "build"


def cmake_cache(key: str) -> str:
    match = re.search(rf"^{key}:\w+=(.*)$", (BUILD / "CMakeCache.txt").read_text(), flags=re.M)
    assert match, f"{key} is not in {BUILD / 'CMakeCache.txt'}"
    return match.group(1)


def tree_is_current() -> bool:
    """Whether build/src/llama.cpp carries today's patches/ (what scripts/prepare_llama_cpp.py's stamp records)."""
    prepare = prepare_llama_cpp_module()
    stamp = paths.LLAMA_TREE / prepare.STAMP
    digest = prepare.series_digest(prepare.patch_list(prepare.PATCHES))
    return stamp.is_file() and stamp.read_text().strip() == digest


def user_env(**extra) -> dict:
    """The environment without anything that points at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", paths.LLAMA_LIB_ENV, paths.NATIVE_LIB_ENV, "VIRTUAL_ENV")}
    return dict(env, **extra)


@pytest.fixture(scope="module")
def installed(bin_dir, tmp_path_factory):
    """A fresh venv with `CMAKE_ARGS=-DLLAMA_BUILD=OFF pip install <checkout>[server]` done; its bin/ folder."""
    # pip's configure re-patches a stale tree and rebuilds: not in the middle of a test run, whose tools are built
    if not tree_is_current():
        pytest.fail("patches/ changed after build/ was built: run `make llama` (make test does) first")
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # scikit-build-core records the isolated environment of its last build and, finding another one (every pip run
    # has its own), would clear build/'s CMake cache: make's options (GGML_POLAR_WERROR) would be lost and the codec
    # recompiled. Without the record it configures make's cache in place.
    (BUILD / ".skbuild-info.json").unlink(missing_ok=True)
    # llama.cpp's two largest objects: recompiled only if pip's configure differed from make's (a relink is cheap and
    # does happen: build-info.cpp carries the checkout's commit, which CMake reads at each configure)
    objects = [BUILD / "llama.cpp" / "src" / "CMakeFiles" / "llama.dir" / "llama.cpp.o",
               BUILD / "llama.cpp" / "ggml" / "src" / "CMakeFiles" / "ggml-cpu.dir" / "ggml-cpu" / "ops.cpp.o"]
    before = [o.stat().st_mtime_ns for o in objects]
    env = user_env(CMAKE_ARGS="-DLLAMA_BUILD=OFF", CMAKE_GENERATOR=cmake_cache("CMAKE_GENERATOR"))
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                             f"{paths.ROOT}[server]"], capture_output=True, text=True, timeout=1800, env=env,
                            cwd=venv.parent)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert [o.stat().st_mtime_ns for o in objects] == before, "pip install recompiled llama.cpp: build/ was not reused"
    return venv / "bin"


def run_installed(venv_bin, *cmd, cwd, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv_bin / cmd[0]), *map(str, cmd[1:])], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=user_env(), stdin=subprocess.DEVNULL)


GENERATE = """
import json, llama_polar
from llama_polar import Llama, paths
import llama_cpp
llm = Llama(model_path={model!r}, type_k="pq46", type_v="pq46", flash_attn=True, n_ctx=256, verbose=False)
out = llm.create_completion("The quick brown fox", max_tokens=8, temperature=0)
print(json.dumps(dict(text=out["choices"][0]["text"], type_k=llm.context_params.type_k, package=llama_polar.__file__,
                      lib=str(paths.llama_library_dir()), llama_cpp_lib=str(llama_cpp.llama_cpp._base_path),
                      llama_cpp=llama_cpp.__file__, native=str(paths.native_library()), cache=str(paths.CACHE))))
"""


def test_installed_package_generates_with_a_pq46_cache(installed, model_path, tmp_path):
    result = run_installed(installed, "python", "-c", GENERATE.format(model=str(model_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.splitlines()[-1])
    venv = installed.parent
    package = next((venv / "lib").glob("python3*/site-packages")) / "llama_polar"
    assert got["package"] == str(package / "__init__.py")               # the installed copy, not the checkout's
    assert got["lib"] == got["llama_cpp_lib"] == str(package / "lib")    # the bundled build, loaded by llama_cpp
    assert got["native"] == str(package / "lib" / paths.shared_library("ggml_polar"))
    assert got["llama_cpp"].startswith(str(venv))
    assert got["type_k"] == _codebooks.GGML_TYPE_IDS["pq46"] and len(got["text"].strip()) > 0
    assert not got["cache"].startswith(str(paths.ROOT))                  # downloads go to the user's cache


def test_installed_llama_cpp_python_has_no_llama_cpp_of_its_own(installed):
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    assert (site / "llama_cpp" / "llama.py").is_file()
    assert not list((site / "llama_cpp").glob("**/libllama*")), "llama-cpp-python built its own llama.cpp"
    bundled = {p.name for p in (site / "llama_polar" / "lib").iterdir()}
    assert {paths.shared_library(n) for n in ("llama", "ggml", "ggml-base", "ggml-cpu", "ggml_polar")} <= bundled
    assert {"llama-perplexity", "llama-bench"} <= bundled


def test_installed_command_line_runs_the_bundled_tools(installed, model_path, tmp_path):
    result = run_installed(installed, "llama-polar", "bench", "--model", model_path, "--types", "pq46", "--depths", 0,
                           "--reps", 1, "--prompt", 16, "--gen", 4, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(line.split()[:2] == ["pq46", "tg4"] for line in result.stdout.splitlines()), result.stdout
    validate = run_installed(installed, "llama-polar", "validate", "--rows", 128, "--types", "pq46", cwd=tmp_path)
    assert validate.returncode == 0 and "agree bit for bit" in validate.stdout, validate.stderr[-3000:]
    check = run_installed(installed, "llama-polar", "codebooks", "--check", "--no-progress", cwd=tmp_path)
    assert check.returncode == 0 and "only the Python tables were checked" in check.stdout, check.stderr
    serve = run_installed(installed, "llama-polar", "serve", "--help", cwd=tmp_path)
    assert serve.returncode == 0 and "--type_k" in serve.stdout, serve.stderr[-3000:]
