"""The project's scripts: source preparation fails loudly on a bad patch; the demo runs."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llama_polar import cache_config

ROOT = Path(__file__).resolve().parent.parent


def test_prepare_refuses_a_patch_that_does_not_apply(tmp_path):
    patches = tmp_path / "patches"
    patches.mkdir()
    shutil.copy(sorted((ROOT / "patches").glob("*.patch"))[0], patches / "0001-first.patch")
    (patches / "0002-broken.patch").write_text(
        "--- a/ggml/include/ggml.h\n+++ b/ggml/include/ggml.h\n@@ -1,3 +1,3 @@\n-no such line\n+replacement\n context\n")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_llama_cpp.py"), "--patches", str(patches),
                             "--dest", str(tmp_path / "tree")], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "patch 0002-broken.patch does not apply" in result.stderr
    assert not (tmp_path / "tree" / "ggml").exists(), "nothing is written when a patch fails"


def test_prepared_tree_is_current(llama_tree):
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


def test_bench_script_prints_tokens_per_second_and_ratios(bin_dir, model_path, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--types", "f16,q4_0,pq46,q8_0/pq46",
                             "--depths", "0,256", "--reps", "1", "--prompt", "64", "--gen", "8", "--json", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(out.read_text())
    assert {(r["type"], r["test"], r["depth"]) for r in records} == {
        (t, test, d) for t in ("f16", "q4_0", "pq46", "q8_0/pq46") for test in ("pp64", "tg8") for d in (0, 256)}
    for r in records:
        assert r["tps"] > 0
        if r["type"] == "f16":
            assert r["vs_f16"] == 1.0
        if r["type"] == "q4_0":
            assert r["vs_q4_0"] == 1.0
    assert re.search(r"^pq46 +tg8 +256 +[\d.]+ ± +[\d.]+ +[\d.]+x +[\d.]+x$", result.stdout, flags=re.M), result.stdout
    assert re.search(r"^q8_0/pq46 +pp64 +0 +[\d.]+ ± ", result.stdout, flags=re.M), result.stdout


@pytest.mark.parametrize("types,message", [
    ("f16,pq99", "unknown cache type 'pq99'"),
    ("f16,pq46/q9", "unknown cache type 'q9'"),
    ("pq46+calib", "calibrated centers need a centers file"),
])
def test_bench_script_rejects_unknown_types(types, message):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--types", types],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_report_writes_tables_and_plots(bin_dir, model_path, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--ctx", "1024", "--chunks", "1",
                             "--short-chunks", "1", "--types", "f16,q4_0,pq46,pq37", "--configs",
                             "q4_0+center+sink1,pq46/pq37+plain,pq46+L0-1=pq27+L5=pq37", "--decode", "pq46,pq46+recent16",
                             "--depths", "0", "--reps", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    md = (out / "report.md").read_text()
    long, short = md.split("## Quality at 1024 tokens")[1].split("## Quality at 512 tokens")
    row = r" \| [\d.]+ \| [\d.]+x \| [\d.]+ \| [\d.]+ \| [\d.]+% \|$"
    # long context: bits from the KV buffers (sink rows, their scratch row and the centers make pq46 more than 4.625)
    assert re.search(r"^\| pq46 \| 4\.6[3-9]\d" + row, long, flags=re.M), long
    # short context: a configuration's bits count its exact rows as llama.cpp allocates them (a sink and a scratch row
    # per side in f16, the centers in f32: 96 bits over 2 x 512 values); plain has none
    assert re.search(r"^\| q4_0\+center\+sink1 \| 4\.594" + row, short, flags=re.M), short
    assert re.search(r"^\| pq46/pq37\+plain \| 4\.188" + row, short, flags=re.M), short
    # types per layer: named by their count in the tables, the whole string listed below the long table
    assert re.search(r"^\| pq46\+3 layers' types \| 4\.\d{3}" + row, long, flags=re.M), long
    assert "1. `pq46+L0-1=pq27+L5=pq37`" in long
    assert re.search(r"^\| pq46 \| tg64 \| 0 \| [\d.]+ ± [\d.]+ \| [\d.]+x \| [\d.]+x \|$", md, flags=re.M), md
    for png in ("kld_vs_bits.png", "kv_memory.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in md
    assert not (out / "speed_vs_depth.png").exists() and "speed_vs_depth" not in md     # one depth: no line to draw
    report = json.loads((out / "report.json").read_text())
    for table in ("long", "short"):
        assert [r["type"] for r in report["quality"][table]["rows"]] == [
            "f16", "q4_0", "pq46", "pq37", "q4_0+center+sink1", "pq46/pq37+plain", "pq46+L0-1=pq27+L5=pq37"]
    for r in report["quality"]["long"]["rows"][1:]:   # the buffers hold what cache_config counts (the log rounds MiB)
        cfg = cache_config.parse(r["type"])
        assert r["seqs"] == 2 and r["formula_bits"] == cfg.bits(1024, n_layer=30), r
        assert r["bits"] == pytest.approx(cfg.bits(1024, n_seq=2, n_layer=30), abs=0.005), r
    # decode: one chunk at -ub 1, q4_0 beside what --decode names; 16 recent rows a side cost 0.25 bits at 1024 tokens
    decode = report["quality"]["decode"]
    assert decode["ubatch"] == 1 and decode["chunks"] == 1 and "## Quality in decode at 1024 tokens" in md
    bits = {r["type"]: r["bits"] for r in decode["rows"]}
    assert list(bits) == ["f16", "q4_0", "pq46", "pq46+recent16"]
    assert bits["pq46+recent16"] - bits["pq46"] == pytest.approx(0.25, abs=0.005)
    # the report's text and plots again from its figures (llama-polar report --readme does this): the same text
    from llama_polar.report import render
    (out / "report.md").unlink()
    render(report, out)
    assert (out / "report.md").read_text() == md and report["command"].startswith("llama-polar report --ctx 1024")
    assert "[" in result.stderr and "done" in result.stderr    # the progress bar
    # only the decode run again (--redo decode): it replaces the old one, dated on its own; the rest is kept
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--redo", "decode", "--ctx", "1024",
                             "--decode", "pq37", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    redone = json.loads((out / "report.json").read_text())
    assert [r["type"] for r in redone["quality"]["decode"]["rows"]] == ["f16", "q4_0", "pq37"]
    assert redone["quality"]["decode"]["rows"][1]["kld"] == pytest.approx(decode["rows"][1]["kld"], rel=1e-3)  # q4_0
    assert {k: v for k, v in redone["quality"].items() if k != "decode"} == {
        k: v for k, v in report["quality"].items() if k != "decode"}
    assert redone["command"] == report["command"] and redone["speed"] == report["speed"]
    assert "Measured again on" in (out / "report.md").read_text()
    assert redone["quality"]["decode"]["command"].startswith("llama-polar report --redo decode")
    # only the batched run again (--redo long): the report's types and --configs, the rest (decode included) kept
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--redo", "long", "--ctx", "1024",
                             "--chunks", "1", "--configs", "pq46/pq37+plain", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((out / "report.json").read_text())
    assert [r["type"] for r in again["quality"]["long"]["rows"]] == ["f16", "q4_0", "pq46", "pq37", "pq46/pq37+plain"]
    assert again["configs"] == ["pq46/pq37+plain"] and again["quality"]["decode"] == redone["quality"]["decode"]
    long_rows = {r["type"]: r for r in report["quality"]["long"]["rows"]}
    for r in again["quality"]["long"]["rows"][1:]:      # the same build and text: the same figures
        assert r["kld"] == pytest.approx(long_rows[r["type"]]["kld"], rel=1e-3), r
    assert (out / "report.md").read_text().count("Measured again on") == 2


def test_types_per_layer_are_listed_once_whichever_run_measured_them():
    from llama_polar.report import display_names, layer_types_list
    decode, batched = ["q4_0", "pq27/pq25+L5=pq37/pq25"], ["pq46+L0=pq27"]
    listed = [line for line in layer_types_list(display_names(decode + batched + decode)) if line[:1].isdigit()]
    assert listed == ["1. `pq27/pq25+L5=pq37/pq25`", "2. `pq46+L0=pq27`"]


def test_configurations_whose_labels_would_be_the_same_are_numbered_as_their_list():
    from llama_polar.report import display_names, layer_types_list
    same = ["pq27/pq22+L5=pq32/pq22+L11=pq27/pq22", "pq27/pq22+L5=pq27/pq22+L11=pq32/pq22"]
    names = display_names(["q4_0", "pq25/pq22+L5=pq32", *same])
    assert names["q4_0"] == "q4_0" and names["pq25/pq22+L5=pq32"] == "pq25/pq22+1 layers' types"
    assert [names[s] for s in same] == ["pq27/pq22+2 layers' types [2]", "pq27/pq22+2 layers' types [3]"]
    assert layer_types_list(names)[-2:] == [f"2. `{same[0]}`", f"3. `{same[1]}`"]


def test_a_report_benched_at_one_depth_has_no_speed_plot():
    from llama_polar.report import depth_lines
    row = lambda t, test, depth, tps: {"type": t, "test": test, "depth": depth, "tps": tps}  # noqa: E731
    one = [row("f16", "pp512", 0, 300.0), row("pq46", "pp512", 0, 290.0), row("f16", "tg64", 0, 70.0)]
    assert depth_lines(one) == {}
    two = one + [row("f16", "pp512", 8192, 90.0), row("pq46", "tg64", 8192, 20.0)]
    assert depth_lines(two) == {"pp512": {"f16": [(0, 300.0), (8192, 90.0)]}}


def test_names_of_points_close_on_the_plot_do_not_lie_on_each_other():
    from llama_polar.report import label_offsets
    # the decode run's pq42/pq27 and pq46/pq27+recent28: 0.12 bits and 2% of KLD apart, among points over 2 bits
    points = [(2.724, 0.0628), (3.631, 0.0159), (3.748, 0.0156), (4.131, 0.0119), (4.756, 0.0097)]
    assert label_offsets(points) == [(5, -3), (5, -3), (5, -13), (5, -3), (5, -3)]
    three = [(2.0, 0.1), (3.0, 0.02), (3.01, 0.02), (3.02, 0.02), (4.0, 0.01)]
    assert label_offsets(three) == [(5, -3), (5, -3), (5, -13), (5, -23), (5, -3)]
    assert label_offsets([(3.0, 0.1)]) == [(5, -3)]


def test_report_redo_needs_a_report_of_the_same_model(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--redo", "decode", "--decode",
                             "pq46", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "needs --decode and a report" in result.stderr and "not found" in result.stderr
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--redo", "long", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--redo long needs --configs and a report" in result.stderr
    from llama_polar.report import redo_run
    with pytest.raises(ValueError, match="the report is of other.gguf on t.txt, not m.gguf on t.txt"):
        redo_run({"model": "other.gguf", "text": "t.txt"}, "decode", Path("m.gguf"), Path("t.txt"), 1024, 1, ["pq46"],
                 None, "")


def test_rows_added_to_the_decode_run_keep_the_others_only_where_q4_0_reproduces(monkeypatch):
    from llama_polar import report
    row = lambda t, kld: {"type": t, "kld": kld, "bits": 3.0}  # noqa: E731
    old = {"model": "m.gguf", "text": "t.txt", "decode": ["pq46", "pq27/pq25"], "quality": {"decode": {
        "ctx": 1024, "rows": [row("f16", 0.0), row("q4_0", 0.06), row("pq46", 0.01), row("pq27/pq25", 0.05)]}}}
    measured = []

    def measure_decode(model, text, ctx, configs, centers, progress):
        measured.append(configs)
        return {"ctx": ctx, "rows": [row("f16", 0.0), row("q4_0", q4_0)] + [row(c, 0.04) for c in configs]}
    monkeypatch.setattr(report, "measure_decode", measure_decode)
    q4_0 = 0.06 * (1 + report.ADD_TOLERANCE / 2)
    new = report.add_to_decode(old, Path("m.gguf"), Path("t.txt"), 1024, ["q4_0", "pqt27/pqt22", "pq27/pq25"], None,
                               "llama-polar report --redo decode --add")
    assert measured == [["pqt27/pqt22", "pq27/pq25"]]
    rows = new["quality"]["decode"]["rows"]
    assert [(r["type"], r["kld"]) for r in rows] == [("f16", 0.0), ("q4_0", 0.06), ("pq46", 0.01),
                                                     ("pqt27/pqt22", 0.04), ("pq27/pq25", 0.04)]
    assert new["decode"] == ["pq46", "pqt27/pqt22", "pq27/pq25"] and old["quality"]["decode"]["rows"][3]["kld"] == 0.05
    assert "Rows pqt27/pqt22, pq27/pq25 added on" in " ".join(report.measured_again(new["quality"]["decode"]))
    q4_0 = 0.06 * (1 + 2 * report.ADD_TOLERANCE)
    with pytest.raises(ValueError, match="q4_0 measured again is 0.06060, the run's 0.06000: .* Measured, not added: "
                       "pqt27/pqt22 0.04000$"):
        report.add_to_decode(old, Path("m.gguf"), Path("t.txt"), 1024, ["pqt27/pqt22"], None, "")
    with pytest.raises(ValueError, match="no decode run at 8192 tokens"):
        report.add_to_decode(old, Path("m.gguf"), Path("t.txt"), 8192, ["pqt27/pqt22"], None, "")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--add", "--decode", "pq46"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--add adds rows to the decode run: it needs --redo decode" in result.stderr


def test_report_requires_f16():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--types", "q4_0,pq46"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "must include f16" in result.stderr


def test_the_readme_tables_are_the_reports():
    """The README's quality and speed tables are generated from the report it cites (llama-polar report --readme):
    every figure in them is the report's."""
    from llama_polar import report
    data = json.loads((ROOT / "docs" / "report" / "report.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert report.sync_readme(readme, report.readme_tables(data, "docs/report/report.md")) == readme
    assert len(readme.splitlines()) <= 220


def test_llama_bench_runs_deep_only_what_it_is_asked_to():
    from llama_polar.report import bench_runs
    types, depths = ["f16", "q4_0", "pq46"], [0, 8192]
    assert bench_runs(types, depths, None) == [("f16", depths), ("q4_0", depths), ("pq46", depths)]
    # a configuration named in deep is benched too, at every depth; q4_0 only at the first depth
    assert bench_runs(types, depths, ["f16", "pq46", "pq42/pq32+L3=pq46"]) == [
        ("f16", depths), ("q4_0", [0]), ("pq46", depths), ("pq42/pq32+L3=pq46", depths)]


def test_the_readme_blocks_are_replaced_whole():
    from llama_polar import report
    text = "a\n<!-- report:quality -->\nold\nrows\n<!-- /report:quality -->\nb\n"
    assert report.sync_readme(text, {"quality": "new"}) == "a\n<!-- report:quality -->\nnew\n<!-- /report:quality -->\nb\n"
    with pytest.raises(ValueError, match="no <!-- report:speed -->"):
        report.sync_readme(text, {"speed": "x"})


def test_kld_runs_with_a_ubatch_keeps_its_own_base(bin_dir, model_path, text_path, tmp_path):
    run = [sys.executable, str(ROOT / "scripts" / "kld_runs.py"), "--ctx", "256", "--chunks", "1", "--base-dir",
           str(tmp_path)]
    refused = subprocess.run([*run, "--ubatch", "0", "q4_0"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--ubatch must be at least 1" in refused.stderr
    result = subprocess.run([*run, "--ubatch", "32", "pq46"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    base = f"{model_path.stem}-{text_path.stem}-256x1-ub32.kld"
    assert sorted(p.name for p in tmp_path.iterdir()) == [base, base + ".json"]      # the logits, the KV buffer size
    assert re.match(r"pq46: KLD 0\.\d+ ", result.stdout.splitlines()[1]), result.stdout


def test_kld_runs_prints_a_line_per_configuration_with_its_ratio_to_q4_0(bin_dir, model_path, text_path, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "kld_runs.py"), "--ctx", "512", "--chunks", "1",
                             "--base-dir", str(tmp_path), "q4_0", "pq46/pq37+recent16"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("f16 base: PPL ") and lines[1].startswith("q4_0: KLD ")
    assert re.match(r"pq46/pq37\+recent16: KLD 0\.\d+ \(99\.9% [\d.]+\), [\d.]+x q4_0, .* 4\.\d{3} bits/value", lines[2]), lines
