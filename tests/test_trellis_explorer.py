"""scripts/explore_trellis.py, the measurement behind docs/measurements.md's trellis section: its trellis is the codec
it says (a circular bitstream of the polar types' sizes, each state the last L bits), it beats the polar type of its
size on Gaussian blocks, and the polar decoder's optimal encoder is never worse than the shipped one."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import explore_trellis as explorer  # noqa: E402
from llama_polar import quants  # noqa: E402


def gaussian(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, explorer.BLOCK))


@pytest.mark.parametrize("name,lkv", [("pq22", (6, 2, 1)), ("pq27", (6, 5, 2))])
def test_trellis_states_are_a_circular_bitstream_of_the_polar_types_size(name, lkv):
    t = explorer.trained(*lkv, blocks=256, iters=2)
    assert t.type_size == quants.get_type(name).type_size
    states = t.encode_states(gaussian(64, 3))
    overlap = (1 << (t.L - t.k)) - 1
    # each state keeps the last L - k bits of the one before it, and the first follows the last (tail-biting)
    assert np.array_equal(states[:, 1:] >> t.k, states[:, :-1] & overlap)
    assert np.array_equal(states[:, 0] >> t.k, states[:, -1] & overlap)


def test_trellis_beats_the_polar_type_of_its_size():
    t = explorer.trained(6, 2, 1, blocks=512, iters=4)
    x = gaussian(256, 5)
    pq22 = quants.get_type("pq22")
    polar = explorer.rel_mse(x, pq22.dequantize(pq22.quantize(x.astype(np.float32))))
    trellis = explorer.rel_mse(x, t.roundtrip(x))
    assert trellis < 0.85 * polar, (trellis, polar)     # 0.73x on 4096 blocks with the script's training


@pytest.mark.parametrize("name", ["pq22", "pq27", "pq46"])
def test_the_polar_decoders_optimal_encoder_is_never_worse(name):
    cls = quants.get_type(name)
    x = gaussian(512, 7).astype(np.float32)
    shipped = np.sum((cls.dequantize(cls.quantize(x)) - x) ** 2, axis=1)
    optimal = np.sum((explorer.optimal_polar_encode(cls, x) - x) ** 2, axis=1)
    # per block, up to the fp16 rounding of the two radii
    assert np.all(optimal <= shipped * (1 + 2e-3) + 1e-6)
    assert optimal.sum() < shipped.sum()
