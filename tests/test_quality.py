"""KL divergence against an f16 cache on a real model (SmolLM2-135M-Instruct, tinyshakespeare, flash attention on),
of the codec alone (key centering off).

Bounds from the codec's distortion: in the small-error regime KLD grows linearly with the relative MSE D of the
cached K/V. q4_0 is measured in the same run, so each polar type's prediction is
    KLD_pred(T) = KLD(q4_0) * D(T) / D(q4_0)
with D(T) the closed form (llama_polar.TYPES[T].expected_rel_mse) and D(q4_0) measured here on Gaussian vectors
(both on preconditioned data, as llama.cpp's Hadamard rotation makes it). Measured KLD / prediction was 1.02-1.38
for every type when these bounds were set; the test asks for 0.7-2.0. The lower bound is what catches a cache that
silently is not polar (f16 would give ~0).
"""
import numpy as np
import pytest

import llama_polar
from conftest import POLAR_TYPES
from llama_polar import perplexity
from llama_polar.validate import ggml_roundtrip

CHUNKS = 4


def kld_run(model_path, text_path, base, name):
    """(mean KLD, same-top-token %) of a name/name cache against the f16 base logits: the codec alone, so without key
    centering (tests/test_key_centering.py measures what centering adds)."""
    r = perplexity.kl_divergence(model_path, text_path, CHUNKS, base, name, name, timeout=900,
                                 env={"LLAMA_K_CENTER": "off"})
    return r.kld, r.same_top


@pytest.fixture(scope="session")
def base_logits(bin_dir, model_path, text_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("kld") / "f16.kld"
    perplexity.base_logits(model_path, text_path, CHUNKS, base, timeout=900)
    return base


@pytest.fixture(scope="session")
def q4_0_kld(model_path, text_path, base_logits):
    return kld_run(model_path, text_path, base_logits, "q4_0")[0]


@pytest.fixture(scope="session")
def q4_0_rel_mse():
    x = np.random.default_rng(0).standard_normal((32768, 64)).astype(np.float32)
    return llama_polar.relative_mse(x, ggml_roundtrip(x, "q4_0"))


def test_q8_0_sits_at_the_noise_floor(model_path, text_path, base_logits):
    kld, top = kld_run(model_path, text_path, base_logits, "q8_0")
    assert kld < 0.01 and top > 93


@pytest.mark.parametrize("name", POLAR_TYPES)
def test_kld_follows_the_codec_distortion(model_path, text_path, base_logits, q4_0_kld, q4_0_rel_mse, name):
    predicted = q4_0_kld * llama_polar.TYPES[name].expected_rel_mse / q4_0_rel_mse
    kld, top = kld_run(model_path, text_path, base_logits, name)
    assert 0.7 * predicted <= kld <= 2.0 * predicted, f"{name}: KLD {kld:.4f}, predicted {predicted:.4f}"
    assert 0 < top < 100
