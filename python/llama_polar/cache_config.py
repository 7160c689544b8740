"""A KV-cache configuration as one string: what it means, the environment that selects it for llama.cpp's tools, and
its bits per value, counted as llama.cpp allocates them. The build, bench, report, loadtest and the simulator all
read configurations through parse(), so one string means the same cache everywhere.

    K[/V][+modifier...]      e.g. "q4_0+plain", "pq46", "pq46/pq37+calib", "q4_0+calib+sink1"

    (none)   the build's default: a polar K cache is centered per position (the mean of the first 64 keys after
             the sink rows, taken before RoPE; a key at position p is stored minus R(p) c and attention adds q.R(p) c
             back), keeps one exact sink row per sequence and, where a sequence has at least 4096 cells, its last 64
             positions exact; an upstream K type is stored as upstream stores it
    plain    no key treatment at all (LLAMA_K_CENTER=off, LLAMA_KV_SINK_ROWS=0, so no default window either): the
             codec alone
    center   the first keys' mean as centers, for any K type (LLAMA_K_CENTER=on)
    fixed    one center in the cache's basis for every position, as before centers followed RoPE
             (LLAMA_K_CENTER_MODE=fixed)
    calib    calibrated centers, for any K type (LLAMA_K_CENTER=on, LLAMA_K_CENTERS=<file of llama_polar.calibrate>);
             calibrated centers are fixed ones
    sinkN    N exact sink rows per sequence, for any quantized K type (LLAMA_KV_SINK_ROWS=N)
    recentN  an exact recent window: the last N positions of every sequence keep f16 rows, for any quantized K type
             (LLAMA_KV_RECENT_ROWS=N; recent0: none, where the build would keep 64)
    LA[-B]=K[/V]
             layers A..B of a polar cache take types of their own, any quantized ones (LLAMA_KV_LAYER_TYPES), e.g.
             "pq42/pq32+L0-1=pq46+L29=pq46/pq37": the layers whose keys and values cost most get more bits

The simulator also takes experiments the build does not have (SIMULATOR_MODIFIERS, parsed only with
experiments=True): the modifiers above keep their meaning there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .type_names import CACHE_TYPES, POLAR_TYPES, UNQUANTIZED, check_types

BUILD_MODIFIERS = "plain, center, fixed, calib, sinkN, recentN, LA[-B]=K[/V]"
# simulator-only experiments, interpreted by llama_polar.simulate: a window for the online center, a fixed center
# kept in the slow RoPE pairs only, centers per position kept in the N slowest pairs, no rotation, Q not rounded,
# values stored minus their online mean
SIMULATOR_MODIFIERS = {r"online(\d+)(?:from(\d+))?": "onlineN[fromM]", r"band([\d.]+)": "bandX",
                       r"pairs(\d+)": "pairsN",
                       "norot": "norot", "noqround": "noqround", "vcenter": "vcenter"}
LAYER_MODIFIER = r"L(\d+)(?:-(\d+))?=([^/]+)(?:/(.+))?"     # LA[-B]=K[/V]: layers, K type, V type
ONLINE_KEYS = 64            # the build's online center: the mean of this many keys after the sink rows
DEFAULT_RECENT = 64         # the build's recent window for a centered polar K cache ...
DEFAULT_RECENT_CELLS = 4096  # ... whose sequences have at least this many cells each (it costs <= 0.25 bits/value)
DEFAULT_RECENT_SWA = 16     # a sliding-window cache's (Gemma-3's local layers) ...
DEFAULT_RECENT_SWA_CELLS = 512  # ... from this many cells per sequence


def type_bits(name: str) -> float:
    """Storage bits per value of a cache type: ggml's block sizes as gguf-py lists them, the polar types' own."""
    check_types([name], CACHE_TYPES, "cache type")
    if name in POLAR_TYPES:
        from .quants import TYPES
        return TYPES[name].bits_per_value
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[name.upper()]]
    return 8.0 * size / block


@dataclass(frozen=True)
class LayerTypes:
    """Cache types of layers first..last (a modifier LA[-B]=K[/V]; an item of LLAMA_KV_LAYER_TYPES)."""
    first: int
    last: int
    type_k: str
    type_v: str

    @property
    def item(self) -> str:
        layers = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{layers}={self.type_k}" + ("" if self.type_v == self.type_k else f"/{self.type_v}")


@dataclass(frozen=True)
class CacheConfig:
    spec: str
    type_k: str
    type_v: str
    center: str = "default"      # default | off | online | calib
    sink: int | None = None      # exact sink rows per sequence; None: the build's default
    fixed: bool = False          # LLAMA_K_CENTER_MODE=fixed: one center for every position
    recent: int | None = None    # exact recent rows per sequence (LLAMA_KV_RECENT_ROWS); None: the build's default
    experiments: tuple[str, ...] = ()   # simulator-only modifiers, in the order given
    layers: tuple[LayerTypes, ...] = ()  # types of some layers (LLAMA_KV_LAYER_TYPES), in the order given

    @property
    def label(self) -> str:
        """The string with its layer types counted instead of listed ("pq42/pq32+26 layers' types"): a table's or a
        plot's name for it; the string itself is what runs."""
        if not self.layers:
            return self.spec
        layer_modifier = re.compile(LAYER_MODIFIER)
        kept = [m for m in self.spec.split("+") if not layer_modifier.fullmatch(m)]
        n = sum(lt.last - lt.first + 1 for lt in self.layers)
        return "+".join(kept) + f"+{n} layers' types"

    @property
    def centered(self) -> bool:
        """Whether the build centers the keys: as set, else a polar K cache is centered."""
        return self.center in ("online", "calib") or (self.center == "default" and self.type_k in POLAR_TYPES)

    @property
    def per_position(self) -> bool:
        """Whether the centers follow RoPE (the build's default for online centers; calibrated ones are fixed)."""
        return self.centered and self.center != "calib" and not self.fixed

    @property
    def sink_rows(self) -> int:
        """The sink rows the build keeps: as set, else 1 for a polar K cache that is centered."""
        if self.sink is not None:
            return self.sink
        return 1 if self.type_k in POLAR_TYPES and self.center != "off" else 0

    @property
    def v_sink_rows(self) -> int:
        """Sink rows of V: V keeps its exact rows only where it is quantized."""
        return 0 if self.type_v in UNQUANTIZED else self.sink_rows

    def recent_rows(self, n_ctx: int) -> int:
        """The recent window the build keeps for sequences of n_ctx cells: as set, else DEFAULT_RECENT for a polar K
        cache that is centered (where it keeps sink rows by default) with at least DEFAULT_RECENT_CELLS cells."""
        if self.recent is not None:
            return self.recent
        default = self.type_k in POLAR_TYPES and self.center != "off" and n_ctx >= DEFAULT_RECENT_CELLS
        return DEFAULT_RECENT if default else 0

    def exact_rows(self, n_ctx: int) -> tuple[int, int]:
        """Exact f16 rows per sequence of n_ctx cells, of K and of V: the sink rows and the recent window (V's where V
        is quantized)."""
        n = self.sink_rows + self.recent_rows(n_ctx)
        return n, 0 if self.type_v in UNQUANTIZED else n

    def env(self, centers: Path | str | None = None) -> dict[str, str]:
        """The environment of a tool run with this configuration (centers: the calibrated centers' file)."""
        env = {"default": {}, "off": {"LLAMA_K_CENTER": "off"}, "online": {"LLAMA_K_CENTER": "on"},
               "calib": {"LLAMA_K_CENTER": "on"}}[self.center]
        if self.center == "calib":
            if not centers:
                raise ValueError(f"{self.spec}: calibrated centers need a centers file (llama-polar calibrate)")
            env["LLAMA_K_CENTERS"] = str(centers)
        if self.sink is not None:
            env["LLAMA_KV_SINK_ROWS"] = str(self.sink)
        if self.fixed and self.center != "calib":
            env["LLAMA_K_CENTER_MODE"] = "fixed"
        if self.recent is not None:
            env["LLAMA_KV_RECENT_ROWS"] = str(self.recent)
        if self.layers:
            env["LLAMA_KV_LAYER_TYPES"] = ",".join(lt.item for lt in self.layers)
        return env

    def layer_types(self, n_layer: int) -> list[tuple[str, str]]:
        """(K type, V type) of each of n_layer layers; ValueError for a layer past them."""
        types = [(self.type_k, self.type_v)] * n_layer
        for lt in self.layers:
            if lt.last >= n_layer:
                raise ValueError(f"{self.spec}: L{lt.item} is past the model's layers 0-{n_layer - 1}")
            types[lt.first:lt.last + 1] = [(lt.type_k, lt.type_v)] * (lt.last - lt.first + 1)
        return types

    def bits(self, n_ctx: int, n_seq: int = 1, n_layer: int | None = None) -> float:
        """Bits per cached value (K and V, equal head sizes) of n_seq sequences of n_ctx positions, as llama.cpp
        allocates them: per layer, the quantized rows; each side's exact rows (sink rows and recent window of every
        sequence and one scratch row, f16); the K centers (one f32 row). Types per layer need the model's n_layer."""
        if self.layers and n_layer is None:
            raise ValueError(f"{self.spec}: the bits of types per layer depend on the model's layer count (n_layer)")
        types = self.layer_types(n_layer) if self.layers else [(self.type_k, self.type_v)]
        cells = n_ctx * n_seq
        exact = lambda n: 16.0 * (n * n_seq + 1) if n else 0.0  # noqa: E731
        exact_k, exact_v = self.exact_rows(n_ctx)
        k = cells * sum(type_bits(tk) for tk, _ in types) / len(types) + exact(exact_k) + (32.0 if self.centered else 0.0)
        v = cells * sum(type_bits(tv) for _, tv in types) / len(types) + exact(exact_v)
        return (k + v) / (2 * cells)


