"""llama_polar.cache_config: configuration strings, the environment they set, their bits with the sink rows."""
from pathlib import Path

import pytest

from llama_polar import cache_config, perplexity
from llama_polar.type_names import UnknownTypeError


def test_the_default_of_a_polar_k_cache_is_centered_with_one_sink_row():
    cfg = cache_config.parse("pq46")
    assert (cfg.type_k, cfg.type_v, cfg.sink_rows, cfg.env()) == ("pq46", "pq46", 1, {})
    # 4.625 bits; K and V each keep a sink row and a scratch row in f16, K its centers in f32
    assert cfg.bits(512) == pytest.approx(4.625 + (2 * 16 + 32 + 2 * 16) / 1024)
    assert cache_config.parse("q4_0").sink_rows == 0 and cache_config.parse("q4_0").bits(512) == 4.5


@pytest.mark.parametrize("spec,env,sink", [
    ("q4_0+plain", {"LLAMA_K_CENTER": "off", "LLAMA_KV_SINK_ROWS": "0"}, 0),
    ("pq46+plain", {"LLAMA_K_CENTER": "off", "LLAMA_KV_SINK_ROWS": "0"}, 0),
    ("q4_0+center", {"LLAMA_K_CENTER": "on"}, 0),
    ("q4_0+calib+sink1", {"LLAMA_K_CENTER": "on", "LLAMA_K_CENTERS": "c.gguf", "LLAMA_KV_SINK_ROWS": "1"}, 1),
    ("pq46/pq37+calib", {"LLAMA_K_CENTER": "on", "LLAMA_K_CENTERS": "c.gguf"}, 1),
    ("pq46+sink4", {"LLAMA_KV_SINK_ROWS": "4"}, 4),
    ("pq46+fixed", {"LLAMA_K_CENTER_MODE": "fixed"}, 1),
    ("q4_0+center+fixed", {"LLAMA_K_CENTER": "on", "LLAMA_K_CENTER_MODE": "fixed"}, 0),
    ("pq46+calib+fixed", {"LLAMA_K_CENTER": "on", "LLAMA_K_CENTERS": "c.gguf"}, 1),   # calibrated: fixed anyway
    ("pq46/pq37+recent64", {"LLAMA_KV_RECENT_ROWS": "64"}, 1),
    ("q4_0+recent128", {"LLAMA_KV_RECENT_ROWS": "128"}, 0),
    ("pq42/pq32+L0-1=pq46+L29=pq46/q8_0", {"LLAMA_KV_LAYER_TYPES": "0-1=pq46,29=pq46/q8_0"}, 1),
])
def test_modifiers_set_the_environment(spec, env, sink):
    cfg = cache_config.parse(spec)
    assert cfg.env("c.gguf") == env and cfg.sink_rows == sink


def test_bits_count_v_rows_only_for_a_quantized_v():
    split = cache_config.parse("pq46/pq37")
    assert split.bits(2048) == pytest.approx((4.625 + 3.75) / 2 + (2 * 16 + 32 + 2 * 16) / 4096)
    f16_v = cache_config.parse("pq46/f16")
    assert f16_v.bits(512) == pytest.approx((4.625 + 16) / 2 + (2 * 16 + 32) / 1024)


def test_bits_count_the_recent_window_of_every_sequence():
    # per sequence: one sink row and 64 recent rows on each side, with the scratch row; K's f32 centers
    recent = cache_config.parse("pq46/pq37+recent64")
    assert recent.exact_rows(512) == (65, 65)
    cells = 8192 * 2
    assert recent.bits(8192, n_seq=2) == pytest.approx((4.625 + 3.75) / 2 + (2 * 16 * (65 * 2 + 1) + 32) / (2 * cells))
    assert cache_config.parse("pq46/f16+recent64").exact_rows(512) == (65, 0)


@pytest.mark.parametrize("spec, ctx, recent", [
    ("pq46/pq37", 8192, 64), ("pq46/pq37", 4096, 64), ("pq46/pq37", 4095, 0),   # 64 rows cost at most 0.25 bits
    ("pq46+plain", 8192, 0), ("q4_0", 8192, 0), ("q4_0+center", 8192, 0),    # where the build keeps no sink row
    ("pq46+recent0", 8192, 0), ("pq46+recent16", 8192, 16), ("q4_0+recent32", 512, 32),
])
def test_the_build_keeps_a_recent_window_by_default_for_long_polar_sequences(spec, ctx, recent):
    assert cache_config.parse(spec).recent_rows(ctx) == recent


