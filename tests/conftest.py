import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import llama_polar
from llama_polar import models, native, paths

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


@pytest.fixture(scope="session")
def native_lib():
    """The C library must have been built (make native); a missing library is a failure, not a skip."""
    paths.native_library()
    return native


# ---------------------------------------------------------------------------------------------------------------
# llama.cpp integration: the patched build, the model and the text (make test provides all three)
# ---------------------------------------------------------------------------------------------------------------

ROOT = paths.ROOT
BIN = paths.BUILD_BIN
TEXT = paths.TEXT
POLAR_TYPES = TYPE_NAMES


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    missing = [t for t in ("llama-cli", "llama-completion", "llama-perplexity", "llama-bench", "llama-server",
                           "test-quantize-fns", "test-backend-ops") if not (BIN / t).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not in {BIN}: build them with `make llama`")
    return BIN


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = models.model_path("smollm2")
    if not path.exists():
        pytest.fail(f"{path} missing: get it with `make model`")
    return path


@pytest.fixture(scope="session")
def text_path() -> Path:
    if not TEXT.exists():
        pytest.fail(f"{TEXT} missing: the shared data folder must sit beside the checkout")
    return TEXT


def run_tool(tool: str, *args, timeout: float = 600, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a build/bin tool with stdin closed; returns the finished process (stdout and stderr as text)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=full_env, **kwargs)
