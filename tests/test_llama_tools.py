"""The patched llama.cpp tools with PolarQuant caches on a real model (SmolLM2-135M-Instruct, head size 64)."""
import re

import pytest

import llama_polar
from conftest import POLAR_TYPES, run_tool

PROMPT = "The quick brown fox"
CACHE_LINE = re.compile(r"llama_kv_cache: size = .*K \((\w+)\):\s+([\d.]+) MiB, V \((\w+)\):\s+([\d.]+) MiB")


def complete(model, *args, n=12, env=None):
    return run_tool("llama-completion", "-m", model, "-p", PROMPT, "-n", n, "--temp", 0, "-no-cnv", "-c", 512, "-v",
                    *args, env=env, timeout=300)


def cache_types_used(stderr):
    match = CACHE_LINE.search(stderr)
    assert match, "llama_kv_cache size line not found in the log"
    return match.group(1), match.group(3), float(match.group(2)), float(match.group(4))


@pytest.mark.parametrize("tool", ["llama-cli", "llama-completion", "llama-perplexity", "llama-server"])
def test_help_lists_every_polar_type(bin_dir, tool):
    result = run_tool(tool, "--help", timeout=60)
    text = result.stdout + result.stderr
    help_k = text[text.index("--cache-type-k"):][:600]
    for name in POLAR_TYPES:
        assert name in help_k, f"{tool} --help does not list {name} for -ctk"


def test_llama_bench_help_lists_polar_types(bin_dir):
    result = run_tool("llama-bench", "--help", timeout=60)
    for name in POLAR_TYPES:
        assert name in result.stdout


@pytest.mark.parametrize("name", POLAR_TYPES)
def test_generation_with_a_polar_cache(bin_dir, model_path, name):
    result = complete(model_path, "-ctk", name, "-ctv", name, "-fa", "on")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(PROMPT) and len(result.stdout) > len(PROMPT) + 10
    k, v, k_mib, v_mib = cache_types_used(result.stderr)
    assert (k, v) == (name, name)
    # 512 cells x 30 layers x 192 values (3 KV heads of 64) at the type's bits per value
    expected = 512 * 30 * 192 * llama_polar.TYPES[name].bits_per_value / 8 / 2**20
    assert k_mib == pytest.approx(expected, abs=0.01) and v_mib == pytest.approx(expected, abs=0.01)


