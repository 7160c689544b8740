"""llama_polar.perplexity reads every number llama-perplexity prints: real output (an f16 cache against f16 logits,
whose mean KLD rounds to -0.000000), and the same output with the mean KLD that other CPUs or a broken run print."""
import math
from pathlib import Path

import pytest

from llama_polar import perplexity

REAL = (Path(__file__).parent / "data" / "kld-f16-vs-f16.txt").read_text()
MEAN_KLD = "Mean    KLD:  -0.000000 ±   0.000001"


def test_real_output_is_read_whole():
    r = perplexity.parse_divergence(REAL)
    assert r.ppl == 51.921732 and r.same_top == 100.0
    assert r.kld == 0.0 and math.copysign(1, r.kld) == -1        # "-0.000000": a negative zero, not an error
    assert (r.kld_p99, r.kld_p999) == (0.000030, 0.000043)


@pytest.mark.parametrize("printed, expected", [
    ("-0.000001", -0.000001),         # the AMD run of issue 19: f16 against f16 rounds below zero
    ("0.046812", 0.046812),
    ("1.2e-05", 1.2e-05),
    ("inf", math.inf),
    ("-inf", -math.inf),
])
def test_mean_kld_as_printed(printed, expected):
    log = REAL.replace(MEAN_KLD, f"Mean    KLD:  {printed} ±   0.000001")
    assert perplexity.parse_divergence(log).kld == expected


@pytest.mark.parametrize("printed", ["nan", "-nan", "NaN"])
def test_a_nan_mean_is_read_as_nan(printed):
    log = REAL.replace(MEAN_KLD, f"Mean    KLD:  {printed} ±   nan")
    assert math.isnan(perplexity.parse_divergence(log).kld)


def test_a_missing_figure_names_what_is_missing():
    with pytest.raises(RuntimeError, match=r"printed no 'Mean.*KLD:'"):
        perplexity.parse_divergence(REAL.replace(MEAN_KLD, "Mean    KLD:  garbage"))


def test_the_kv_buffer_is_read_from_llama_cpps_lines():
    lines = (Path(__file__).parent / "data" / "kv-lines-pq46.txt").read_text()
    assert perplexity.kv_buffer_mib(lines) == 13.14          # the buffer, sink rows and centers in it
    assert perplexity.kv_buffer_mib(lines + lines) == 26.28  # two caches (sliding-window layers): both count
    assert perplexity.kv_buffer_mib("no cache lines") == 0
