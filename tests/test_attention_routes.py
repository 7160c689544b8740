"""The CPU's two flash-attention routes for a polar cache on a real model's inputs (tools/polar-fa-routes): every
attention node of a 64-token batch replayed through the batch route (the tiled path) and token by token through
the decode route (ggml_polar_cpu_attn), on the node's own query, cache, mask, exact rows and key offsets. Both are
exact to float32 rounding; what makes runs of one cache differ at the model's output is the model's sensitivity to
rounding (tools/polar-perturb-kld, docs/metal.md)."""
import re

import pytest

from conftest import run_tool

LARGEST = re.compile(r"largest NMSE between the routes: (\S+)")
LAYER = re.compile(r"layer +(\d+) +K (\w+) +V (\w+) +NMSE batch vs decode (\S+)(?:  vs float64: batch (\S+) decode (\S+))?")
PERTURBED = re.compile(r"mean KLD ([\d.]+), largest ([\d.]+), same top token (\d+)/(\d+)")
CENTERING_OFF = {"LLAMA_K_CENTER": "off", "LLAMA_KV_SINK_ROWS": "0"}


def routes(model_path, text_path, k, v, env=None):
    result = run_tool("polar-fa-routes", model_path, text_path, k, v, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    layers = [m.groups() for m in LAYER.finditer(result.stdout)]
    return layers, float(LARGEST.search(result.stdout).group(1))


@pytest.mark.parametrize("k, v, env", [("pq46", "pq46", None), ("pq32", "pq46", None), ("pq46", "f16", CENTERING_OFF),
                                       ("f16", "pq37", CENTERING_OFF)],
                         ids=["pq46-defaults", "pq32-pq46-defaults", "pq46-f16-plain", "f16-pq37-plain"])
def test_polar_routes_agree_on_a_models_attention(bin_dir, model_path, text_path, k, v, env):
    layers, largest = routes(model_path, text_path, k, v, env)
    assert len(layers) == 2 * 30, "SmolLM2 has 30 layers, replayed for 2 batches"
    assert all(layer[1:3] == (k, v) for layer in layers)
    assert largest < 1e-10, f"the batch and decode routes differ by NMSE {largest:.2e} on the model's inputs"
    for _, _, _, _, batch, decode in layers:
        if batch is not None:  # no exact rows nor key offsets: a float64 reference from the decoded cache
            assert float(batch) < 1e-10 and float(decode) < 1e-10


def test_upstream_routes_are_what_the_probe_measures(bin_dir, model_path, text_path):
    """The probe sees a difference where there is one: upstream's f16 decode route rounds Q to f16 (NMSE ~1e-7)."""
    layers, largest = routes(model_path, text_path, "f16", "f16")
    assert 1e-8 < largest < 1e-4
    assert all(float(batch) < 1e-10 for _, _, _, _, batch, _ in layers)


def test_a_rounding_level_change_moves_a_quantized_cache_more(bin_dir, model_path, text_path):
    """Layer 0's attention output scaled by 1 + 1e-6 moves the model's distributions; with a quantized cache much
    more than with f16 (a cache row's quantization flips), and not at all when EPS is 0 (the runs are deterministic)."""
    def perturbed(k, v, eps):
        result = run_tool("polar-perturb-kld", model_path, text_path, k, v, eps, 256, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return float(PERTURBED.search(result.stdout).group(1))
    assert perturbed("pq46", "pq46", 0) == 0.0
    f16, pq46 = perturbed("f16", "f16", 1e-6), perturbed("pq46", "pq46", 1e-6)
    assert 0.0 < f16 < pq46


@pytest.mark.parametrize("args, message", [
    (["pq99", "f16"], "unknown cache type 'pq99'"),
    (["pq46", "f16", "0"], "N_TOKENS must be a positive integer"),
])
def test_probe_arguments_are_checked(bin_dir, model_path, text_path, args, message):
    result = run_tool("polar-fa-routes", model_path, text_path, *args, timeout=60)
    assert result.returncode == 1 and message in result.stderr
