"""The generated codebooks: up to date, identical in C and Python, and really Lloyd-Max on the Lemma-2 densities."""
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import llama_polar
from llama_polar import _codebooks as cb

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "scripts" / "gen_codebooks.py"
HEADER = ROOT / "ggml_polar" / "polar-codebooks.h"
PYTABLES = ROOT / "python" / "llama_polar" / "_codebooks.py"
TREE_TYPES = [t for t in llama_polar.TYPES.values() if t.kind == "tree"]


def run_check(*extra):
    return subprocess.run([sys.executable, str(GENERATOR), "--check", *extra], capture_output=True, text=True)


def test_generated_files_are_up_to_date():
    result = run_check()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("target", ["header", "python"])
def test_check_fails_on_a_stale_file(tmp_path, target):
    header, pytables = tmp_path / HEADER.name, tmp_path / PYTABLES.name
    shutil.copy(HEADER, header)
    shutil.copy(PYTABLES, pytables)
    stale = header if target == "header" else pytables
    stale.write_text(stale.read_text().replace("0.41421357", "0.41421358", 1))
    result = run_check("--header", str(header), "--python", str(pytables))
    assert result.returncode == 1 and "stale" in result.stderr and stale.name in result.stderr


def c_tables() -> dict[str, np.ndarray]:
    text = HEADER.read_text()
    tables = {}
    for name, size, body in re.findall(r"PQ_TABLE float (\w+)\[(\d+)\] = \{(.*?)\};", text, re.S):
        values = [v.strip().rstrip("f") for v in body.split(",") if v.strip()]
        assert len(values) == int(size)
        tables[name] = np.array([float(v) for v in values]).astype(np.float32)
    return tables


def test_c_header_and_python_tables_are_the_same_floats():
    c = c_tables()
    pairs = {"pq_bound": cb.BOUND, "pq_cos": cb.COS, "pq_sin": cb.SIN, "pq_log8_value": cb.LOG8_VALUE,
             "pq_log8_bound": cb.LOG8_BOUND, "pq_key_magnitude": cb.KEY_MAGNITUDE, "pq_trellis": cb.TRELLIS_TABLE}
    assert set(c) == set(pairs)
    for name, py in pairs.items():
        np.testing.assert_array_equal(c[name].view(np.uint32), py.view(np.uint32), err_msg=name)


def level_tables(qtype, level):
    start = qtype._layout["table_offset"][level]
    k = 1 << qtype.level_bits[level]
    return cb.COS[start:start + k].astype(np.float64), cb.SIN[start:start + k].astype(np.float64)


def test_paper_codebooks_match_the_math_notes():
    """Section 3 of polarquant-math.md: levels 2-4 at 2 bits."""
    expected = {1: [0.309756, 0.633980, 0.936816, 1.261040],
                2: [0.426250, 0.674385, 0.896411, 1.144547],
                3: [0.524214, 0.705909, 0.864887, 1.046582]}
    paper = llama_polar.TYPES["pq38p"]
    for level, centroids in expected.items():
        cos, sin = level_tables(paper, level)
        np.testing.assert_allclose(np.arctan2(sin, cos), centroids, atol=1.5e-6)
    cos, sin = level_tables(paper, 0)
    np.testing.assert_allclose(np.mod(np.arctan2(sin, cos), 2 * np.pi), (np.arange(16) + 0.5) * np.pi / 8, atol=1e-6)


def conditional_mean(level, lo, hi, nodes=64):
    """E[psi | lo < psi < hi] for the Lemma-2 density, by Gauss-Legendre quadrature (independent of the generator)."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    psi = (hi - lo) / 2 * t + (hi + lo) / 2
    f = np.sin(2 * psi) ** (2 ** (level - 1) - 1) * w
    return float(np.sum(psi * f) / np.sum(f))


@pytest.mark.parametrize("qtype", TREE_TYPES, ids=lambda t: t.name)
def test_deeper_levels_are_lloyd_max_fixed_points(qtype):
    for level in range(1, qtype.levels):
        cos, sin = level_tables(qtype, level)
        centroids = np.arctan2(sin, cos)
        edges = np.concatenate([[0.0], (centroids[1:] + centroids[:-1]) / 2, [math.pi / 2]])
        means = [conditional_mean(level + 1, a, b) for a, b in zip(edges[:-1], edges[1:])]
        np.testing.assert_allclose(centroids, means, atol=3e-6, err_msg=f"{qtype.name} level {level + 1}")
        # boundaries are the midpoints, stored as tan^2
        start = qtype._layout["bound_offset"][level]
        bounds = cb.BOUND[start:start + len(centroids) - 1].astype(np.float64)
        np.testing.assert_allclose(np.arctan(np.sqrt(bounds)), edges[1:-1], atol=3e-6)
        # the densities are symmetric about pi/4, so are the codebooks
        np.testing.assert_allclose(cos, sin[::-1], atol=1e-7)


@pytest.mark.parametrize("qtype", TREE_TYPES, ids=lambda t: t.name)
def test_level1_is_the_uniform_circle_codebook(qtype):
    bits = qtype.level_bits[0]
    cos, sin = level_tables(qtype, 0)
    angles = (np.arange(2 ** bits) + 0.5) * 2 * np.pi / 2 ** bits
    np.testing.assert_allclose(cos, np.cos(angles), atol=1e-7)
    np.testing.assert_allclose(sin, np.sin(angles), atol=1e-7)
    start = qtype._layout["bound_offset"][0]
    per_quadrant = 2 ** (bits - 2)
    bounds = cb.BOUND[start:start + per_quadrant - 1].astype(np.float64)
    np.testing.assert_allclose(np.arctan(bounds), np.arange(1, per_quadrant) * np.pi / 2 / per_quadrant, atol=1e-7)


@pytest.mark.parametrize("qtype", TREE_TYPES, ids=lambda t: t.name)
def test_level1_quadrants_repeat_one_table_exactly(qtype):
    # the AVX2 decoder reads 32-angle circles from their first quadrant (pq_circle_lookup): bit for bit
    cos, sin = level_tables(qtype, 0)
    k = len(cos) // 4
    m, r = cos[:k], cos[:k][::-1]
    assert np.array_equal(sin[:k], r)
    assert np.array_equal(cos, np.concatenate([m, -r, -m, r]))
    assert np.array_equal(sin, np.concatenate([r, m, -r, -m]))


def test_log8_norm_table_is_monotone_with_geometric_steps():
    values, bounds = cb.LOG8_VALUE.astype(np.float64), cb.LOG8_BOUND.astype(np.float64)
    assert values[0] == 0 and values[1] == 2.0 ** -16
    np.testing.assert_allclose(values[2:] / values[1:-1], 2 ** (1 / 8), rtol=1e-6)
    assert np.all(np.diff(bounds) > 0)
    assert np.all((values[:-1] < bounds) & (bounds < values[1:]))


def test_key_mode_magnitudes_form_a_unit_vector():
    assert np.linalg.norm(cb.KEY_MAGNITUDE.astype(np.float64)) == pytest.approx(1.0, abs=1e-6)
    assert np.all(cb.KEY_MAGNITUDE > 0)
