"""Key centers for a polar K cache, calibrated over a text: llama.cpp's LLAMA_K_CENTERS (patch 0013).

The center of a (layer, KV head) is its mean key after RoPE, in the model's basis (llama.cpp rotates it into the
cache's), over the positions >= 1 of n_ctx-token chunks of a text, from llama_polar.simulate's NumPy forward pass.
Any fixed center is exact (softmax ignores it); a mean over ordinary text removes most of the key energy the codec
would otherwise spend its error on (docs/simulator.md: 0.58 of 0.61 with Python docstrings on Shakespeare).

    centers, model = key_centers("model.gguf")                 # (n_layer, n_head_kv, head_dim) float32
    write_centers("model.k-centers.gguf", centers, model)
    # LLAMA_K_CENTERS=model.k-centers.gguf llama-cli -m model.gguf -ctk pq46 -ctv pq46 -fa on
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import models, simulate

ARCH_KEY = "polar.k_centers.arch"       # the model architecture the centers belong to (llama.cpp checks it)
FINGERPRINT_KEY = "polar.k_centers.model_fingerprint"   # the model's K projections (llama.cpp checks it)
MODEL_KEY = "polar.k_centers.model"     # the model's file name, for the error llama.cpp gives another model
SOURCE_KEY = "polar.k_centers.source"   # what they were measured over, for people
K_PROJECTIONS = (".attn_k.weight", ".attn_qkv.weight")


@dataclass(frozen=True)
class ModelIdentity:
    """What a key-centers file says of the model it was calibrated on."""
    arch: str
    fingerprint: str          # 16 hex digits: k_fingerprint of the model's K projections
    name: str = ""


def _fnv1a(data: bytes) -> int:
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & (2**64 - 1)
    return h


def k_fingerprint(tensors) -> str:
    """The fingerprint llama.cpp computes of a model's K projections (llama_model_loader::k_fingerprint, patch 0017),
    from (name, raw bytes) pairs: per tensor, sum of its little-endian 64-bit words w_i (the last zero-padded) times
    (2i + 1) * 0x9e3779b97f4a7c15, xor FNV-1a of the name, times 0xff51afd7ed558ccd; summed; modulo 2^64."""
    total = 0
    with np.errstate(over="ignore"):
        for name, raw in tensors:
            if not name.endswith(K_PROJECTIONS):
                continue
            raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
            words = np.frombuffer(raw.tobytes() + bytes(-len(raw) % 8), dtype="<u8")
            mult = (np.arange(len(words), dtype=np.uint64) * np.uint64(2) + np.uint64(1)) * np.uint64(0x9e3779b97f4a7c15)
            h = int((words * mult).sum(dtype=np.uint64))
            total += ((h ^ _fnv1a(name.encode())) * 0xff51afd7ed558ccd) & (2**64 - 1)
    return f"{total & (2**64 - 1):016x}"


def model_identity(model_path) -> ModelIdentity:
    """The architecture, K fingerprint and file name of a GGUF model."""
    reader = models.gguf_reader(model_path)
    field = reader.get_field("general.architecture")
    arch = bytes(field.parts[field.data[0]]).decode()
    return ModelIdentity(arch, k_fingerprint((t.name, t.data) for t in reader.tensors), Path(model_path).name)


def calibration_chunks(model: simulate.Model, text: bytes | None, chunks: int, n_ctx: int) -> list[np.ndarray]:
    """`chunks` consecutive n_ctx-token chunks of text (default: Python standard-library docstrings)."""
    data = text if text is not None else simulate.stdlib_text().encode()
    tokens = simulate.tokenize(model.path, data)
    return simulate.chunk_tokens(tokens, n_ctx, chunks, model.hp.bos if model.hp.add_bos else None)


def key_centers(model_path, text: bytes | None = None, chunks: int = 8, n_ctx: int = 512,
                progress: bool = True) -> tuple[np.ndarray, ModelIdentity]:
    """(centers (n_layer, n_head_kv, head_dim) float32, the model they belong to)."""
    from tqdm import tqdm

    model = simulate.Model(model_path)
    parts = calibration_chunks(model, text, chunks, n_ctx)
    means = simulate.key_means(model, tqdm(parts, desc="calibrating", unit="chunk", disable=not progress))
    return means.astype(np.float32), model_identity(model_path)


def write_centers(path, centers: np.ndarray, model: ModelIdentity, source: str = "") -> Path:
    """The LLAMA_K_CENTERS file: one F32 tensor k_center.<layer> of n_head_kv * head_dim values per layer, and the
    model they were calibrated on (llama.cpp refuses them for another)."""
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch="polar_k_centers")
    writer.add_string(ARCH_KEY, model.arch)
    writer.add_string(FINGERPRINT_KEY, model.fingerprint)
    writer.add_string(MODEL_KEY, model.name)
    writer.add_string(SOURCE_KEY, source)
    for il, c in enumerate(centers):
        writer.add_tensor(f"k_center.{il}", np.ascontiguousarray(c, dtype=np.float32).reshape(-1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_centers(path) -> tuple[np.ndarray, str]:
    """(centers (n_layer, n_values) float32, architecture) of a LLAMA_K_CENTERS file."""
    reader = models.gguf_reader(path)
    field = reader.get_field(ARCH_KEY)
    if field is None:
        raise ValueError(f"{path}: no {ARCH_KEY}: not a key-centers file")
    arch = bytes(field.parts[field.data[0]]).decode()
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    return np.stack([tensors[f"k_center.{il}"] for il in range(len(tensors))]), arch


def read_fingerprint(path) -> str:
    """The K fingerprint of the model a LLAMA_K_CENTERS file was calibrated on ("" for a file without one)."""
    field = models.gguf_reader(path).get_field(FINGERPRINT_KEY)
    return bytes(field.parts[field.data[0]]).decode() if field is not None else ""
