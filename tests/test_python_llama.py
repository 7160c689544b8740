"""llama_polar.llama.Llama: cache types by name for llama-cpp-python, checks before llama.cpp runs, state round trip."""
import numpy as np
import pytest

import llama_polar
from conftest import POLAR_TYPES
from llama_polar import _codebooks, cache_config
from llama_polar.type_names import UPSTREAM_CACHE_TYPES


@pytest.fixture(scope="session")
def llama(bin_dir):
    """llama_polar.llama, imported once the build is known to be there (importing it loads libllama)."""
    import llama_polar.llama
    return llama_polar.llama


def make(model_path, **kwargs):
    import llama_polar.llama as llama     # every caller's test uses the llama or bin_dir fixture

    kwargs.setdefault("n_ctx", 256)
    kwargs.setdefault("verbose", False)
    return llama.Llama(model_path=str(model_path), **kwargs)


def greedy(llm, n):
    tokens = []
    for _ in range(n):
        token = llm.sample(temp=0.0)
        tokens.append(token)
        llm.eval([token])
    return tokens


def test_cache_type_ids_come_from_the_library(llama):
    types = llama.cache_types()
    assert list(types)[:9] == list(UPSTREAM_CACHE_TYPES) and set(POLAR_TYPES) <= set(types)
    assert types["f16"] == 1 and types["q8_0"] == 8 and len(set(types.values())) == len(types)
    for name in POLAR_TYPES:
        assert llama.cache_type_name(types[name]) == name
    assert {name: types[name] for name in POLAR_TYPES} == _codebooks.GGML_TYPE_IDS    # the generated ids


def test_the_configuration_modules_bits_are_the_librarys(llama):
    assert {t: cache_config.type_bits(t) for t in llama.cache_types()} == \
        {t: llama.bits_per_value(t) for t in llama.cache_types()}


@pytest.mark.parametrize("name", POLAR_TYPES)
def test_generation_with_every_polar_type(llama, model_path, name):
    llm = make(model_path, type_k=name, type_v=name, flash_attn=True)
    text = llm.create_completion("The quick brown fox", max_tokens=8, temperature=0)["choices"][0]["text"]
    assert len(text.strip()) > 0
    assert llm.context_params.type_k == llm.context_params.type_v == llama.cache_types()[name]


@pytest.mark.parametrize("type_k,type_v", [("q8_0", "pq46"), ("pq46", "f16"), ("F16", "PQ37")])
def test_upstream_names_asymmetric_pairs_and_ints(llama, model_path, type_k, type_v):
    by_name = make(model_path, type_k=type_k, type_v=type_v, flash_attn=True)
    ids = llama.cache_types()
    by_id = make(model_path, type_k=ids[type_k.lower()], type_v=ids[type_v.lower()], flash_attn=True)
    assert (by_name.context_params.type_k, by_name.context_params.type_v) == \
           (by_id.context_params.type_k, by_id.context_params.type_v) == (ids[type_k.lower()], ids[type_v.lower()])


def test_polar_cache_without_flash_attention_is_refused_before_llama_cpp(bin_dir, model_path):
    with pytest.raises(ValueError, match="type_k='pq46' is a PolarQuant cache type and needs flash attention"):
        make(model_path, type_k="pq46")
    with pytest.raises(ValueError, match="type_v='pq37' is a PolarQuant cache type"):
        make(model_path, type_v="pq37", flash_attn=False)
    with pytest.raises(ValueError, match="type_v='q4_0' is a quantized V cache type"):
        make(model_path, type_v="q4_0")


def test_bad_cache_type_values(llama, model_path):
    with pytest.raises(ValueError, match="type_k: unknown cache type 'pq99'; known: f32, f16"):
        make(model_path, type_k="pq99", flash_attn=True)
    with pytest.raises(ValueError, match="type_k: unknown cache type id 12345; known: f32=0, f16=1"):
        make(model_path, type_k=12345, flash_attn=True)
    with pytest.raises(TypeError, match="must be a cache type name or a ggml_type id"):
        make(model_path, type_k=True, flash_attn=True)
    with pytest.raises(ValueError, match="is not a file"):
        llama.Llama(model_path="/nonexistent.gguf", type_k="pq46", flash_attn=True)


def test_head_size_not_a_multiple_of_the_block_is_refused(llama, tmp_path):
    """A GGUF with head size 96 (metadata only): the check reads the metadata and refuses before llama.cpp runs."""
    import gguf

    path = tmp_path / "head96.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_embedding_length(96 * 4)
    writer.add_head_count(4)
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert llama.model_head_sizes(str(path)) == (96, 96)
    with pytest.raises(ValueError, match="blocks of 64 values, but this model's K head size is 96"):
        llama.Llama(model_path=str(path), type_k="pq46", flash_attn=True)
    with pytest.raises(ValueError, match="V head size is 96"):
        llama.Llama(model_path=str(path), type_v="pq38p", flash_attn=True)


def test_model_head_sizes_of_the_real_model(llama, model_path):
    assert llama.model_head_sizes(str(model_path)) == (64, 64)


@pytest.mark.parametrize("name", ["pq46", "pq38p", "pqk1"])
def test_state_save_and_load_continue_with_the_same_tokens(bin_dir, model_path, name):
    """Continuing after loading a saved state into a fresh context gives the tokens of not reloading.

    The state is saved before the prompt's last token: a fresh context has no logits to sample from (upstream
    llama-cpp-python aborts on that, for every cache type), and evaluating that token after the reload makes it
    attend over the restored polar cache."""
    kwargs = dict(type_k=name, type_v=name, flash_attn=True, seed=7)
    first = make(model_path, **kwargs)
    prompt = first.tokenize(b"Once upon a time, in a land far away,")
    first.eval(prompt[:-1])
    state = first.save_state()
    first.eval(prompt[-1:])
    expected = greedy(first, 16)

    second = make(model_path, **kwargs)
    second.load_state(state)
    second.eval(prompt[-1:])
    assert greedy(second, 16) == expected
    assert state.llama_state_size > 0


def test_polar_state_is_smaller_than_f16_state(bin_dir, model_path):
    sizes = {}
    for name in ("f16", "pq46"):
        llm = make(model_path, type_k=name, type_v=name, flash_attn=True)
        llm.eval(llm.tokenize(b"Once upon a time, in a land far away, there lived a fox." * 4))
        sizes[name] = llm.save_state().llama_state_size
    ratio = sizes["pq46"] / sizes["f16"]
    bits = llama_polar.TYPES["pq46"].bits_per_value
    assert ratio < 0.5 and np.isfinite(ratio), (sizes, bits)
