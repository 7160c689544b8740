"""Key scales: a copy of a GGUF model whose keys are scaled per RoPE pair and whose queries are divided by the same
scales, so that q.k, and so the model with an unquantized cache, is unchanged, while a quantized K cache stores keys
whose energy sits where the queries look.

A key codec spends its error across a block in proportion to the key's own energy; what the model loses is
q.(k - k'), which weights that error by the queries' energy. In Gemma-3-270M's global layers the two sit in
different pairs (the pairs that carry most key energy carry little query energy). Scaling pair i of every key by
s_i = (E q_i^2 / E k_i^2)^(1/4) and dividing the queries by it makes the two energies proportional, the minimum of
E(q.e)^2 for an error e of fixed relative size. A scale shared by a RoPE pair's two dimensions commutes with RoPE, so
it can live in the weights: the QK-norm weights where the model has them, else the rows of the Q and K projections
(their block scales, so a quantized tensor keeps its quants). E k^2 is taken over keys centered as the cache centers
them (before RoPE, minus the mean of keys 1-64), from llama_polar.simulate's forward pass over a calibration text.

    scales = key_scales("model.gguf")                      # (n_layer, head_dim) float32
    write_scaled_model("model.gguf", "model.ks.gguf", scales)
    # llama-cli -m model.ks.gguf -ctk pq32 -ctv pq25 -fa on
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from . import models, simulate
from .calibrate import calibration_chunks

MAX_SCALE = 64.0          # keys scaled by at most 64x (and at least 1/64x): f16 exact rows keep their range

# where a block's f16 scales sit: byte offsets inside one block, per GGML type (the quants are left as they are)
_F16_SCALE_OFFSETS = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
}


def pair_energy(x: np.ndarray, neox: bool) -> np.ndarray:
    """(d/2,) float64 mean energy of each RoPE pair of x (T, heads, d), over positions and heads."""
    e = (x.astype(np.float64) ** 2).mean(axis=(0, 1))
    d = e.shape[0]
    return e[: d // 2] + e[d // 2:] if neox else e[0::2] + e[1::2]


def scales_of(eq: np.ndarray, ek: np.ndarray, neox: bool) -> np.ndarray:
    """(d,) float32 per-dimension scales from per-pair query and key energies: (eq / ek)^(1/4), geometric mean 1,
    within [1/MAX_SCALE, MAX_SCALE]; a pair without energy on one side counts as 1e-6 of the largest."""
    eq = np.maximum(eq, 1e-6 * eq.max())
    ek = np.maximum(ek, 1e-6 * ek.max())
    s = (eq / ek) ** 0.25
    s = np.clip(s / np.exp(np.log(s).mean()), 1 / MAX_SCALE, MAX_SCALE)
    return (np.concatenate([s, s]) if neox else np.repeat(s, 2)).astype(np.float32)


def alignment(eq: np.ndarray, ek: np.ndarray) -> float:
    """(sum_i sqrt(eq_i ek_i))^2 / (sum eq)(sum ek): 1 when query and key energies are proportional across the pairs
    (scales change nothing), small when they sit in different pairs; for a key error of the same relative size in
    every direction, the factor by which the scales lower E(q.e)^2."""
    return float(np.sqrt(eq * ek).sum() ** 2 / (eq.sum() * ek.sum()))


def centered_keys(k: np.ndarray, hp, il: int) -> np.ndarray:
    """Keys 1.. of layer il (k after RoPE, (T, heads, d)) as the cache centers them: before RoPE, minus the mean of
    keys 1-64."""
    pre = simulate.rope(k, -np.arange(len(k)), hp.rope_base[il], hp.rope_neox)[1:]
    return pre - simulate.online_center(pre, simulate.ONLINE_KEYS - 1)


def scales_of_layers(eq: np.ndarray, ek: np.ndarray, neox: bool) -> np.ndarray:
    """(n_layer, head_dim) float32: scales_of for each layer's energies (n_layer, head_dim / 2)."""
    return np.stack([scales_of(q, k, neox) for q, k in zip(eq, ek)])


