"""Fixtures shared by the tests, and the `model` marker, which is derived here from the fixtures a test uses.

A test that uses bin_dir, model_path, text_path or llama_tree (itself, or through another fixture) needs what
`make llama model` provides and is marked `model`; so is every test of a module that reads the llama.cpp tree
without a fixture (MODULES_READING_THE_TREE). Nobody marks a test by hand.

    pytest -m "not model"   the codec, generator, C-library and command-line tests: no llama.cpp build, no model
    pytest                  everything; a test whose build, model or text is missing SKIPS, saying what to make
    make test               LLAMA_POLAR_REQUIRE_ALL=1: anything missing FAILS instead of skipping

The C library (native_lib) is not such a prerequisite: when no build has it, it is built here, into build-native/
(the codec alone, without llama.cpp; seconds).
"""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import llama_polar
from llama_polar import models, native, paths, perplexity, texts

ROOT = paths.ROOT
TYPE_NAMES = list(llama_polar.TYPES)
FLT_MAX = np.finfo(np.float32).max


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """Haar-random orthogonal matrix."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def gaussian(rng, rows=512, dim=256):
    return rng.standard_normal((rows, dim)).astype(np.float32)


def rotated(rng, rows=512, dim=128):
    """K-like rows: channel scales over four decades with a few outlier channels, then a random rotation."""
    scales = 10.0 ** rng.uniform(-2, 2, dim)
    scales[rng.choice(dim, 4, replace=False)] *= 50
    x = rng.standard_normal((rows, dim)) * scales
    return (x @ random_rotation(dim, rng).T).astype(np.float32)


def heavy_tailed(rng, rows=512, dim=128):
    return rng.standard_t(1.5, size=(rows, dim)).astype(np.float32)


def adversarial(rng, dim=64):
    """Zeros, signed zeros, subnormals, huge values, NaN/Inf, ties on codebook boundaries, fp16/log8 edges."""
    tiny = np.float32(1e-45)
    rows = [
        np.zeros(dim),
        -np.zeros(dim),
        np.full(dim, tiny),
        rng.standard_normal(dim) * 1e-40,                      # all subnormal
        rng.standard_normal(dim) * 1e-20,                      # radius far below fp16 and log8
        rng.standard_normal(dim) * 1e-7,                       # radius in fp16's subnormal range
        rng.standard_normal(dim) * 1e30,                       # radius far above both formats
        np.full(dim, FLT_MAX),
        np.where(rng.random(dim) < 0.5, FLT_MAX, -FLT_MAX),
        np.full(dim, np.nan),
        np.where(rng.random(dim) < 0.1, np.nan, rng.standard_normal(dim)),
        np.where(rng.random(dim) < 0.1, np.inf, rng.standard_normal(dim)),
        np.where(rng.random(dim) < 0.1, -np.inf, rng.standard_normal(dim)),
        np.full(dim, np.inf),
        np.ones(dim),                                          # every pair on the pi/4 boundary
        np.tile([1.0, -1.0, -1.0, 1.0], dim // 4),
        np.tile([0.0, 1.0, -1.0, 0.0, 0.0, -1.0, 1.0, 0.0], dim // 8),   # quadrant edges
        np.eye(dim)[3] * 3.0,                                  # one non-zero value
        np.eye(dim)[dim - 1] * -7.5,
        np.full(dim, 8.0),                                     # radius at fp16 and log8 steps
        np.full(dim, 65504.0 / 8),                             # 64-value radius = 65504
        np.full(dim, 65520.0 / 8),
        np.full(dim, 2.0 ** 15.75 / 8),                        # log8 maximum
        np.full(dim, 2.0 ** -17 / 8),                          # below the smallest log8 step
        rng.standard_normal(dim) * np.where(rng.random(dim) < 0.5, 1e-30, 1e10),   # huge dynamic range
    ]
    return np.array(rows, dtype=np.float32)


INPUTS = {
    "gaussian": lambda rng: gaussian(rng),
    "rotated": lambda rng: rotated(rng),
    "heavy_tailed": lambda rng: heavy_tailed(rng),
    "adversarial": lambda rng: adversarial(rng),
}


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


def _build_native_library() -> None:
    """libggml_polar.so into build-native/bin: CMake without llama.cpp, configured once, then incremental."""
    if not shutil.which("cmake"):
        pytest.fail("cmake not found: the C library is built with CMake (apt-get install cmake; .ci/run does)")
    steps = [["cmake", "--build", str(paths.NATIVE_BUILD), "--target", "ggml_polar_shared"]]
    if not (paths.NATIVE_BUILD / "CMakeCache.txt").exists():
        steps.insert(0, ["cmake", "-S", str(ROOT), "-B", str(paths.NATIVE_BUILD), "-DLLAMA_POLAR_BUILD_LLAMA=OFF",
                         "-DCMAKE_BUILD_TYPE=Release", "-DGGML_POLAR_WERROR=ON"])
    for cmd in steps:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{(result.stdout + result.stderr)[-3000:]}")


@pytest.fixture(scope="session")
def native_lib():
    """llama_polar.native over the C library: the build's (make native, make llama), else one built here."""
    try:
        path = paths.native_library()
    except paths.LibraryError:
        path = None
    if path is None or path.parent == paths.NATIVE_BUILD / "bin":     # ours: bring it up to date with the sources
        _build_native_library()
        paths.native_library()
    return native


# ---------------------------------------------------------------------------------------------------------------
# llama.cpp integration: the patched tree and build, the model and the text (make test provides all of them)
# ---------------------------------------------------------------------------------------------------------------