def _modifier_error(spec: str, m: str, experiments: bool) -> ValueError:
    if not experiments and any(re.fullmatch(p, m) for p in SIMULATOR_MODIFIERS):
        return ValueError(f"{spec}: {m!r} is a simulator experiment (llama-polar simulate), not a setting of the "
                          f"build ({BUILD_MODIFIERS})")
    known = BUILD_MODIFIERS + (", " + ", ".join(SIMULATOR_MODIFIERS.values()) if experiments else "")
    return ValueError(f"{spec}: unknown modifier {m!r} ({known})")


def _layer_types(spec: str, m: str, g: re.Match) -> LayerTypes:
    first, last = int(g[1]), int(g[2] if g[2] is not None else g[1])
    if first > last:
        raise ValueError(f"{spec}: {m!r}: a range goes from the lower layer to the higher")
    type_k, type_v = g[3], g[4] or g[3]
    check_types(dict.fromkeys([type_k, type_v]), CACHE_TYPES, "cache type", where=spec)
    for t in (type_k, type_v):
        if t in UNQUANTIZED:
            raise ValueError(f"{spec}: {m!r}: a layer's types are quantized ones, not {t}")
    return LayerTypes(first, last, type_k, type_v)


def _check_disjoint(spec: str, layers: list[LayerTypes]) -> None:
    seen: set[int] = set()
    for lt in layers:
        twice = seen & set(range(lt.first, lt.last + 1))
        if twice:
            raise ValueError(f"{spec}: layer {min(twice)} is given twice")
        seen |= set(range(lt.first, lt.last + 1))


