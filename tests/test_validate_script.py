"""scripts/validate.py, the people-facing check of C against NumPy."""
import subprocess
import sys
from pathlib import Path

import numpy as np

import llama_polar

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "validate.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def rows_of(stdout):
    return {line.split()[0]: line.split() for line in stdout.splitlines() if line.split()}


def test_random_data_reports_full_agreement_for_every_type(native_lib):
    result = run("--rows", "512", "--random", "gaussian")
    assert result.returncode == 0, result.stderr
    rows = rows_of(result.stdout)
    for name, qtype in llama_polar.TYPES.items():
        cols = rows[name]
        assert cols[2] == cols[3] == "100.00%"
        assert abs(float(cols[4]) - qtype.expected_rel_mse) < 0.1 * qtype.expected_rel_mse
    assert "q4_0" in rows and "q8_0" in rows


def test_npy_file_of_real_shaped_vectors(native_lib, tmp_path):
    data = np.random.default_rng(5).standard_normal((4, 3, 256)).astype(np.float16)   # (tokens, heads, head size)
    path = tmp_path / "keys.npy"
    np.save(path, data)
    result = run("--npy", str(path), "--types", "pq38p,pq46")
    assert result.returncode == 0, result.stderr
    assert "12 vectors of 256" in result.stdout
    assert set(rows_of(result.stdout)) >= {"pq38p", "pq46"}


def test_bad_inputs_exit_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 96), np.float32))
    result = run("--npy", str(bad))
    assert result.returncode == 2 and "multiple of 64" in result.stderr
    result = run("--types", "pq46,q5_k")
    assert result.returncode == 2 and "unknown polar type 'q5_k'" in result.stderr
    result = run("--npy", str(tmp_path / "missing.npy"))
    assert result.returncode == 2 and "cannot read" in result.stderr