def test_llama_cli_single_turn_with_a_polar_cache(bin_dir, model_path):
    result = run_tool("llama-cli", "-m", model_path, "-p", "Say hello.", "-n", 8, "-st", "--temp", 0,
                      "-ctk", "pq46", "-ctv", "pq46", "-fa", "on", "-c", 512, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Generation:" in result.stdout


def test_cache_types_from_environment_variables(bin_dir, model_path):
    result = complete(model_path, "-fa", "on", env={"LLAMA_ARG_CACHE_TYPE_K": "pq46", "LLAMA_ARG_CACHE_TYPE_V": "pq37"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert cache_types_used(result.stderr)[:2] == ("pq46", "pq37")


@pytest.mark.parametrize("k,v", [("q8_0", "pq46"), ("pq46", "f16"), ("f16", "pq42"), ("pq38p", "q4_0")])
def test_asymmetric_pairs(bin_dir, model_path, k, v):
    result = complete(model_path, "-ctk", k, "-ctv", v, "-fa", "on")
    assert result.returncode == 0, result.stderr[-2000:]
    assert cache_types_used(result.stderr)[:2] == (k, v)


def test_flash_attention_off_with_a_polar_k_cache_is_a_clear_error(bin_dir, model_path):
    result = complete(model_path, "-ctk", "pq46", "-ctv", "f16", "-fa", "off")
    assert result.returncode != 0
    assert "PolarQuant K cache pq46 requires flash_attn to be enabled" in result.stderr


def test_flash_attention_off_with_a_polar_v_cache_is_a_clear_error(bin_dir, model_path):
    result = complete(model_path, "-ctk", "f16", "-ctv", "pq46", "-fa", "off")
    assert result.returncode != 0
    assert "quantized V cache requires flash_attn" in result.stderr


def test_flash_attention_auto_turns_on_for_a_polar_k_cache(bin_dir, model_path):
    result = complete(model_path, "-ctk", "pq46", "-ctv", "f16", "-fa", "auto")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "enabling flash_attn since it is required for a PolarQuant K cache" in result.stderr


def test_unknown_cache_type_is_rejected(bin_dir, model_path):
    result = complete(model_path, "-ctk", "pq99")
    assert result.returncode != 0
    assert "Unsupported cache type: pq99" in result.stderr


@pytest.mark.parametrize("name", ["pq46", "pq38p"])
def test_context_shift_with_a_polar_k_cache(bin_dir, model_path, name):
    """Generate past a 128-token context: the K cache is decoded, re-roped and re-encoded in place."""
    result = run_tool("llama-completion", "-m", model_path, "-p", PROMPT, "-n", 300, "-c", 128, "--context-shift",
                      "--ignore-eos", "--temp", 0, "-no-cnv", "-ctk", name, "-ctv", name, "-fa", "on", "-v", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "context full, swapping" in result.stderr and "applying K-shift" in result.stderr
    # every token was generated, past the shift (words are a poor count: "The answer is 25." repeats)
    assert re.search(r"eval time =.*/\s+299 runs", result.stderr), result.stderr[-1500:]
    assert len(result.stdout.split()) > 100


def test_llama_bench_runs_polar_types(bin_dir, model_path):
    result = run_tool("llama-bench", "-m", model_path, "-fa", 1, "-ctk", "pq46,q4_0", "-ctv", "pq46,q4_0",
                      "-p", 32, "-n", 4, "-r", 1, "-t", 2, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pq46" in result.stdout and "q4_0" in result.stdout


def test_ggml_quantize_fns_passes_for_polar_types(bin_dir):
    result = run_tool("test-quantize-fns", "-v", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    for name in POLAR_TYPES:
        assert re.search(rf"{name} absolute quantization error:\s+ok", result.stdout)
        assert re.search(rf"{name} dot product error:\s+ok", result.stdout)


@pytest.mark.parametrize("op", ["SET_ROWS", "FLASH_ATTN_EXT", "CPY"])
def test_ggml_backend_ops_has_polar_cases(bin_dir, op):
    """Only the CPU is here, so nothing can be compared (that needs Metal or CUDA); the polar cases must exist
    and the CPU must claim them."""
    result = run_tool("test-backend-ops", "support", "-o", op, "-b", "CPU", timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
    for name in POLAR_TYPES:
        cases = [line for line in result.stdout.splitlines() if f"={name}," in line]
        assert cases and all("SUPPORTED" in line and "NOT SUPPORTED" not in line for line in cases), name
    if op == "FLASH_ATTN_EXT":
        for hs in (64, 128, 256):
            assert re.search(rf"hsk={hs},hsv={hs},.*type_K=pq46", result.stdout), hs


def test_cpu_flash_attention_polar_path_matches_the_reference(bin_dir):
    """With -b CPU, test-backend-ops compares the CPU backend with its own reference path (one KV row at a time):
    the polar path (split-KV decode, per-KV-head small batches, tiled batches of 64+), with masks, sinks, ALiBi,
    soft caps and GQA, for an fp16-radius family type, the paper's groups of 16, the key mode and a trellis type."""
    result = run_tool("test-backend-ops", "test", "-o", "FLASH_ATTN_EXT", "-b", "CPU",
                      "-p", "hsk=64,.*type_K=(pq46|pq38p|pqk1|pqt27),", timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    m = re.search(r"(\d+)/(\d+) tests passed", result.stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) >= 100, result.stdout[-2000:]
    for nb in (1, 3, 75):   # decode, small batch, tiled
        assert re.search(rf"hsk=64,.*nb={nb},.*type_K=pq46.*OK", result.stdout), nb


def test_cpu_flash_attention_exact_rows_match_the_reference(bin_dir):
    """Exact rows (ggml_flash_attn_ext_set_exact_rows, patch 0009, for the sink rows of patch 0013) on every CPU path, against the
    reference path: polar K and V, and a polar side with f16 or q8_0 on the other (decode and small batches: the polar
    path; 75 queries: tiled), and f16 (the reference path itself), with and without exact V rows, an unused slot and
    a cell past the cache."""
    result = run_tool("test-backend-ops", "test", "-o", "FLASH_ATTN_EXT", "-b", "CPU", "-p", "n_slots=.*v_rows=[01]$",
                      timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    m = re.search(r"(\d+)/(\d+) tests passed", result.stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) == 108, result.stdout[-2000:]
    for pair in ("type_K=f16,type_V=pq46", "type_K=q8_0,type_V=pq46", "type_K=pq46,type_V=q8_0"):
        assert re.search(rf"{pair},.*OK", result.stdout), pair



@pytest.mark.parametrize("var", ["k_offset=1", "score_terms=f32", "score_terms=f16"])
def test_cpu_flash_attention_k_offsets_and_score_terms_match_the_reference(bin_dir, var):
    """The two ways patch 0013 restores key centers per position (patch 0012) on every CPU path against the reference
    path, on cache rows and exact rows alike, laid out as llama.cpp passes them: K offsets
    (ggml_flash_attn_ext_set_k_offset, batches: a permuted view added to K's rows) and score terms
    (ggml_flash_attn_ext_set_score_terms, decode: 70 terms per query and per cell, F32 or F16 (llama.cpp's), a
    cell's terms a padded stride apart). Polar K with a polar or f16 V (decode and small batches: the polar path;
    75 queries: tiled), f16 K with a polar V (the polar path's f16 partner) and f16 K and V."""
    result = run_tool("test-backend-ops", "test", "-o", "FLASH_ATTN_EXT", "-b", "CPU", "-p", var, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    m = re.search(r"(\d+)/(\d+) tests passed", result.stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) == 24, result.stdout[-2000:]
    for nb in (1, 3, 75):
        assert re.search(rf"nb={nb},type_K=pq46,type_V=pq37,.*{var}\): .*OK", result.stdout), nb