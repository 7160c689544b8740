"""A KV-cache configuration of the polar build as one string, the environment that selects it for llama.cpp's tools,
and its bits per value with the exact sink rows counted.

    K[/V][+modifier...]      e.g. "q4_0+plain", "pq46", "pq46/pq37+calib", "q4_0+calib+sink1"

    (none)   the build's default: a polar K cache is centered (the mean of its first keys) and keeps one exact sink
             row per sequence; an upstream K type is stored as upstream stores it
    plain    no key treatment at all (LLAMA_K_CENTER=off, LLAMA_KV_SINK_ROWS=0): the codec alone
    center   the first keys' mean as centers, for any K type (LLAMA_K_CENTER=on)
    calib    calibrated centers, for any K type (LLAMA_K_CENTER=on, LLAMA_K_CENTERS=<file of llama_polar.calibrate>)
    sinkN    N exact sink rows per sequence, for any quantized K type (LLAMA_KV_SINK_ROWS=N)

A sink row holds a position's K, and its V when V is quantized, in f16 beside the quantized rows, so n rows of a
context of n_ctx cost n/n_ctx of (16 - bits) more per value on each side: bits() counts them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .type_names import CACHE_TYPES, POLAR_TYPES, check_types

UNQUANTIZED = ("f32", "f16", "bf16")
_UPSTREAM_BITS = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q4_0": 4.5, "q4_1": 5.0, "iq4_nl": 4.5,
                  "q5_0": 5.5, "q5_1": 6.0}


def type_bits(name: str) -> float:
    """Storage bits per value of a cache type."""
    if name in _UPSTREAM_BITS:
        return _UPSTREAM_BITS[name]
    from .quants import TYPES
    return TYPES[name].bits_per_value


@dataclass(frozen=True)
class BuildConfig:
    spec: str
    type_k: str
    type_v: str
    center: str = "default"      # default | off | online | calib
    sink: int | None = None      # exact sink rows per sequence; None: the build's default

    @property
    def sink_rows(self) -> int:
        """The sink rows the build keeps: as set, else 1 for a polar K cache that is centered."""
        if self.sink is not None:
            return self.sink
        return 1 if self.type_k in POLAR_TYPES and self.center != "off" else 0

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
        return env

    def bits(self, n_ctx: int) -> float:
        """Average bits per cached value (K and V) at a context of n_ctx, the sink rows' f16 copies counted."""
        bk, bv = type_bits(self.type_k), type_bits(self.type_v)
        extra = 16 - bk + (16 - bv if self.type_v not in UNQUANTIZED else 0)
        return (bk + bv) / 2 + self.sink_rows / n_ctx * extra / 2


def parse(spec: str) -> BuildConfig:
    """A configuration string (see the module's doc); ValueError for a bad modifier, UnknownTypeError for a type."""
    types, *mods = spec.strip().split("+")
    type_k, _, type_v = types.partition("/")
    type_v = type_v or type_k
    check_types(dict.fromkeys([type_k, type_v]), CACHE_TYPES, "cache type", where=spec)
    center, sink = "default", None
    for m in mods:
        if m in ("plain", "center", "calib"):
            center = {"plain": "off", "center": "online", "calib": "calib"}[m]
            sink = 0 if m == "plain" else sink
        elif (g := re.fullmatch(r"sink(\d+)", m)):
            sink = int(g[1])
        else:
            raise ValueError(f"{spec}: unknown modifier {m!r} (plain, center, calib, sinkN)")
    if sink and type_k in UNQUANTIZED:
        raise ValueError(f"{spec}: sink rows need a quantized K cache, not {type_k}")
    return BuildConfig(spec, type_k, type_v, center, sink)


def parse_list(specs: str) -> list[BuildConfig]:
    """A comma-separated list of configurations (a command line's --configs or --types), each parsed by parse()."""
    return [parse(spec) for spec in specs.split(",") if spec.strip()]
