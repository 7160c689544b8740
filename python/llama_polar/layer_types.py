"""Cache types per layer: how much each layer's keys and values cost when quantized harder (measured in the
simulator), and the configuration that spends a budget of bits where they buy most (LLAMA_KV_LAYER_TYPES through
cache_config's `+LA[-B]=K[/V]` modifiers).

    model = simulate.Model(path)
    sens = layer_types.sensitivity(model, simulate.text_chunks(model, text, 2, n_ctx=1024))
    spec = layer_types.allocate(sens, budget=3.75, n_ctx=8192)      # "pq37/pq32+L0-1=pq46+..."

The cost model: quantizing layer il's K (or V) at type t adds KLD in proportion to t's relative MSE above the base
type's, scaled by what dropping that side of that layer from the base type to the low one added (sens.added); the
layers add up. The allocation is greedy: from every layer at the family's cheapest type, the upgrade with the most
KLD saved per bit until the budget is spent. Deterministic for the same sensitivities.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import cache_config
from .codebooks import FAMILY
from .quants import TYPES

FAMILY_TYPES = tuple(name for name, _, _ in FAMILY)     # cheapest first
SIDES = ("K", "V")


@dataclass(frozen=True)
class Sensitivity:
    """KLD (mean, against an f16 cache) that each layer's K or V adds when it alone drops from `base` to `low`."""
    model: str
    base: str
    low: str
    base_kld: float              # every layer at base
    added: np.ndarray            # (n_layer, 2): [il][0] K, [il][1] V
    scale: tuple[float, float] = (1.0, 1.0)   # K's and V's costs at the long context over the per-layer sum
    scale_ctx: int = 0                        # that context (0: none measured)

    @property
    def n_layer(self) -> int:
        return len(self.added)

    def cost(self, il: int, side: int, type_name: str) -> float:
        """The KLD layer il's side adds at type_name (0 at base; a type better than base gives a negative cost)."""
        mse = lambda t: TYPES[t].expected_rel_mse  # noqa: E731
        return float(self.added[il, side]) * self.scale[side] * (mse(type_name) - mse(self.base)) / \
            (mse(self.low) - mse(self.base))

    def predicted(self, types: list[tuple[str, str]]) -> float:
        """The KLD the cost model predicts for types per layer ((K, V) of each layer)."""
        return self.base_kld + sum(self.cost(il, s, pair[s]) for il, pair in enumerate(types) for s in (0, 1))

    def to_json(self) -> dict:
        return {"model": self.model, "base": self.base, "low": self.low, "base_kld": self.base_kld,
                "added": self.added.tolist(), "scale": list(self.scale), "scale_ctx": self.scale_ctx}

    @classmethod
    def from_json(cls, d: dict) -> "Sensitivity":
        return cls(d["model"], d["base"], d["low"], d["base_kld"], np.asarray(d["added"], dtype=float),
                   tuple(d.get("scale", (1.0, 1.0))), d.get("scale_ctx", 0))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Sensitivity":
        return cls.from_json(json.loads(Path(path).read_text()))


def probe_configs(n_layer: int, base: str = "pq46", low: str = "pq27") -> list[str]:
    """The simulator's runs of a sensitivity measurement: every layer at base, then each layer's K and V at low."""
    probes = [base]
    for il in range(n_layer):
        probes += [f"{base}+L{il}={low}/{base}", f"{base}+L{il}={base}/{low}"]
    return probes


def sensitivity(model, chunks, base: str = "pq46", low: str = "pq27", progress=None) -> Sensitivity:
    """Each layer's K and V dropped alone from base to low, scored in the simulator over chunks (simulate.Model,
    simulate.text_chunks): 1 + 2 n_layer runs of each chunk."""
    from . import simulate as sim
    n_layer = model.hp.n_layer
    configs = probe_configs(n_layer, base, low)
    scores = sim.evaluate(model, chunks, configs, progress=progress)
    base_kld = scores[base].kld
    added = np.array([[scores[configs[1 + 2 * il + s]].kld - base_kld for s in (0, 1)] for il in range(n_layer)])
    return Sensitivity(model.path.name, base, low, base_kld, added)


