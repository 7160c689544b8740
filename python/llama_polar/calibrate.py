"""Key centers for a polar K cache, calibrated over a text: llama.cpp's LLAMA_K_CENTERS (patch 0012).

The center of a (layer, KV head) is its mean key after RoPE, in the model's basis (llama.cpp rotates it into the
cache's), over the positions >= 1 of n_ctx-token chunks of a text, from llama_polar.simulate's NumPy forward pass.
Any fixed center is exact (softmax ignores it); a mean over ordinary text removes most of the key energy the codec
would otherwise spend its error on (docs/simulator.md: 0.58 of 0.61 with Python docstrings on Shakespeare).

    centers, arch = key_centers("model.gguf")                  # (n_layer, n_head_kv, head_dim) float32
    write_centers("model.k-centers.gguf", centers, arch)
    # LLAMA_K_CENTERS=model.k-centers.gguf llama-cli -m model.gguf -ctk pq46 -ctv pq46 -fa on
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import simulate

ARCH_KEY = "polar.k_centers.arch"       # the model architecture the centers belong to (llama.cpp checks it)
SOURCE_KEY = "polar.k_centers.source"   # what they were measured over, for people


def calibration_chunks(model: simulate.Model, text: bytes | None, chunks: int, n_ctx: int) -> list[np.ndarray]:
    """`chunks` consecutive n_ctx-token chunks of text (default: Python standard-library docstrings)."""
    data = text if text is not None else simulate.stdlib_text().encode()
    tokens = simulate.tokenize(model.path, data)
    return simulate.chunk_tokens(tokens, n_ctx, chunks, model.hp.bos if model.hp.add_bos else None)


def key_centers(model_path, text: bytes | None = None, chunks: int = 8, n_ctx: int = 512,
                progress: bool = True) -> tuple[np.ndarray, str]:
    """(centers (n_layer, n_head_kv, head_dim) float32, the model's architecture)."""
    from tqdm import tqdm

    model = simulate.Model(model_path)
    parts = calibration_chunks(model, text, chunks, n_ctx)
    means = simulate.key_means(model, tqdm(parts, desc="calibrating", unit="chunk", disable=not progress))
    return means.astype(np.float32), model.hp.arch


def write_centers(path, centers: np.ndarray, arch: str, source: str = "") -> Path:
    """The LLAMA_K_CENTERS file: one F32 tensor k_center.<layer> of n_head_kv * head_dim values per layer."""
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch="polar_k_centers")
    writer.add_string(ARCH_KEY, arch)
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
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    field = reader.get_field(ARCH_KEY)
    if field is None:
        raise ValueError(f"{path}: no {ARCH_KEY}: not a key-centers file")
    arch = bytes(field.parts[field.data[0]]).decode()
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    return np.stack([tensors[f"k_center.{il}"] for il in range(len(tensors))]), arch