def test_the_default_window_is_counted_and_recent0_turns_it_off():
    default, off = cache_config.parse("pq42/pq32"), cache_config.parse("pq42/pq32+recent0")
    assert off.env() == {"LLAMA_KV_RECENT_ROWS": "0"} and default.env() == {}
    assert default.bits(8192) - off.bits(8192) == pytest.approx(2 * 16 * 64 / (2 * 8192))


def test_bits_of_types_per_layer_are_the_mean_over_the_model_s_layers():
    cfg = cache_config.parse("pq42/pq32+L0-1=pq46+L29=pq46/q8_0")
    assert cfg.layer_types(30)[:3] == [("pq46", "pq46"), ("pq46", "pq46"), ("pq42", "pq32")]
    k = (27 * 4.25 + 3 * 4.625) / 30
    v = (27 * 3.25 + 2 * 4.625 + 8.5) / 30
    # each side: a sink row, the default window's 64 rows and a scratch row in f16; K's f32 centers
    assert cfg.bits(8192, n_layer=30) == pytest.approx((k + v) / 2 + (2 * 16 * 66 + 32) / (2 * 8192))
    with pytest.raises(ValueError, match="depend on the model's layer count"):
        cfg.bits(8192)
    with pytest.raises(ValueError, match="L29=pq46/q8_0 is past the model's layers 0-23"):
        cfg.bits(8192, n_layer=24)


def test_a_label_counts_the_layers_a_configuration_gives_types():
    assert cache_config.parse("pq42/pq32+recent64+L0-1=pq46+L29=pq46/q8_0").label == "pq42/pq32+recent64+3 layers' types"
    assert cache_config.parse("pq46/pq37+plain").label == "pq46/pq37+plain"


def test_bits_are_the_kv_buffer_llama_cpp_logs():
    # SmolLM2 (30 layers, K and V rows of 192 values), -c 512 with 4 sequences: tests/data/kv-lines-pq46.txt
    lines = (Path(__file__).parent / "data" / "kv-lines-pq46.txt").read_text()
    f16_mib = 30 * 2048 * 192 * 2 * 2 / 2**20
    assert cache_config.parse("pq46").bits(512, n_seq=4) / 16 * f16_mib == \
        pytest.approx(perplexity.kv_buffer_mib(lines), abs=0.005)   # the log rounds to 0.01 MiB


@pytest.mark.parametrize("spec,error,match", [
    ("pq99", UnknownTypeError, "unknown cache type 'pq99'"),
    ("pq46/q9_9", UnknownTypeError, "unknown cache type 'q9_9'"),
    ("pq46+sinks", ValueError, "unknown modifier 'sinks'"),
    ("f16+sink1", ValueError, "sink rows need a quantized K cache, not f16"),
    ("f16+recent64", ValueError, "a recent window needs a quantized K cache, not f16"),
    ("pq46+recent", ValueError, "unknown modifier 'recent'"),
    ("pq46+band1", ValueError, "'band1' is a simulator experiment"),
    ("q4_0+fixed", ValueError, "'fixed' is a way to center keys, and this cache centers none"),
    ("pq42+L1-0=pq46", ValueError, "a range goes from the lower layer to the higher"),
    ("pq42+L0=f16", ValueError, "a layer's types are quantized ones, not f16"),
    ("pq42+L0=pq99", UnknownTypeError, "unknown cache type 'pq99'"),
    ("q4_0+L0=pq46", ValueError, "types per layer are for a polar cache, not K q4_0, V q4_0"),
    ("pq42+L0-3=pq46+L3=pq37", ValueError, "layer 3 is given twice"),
    ("pq42+L=pq46", ValueError, "unknown modifier 'L=pq46'"),
])
def test_bad_specs_are_clear_errors(spec, error, match):
    with pytest.raises(error, match=match):
        cache_config.parse(spec)


def test_calibrated_centers_need_a_file():
    with pytest.raises(ValueError, match="need a centers file"):
        cache_config.parse("pq46+calib").env()


def test_the_simulator_takes_its_experiments_and_the_build_modifiers():
    cfg = cache_config.parse("pq46/pq37+sink2+fixed+band1+online32", experiments=True)
    assert (cfg.sink_rows, cfg.centered, cfg.per_position, cfg.experiments) == (2, True, False, ("band1", "online32"))
    with pytest.raises(ValueError, match="unknown modifier 'wobble'.*bandX"):
        cache_config.parse("pq46+wobble", experiments=True)