POLAR_TYPES = TYPE_NAMES
TOOLS = ("llama-cli", "llama-completion", "llama-perplexity", "llama-bench", "llama-server", "test-quantize-fns",
         "test-backend-ops", "polar-fa-routes", "polar-perturb-kld")
REQUIRE_ALL = os.environ.get("LLAMA_POLAR_REQUIRE_ALL") == "1"
NEEDS_LLAMA = {"bin_dir", "model_path", "gemma_path", "text_path", "llama_tree"}
# test modules that read paths.LLAMA_TREE directly instead of through the llama_tree fixture
MODULES_READING_THE_TREE = {"test_metal.py"}


def missing(what: str) -> None:
    """A prerequisite is missing: skip the test, or fail it under LLAMA_POLAR_REQUIRE_ALL=1 (make test)."""
    if REQUIRE_ALL:
        pytest.fail(f"{what} (LLAMA_POLAR_REQUIRE_ALL=1: make test needs everything)", pytrace=False)
    pytest.skip(what)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if NEEDS_LLAMA & set(item.fixturenames) or item.path.name in MODULES_READING_THE_TREE:
            item.add_marker(pytest.mark.model)


def pytest_runtest_setup(item):
    if item.path.name in MODULES_READING_THE_TREE:
        require_llama_tree()


def require_llama_tree() -> Path:
    if not (paths.LLAMA_TREE / "CMakeLists.txt").exists():
        missing(f"the patched llama.cpp tree {paths.LLAMA_TREE} is missing: make it with `make source`")
    return paths.LLAMA_TREE


@pytest.fixture(scope="session")
def llama_tree() -> Path:
    return require_llama_tree()


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The polar-enabled llama.cpp build: libllama.so and the tools the tests run."""
    try:
        folder = paths.llama_library_dir()
    except paths.LibraryError as e:
        missing(f"the llama.cpp build is missing: {e}")
    absent = [t for t in TOOLS if not (folder / t).is_file()]
    if absent:
        missing(f"{', '.join(absent)} not in {folder}: build them with `make llama`")
    return folder


def _model(name: str, make_target: str) -> Path:
    path = models.model_path(name)
    if not path.exists():
        missing(f"the model {path} is missing: get it with `make {make_target}`")
    return path


@pytest.fixture(scope="session")
def model_path() -> Path:
    return _model("smollm2", "model")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """Gemma-3-270M: 5 of every 6 layers attend to their last 512 positions, in a sliding-window cache of their own."""
    return _model("gemma3", "gemma")


@pytest.fixture(scope="session")
def text_path() -> Path:
    path = texts.text_path()
    if not path.exists():
        missing(f"the text {path} is missing: get it with `make text`")
    return path


def prepare_llama_cpp_module():
    """scripts/prepare_llama_cpp.py as a module (the patched tree's stamp, the sdist, its extraction)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("prepare_llama_cpp", ROOT / "scripts" / "prepare_llama_cpp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(tool: str, *args, timeout: float = 600, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a llama.cpp tool of the build with stdin closed; returns the finished process (stdout, stderr as text)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(paths.tool(tool)), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=full_env, **kwargs)


@pytest.fixture(scope="session")
def f32_model(bin_dir, model_path):
    """SmolLM2 with F32 weights (llama-quantize --allow-requantize ... F32), kept in .cache/: on it the only rounding
    left is float32's (and the cache's), where the Q4_1 model's 8-bit activations move logits for any perturbation."""
    out = ROOT / ".cache" / "SmolLM2-135M-Instruct.F32.gguf"
    if not out.exists():
        tmp = out.with_suffix(".partial")
        result = run_tool("llama-quantize", "--allow-requantize", model_path, tmp, "F32", timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        tmp.rename(out)
    return out


F32_BASE_CHUNKS = 2


@pytest.fixture(scope="session")
def f32_base(f32_model, text_path, tmp_path_factory):
    """Logits of the F32 model with an f32 cache, over F32_BASE_CHUNKS chunks of 512 tokens of the text."""
    base = tmp_path_factory.mktemp("f32-base") / "f32.kld"
    perplexity.base_logits(f32_model, text_path, F32_BASE_CHUNKS, base, cache="f32", timeout=900)
    return base


def greedy_text(model, env, *args, prompt: str = "The quick brown fox") -> subprocess.CompletedProcess:
    """llama-completion's greedy continuation of prompt (-fa on, verbose log in stderr); fails the test on an error."""
    result = run_tool("llama-completion", "-m", model, "-p", prompt, "--temp", 0, "-no-cnv", "-fa", "on", "-v", *args,
                      env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def completion_error(model, env, *args) -> str:
    """The stderr of a llama-completion run (-fa on, two tokens) that must fail, as a bad setting makes it fail when
    the context is created."""
    result = run_tool("llama-completion", "-m", model, "-p", "Hi", "-n", 2, "-no-cnv", "-fa", "on", *args, env=env,
                      timeout=300)
    assert result.returncode != 0, result.stderr[-1500:]
    return result.stderr


def polar_context(monkeypatch, model_path, **env):
    """A 256-cell pq46/pq46 context of llama_polar.Llama, with env set first (llama.cpp reads it when the context
    is created)."""
    import llama_polar.llama as llama
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return llama.Llama(model_path=str(model_path), n_ctx=256, type_k="pq46", type_v="pq46", flash_attn=True,
                       verbose=False)


def next_logits(llm, token: int) -> np.ndarray:
    """The context's logits after token (llama_get_logits: Llama.scores holds them only with logits_all)."""
    llm.eval([token])
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()
