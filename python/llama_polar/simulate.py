"""A fake-quant simulator of llama.cpp's KV cache: a float32 NumPy forward pass of a GGUF model whose cached K and V
go through any cache codec, with key centering and exact sink rows, scored like llama-perplexity.

    from llama_polar import simulate as sim
    model = sim.Model("SmolLM2-135M-Instruct.Q4_1.gguf")
    chunks = sim.text_chunks(model, texts.get_text(), n_chunks=4)
    res = sim.evaluate(model, chunks, ["q4_0", "pq46", "pq46+plain"])     # configuration strings (cache_config)
    print(sim.format_table(res))

What it reproduces of llama.cpp (0c1e570, CPU, flash attention on):
- the llama and gemma3 graphs (RMS norm, RoPE NORM/NEOX modes and per-layer bases, GQA, QK-norm, sliding windows,
  embedding scaling, post-norms, tied output);
- the cache: K after RoPE, and when a cache type is quantized llama.cpp's Hadamard rotation `attn_rot` (K: blocks of
  the largest power of two >= 64 that divides the head size; V: blocks of 64; the attention output rotated back);
- the FA kernel's conversion of Q to the K type's vec_dot type (q8_0 for q4_0/q8_0 K; f32 for f16 and polar K);
- the 8-bit rounding of activations in quantized-weight matmuls (q8_0/q8_1 blocks of 32, q8_K blocks of 256), which
  puts llama-perplexity's floor of ~0.004 under every cache type's KLD on a Q4_1 model (`round_activations=False`
  keeps activations float32 and measures the cache alone).
Weights are dequantized to float32 with gguf.quants. KLD, PPL and same-top-1 are computed
over the second half of each chunk (positions n_ctx/2 .. n_ctx-2), as llama-perplexity does, against the run with an
f16 cache (no rotation, as llama.cpp).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
import re
from pathlib import Path

import numpy as np

from . import quants as _polar
from . import validate
from . import cache_config, models
from .cache_config import ONLINE_KEYS, CacheConfig, LayerTypes
from .type_names import CACHE_TYPES, UNQUANTIZED, UnknownTypeError, check_types

F32 = np.float32
# every cache type llama.cpp takes but iq4_nl, which gguf-py can only dequantize
SIMULATED_TYPES = tuple(t for t in CACHE_TYPES if t != "iq4_nl")
V_ROTATION = 64                      # llama.cpp rotates V in blocks of 64 whatever the head size


# ---------------------------------------------------------------------------------------------------------------
# codecs and the Hadamard rotation
# ---------------------------------------------------------------------------------------------------------------

def _gguf_type(name: str):
    from gguf import GGMLQuantizationType
    return GGMLQuantizationType[name.upper()]


@lru_cache(maxsize=None)
def polar_codec():
    """The C library (llama_polar.native) where it is built, else the NumPy reference: they are bit-identical."""
    from .paths import LibraryError, native_library
    try:
        native_library()
    except LibraryError:
        from . import quants
        return _ReferenceCodec(quants)
    from . import native
    return native


class _ReferenceCodec:
    def __init__(self, quants):
        self.quants = quants

    def quantize(self, x, name):
        return self.quants.get_type(name).quantize(x)

    def dequantize(self, q, name):
        return self.quants.get_type(name).dequantize(q)


def is_quantized(type_name: str) -> bool:
    return type_name not in UNQUANTIZED


def fake_quant(x: np.ndarray, type_name: str) -> np.ndarray:
    """The float32 values a cache of `type_name` returns for rows x (last axis: one head, a multiple of the block)."""
    x = np.ascontiguousarray(x, dtype=F32)
    if type_name == "f32":
        return x
    if type_name == "f16":
        return x.astype(np.float16).astype(F32)
    rows = x.reshape(-1, x.shape[-1])
    if type_name in SIMULATED_TYPES and type_name not in _polar.TYPES:
        from gguf import quants
        qt = _gguf_type(type_name)
        return quants.dequantize(quants.quantize(rows, qt), qt).reshape(x.shape).astype(F32)
    if type_name in _polar.TYPES:
        codec = polar_codec()
        return codec.dequantize(codec.quantize(rows, type_name), type_name).reshape(x.shape)
    raise UnknownTypeError([type_name], SIMULATED_TYPES, "cache type the simulator has")


def q_dot_type(type_k: str) -> str:
    """What llama.cpp's CPU flash attention converts Q to before the dot with K (the K type's vec_dot_type)."""
    if type_k == "bf16":
        return "bf16"
    return "q8_0" if is_quantized(type_k) and type_k not in _polar.TYPES else "f32"


@lru_cache(maxsize=None)
def hadamard(n: int) -> np.ndarray:
    """validate.hadamard(n) in float32 (symmetric, an involution), as the rotation's matrix."""
    return validate.hadamard(n).astype(F32)