def pair_energies(model_path, text: bytes | None = None, chunks: int = 2, n_ctx: int = 1024,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """(query energies, centered key energies, neox): each (n_layer, head_dim / 2) per RoPE pair, over `chunks`
    chunks of `text` (default: Python standard-library docstrings) through an f16 cache."""
    from tqdm import tqdm

    model = simulate.Model(model_path)
    hp = model.hp
    eq = np.zeros((hp.n_layer, hp.head_dim // 2))
    ek = np.zeros_like(eq)
    qkv = model.qkv

    def record(il, h, pos):
        q, k, v = qkv(il, h, pos)
        eq[il] += pair_energy(q, hp.rope_neox)
        ek[il] += pair_energy(centered_keys(k, hp, il), hp.rope_neox)
        return q, k, v

    model.qkv = record
    for chunk in tqdm(calibration_chunks(model, text, chunks, n_ctx), desc="key scales", unit="chunk",
                      disable=not progress):
        model.forward(chunk, simulate.CacheSim(), out_from=len(chunk) - 1)
    return eq, ek, hp.rope_neox


def key_scales(model_path, text: bytes | None = None, chunks: int = 2, n_ctx: int = 1024,
               progress: bool = True) -> np.ndarray:
    """(n_layer, head_dim) float32 scales of every layer's keys (pair_energies, then scales_of_layers)."""
    return scales_of_layers(*pair_energies(model_path, text, chunks, n_ctx, progress))


def scale_rows(data: np.ndarray, type_name: str, row_scales: np.ndarray) -> None:
    """Multiply row r of a GGUF tensor's data (rows, row bytes or values; a writable view) by row_scales[r], in
    place: the values of F32/F16 rows, the f16 block scales of a quantized type."""
    if type_name in ("F32", "F16"):
        data[:] = (data.astype(np.float32) * row_scales[:, None]).astype(data.dtype)
        return
    if type_name not in _F16_SCALE_OFFSETS:
        raise ValueError(f"key scales: Q or K projections of type {type_name} are not supported "
                         f"(supported: F32, F16, {', '.join(_F16_SCALE_OFFSETS)})")
    import gguf

    _, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    blocks = data.view(np.uint8).reshape(len(row_scales), -1, type_size)
    for off in _F16_SCALE_OFFSETS[type_name]:
        d = blocks[:, :, off:off + 2].copy().view(np.float16)[..., 0]
        scaled = (d.astype(np.float32) * row_scales[:, None]).astype(np.float16)
        blocks[:, :, off:off + 2] = scaled[..., None].view(np.uint8)


def write_scaled_model(src, dst, scales: np.ndarray) -> Path:
    """Copy src to dst with keys scaled by `scales` (n_layer, head_dim) and queries by their inverse."""
    import gguf

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"key scales: {dst} is the model itself; write the scaled copy elsewhere")
    meta = models.metadata(str(src))
    n_layer, n_head, n_head_kv = meta["n_layer"], meta["n_head"], meta["n_head_kv"]
    if scales.shape[0] != n_layer:
        raise ValueError(f"key scales: {scales.shape[0]} layers of scales for a model of {n_layer}")
    tmp = dst.with_name(dst.name + ".partial")
    shutil.copyfile(src, tmp)
    try:
        reader = gguf.GGUFReader(tmp, "r+")
        tensors = {t.name: t for t in reader.tensors}
        for il in range(n_layer):
            s = scales[il].astype(np.float32)
            for side, factor, heads in (("k", s, n_head_kv), ("q", 1 / s, n_head)):
                _scale_side(tensors, f"blk.{il}.attn_{side}", factor, heads)
        reader.data.flush()
        del reader, tensors
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _scale_side(tensors: dict, prefix: str, factor: np.ndarray, heads: int) -> None:
    """Scale one layer's Q or K: its QK-norm weight (one head's dimensions, shared by the heads) when the model has
    one, else its projection's rows and bias (every head's)."""
    norm = tensors.get(prefix + "_norm.weight")
    if norm is not None:
        if norm.tensor_type.name != "F32" or norm.data.size != factor.size:
            raise ValueError(f"key scales: {norm.name} is {norm.tensor_type.name} x {norm.data.size}, "
                             f"expected F32 x {factor.size}")
        norm.data[:] = norm.data * factor
        return
    weight = tensors.get(prefix + ".weight")
    if weight is None:
        raise ValueError(f"key scales: the model has no {prefix}.weight (a fused QKV projection is not supported)")
    rows = np.tile(factor, heads)
    data = weight.data.reshape(len(rows), -1)
    scale_rows(data, weight.tensor_type.name, rows)
    bias = tensors.get(prefix + ".bias")
    if bias is not None:
        scale_rows(bias.data.reshape(len(rows), 1), bias.tensor_type.name, rows)