def parse(spec: str, experiments: bool = False) -> CacheConfig:
    """A configuration string (see the module's doc); ValueError for a bad modifier, UnknownTypeError for a type.
    experiments: also take the simulator's modifiers (kept in .experiments)."""
    types, *mods = spec.strip().split("+")
    type_k, _, type_v = types.partition("/")
    type_v = type_v or type_k
    check_types(dict.fromkeys([type_k, type_v]), CACHE_TYPES, "cache type", where=spec)
    center, sink, fixed, recent, extra, layers = "default", None, False, None, [], []
    for m in mods:
        if m == "fixed":
            fixed = True
        elif m in ("plain", "center", "calib"):
            center = {"plain": "off", "center": "online", "calib": "calib"}[m]
            sink = 0 if m == "plain" else sink
        elif (g := re.fullmatch(r"sink(\d+)", m)):
            sink = int(g[1])
        elif (g := re.fullmatch(r"recent(\d+)", m)):
            recent = int(g[1])
        elif (g := re.fullmatch(LAYER_MODIFIER, m)):
            layers.append(_layer_types(spec, m, g))
        elif experiments and any(re.fullmatch(p, m) for p in SIMULATOR_MODIFIERS):
            extra.append(m)
        else:
            raise _modifier_error(spec, m, experiments)
    if sink and type_k in UNQUANTIZED:
        raise ValueError(f"{spec}: sink rows need a quantized K cache, not {type_k}")
    if recent and type_k in UNQUANTIZED:
        raise ValueError(f"{spec}: a recent window needs a quantized K cache, not {type_k}")
    if layers and not (type_k in POLAR_TYPES and type_v in POLAR_TYPES):
        raise ValueError(f"{spec}: types per layer are for a polar cache, not K {type_k}, V {type_v}")
    _check_disjoint(spec, layers)
    config = CacheConfig(spec.strip(), type_k, type_v, center, sink, fixed, recent, tuple(extra), tuple(layers))
    if fixed and not config.centered:
        raise ValueError(f"{spec}: 'fixed' is a way to center keys, and this cache centers none (add +center)")
    return config


def parse_list(specs: str, experiments: bool = False) -> list[CacheConfig]:
    """A comma-separated list of configurations (a command line's --configs or --types), each parsed by parse()."""
    return [parse(spec, experiments) for spec in specs.split(",") if spec.strip()]