def rotate(x: np.ndarray, n: int) -> np.ndarray:
    """Rotate consecutive n-blocks of the last axis by hadamard(n), as llama_mul_mat_hadamard does."""
    shape = x.shape
    return (x.reshape(-1, n) @ hadamard(n)).reshape(shape)


k_rotation_size = validate.k_rotation_size


# ---------------------------------------------------------------------------------------------------------------
# the cache configuration
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheSim:
    """How the simulator caches K and V: the mechanics of one configuration (CacheSim.of a cache_config string).

    type_k, type_v: cache types (SIMULATED_TYPES).
    center: None; "calib" (subtract the centers passed to the forward pass); "online" (subtract the mean of the
        sequence's keys online_from .. online_keys - 1, frozen). Centers live in the cache's basis (after RoPE and
        rotation).
    center_band: keep the center only in the RoPE pairs that turn at most this many radians over the chunk (a fixed
        center fits keys at every position only where RoPE barely turns it); None keeps every pair.
    center_per_position: the online center is taken before RoPE and subtracted as RoPE turns it at each key's
        position, then added back when the key is read (exact without softmax's shift invariance).
    center_pairs: keep that center only in this many of the slowest RoPE pairs (restoring it costs a product over
        2 x center_pairs values per score instead of head_dim); None keeps every pair.
    sink_k, sink_v: the first n tokens' K (V) kept in f16 beside the quantized cache.
    rotate: llama.cpp's attn_rot for quantized types (False: as with LLAMA_ATTN_ROT_DISABLE=1).
    round_q: Q converted to the K type's vec_dot type (q8_0 for upstream quantized K), as the CPU FA kernel does.
    v_center: values stored minus the mean of the sequence's first ONLINE_KEYS values after the V sink rows, and the
        mean added back to the output (exact: the softmax weights sum to 1; an experiment, "+vcenter").
    layers: types of some layers (cache_config.LayerTypes), as LLAMA_KV_LAYER_TYPES sets them.
    config: the configuration it simulates (its string is the label, its bits the bits), if made from one.
    """
    type_k: str = "f16"
    type_v: str = "f16"
    center: str | None = None
    online_keys: int = ONLINE_KEYS
    online_from: int = 0
    center_band: float | None = None
    center_per_position: bool = False
    center_pairs: int | None = None
    sink_k: int = 0
    sink_v: int = 0
    rotate: bool = True
    round_q: bool = True
    v_center: bool = False
    layers: tuple[LayerTypes, ...] = ()
    config: CacheConfig | None = field(default=None, compare=False)

    def __post_init__(self):
        types = [self.type_k, self.type_v] + [t for lt in self.layers for t in (lt.type_k, lt.type_v)]
        check_types(dict.fromkeys(types), SIMULATED_TYPES, "cache type the simulator has")
        if self.center not in (None, "calib", "online"):
            raise ValueError(f"center must be None, 'calib' or 'online', not {self.center!r}")

    @classmethod
    def of(cls, config: CacheConfig | str) -> "CacheSim":
        """The mechanics of a configuration, as the build runs it, with the simulator's experiments applied."""
        if isinstance(config, str):
            config = cache_config.parse(config, experiments=True)
        if config.recent:
            raise ValueError(f"{config.spec}: the simulator scores a whole chunk at once and has no recent window "
                             "(measure it with llama-perplexity: llama-polar report)")
        sink = config.sink_rows
        kw: dict = {"type_k": config.type_k, "type_v": config.type_v, "sink_k": sink, "sink_v": config.v_sink_rows,
                    "layers": config.layers, "config": config}
        if config.centered:
            kw.update(center="calib" if config.center == "calib" else "online",
                      online_from=sink, online_keys=sink + ONLINE_KEYS, center_per_position=config.per_position)
        for m in config.experiments:
            if (g := re.fullmatch(r"online(\d+)(?:from(\d+))?", m)):
                kw.update(center="online", online_keys=int(g[1]), online_from=int(g[2] or 0))
            elif (g := re.fullmatch(r"band([\d.]+)", m)):
                if kw.get("center_per_position"):
                    raise ValueError(f"{config.spec}: {m} limits a fixed center to slow RoPE pairs: add +fixed")
                kw["center_band"] = float(g[1])
            elif (g := re.fullmatch(r"pairs(\d+)", m)):
                if not kw.get("center_per_position"):
                    raise ValueError(f"{config.spec}: {m} limits centers per position to slow RoPE pairs")
                kw["center_pairs"] = int(g[1])
            elif m == "vcenter":
                kw["v_center"] = True
            else:
                kw[{"norot": "rotate", "noqround": "round_q"}[m]] = False
        return cls(**kw)

    def at_layer(self, il: int) -> "CacheSim":
        """The cache of layer il: its own types where the configuration gives them."""
        for lt in self.layers:
            if lt.first <= il <= lt.last:
                return replace(self, type_k=lt.type_k, type_v=lt.type_v, layers=())
        return self

    @property
    def label(self) -> str:
        if self.config is not None:
            return self.config.spec
        s = self.type_k if self.type_k == self.type_v else f"K {self.type_k}/V {self.type_v}"
        if self.center == "calib":
            s += " +c(calib)"
        elif self.center == "online":
            s += f" +c(keys {self.online_from}..{self.online_keys - 1})"
        if self.sink_k or self.sink_v:
            s += f" +sink K{self.sink_k}" + (f"V{self.sink_v}" if self.sink_v else "")
        if not self.rotate:
            s += " norot"
        return s


