"""Cache types per layer (patch 0019, LLAMA_KV_LAYER_TYPES; `+LA[-B]=K[/V]` in a configuration string): some layers
of a polar cache take types of their own, so that the layers whose keys and values cost most get more bits."""
import re

import numpy as np
import pytest

from conftest import completion_error, greedy_text, next_logits
from llama_polar import cache_config, layer_types, perplexity
from llama_polar import simulate as sim
from llama_polar.quants import TYPES

N_LAYER = 30   # SmolLM2-135M


def context(monkeypatch, model_path, type_k, type_v, layers=None):
    import llama_polar.llama as llama
    if layers is None:
        monkeypatch.delenv("LLAMA_KV_LAYER_TYPES", raising=False)
    else:
        monkeypatch.setenv("LLAMA_KV_LAYER_TYPES", layers)
    return llama.Llama(model_path=str(model_path), n_ctx=256, type_k=type_k, type_v=type_v, flash_attn=True,
                       verbose=False)


def logits_after(llm, tokens) -> np.ndarray:
    llm.eval(tokens[:-1])
    return next_logits(llm, tokens[-1])


def test_every_layer_given_the_same_types_is_that_cache_bit_for_bit(monkeypatch, model_path):
    """pq42/pq32 with every layer set to pq46 is the pq46 cache; with some layers set, it is neither."""
    tokens = list(range(1000, 1120))
    pq46 = logits_after(context(monkeypatch, model_path, "pq46", "pq46"), tokens)
    all46 = logits_after(context(monkeypatch, model_path, "pq42", "pq32", f"0-{N_LAYER - 1}=pq46"), tokens)
    assert np.array_equal(pq46, all46)
    base = logits_after(context(monkeypatch, model_path, "pq42", "pq32"), tokens)
    some = logits_after(context(monkeypatch, model_path, "pq42", "pq32", "0-1=pq46,29=pq46/q8_0"), tokens)
    assert not np.array_equal(some, base) and not np.array_equal(some, pq46)


def test_the_kv_buffer_is_the_configuration_s_bits(model_path):
    cfg = cache_config.parse("pq42/pq32+L0-1=pq46+L29=pq46/q8_0")
    result = greedy_text(model_path, cfg.env(), "-n", 4, "-c", 1024, "-ctk", cfg.type_k, "-ctv", cfg.type_v)
    assert "llama_kv_cache: layer  29: K pq46, V q8_0" in result.stderr
    f16_mib = N_LAYER * 1024 * 192 * 2 * 2 / 2**20     # K and V rows of 192 values
    assert cfg.bits(1024, n_layer=N_LAYER) / 16 * f16_mib == \
        pytest.approx(perplexity.kv_buffer_mib(result.stderr), abs=0.005)


@pytest.mark.parametrize("setting,ctk,message", [
    ("0-30=pq46", "pq42", "'0-30=pq46': the model's layers are 0-29"),
    ("2-1=pq46", "pq42", "'2-1=pq46': a range goes from the lower layer to the higher"),
    ("0-1=pq46,1=pq37", "pq42", "layer 1 is given twice"),
    ("3", "pq42", "'3' is not LAYERS=K\\[/V\\]"),
    ("x=pq46", "pq42", "'x=pq46' is not LAYERS=K\\[/V\\]"),
    ("0=f16", "pq42", "'f16' is not a quantized cache type"),
    ("0=pq99", "pq42", "'pq99' is not a quantized cache type"),
    ("0=pq46", "q4_0", "types per layer are for a PolarQuant cache, and this one is K q4_0, V q4_0"),
])
def test_bad_settings_are_clear_errors(model_path, setting, ctk, message):
    stderr = completion_error(model_path, {"LLAMA_KV_LAYER_TYPES": setting}, "-ctk", ctk, "-ctv", ctk)
    assert re.search("LLAMA_KV_LAYER_TYPES='" + re.escape(setting) + "': " + message, stderr), stderr[-1500:]


def test_a_state_restores_into_the_same_layer_types_only(monkeypatch, model_path):
    tokens = list(range(1000, 1040))
    saved = context(monkeypatch, model_path, "pq42", "pq32", "0=pq46")
    saved.eval(tokens)
    state = saved.save_state()
    expected = next_logits(saved, 2000)
    restored = context(monkeypatch, model_path, "pq42", "pq32", "0=pq46")
    restored.load_state(state)
    np.testing.assert_array_equal(next_logits(restored, 2000), expected)
    with pytest.raises(RuntimeError, match="Failed to set llama state data"):
        context(monkeypatch, model_path, "pq42", "pq32").load_state(state)


