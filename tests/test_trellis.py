"""The trellis-coded types (llama_polar.trellis): the search is optimal, the stream closes on itself, and the decoder
reads back the encoder's path. C and Metal parity with this NumPy codec is in test_parity.py and the Metal tests."""
import sys
from pathlib import Path

import numpy as np
import pytest

import llama_polar
from llama_polar import trellis

TRELLIS_TYPES = [t for t in llama_polar.TYPES.values() if t.kind == "trellis"]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import explore_trellis as explorer  # noqa: E402  (the exploration prototype, an independent search)


def unit_blocks(n, seed=0):
    return trellis.unit_scale(np.random.default_rng(seed).standard_normal((n, 64)).astype(np.float32))[0]


def path_cost(qtype, u, states):
    y = qtype._table[states].reshape(u.shape).astype(np.float64)
    return np.sum((u - y) ** 2, axis=1)


@pytest.mark.parametrize("qtype", TRELLIS_TYPES, ids=lambda t: t.name)
def test_search_matches_an_independent_viterbi(qtype):
    """The exploration prototype's search (a min per state over all its predecessors, written separately) finds
    paths of the same cost, free and tail-biting."""
    sh = qtype.shape
    other = explorer.Trellis(sh.L, sh.k, sh.V, qtype._table)
    u = unit_blocks(256)
    free = path_cost(qtype, u, trellis.viterbi(sh, qtype._table, u))
    np.testing.assert_allclose(free, path_cost(qtype, u, other.viterbi(u)), rtol=1e-5)
    biting = path_cost(qtype, u, trellis.encode_states(sh, qtype._table, u))
    np.testing.assert_allclose(biting, path_cost(qtype, u, other.encode_states(u)), rtol=1e-5)
    assert np.all(biting >= free * (1 - 1e-6))
    assert biting.mean() < 1.1 * free.mean()       # closing the stream costs little


@pytest.mark.parametrize("qtype", TRELLIS_TYPES, ids=lambda t: t.name)
def test_the_stream_closes_and_decodes_to_the_path(qtype):
    sh = qtype.shape
    u = unit_blocks(512, seed=1)
    states = trellis.encode_states(sh, qtype._table, u)
    overlap = (1 << (sh.L - sh.k)) - 1
    assert np.all(states[:, 0] >> sh.k == states[:, -1] & overlap), "step 0 must follow the last step"
    assert np.all(states[:, 1:] >> sh.k == states[:, :-1] & overlap)
    np.testing.assert_array_equal(trellis.unpack_states(sh, trellis.pack(sh, states)), states)


@pytest.mark.parametrize("qtype", TRELLIS_TYPES, ids=lambda t: t.name)
def test_decoded_blocks_are_table_values_times_the_scale(qtype):
    x = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32) * 3
    q = qtype.quantize(x)
    scale = q[:, :2].copy().view("<f2").astype(np.float32)
    states = trellis.unpack_states(qtype.shape, q[:, 2:])
    expected = qtype._table[states].reshape(x.shape) * scale
    np.testing.assert_array_equal(qtype.dequantize(q), expected)


def test_training_is_deterministic_and_improves_the_table():
    """Two runs of a small training agree bit for bit, and Lloyd iterations lower the error of the start table."""
    sh = trellis.TrellisShape(6, 2, 1)
    a = trellis.train(sh, seed=5, blocks=256, iters=3)
    np.testing.assert_array_equal(a, trellis.train(sh, seed=5, blocks=256, iters=3))
    start = trellis.train(sh, seed=5, blocks=256, iters=0)
    assert trellis.gaussian_rel_mse(sh, a, 9, 512) < 0.9 * trellis.gaussian_rel_mse(sh, start, 9, 512)
