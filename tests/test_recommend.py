"""llama_polar.recommend and `llama-polar recommend`: the lowest KLD within a budget, as a shell fragment."""
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from llama_polar import cache_config, recommend

ROOT = Path(__file__).resolve().parent.parent
# issue 17's goals, SmolLM2's mean KLD over upstream q4_0's per budget in bits/value; Gemma-3's are GEMMA3_GOAL times
SMOLLM2_GOALS = {4.25: 0.45, 3.75: 0.55, 3.25: 0.70, 2.75: 1.2}
GEMMA3_GOAL = 1.2


def row(spec, bits, kld, p999=1.0):
    return {"type": spec, "bits": bits, "formula_bits": bits, "kld": kld, "kld_p999": p999}


REPORT = {"model": "m.gguf", "text": "t.txt", "date": "2026-12-03", "quality": {
    "long": {"ctx": 8192, "chunks": 2, "rows": [row("f16", 16, 0), row("q4_0", 4.5, 0.06), row("pq46", 4.63, 0.018),
                                                 row("pq46/pq37", 4.19, 0.025), row("pq42/pq32+fixed", 3.76, 0.05),
                                                 row("pq46+calib", 4.63, 0.01), row("pq32", 3.25, 0.2)]},
    "short": {"ctx": 512, "chunks": 8, "rows": [row("f16", 16, 0), row("q4_0", 4.5, 0.5)]}}}


@pytest.mark.parametrize("budget,spec", [(16, "pq46"), (4.63, "pq46"), (4.5, "pq46/pq37"), (4.0, "pq42/pq32+fixed"),
                                         (3.25, "pq32")])
def test_the_lowest_kld_within_the_budget(budget, spec):
    best = recommend.choose(recommend.candidates(REPORT), budget)
    assert best.spec == spec and best.bits <= budget


def test_ratios_are_to_q4_0_of_the_long_run_and_calibrated_needs_centers():
    rows = {r.spec: r for r in recommend.candidates(REPORT)}
    assert rows["pq46"].vs_q4_0 == pytest.approx(0.3) and "f16" not in rows and "pq46+calib" not in rows
    assert recommend.choose(recommend.candidates(REPORT, calibrated=True), 5).spec == "pq46+calib"


def test_a_decode_run_is_what_recommendations_and_the_readme_quote(tmp_path):
    # decode (-ub 1) reads the cache as generation does: where a report has it, it is the measurement
    report = json.loads(json.dumps(REPORT))
    report["quality"]["decode"] = {"ctx": 8192, "chunks": 1, "ubatch": 1, "date": "2026-12-06", "machine": "cpu",
                                   "rows": [row("f16", 16, 0), row("q4_0", 4.5, 0.06), row("pq42/pq37", 4.13, 0.012),
                                            row("pq37/pq32", 3.63, 0.02)]}
    best = recommend.choose(recommend.candidates(report), 4.0)
    assert best.spec == "pq37/pq32" and best.vs_q4_0 == pytest.approx(1 / 3)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    lines = polar("--bits", "4.25", "--report", str(path)).stdout.splitlines()
    # the run's own date: a run measured again (report --redo) is newer than the report
    assert lines[0] == "measured: m.gguf, t.txt, 1 chunk of 8192 tokens read token by token (2026-12-06, report.json)"
    assert lines[-1] == "-ctk pq42 -ctv pq37 -fa on"
    from llama_polar.report import readme_tables
    report.update(speed=[{"type": "f16", "test": "tg64", "depth": 0, "tps": 1.0, "vs_f16": 1.0, "vs_q4_0": None}],
                  types=["f16"], threads=2, reps=1)
    for run in ("long", "decode"):
        for r in report["quality"][run]["rows"]:
            r.update(ppl=10.0, top=90.0)
    decode, batched = readme_tables(report, "r.md")["quality"].split("The same text in batches (2 chunks of 8192")
    assert "1 chunk of 8192 tokens read token by token" in decode and "| pq37/pq32 | 3.630 | 0.0200 | 0.33x |" in decode
    assert "| pq46/pq37 | 4.190 | 0.0250 | 0.42x |" in batched and "pq37/pq32" not in batched


def test_nothing_within_the_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="no measured configuration fits 3 bits/value: the smallest is pq32 at 3.250"):
        recommend.choose(recommend.candidates(REPORT), 3)