def parse_cache_spec(spec: str) -> CacheSim:
    """The simulator's cache for a configuration string: the build's meaning (cache_config) and the simulator's
    experiments (cache_config.SIMULATOR_MODIFIERS), e.g. pq46/pq32+calib, q4_0+center+sink1, pq46+fixed+band1."""
    return CacheSim.of(cache_config.parse(spec, experiments=True))


# ---------------------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class HParams:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    eps: float
    rope_neox: bool
    rope_base: list[float]           # per layer
    window: list[int]                # per layer; 0 = full attention
    attn_scale: float                # applied to q·k
    embed_scale: float
    softcap: float
    bos: int | None
    add_bos: bool
    n_vocab: int


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_hparams(reader) -> HParams:
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "gemma3"):
        raise ValueError(f"architecture {arch!r} is not simulated (llama, gemma3)")
    g = lambda k, d=None: _field(reader, f"{arch}.{k}", d)  # noqa: E731
    n_layer, n_embd, n_head = g("block_count"), g("embedding_length"), g("attention.head_count")
    head_dim = g("attention.key_length", n_embd // n_head)
    base = float(g("rope.freq_base", 10000.0))
    window, bases = [0] * n_layer, [base] * n_layer
    if arch == "gemma3" and g("attention.sliding_window", 0):
        pattern = g("attention.sliding_window_pattern", 6)      # llama.cpp's default for gemma3: 5 local, 1 global
        swa = [il % pattern < pattern - 1 for il in range(n_layer)]
        window = [g("attention.sliding_window") if s else 0 for s in swa]
        bases = [float(g("rope.freq_base_swa", 10000.0)) if s else base for s in swa]
    tokens = reader.fields["tokenizer.ggml.tokens"]
    return HParams(
        arch=arch, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=g("attention.head_count_kv", n_head),
        head_dim=head_dim, eps=float(g("attention.layer_norm_rms_epsilon")), rope_neox=arch == "gemma3",
        rope_base=bases, window=window,
        attn_scale=float(g("attention.scale", 0.0)) or 1.0 / np.sqrt(head_dim),
        embed_scale=float(np.sqrt(n_embd)) if arch == "gemma3" else 1.0,
        softcap=float(g("final_logit_softcapping", 0.0)),
        bos=_field(reader, "tokenizer.ggml.bos_token_id"),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)), n_vocab=len(tokens.data))


def load_weights(reader) -> dict[str, np.ndarray]:
    """Every tensor dequantized to float32, in NumPy order (a matrix is (out, in))."""
    from gguf import quants
    return {t.name: quants.dequantize(t.data, t.tensor_type).astype(F32, copy=False) for t in reader.tensors}