def spec_of(types: list[tuple[str, str]], recent: int = 0) -> str:
    """The configuration string of types per layer: the commonest K and V types, the other layers as L ranges of
    consecutive layers with the same pair."""
    common = lambda s: max(FAMILY_TYPES, key=lambda t: (sum(p[s] == t for p in types), t))  # noqa: E731
    base = (common(0), common(1))
    mods, il = [], 0
    while il < len(types):
        end = il
        while end + 1 < len(types) and types[end + 1] == types[il]:
            end += 1
        if types[il] != base:
            k, v = types[il]
            mods.append(f"L{il}" + (f"-{end}" if end > il else "") + f"={k}" + (f"/{v}" if v != k else ""))
        il = end + 1
    head = base[0] if base[0] == base[1] else f"{base[0]}/{base[1]}"
    return "+".join([head, *mods] + ([f"recent{recent}"] if recent else []))


def allocate(sens: Sensitivity, budget: float, n_ctx: int, recent: int = 0,
             family: tuple[str, ...] = FAMILY_TYPES) -> str:
    """The configuration of types per layer (a cache_config string) with the least predicted KLD found greedily within
    budget bits per value at n_ctx (exact rows and centers counted); ValueError if even the cheapest does not fit."""
    n = sens.n_layer
    level = np.zeros((n, 2), dtype=int)                 # index into family, per layer and side
    pairs = lambda: [(family[level[il, 0]], family[level[il, 1]]) for il in range(n)]  # noqa: E731
    spent = cache_config.parse(spec_of(pairs(), recent)).bits(n_ctx, n_layer=n)
    if spent > budget + 1e-9:
        raise ValueError(f"{budget:g} bits/value at {n_ctx} tokens: the cheapest configuration, {spec_of(pairs(), recent)}, "
                         f"takes {spent:.3f}")
    width = lambda t: TYPES[t].bits_per_value  # noqa: E731
    while True:                 # an upgrade of one side of one layer adds its width's difference over 2 n values
        best = None
        for il in range(n):
            for s in (0, 1):
                cur = family[level[il, s]]
                for up in range(level[il, s] + 1, len(family)):
                    extra = (width(family[up]) - width(cur)) / (2 * n)
                    rate = (sens.cost(il, s, cur) - sens.cost(il, s, family[up])) / (width(family[up]) - width(cur))
                    if spent + extra <= budget + 1e-9 and (best is None or rate > best[0]):
                        best = (rate, il, s, up, extra)
        if best is None or best[0] <= 0:
            return spec_of(pairs(), recent)
        level[best[1], best[2]] = best[3]
        spent += best[4]

CALIBRATION = "stdlib docstrings, 2 x 1024 tokens per layer, 4096 tokens for K's and V's scales"


def side_scales(model, chunk, sens: Sensitivity, progress=None) -> tuple[float, float]:
    """How much more every layer's K (V) at the low type costs over one long chunk than the per-layer measurements
    add up to: at long context V's error costs relatively more than at the short one the layers are measured at
    (SmolLM2: see docs/measurements.md, types per layer)."""
    from . import simulate as sim
    configs = [sens.base, f"{sens.low}/{sens.base}", f"{sens.base}/{sens.low}"]
    scores = sim.evaluate(model, [chunk], configs, progress=progress)
    whole = [scores[c].kld - scores[sens.base].kld for c in configs[1:]]
    summed = np.clip(sens.added, 0, None).sum(axis=0)
    return tuple(float(max(w, 0.0) / s) if s > 0 else 1.0 for w, s in zip(whole, summed))


def calibrate(model_path: Path, progress=None, n_ctx: int = 1024, n_chunks: int = 2,
              long_ctx: int = 4096) -> Sensitivity:
    """A model's sensitivities over the calibration text (the Python standard library's docstrings, unlike any text
    it is scored on): 1 + 2 n_layer simulator runs of each n_ctx chunk, then K's and V's scales over one long_ctx
    chunk (0: none); about 30 minutes for SmolLM2 on two cores."""
    from . import simulate as sim
    model = sim.Model(model_path)
    tokens = sim.tokenize(model.path, sim.stdlib_text().encode())
    bos = model.hp.bos if model.hp.add_bos else None
    sens = sensitivity(model, sim.chunk_tokens(tokens, n_ctx, n_chunks, bos), progress=progress)
    if not long_ctx:
        return sens
    long_chunk = sim.chunk_tokens(tokens, long_ctx, 1, bos, first_chunk=n_ctx * n_chunks // long_ctx + 1)[0]
    return replace(sens, scale=side_scales(model, long_chunk, sens, progress), scale_ctx=long_ctx)
