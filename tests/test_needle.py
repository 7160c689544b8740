"""llama_polar.needle and `llama-polar needle`: the prompt hides the number where asked; a cache that reads the
keys well finds it."""
import json
import os
import subprocess
import sys

import pytest

from llama_polar import cache_config, needle

TEXT = "".join(f"Line {i} of a long poem, with words.\n" for i in range(400))


def test_the_needle_sits_at_its_depth_on_a_line_of_its_own():
    for depth in (0.0, 0.3, 0.7, 1.0):
        p = needle.prompt(TEXT, 4000, depth, 12345)
        line = needle.NEEDLE.format(number=12345)
        at = p.index(line)
        assert p.endswith(needle.QUESTION) and p.count(line) == 1
        assert at == 0 or p[at - 1] == "\n"
        hay = p.replace(line + "\n", "")[:-len(needle.QUESTION)]
        assert hay == TEXT[:hay.rfind("\n") + 1] and len(hay) <= 4000
        assert abs(at - depth * len(hay)) <= 40, (depth, at)     # within a line of where it was asked


def test_bad_depths_are_refused():
    with pytest.raises(ValueError, match="depth must be within 0..1"):
        needle.prompt(TEXT, 4000, 1.5, 12345)


def test_the_numbers_are_five_digits_and_repeatable():
    assert needle.numbers(5, seed=3) == needle.numbers(5, seed=3)
    assert all(10000 <= n < 100000 for n in needle.numbers(50))


def test_f16_and_pq46_find_the_needles_in_1024_tokens(bin_dir, model_path, text_path):
    text = text_path.read_text(encoding="utf-8")
    found = {}
    for spec in ("f16", "pq46"):
        hits = [needle.find(model_path, cache_config.parse(spec), needle.prompt(text, needle.chars_for(1024), d, n),
                            n, 1024)
                for d, n in zip((0.1, 0.5, 0.9), needle.numbers(3))]
        assert all(h.n_prompt > 800 for h in hits), hits      # the text fills the context
        found[spec] = sum(h.found for h in hits)
        # measured: the numbers' log-probabilities were -0.45 to -0.68 with both caches
        assert all(-1.5 < h.logprob < 0 and h.answer == str(h.number) for h in hits), hits
    # measured: both find all three; f16 finding them is what makes the test mean something
    assert found == {"f16": 3, "pq46": 3}, found


def test_a_cache_setting_is_in_the_environment_only_while_the_context_is_made(monkeypatch):
    monkeypatch.setenv("LLAMA_KV_SINK_ROWS", "1")
    monkeypatch.delenv("LLAMA_KV_RECENT_ROWS", raising=False)
    with needle._environment({"LLAMA_KV_SINK_ROWS": "0", "LLAMA_KV_RECENT_ROWS": "8"}):
        assert os.environ["LLAMA_KV_SINK_ROWS"] == "0" and os.environ["LLAMA_KV_RECENT_ROWS"] == "8"
    assert os.environ["LLAMA_KV_SINK_ROWS"] == "1" and "LLAMA_KV_RECENT_ROWS" not in os.environ


def test_the_command_prints_a_table_and_writes_json(bin_dir, model_path, tmp_path):
    out = tmp_path / "needle.json"
    result = subprocess.run([sys.executable, "-m", "llama_polar", "needle", "--model", str(model_path), "--ctx",
                             "512", "--depths", "0.5", "--configs", "f16,pq46+plain", "--json", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| cache | depth 0.5 | found | mean log-prob |" in result.stdout and "| pq46+plain |" in result.stdout
    data = json.loads(out.read_text())
    assert list(data["results"]) == ["f16", "pq46+plain"] and data["results"]["f16"][0]["depth"] == 0.5


@pytest.mark.parametrize("args,message", [
    (["--depths", "0.5,2"], "depths within 0..1"),
    (["--configs", "pq99"], "unknown cache type 'pq99'"),
    (["--configs", "pq46+calib"], "need a centers file"),
])
def test_the_command_refuses_bad_arguments(args, message):
    result = subprocess.run([sys.executable, "-m", "llama_polar", "needle", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr
