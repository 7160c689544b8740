"""The `llama-polar` command line (python -m llama_polar): the subcommands run, show progress, and fail clearly; the
scripts in scripts/ are the same commands."""
import subprocess
import sys

import pytest

from llama_polar import paths
from llama_polar.commands import COMMANDS

ROOT = paths.ROOT
# scripts/ name -> the command it is (the scripts that are not commands work on the checkout only)
SCRIPTS = {"gen_codebooks.py": "codebooks", "get_model.py": "model", "bench.py": "bench", "calibrate.py": "calibrate",
           "demo.py": "demo", "report.py": "report", "simulate.py": "simulate", "validate.py": "validate"}


def polar(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llama_polar", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def test_help_lists_every_command_and_a_missing_or_unknown_one_is_refused():
    result = polar("--help")
    assert result.returncode == 0
    for name, (_, line) in COMMANDS.items():
        assert f"  {name:10s} {line}" in result.stdout
    missing = polar()
    assert missing.returncode == 2 and "which command? (codebooks, validate" in missing.stderr
    unknown = polar("nope")
    assert unknown.returncode == 2 and "invalid choice: 'nope'" in unknown.stderr


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "serve"])    # serve loads the build: test_server
def test_each_command_has_its_own_usage(command):
    result = polar(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: llama-polar {command} ")


@pytest.mark.parametrize("script,command", SCRIPTS.items())
def test_scripts_are_the_commands(script, command):
    text = (ROOT / "scripts" / script).read_text()
    assert f'main(["{command}", *sys.argv[1:]])' in text and len(text.splitlines()) < 12, "a thin wrapper"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: llama-polar {command} "), result.stderr


def test_validate_agrees_and_shows_progress(native_lib):
    result = polar("validate", "--rows", 256, "--types", "pq46,pq37")
    assert result.returncode == 0, result.stderr
    assert "C and NumPy agree bit for bit on every type" in result.stdout
    assert "C against NumPy:" in result.stderr and "/2 [" in result.stderr      # tqdm (throttled), on stderr


@pytest.mark.parametrize("args,message", [
    (["validate", "--types", "pq46,q4_0"], "unknown polar type 'q4_0'"),
    (["validate", "--dim", "100"], "--dim must be a positive multiple of 64"),
    (["validate", "--npy", "/nonexistent/keys.npy"], "cannot read /nonexistent/keys.npy"),
    (["bench", "--types", "f16,pq99"], "unknown cache type 'pq99'"),
    (["bench", "--depths", "-1"], "must be positive"),
    (["report", "--types", "q4_0,pq46"], "--types must include f16"),
    (["report", "--configs", "pq46+sinks"], "unknown modifier 'sinks'"),
    (["report", "--configs", "f16+sink1"], "sink rows need a quantized K cache, not f16"),
    (["demo", "--type", "q4_0"], "--type must be a polar type"),
    (["calibrate", "--model", "smollm2"], "the following arguments are required: --out"),
    (["scale-keys", "--model", "smollm2"], "the following arguments are required: --out"),
    (["scale-keys", "--out", "/nonexistent/ks.gguf", "--ctx", "10"], "--ctx at least 66"),
    (["model", "--model", "llama3"], "invalid choice: 'llama3'"),
    (["codebooks", "--header"], "expected one argument"),
    (["simulate", "--ctx", "0"], "--ctx at least 2"),
    (["simulate", "--chunks", "0"], "--chunks and --calib-chunks must be positive"),
    (["calibrate", "--out", "/nonexistent/centers.gguf", "--chunks", "0"], "--chunks must be positive"),
    (["needle", "--model", "/nonexistent/model.gguf"], "--model: /nonexistent/model.gguf: no such file"),
    (["bench", "--model", "/nonexistent/model.gguf"], "--model: /nonexistent/model.gguf: no such file"),
    (["simulate", "--model", "/nonexistent/model.gguf"], "--model: /nonexistent/model.gguf: no such file"),
])
def test_bad_arguments_are_refused_with_the_usage(args, message):
    result = polar(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert f"usage: llama-polar {args[0]} " in result.stderr


@pytest.mark.parametrize("command", [["needle", "--configs"], ["bench", "--types"], ["loadtest", "--configs"],
                                     ["report", "--out", "/nonexistent/report", "--decode"]])
def test_types_for_a_layer_the_model_lacks_are_refused_before_llama_cpp_runs(command, model_path):
    # llama.cpp refuses the context too, but its callers (llama-bench, llama-cpp-python) do not say why
    result = polar(*command, "pq46/pq37+L3=pq42+L30-31=pq27", "--model", model_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "L30-31=pq27 is past the model's layers 0-29" in result.stderr, result.stderr[-2000:]


def test_a_failure_is_one_error_line_not_a_traceback(tmp_path):
    (tmp_path / "not-a-model.gguf").write_text("not a GGUF file")
    result = polar("calibrate", "--model", tmp_path / "not-a-model.gguf", "--out", tmp_path / "centers.gguf")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "not-a-model.gguf" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "centers.gguf").exists()


def test_codebooks_check_finds_a_stale_table(tmp_path):
    tables = tmp_path / "_codebooks.py"
    tables.write_text((paths.PACKAGE / "_codebooks.py").read_text().replace("0.41421357", "0.41421358", 1))
    result = polar("codebooks", "--check", "--python", tables, "--no-progress")
    assert result.returncode == 1 and f"stale generated files (run `llama-polar codebooks`): " in result.stderr
    assert str(tables) in result.stderr and str(paths.PACKAGE / "_codebooks.py") not in result.stderr


def test_bench_runs_with_a_progress_bar(bin_dir, model_path):
    result = polar("bench", "--model", model_path, "--types", "f16,pq46", "--depths", 0, "--reps", 1, "--prompt", 16,
                   "--gen", 4, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "llama-bench: 100%" in result.stderr and "2/2" in result.stderr
    assert any(line.split()[:2] == ["pq46", "tg4"] for line in result.stdout.splitlines()), result.stdout


def test_simulate_runs_with_a_progress_bar(model_path, text_path):
    result = polar("simulate", "--model", model_path, "--text", text_path, "--chunks", 1, "--ctx", 64, "--cache",
                   "pq46", "--reference", "q4_0", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "simulating:" in result.stderr and "/2 [" in result.stderr               # q4_0 and pq46, one chunk
    assert "pq46" in result.stdout and "q4_0" in result.stdout


def test_simulate_refuses_an_unknown_cache_type():
    result = polar("simulate", "--cache", "pq99")
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "pq99" in result.stderr