def rms_norm(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + F32(eps))
    return y if w is None else y * w


def gelu(x: np.ndarray) -> np.ndarray:
    """ggml_gelu: the tanh approximation."""
    return F32(0.5) * x * (F32(1) + np.tanh(F32(np.sqrt(2 / np.pi)) * (x + F32(0.044715) * x * x * x)))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (F32(1) + np.exp(-x))


def rope(x: np.ndarray, pos: np.ndarray, base: float, neox: bool) -> np.ndarray:
    """x (T, heads, d) rotated by position: pairs (2i, 2i+1) (NORM) or (i, i + d/2) (NEOX), theta_i = base^(-2i/d)."""
    d = x.shape[-1]
    theta = pos[:, None].astype(np.float64) * base ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(theta).astype(F32)[:, None, :], np.sin(theta).astype(F32)[:, None, :]
    a, b = (x[..., : d // 2], x[..., d // 2:]) if neox else (x[..., 0::2], x[..., 1::2])
    ra, rb = a * cos - b * sin, a * sin + b * cos
    return np.concatenate([ra, rb], axis=-1) if neox else np.stack([ra, rb], axis=-1).reshape(x.shape)


def round_activations(x: np.ndarray, weight_type) -> np.ndarray:
    """The 8-bit activation rounding of a quantized-weight matmul (ggml vec_dot_type q8_0/q8_1: blocks of 32 and
    an f16 scale; q8_K for k-quants: blocks of 256 and an f32 scale); F16 weights round to f16, F32 do nothing."""
    name = weight_type.name
    if name == "F32":
        return x
    if name in ("F16", "BF16"):
        return x.astype(np.float16).astype(F32)
    block = 256 if name.endswith("_K") else 32
    b = x.reshape(-1, block)
    d = np.max(np.abs(b), axis=-1, keepdims=True) / F32(127)
    q = np.rint(b / np.where(d == 0, F32(1), d))
    if block == 32:
        d = d.astype(np.float16).astype(F32)
    return (q * d).reshape(x.shape).astype(F32)


class Model:
    """A GGUF model (llama or gemma3) as float32 NumPy arrays, with a forward pass through a simulated KV cache."""

    def __init__(self, path, round_activations: bool = True):
        reader = models.gguf_reader(path)
        self.path = Path(path)
        self.hp = read_hparams(reader)
        self.w = load_weights(reader)
        self.wtype = {t.name: t.tensor_type for t in reader.tensors}
        self.round_activations = round_activations
        if "output.weight" not in self.w:
            self.w["output.weight"] = self.w["token_embd.weight"]
            self.wtype["output.weight"] = self.wtype["token_embd.weight"]
        self.rot_k = k_rotation_size(self.hp.head_dim)

    def linear(self, x: np.ndarray, name: str) -> np.ndarray:
        if self.round_activations:
            x = round_activations(x, self.wtype[name])
        return x @ self.w[name].T

    def norm(self, x: np.ndarray, name: str | None) -> np.ndarray:
        return rms_norm(x, None if name is None else self.w[name], self.hp.eps)

    def qkv(self, il: int, h: np.ndarray, pos: np.ndarray):
        """Q, K (after QK-norm and RoPE) and V of layer il, each (T, heads, head_dim)."""
        hp, p = self.hp, f"blk.{il}."
        T = h.shape[0]
        q = self.linear(h, p + "attn_q.weight").reshape(T, hp.n_head, hp.head_dim)
        k = self.linear(h, p + "attn_k.weight").reshape(T, hp.n_head_kv, hp.head_dim)
        v = self.linear(h, p + "attn_v.weight").reshape(T, hp.n_head_kv, hp.head_dim)
        if p + "attn_q_norm.weight" in self.w:
            q, k = self.norm(q, p + "attn_q_norm.weight"), self.norm(k, p + "attn_k_norm.weight")
        base = hp.rope_base[il]
        return rope(q, pos, base, hp.rope_neox), rope(k, pos, base, hp.rope_neox), v

    def ffn(self, il: int, h: np.ndarray) -> np.ndarray:
        p = f"blk.{il}."
        act = gelu if self.hp.arch == "gemma3" else silu
        return self.linear(act(self.linear(h, p + "ffn_gate.weight")) * self.linear(h, p + "ffn_up.weight"),
                           p + "ffn_down.weight")

    def forward(self, tokens, cache: CacheSim = CacheSim(), centers: np.ndarray | None = None,
                out_from: int = 0, on_keys=None) -> np.ndarray:
        """Logits (float32) of positions out_from.. for one sequence `tokens` (positions 0..T-1) through `cache`.

        centers: (n_layer, n_head_kv, head_dim) key means after RoPE, before rotation (for center="calib").
        on_keys(il, k): called with each layer's keys after RoPE, before rotation (T, n_head_kv, head_dim)."""
        hp = self.hp
        if any(lt.last >= hp.n_layer for lt in cache.layers):
            raise ValueError(f"{cache.label}: types of a layer past the model's layers 0-{hp.n_layer - 1}")
        tokens = np.asarray(tokens)
        pos = np.arange(len(tokens))
        x = self.w["token_embd.weight"][tokens] * F32(hp.embed_scale)
        gemma = hp.arch == "gemma3"
        for il in range(hp.n_layer):
            p = f"blk.{il}."
            q, k, v = self.qkv(il, self.norm(x, p + "attn_norm.weight"), pos)
            if on_keys is not None:
                on_keys(il, k)
            c = None if centers is None else centers[il]
            a = self.attention(il, q, k, v, cache, c).reshape(len(tokens), -1)
            o = self.linear(a, p + "attn_output.weight")
            x = x + (self.norm(o, p + "post_attention_norm.weight") if gemma else o)
            f = self.ffn(il, self.norm(x, p + "ffn_norm.weight"))
            x = x + (self.norm(f, p + "post_ffw_norm.weight") if gemma else f)
        logits = self.linear(self.norm(x[out_from:], "output_norm.weight"), "output.weight")
        if hp.softcap:
            logits = np.tanh(logits / F32(hp.softcap)) * F32(hp.softcap)
        return logits

    def positional_center(self, il: int, k, cache: CacheSim, rot_k) -> np.ndarray:
        """(T, n_kv, d) R(pos) c in the cache basis, c the online mean of the keys before RoPE."""
        hp, pos = self.hp, np.arange(len(k))
        raw = rotate(k, rot_k) if rot_k else k                                  # the Hadamard is an involution
        pre = rope(raw, -pos, hp.rope_base[il], hp.rope_neox)                   # undo RoPE
        c = online_center(pre[cache.online_from:], cache.online_keys - cache.online_from)
        if cache.center_pairs is not None:
            c = c * slowest_pairs(hp.head_dim, cache.center_pairs, hp.rope_neox)
        off = rope(np.broadcast_to(c, k.shape).copy(), pos, hp.rope_base[il], hp.rope_neox)
        return rotate(off, rot_k) if rot_k else off

    def attention(self, il: int, q, k, v, cache: CacheSim, center: np.ndarray | None) -> np.ndarray:
        """Attention of layer il through the simulated cache; output (T, n_head, head_dim) in the model's basis."""
        cache = cache.at_layer(il)
        rot_k = self.rot_k if cache.rotate and is_quantized(cache.type_k) else None
        rot_v = V_ROTATION if cache.rotate and is_quantized(cache.type_v) and self.hp.head_dim % 64 == 0 else None
        if rot_k:
            q, k = rotate(q, rot_k), rotate(k, rot_k)
        if rot_v:
            v = rotate(v, rot_v)
        if cache.center_per_position:
            offset = self.positional_center(il, k, cache, rot_k)
            kc = cached_rows(k - offset, cache.type_k, cache.sink_k) + offset
        else:
            band = None
            if cache.center_band is not None:
                mask = rope_band(self.hp.head_dim, self.hp.rope_base[il], self.hp.rope_neox, len(k), cache.center_band)
                band = (lambda c: rotate(rotate(c, rot_k) * mask, rot_k)) if rot_k else (lambda c: c * mask)
            k = center_keys(k, cache, center if center is None or not rot_k else rotate(center.astype(F32), rot_k),
                            band)
            kc = cached_rows(k, cache.type_k, cache.sink_k)
        if cache.v_center:
            cv = online_center(v[cache.sink_v:], ONLINE_KEYS)
            vc = cached_rows(v - cv, cache.type_v, cache.sink_v) + cv
        else:
            vc = cached_rows(v, cache.type_v, cache.sink_v)
        if cache.round_q:
            q = fake_quant(q, q_dot_type(cache.type_k))
        out = attend(q, kc, vc, self.hp.attn_scale, self.hp.window[il])
        return rotate(out, rot_v) if rot_v else out


def center_keys(k: np.ndarray, cache: CacheSim, center: np.ndarray | None, band=None) -> np.ndarray:
    """Keys (T, n_kv, d) in the cache basis minus the configured fixed center (exact for softmax); band(c) maps the
    center first (rope_band)."""
    if cache.center is None:
        return k
    if cache.center == "online":
        center = online_center(k[cache.online_from:], cache.online_keys - cache.online_from)
    elif center is None:
        raise ValueError("center='calib' needs centers (see key_means)")
    if band is not None:
        center = band(center)
    return k - center.astype(F32)


def rope_band(d: int, base: float, neox: bool, n_ctx: int, max_turn: float) -> np.ndarray:
    """(d,) 1 on the dimensions of the RoPE pairs that turn at most max_turn radians over n_ctx positions, else 0."""
    return pair_dims(n_ctx * base ** (-np.arange(0, d, 2) / d) <= max_turn, neox)


def slowest_pairs(d: int, n: int, neox: bool) -> np.ndarray:
    """(d,) 1 on the dimensions of the n RoPE pairs that turn slowest (the last ones), else 0."""
    return pair_dims(np.arange(d // 2) >= d // 2 - n, neox)


def pair_dims(pairs: np.ndarray, neox: bool) -> np.ndarray:
    """(d,) 1 on both dimensions of each RoPE pair flagged in pairs (d/2,): pair i is (i, i + d/2) in NEOX's layout,
    (2i, 2i + 1) in NORM's."""
    return (np.concatenate([pairs, pairs]) if neox else np.repeat(pairs, 2)).astype(F32)


def online_center(k: np.ndarray, n: int) -> np.ndarray:
    """The mean of the sequence's first n keys, per KV head: frozen once the n-th key is seen."""
    return k[:n].mean(axis=0, dtype=np.float64).astype(F32)


def cached_rows(x: np.ndarray, type_name: str, sink: int) -> np.ndarray:
    """What the cache returns for rows x (T, n_kv, d): fake-quantized, the first `sink` rows kept in f16."""
    y = fake_quant(x, type_name)
    if sink:
        y[:sink] = fake_quant(x[:sink], "f16")
    return y


def attend(q, k, v, scale: float, window: int = 0) -> np.ndarray:
    """Causal softmax attention with GQA; q (T, H, d), k/v (T, Hkv, d); window > 0 masks i - j >= window."""
    T, H, d = q.shape
    hkv = k.shape[1]
    qg = q.reshape(T, hkv, H // hkv, d).transpose(1, 2, 0, 3)              # (hkv, g, T, d)
    s = np.matmul(qg, k.transpose(1, 2, 0)[:, None]) * F32(scale)           # (hkv, g, T, T)
    s += attention_mask(T, window)
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    s /= s.sum(axis=-1, keepdims=True)
    out = np.matmul(s, v.transpose(1, 0, 2)[:, None])                       # (hkv, g, T, d)
    return out.transpose(2, 0, 1, 3).reshape(T, H, d)


@lru_cache(maxsize=8)
def attention_mask(T: int, window: int) -> np.ndarray:
    """Additive mask: -inf where key j is after query i, or (window > 0) i - j >= window."""
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    masked = (j > i) | ((i - j >= window) if window else False)
    return np.where(masked, -np.inf, 0.0).astype(F32)


# ---------------------------------------------------------------------------------------------------------------
# text, centers, scoring
# ---------------------------------------------------------------------------------------------------------------

def tokenize(model_path, text: bytes) -> np.ndarray:
    """llama.cpp's tokenizer (through llama-cpp-python and the project's build), adding BOS as the vocab asks,
    as llama-perplexity's common_tokenize(ctx, text, true) does."""
    from . import llama as polar_llama
    llm = polar_llama.llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    return np.array(llm.tokenize(text, add_bos=True, special=False), dtype=np.int64)


def chunk_tokens(tokens: np.ndarray, n_ctx: int, n_chunks: int, bos: int | None = None,
                 first_chunk: int = 0) -> list[np.ndarray]:
    """Consecutive n_ctx chunks, as llama-perplexity takes them; with bos, each chunk's first token becomes BOS."""
    if n_ctx < 2 or n_chunks < 1 or first_chunk < 0:
        raise ValueError(f"chunks of at least 2 tokens, at least one of them, from chunk 0 or later: not {n_chunks} "
                         f"x {n_ctx} tokens from chunk {first_chunk}")
    available = len(tokens) // n_ctx
    if first_chunk + n_chunks > available:
        raise ValueError(f"the text has {available} chunks of {n_ctx} tokens, asked for {first_chunk + n_chunks}")
    chunks = [tokens[i * n_ctx:(i + 1) * n_ctx].copy() for i in range(first_chunk, first_chunk + n_chunks)]
    for c in chunks:
        if bos is not None:
            c[0] = bos
    return chunks


def text_chunks(model: Model, text_path, n_chunks: int, n_ctx: int = 512, first_chunk: int = 0):
    tokens = tokenize(model.path, Path(text_path).read_bytes())
    return chunk_tokens(tokens, n_ctx, n_chunks, model.hp.bos if model.hp.add_bos else None, first_chunk)


STDLIB_MODULES = ("argparse", "collections", "functools", "itertools", "json", "logging", "pathlib", "re",
                  "subprocess", "threading", "typing", "unittest", "inspect", "asyncio", "decimal", "datetime",
                  "textwrap", "pickle", "shutil", "socket", "tarfile", "zipfile", "csv", "email.message",
                  "http.client", "urllib.request", "argparse", "heapq", "bisect", "contextlib", "dataclasses",
                  "enum", "fractions", "statistics", "string", "struct", "tempfile", "traceback", "weakref")


def stdlib_text() -> str:
    """English technical prose that every Python has: the docstrings of some standard-library modules and of their
    public classes and functions (a calibration text unlike the scored one)."""
    import importlib
    import inspect
    import warnings
    docs = []
    with warnings.catch_warnings():     # reading typing's deprecated io and re members warns; their text is the same
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in dict.fromkeys(STDLIB_MODULES):
            mod = importlib.import_module(name)
            docs.append(inspect.getdoc(mod) or "")
            for attr, obj in sorted(vars(mod).items()):
                if not attr.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)) and \
                        getattr(obj, "__module__", None) == mod.__name__:
                    docs.append(inspect.getdoc(obj) or "")
    return "\n\n".join(d for d in docs if d)


def key_means(model: Model, chunks, skip: int = 1) -> np.ndarray:
    """Mean key per (layer, KV head) after RoPE, before rotation, over the chunks' positions >= skip, from the run
    with an f16 cache: (n_layer, n_head_kv, head_dim) float64. The cache basis' center is its rotation."""
    hp = model.hp
    total = np.zeros((hp.n_layer, hp.n_head_kv, hp.head_dim))
    count = 0

    def collect(il, k):
        total[il] += k[skip:].sum(axis=0, dtype=np.float64)

    for c in chunks:
        model.forward(c, CacheSim(), out_from=len(c) - 1, on_keys=collect)
        count += len(c) - skip
    return total / count


def sequence_keys(model: Model, chunk) -> np.ndarray:
    """Every layer's keys after RoPE, before rotation, from the f16-cache run: (n_layer, T, n_head_kv, head_dim)."""
    keys = [None] * model.hp.n_layer

    def keep(il, k):
        keys[il] = k

    model.forward(chunk, CacheSim(), out_from=len(chunk) - 1, on_keys=keep)
    return np.stack(keys)


def center_report(model: Model, chunks, centers: dict[str, np.ndarray], online=(16, 64), skip: int = 1) -> dict:
    """How well each center fits the chunks' keys (positions >= skip), per layer, averaged over the chunks:
    'energy': the share of the key energy it removes, 1 - sum ||k - c||^2 / sum ||k||^2 (the same in the rotated
    basis); 'distance': ||c - m|| / ||m|| to the chunk's own mean m (per KV head, averaged). Besides `centers`
    (name -> (n_layer, n_head_kv, head_dim)), the chunk's own mean ('own mean') and the online centers (mean of the
    first n keys, position 0 included, and of keys 1..n-1). Also 'spread': ||m_chunk - m_all|| / ||m_all|| across
    the chunks."""
    keys = [sequence_keys(model, c) for c in chunks]
    own = [k[:, skip:].mean(axis=1) for k in keys]
    every = {"own mean": own, **{n: [c] * len(keys) for n, c in centers.items()},
             **{f"first {n}": [k[:, :n].mean(axis=1) for k in keys] for n in online},
             **{f"keys 1..{n - 1}": [k[:, 1:n].mean(axis=1) for k in keys] for n in online}}
    out = {}
    for name, cs in every.items():
        energy = [1 - np.sum((k[:, skip:] - c[:, None]) ** 2, axis=(1, 2, 3)) / np.sum(k[:, skip:] ** 2, axis=(1, 2, 3))
                  for k, c in zip(keys, cs)]
        dist = [np.mean(np.linalg.norm(c - m, axis=-1) / np.linalg.norm(m, axis=-1), axis=-1) for c, m in zip(cs, own)]
        out[name] = {"energy": np.mean(energy, axis=0), "distance": np.mean(dist, axis=0)}
    m_all = np.mean(own, axis=0)
    out["spread"] = np.mean([np.mean(np.linalg.norm(m - m_all, axis=-1) / np.linalg.norm(m_all, axis=-1), axis=-1)
                             for m in own], axis=0)
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@dataclass
class Score:
    """Sums over scored tokens; kld, ppl and same_top are the means llama-perplexity prints."""
    kld_sum: float = 0.0
    nll_sum: float = 0.0
    same_top: int = 0
    count: int = 0
    chunk_kld: list[float] = field(default_factory=list)

    def add(self, logp: np.ndarray, base_logp: np.ndarray, targets: np.ndarray) -> None:
        p = np.exp(base_logp.astype(np.float64))
        kld = np.sum(p * (base_logp - logp), axis=-1)
        self.kld_sum += float(kld.sum())
        self.nll_sum += float(-logp[np.arange(len(targets)), targets].sum())
        self.same_top += int(np.sum(logp.argmax(-1) == base_logp.argmax(-1)))
        self.count += len(targets)
        self.chunk_kld.append(float(kld.mean()))

    @property
    def kld(self) -> float:
        return self.kld_sum / self.count

    @property
    def ppl(self) -> float:
        return float(np.exp(self.nll_sum / self.count))

    @property
    def same_top_pct(self) -> float:
        return 100.0 * self.same_top / self.count


def evaluate(model: Model, chunks, configs, centers: np.ndarray | None = None, progress=None) -> dict[str, Score]:
    """Score every config (a CacheSim, a cache_config.CacheConfig or its string) against the f16-cache run on each
    chunk (second half scored); key "f16" is the base (its kld is 0 by definition, its ppl the reference PPL)."""
    configs = [c if isinstance(c, CacheSim) else CacheSim.of(c) for c in configs]
    labels = [c.label for c in configs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"configs need distinct labels: {labels}")
    scores = {"f16": Score(), **{lbl: Score() for lbl in labels}}
    for chunk in chunks:
        first = len(chunk) // 2
        targets = chunk[first + 1:]
        base = log_softmax(model.forward(chunk, CacheSim(), out_from=first)[:-1])
        scores["f16"].add(base, base, targets)
        for cfg in configs:
            logp = log_softmax(model.forward(chunk, cfg, centers, out_from=first)[:-1])
            scores[cfg.label].add(logp, base, targets)
            if progress is not None:
                progress(cfg.label)
    return scores


def format_table(scores: dict[str, Score], reference: str | None = "q4_0", configs=None,
                 n_ctx: tuple[int, ...] = ()) -> str:
    """A Markdown table: mean KLD (and its ratio to `reference`), PPL, same top-1 %, bits/value at each n_ctx (of
    one sequence, as the build allocates them: cache_config.CacheConfig.bits)."""
    ref = scores.get(reference) if reference else None
    bits = {c.label: c.config for c in (configs or []) if c.config is not None}
    head = ["cache", "mean KLD"] + ([f"/ {reference}"] if ref else []) + ["PPL", "same top-1"]
    head += [f"bits @ {n}" for n in n_ctx]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, s in scores.items():
        row = [label, f"{s.kld:.4f}"] + ([f"{s.kld / ref.kld:.2f}x"] if ref else [])
        row += [f"{s.ppl:.3f}", f"{s.same_top_pct:.1f}%"]
        row += [f"{bits[label].bits(n):.3f}" if label in bits else "16" for n in n_ctx]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