@pytest.mark.parametrize("spec", ["pq46/pq37", "pq42/pq32+fixed", "q4_0+center+sink1", "pq46+plain"])
def test_the_fragment_is_the_configurations_environment_and_arguments(spec):
    words = shlex.split(recommend.fragment(spec))
    cfg = cache_config.parse(spec)
    env = dict(w.split("=", 1) for w in words if "=" in w)
    args = [w for w in words if "=" not in w]
    assert env == cfg.env() and args == ["-ctk", cfg.type_k, "-ctv", cfg.type_v, "-fa", "on"]
    assert words[:len(env)] == [f"{k}={v}" for k, v in env.items()]      # assignments first


def polar(*args):
    return subprocess.run([sys.executable, "-m", "llama_polar", "recommend", *args], capture_output=True, text=True,
                          timeout=120)


def test_the_command_ends_with_the_fragment(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(REPORT))
    result = polar("--bits", "3.8", "--report", str(path))
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0].startswith("measured: m.gguf, t.txt, 2 chunks of 8192 tokens")
    assert lines[1] == "pq42/pq32+fixed: 3.760 bits/value, mean KLD 0.0500, 0.83x q4_0's, 99.9th percentile 1.000"
    assert lines[-1] == "LLAMA_K_CENTER_MODE=fixed -ctk pq42 -ctv pq32 -fa on"
    worse = polar("--bits", "3.25", "--report", str(path))
    assert "note: worse than q4_0" in worse.stdout and worse.stdout.splitlines()[-1] == "-ctk pq32 -ctv pq32 -fa on"


@pytest.mark.parametrize("args,rc,message", [
    (["--bits", "0"], 2, "--bits must be positive"),
    (["--bits", "2", "--report", "README.md"], 2, "not a report of llama-polar report"),
    (["--bits", "1"], 1, "no measured configuration fits 1 bits/value"),
])
def test_bad_budgets_and_files_are_clear_errors(args, rc, message):
    result = polar(*[str(ROOT / a) if a == "README.md" else a for a in args])
    assert result.returncode == rc and message in result.stderr, result.stderr


def test_the_packaged_measurements_are_the_projects_report():
    assert recommend.PACKAGED.read_bytes() == (ROOT / "docs" / "report" / "report.json").read_bytes()
    gemma = recommend.PACKAGED.with_name("report-gemma3.json")
    assert gemma.read_bytes() == (ROOT / "docs" / "report-gemma3" / "report.json").read_bytes()
    assert recommend.packaged(json.loads(gemma.read_text())["model"]) == gemma
    assert recommend.packaged("other.gguf") == recommend.packaged(None) == recommend.PACKAGED
    scaled = recommend.PACKAGED.with_name("report-gemma3-ks.json")
    assert scaled.read_bytes() == (ROOT / "docs" / "report-gemma3-ks" / "report.json").read_bytes()
    assert recommend.packaged("gemma-3-270m-q4_k_m.ks.gguf") == scaled     # make report-gemma3-ks's copy


def test_gemma3_with_scaled_keys_is_within_its_goal_at_2_75_bits_of_upstream_q4_0():
    """Issue 17's goal for Gemma-3 at 2.75 bits: within 1.2x of SmolLM2's 1.2x upstream q4_0, q4_0 as users get it (on
    the model itself, its shipped report). On the scaled copy (llama-polar scale-keys) q4_0 gains as much or more,
    so against q4_0 on the same copy the configuration is worse than q4_0 (1.24x measured): both are reported."""
    plain = json.loads(recommend.packaged("gemma-3-270m-q4_k_m.gguf").read_text())
    upstream_q4_0 = next(c.kld for c in recommend.candidates(plain) if c.spec == "q4_0")
    best = scaled_copy_choice(2.75)
    assert best.bits <= 2.75 and best.kld / upstream_q4_0 <= GEMMA3_GOAL * SMOLLM2_GOALS[2.75], (best, upstream_q4_0)
    assert best.vs_q4_0 > 1.0, "the same copy's q4_0 is lower: if that changes, the docs' figures must too"


@pytest.mark.parametrize("bits", [4.25, 3.75, 3.25, 2.75])
def test_gemma3_with_scaled_keys_meets_its_goals_at_equal_treatment(bits):
    """Against q4_0 on the same copy, issue 17's Gemma-3 goals (1.2x SmolLM2's) are met at every budget: at 3.25 and
    2.75 bits by the trellis types (docs/measurements.md, "The trellis scale keeps the norm")."""
    best = scaled_copy_choice(bits)
    assert best.bits <= bits and best.vs_q4_0 <= GEMMA3_GOAL * SMOLLM2_GOALS[bits], best


def scaled_copy_choice(bits):
    """recommend's choice within `bits` from the shipped report of Gemma-3's scaled copy (make report-gemma3-ks)."""
    scaled = json.loads(recommend.packaged("gemma-3-270m-q4_k_m.ks.gguf").read_text())
    return recommend.choose(recommend.candidates(scaled, per_layer=True), bits)