def test_the_simulator_takes_the_layer_types():
    cache = sim.CacheSim.of("pq42/pq32+L0-1=pq46+L29=pq46/q8_0")
    assert (cache.at_layer(1).type_k, cache.at_layer(2).type_k, cache.at_layer(29).type_v) == ("pq46", "pq42", "q8_0")


def synthetic(n_layer=30, hot=((0, 0, 0.05), (1, 1, 0.03))) -> layer_types.Sensitivity:
    added = np.full((n_layer, 2), 0.001)
    for il, side, value in hot:
        added[il, side] = value
    return layer_types.Sensitivity("m.gguf", "pq46", "pq27", 0.02, added)


@pytest.mark.parametrize("budget", [4.625, 4.25, 3.75, 3.25, 2.9])   # at 8192 tokens pq27 takes 2.881 bits
def test_the_allocation_spends_the_budget_on_the_costly_layers_first(budget):
    sens = synthetic()
    spec = layer_types.allocate(sens, budget, n_ctx=8192)
    cfg = cache_config.parse(spec)
    types = cfg.layer_types(30)
    assert cfg.bits(8192, n_layer=30) <= budget
    widths = {(il, side): TYPES[pair[side]].bits_per_value for il, pair in enumerate(types) for side in (0, 1)}
    costly = [widths.pop((0, 0)), widths.pop((1, 1))]
    assert min(costly) >= max(widths.values()) and max(costly) > 2.75     # the two costly sides get the most bits
    # nothing left to spend: any further upgrade would break the budget
    assert cfg.bits(8192, n_layer=30) > budget - 2 * (4.625 - 4.25) / 60 or spec == "pq46"
    assert layer_types.allocate(sens, budget, n_ctx=8192) == spec                    # deterministic


def test_the_predicted_kld_falls_with_the_budget():
    sens = synthetic()
    predicted = [sens.predicted(cache_config.parse(layer_types.allocate(sens, b, 8192)).layer_types(30))
                 for b in (2.9, 3.25, 3.75, 4.25)]
    assert predicted == sorted(predicted, reverse=True) and predicted[-1] < predicted[0]
    assert sens.predicted([("pq46", "pq46")] * 30) == pytest.approx(0.02)
    assert sens.predicted([("pq27", "pq46")] + [("pq46", "pq46")] * 29) == pytest.approx(0.07)


def test_a_budget_below_the_cheapest_configuration_is_a_clear_error():
    # at 8192 tokens: pq22 (the family's cheapest), a sink row and the default window of 64 rows on each side, the
    # centers; at 2048 no window
    with pytest.raises(ValueError, match="2.35 bits/value at 8192 tokens: the cheapest configuration, pq22, takes 2.381"):
        layer_types.allocate(synthetic(), 2.35, n_ctx=8192)
    with pytest.raises(ValueError, match="2.25 bits/value at 2048 tokens: the cheapest configuration, pq22, takes 2.273"):
        layer_types.allocate(synthetic(), 2.25, n_ctx=2048)


def test_spec_of_groups_consecutive_layers_and_keeps_the_commonest_pair():
    types = [("pq46", "pq46")] * 2 + [("pq42", "pq32")] * 5 + [("pq42", "pq46")] + [("pq42", "pq32")] * 2
    assert layer_types.spec_of(types, recent=64) == "pq42/pq32+L0-1=pq46+L7=pq42/pq46+recent64"
    assert cache_config.parse(layer_types.spec_of(types)).layer_types(10) == types


def test_sensitivities_round_trip_through_json(tmp_path):
    sens = synthetic()
    sens.save(tmp_path / "s.json")
    back = layer_types.Sensitivity.load(tmp_path / "s.json")
    assert (back.base, back.low, back.base_kld) == ("pq46", "pq27", 0.02) and np.array_equal(back.added, sens.added)


def test_calibration_measures_every_layer_in_the_simulator(model_path, bin_dir):
    """A short calibration (one chunk of 128 tokens per layer, 256 for the scales) of SmolLM2: every side of every
    layer measured, and an allocation within the budget made from it."""
    sens = layer_types.calibrate(model_path, n_ctx=128, n_chunks=1, long_ctx=256)
    assert sens.added.shape == (N_LAYER, 2) and np.isfinite(sens.added).all()
    assert sens.base_kld > 0 and sens.added.max() > 0 and sens.scale_ctx == 256 and min(sens.scale) > 0
    assert sens.added[:, 0].sum() > 0       # at 128 tokens single layers (and V) are noise; the keys in sum are not
    spec = layer_types.allocate(sens, 3.75, n_ctx=8192)
    assert cache_config.parse(spec).bits(8192, n_layer=N_LAYER) <= 3.75
