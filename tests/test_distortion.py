"""Measured distortion against the closed form 1 + E[s^2] - 2 E[s] prod_l E[cos d_l] (2 (1 - prod) for exact radii)."""
import numpy as np
import pytest

import llama_polar
from conftest import TYPE_NAMES, random_rotation


@pytest.mark.parametrize("name", TYPE_NAMES)
def test_relative_mse_matches_closed_form_on_rotated_gaussians(native_lib, name):
    rng = np.random.default_rng(7)
    dim = 128
    x = rng.standard_normal((16384, dim)) @ random_rotation(dim, rng).T
    x = x.astype(np.float32)
    qtype = llama_polar.TYPES[name]
    measured = llama_polar.relative_mse(x, native_lib.dequantize(native_lib.quantize(x, name), name))
    assert measured == pytest.approx(qtype.expected_rel_mse, rel=0.03)


def test_paper_configuration_closed_form_is_0_0321():
    assert llama_polar.TYPES["pq38p"].expected_rel_mse == pytest.approx(0.0321, abs=5e-5)


def test_rate_optimised_family_beats_the_paper_type_at_lower_rate():
    """One radius per 64 values instead of per 16 frees bits for the angles."""
    types = llama_polar.TYPES
    paper = types["pq38p"]
    assert types["pq37"].bits_per_value < paper.bits_per_value
    assert types["pq37"].expected_rel_mse < 0.6 * paper.expected_rel_mse
    assert types["pq32"].bits_per_value < paper.bits_per_value - 0.5
    assert types["pq32"].expected_rel_mse < 1.05 * paper.expected_rel_mse


def test_family_spans_the_required_rates():
    family = [t for t in llama_polar.TYPES.values() if t.group_size == 64 and t.kind == "tree"]
    rates = sorted(t.bits_per_value for t in family)
    assert len(rates) >= 4 and rates[0] <= 2.8 and rates[-1] >= 4.55
    mses = [t.expected_rel_mse for t in sorted(family, key=lambda t: t.bits_per_value)]
    assert mses == sorted(mses, reverse=True), "more bits must mean less distortion"


def test_each_trellis_type_beats_the_tree_type_of_its_size():
    """The trellis family's reason to exist: at the same bytes per block, at most 0.7x the relative MSE (measured
    0.61-0.67x, docs/measurements.md)."""
    trellises = [t for t in llama_polar.TYPES.values() if t.kind == "trellis"]
    assert len(trellises) == 3
    for t in trellises:
        tree = llama_polar.TYPES[t.name.replace("pqt", "pq")]
        assert t.type_size == tree.type_size and t.expected_rel_mse < 0.7 * tree.expected_rel_mse, t.name


@pytest.mark.parametrize("name", [n for n in TYPE_NAMES if llama_polar.TYPES[n].kind == "trellis"])
def test_trellis_scale_keeps_the_norm(name):
    """A trellis block decodes to its path's values times the scale that keeps ||x||, up to the fp16 rounding (and
    float32 sums), on x's side: not the least-squares scale, which would shrink each block by its cosine to the path
    (polar-codec.h, pq_trellis_store)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2048, 64)) * 10.0 ** rng.uniform(-3, 3, (2048, 1))).astype(np.float32)
    y = llama_polar.dequantize(llama_polar.quantize(x, name), name).astype(np.float64)
    ratio = np.linalg.norm(y, axis=1) / np.linalg.norm(x.astype(np.float64), axis=1)
    assert np.all(np.abs(ratio - 1) <= 2.0 ** -11 * (1 + 1e-3))
    cos = np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    assert np.all(cos > 0) and np.all(cos < 1 - 2.0 ** -9)    # least squares would give ratio = cos


@pytest.mark.parametrize("name", [n for n in TYPE_NAMES if llama_polar.TYPES[n].kind != "trellis"])
def test_decoding_keeps_the_norm_up_to_the_radius_format(name):
    """The polar decode is norm-preserving: only the radius format's rounding changes ||x||."""
    rng = np.random.default_rng(3)
    qtype = llama_polar.TYPES[name]
    g = qtype.group_size
    x = (rng.standard_normal((2048, 64)) * 10.0 ** rng.uniform(-3, 3, (2048, 1))).astype(np.float32)
    y = llama_polar.dequantize(llama_polar.quantize(x, name), name)
    ratio = (np.linalg.norm(y.reshape(-1, g), axis=1) / np.linalg.norm(x.reshape(-1, g), axis=1))
    step = 2.0 ** (1 / 16) if qtype.radius_format == "log8" else 1 + 2.0 ** -11
    assert np.all(ratio <= step * (1 + 1e-5)) and np.all(ratio >= (1 / step) * (1 - 1e-5))