def test_gemma3_gets_its_own_measured_types_per_layer(gemma_path):
    report = json.loads(recommend.packaged(gemma_path.name).read_text())
    assert report["model"] == gemma_path.name
    best = recommend.choose(recommend.candidates(report, per_layer=True), 3.25)
    assert cache_config.parse(best.spec).layers     # measured: within 3.25 bits, types per layer are Gemma-3's best
    result = polar("--bits", "3.25", "--model", str(gemma_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"measured: {gemma_path.name}") and lines[-1] == recommend.fragment(best.spec)


def test_types_per_layer_compete_only_for_the_report_s_model(tmp_path):
    report = json.loads(json.dumps(REPORT))
    report["quality"]["long"]["rows"].append(row("pq42/pq32+L10=pq46/pq32", 3.78, 0.03))
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"")
    assert polar("--bits", "3.8", "--report", str(path)).stdout.splitlines()[-1] == \
        "LLAMA_K_CENTER_MODE=fixed -ctk pq42 -ctv pq32 -fa on"
    result = polar("--bits", "3.8", "--report", str(path), "--model", str(model))
    assert result.stdout.splitlines()[-1] == "LLAMA_KV_LAYER_TYPES=10=pq46/pq32 -ctk pq42 -ctv pq32 -fa on"


def test_another_model_gets_types_per_layer_from_its_sensitivities(tmp_path):
    from llama_polar import layer_types
    import numpy as np
    model = tmp_path / "other.gguf"
    model.write_bytes(b"")
    added = np.full((4, 2), 0.001)
    added[2, 0] = 0.05
    layer_types.Sensitivity("other.gguf", "pq46", "pq27", 0.02, added).save(tmp_path / "other.layer-sensitivity.json")
    result = polar("--bits", "3.3", "--model", str(model))
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0] == f"sensitivities: {tmp_path / 'other.layer-sensitivity.json'} (other.gguf)"
    spec = lines[1].split(":")[0]
    cfg = cache_config.parse(spec)
    assert cfg.layer_types(4)[2][0] == "pq46" and cfg.bits(8192, n_layer=4) <= 3.3
    assert "predicted" in lines[1] and lines[-1] == recommend.fragment(spec)
    assert lines[-1].startswith("LLAMA_KV_LAYER_TYPES=")
    wrong = polar("--bits", "3.3", "--model", str(model), "--sensitivity", str(tmp_path / "x.json"),
                  "--report", str(tmp_path / "none.json"))
    assert wrong.returncode == 2 and "not a report" in wrong.stderr
    (tmp_path / "x.json").write_text((tmp_path / "other.layer-sensitivity.json").read_text().replace("other.gguf", "b"))
    mismatch = polar("--bits", "3.3", "--model", str(model), "--sensitivity", str(tmp_path / "x.json"))
    assert mismatch.returncode == 2 and "the sensitivities of b, not of other.gguf" in mismatch.stderr
    small = polar("--bits", "2.3", "--model", str(model))
    assert small.returncode == 1 and "the cheapest configuration" in small.stderr


def test_the_readme_table_shows_the_report_s_own_layer_types_apart():
    from llama_polar.report import readme_tables
    report = json.loads(json.dumps(REPORT))
    report.update(speed=[{"type": "f16", "test": "tg64", "depth": 0, "tps": 1.0, "vs_f16": 1.0, "vs_q4_0": None}],
                  types=["f16"], threads=2, reps=1)
    for r in report["quality"]["long"]["rows"]:
        r.update(ppl=10.0, top=90.0)
    assert "With `--model`" not in readme_tables(report, "r.md")["choose"]
    report["quality"]["long"]["rows"].append({**row("pq42/pq32+L10=pq46/pq32", 3.74, 0.03), "ppl": 10.0, "top": 90.0})
    uniform, own = readme_tables(report, "r.md")["choose"].split("With `--model` m.gguf its own types per layer")
    assert "| 3.75 | `-ctk pq32 -ctv pq32 -fa on` |" in uniform and "LLAMA_KV_LAYER_TYPES" not in uniform
    # only the budgets where they win: the others would repeat the uniform table's rows
    assert "win at 3.75 bits/value" in own
    assert "| 3.75 | `LLAMA_KV_LAYER_TYPES=10=pq46/pq32 -ctk pq42 -ctv pq32 -fa on` | 3.740 | 0.0300 | 0.50x |" in own
    assert [line.split("|")[1].strip() for line in own.splitlines() if line.startswith("| ")][1:] == ["3.75"]
