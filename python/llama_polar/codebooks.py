"""Generate the PolarQuant codebooks and type layouts.

Everything numeric that the C library, the Metal kernels and the NumPy reference share comes from here:

* Lloyd-Max codebooks for every (level, bits) pair on the paper's Lemma-2 angle densities
  (level 1 uniform on [0, 2 pi); level l >= 2 with density proportional to sin(2 psi)^(2^(l-1) - 1)).
* The exhaustive rate-distortion search that picks bits per level (and the radius format) for the
  rate-optimised family, using the closed form  E||x - x'||^2 / ||x||^2 = 1 + E[s^2] - 2 E[s] prod_l E[cos d_l]
  (s = decoded radius / true radius; for an exact radius this is 2 (1 - prod_l E[cos d_l])).
* The 8-bit log-scaled norm table and the key mode's magnitude profile.
* The trellis types' tables (pqt22, ...), trained by Lloyd iterations on Gaussian blocks (llama_polar.trellis).

Outputs (checked in): ggml_polar/polar-codebooks.h, python/llama_polar/_codebooks.py and the Metal kernel instance
list ggml_polar/metal/polar-instances.metal. `--check` regenerates in memory and fails if any file differs. `--frontier` prints the search's frontier.

  llama-polar codebooks [--check | --frontier]     (scripts/gen_codebooks.py is the same command)

An installed package (pip install) has only the Python tables: there --check checks those, and writing needs
--header and --metal.
"""
from __future__ import annotations

import argparse
import itertools
import math
from fractions import Fraction
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import trellis
from .paths import IN_CHECKOUT, PACKAGE, ROOT

# the C header and the Metal instances live in a source checkout only; the Python tables ship with the package
HEADER = ROOT / "ggml_polar" / "polar-codebooks.h" if IN_CHECKOUT else None
PYTABLES = PACKAGE / "_codebooks.py"
METAL_INSTANCES = ROOT / "ggml_polar" / "metal" / "polar-instances.metal" if IN_CHECKOUT else None

BLOCK = 64                 # values per ggml block, for every polar type
MAX_LEVELS = 6             # 64 = 2^6
MAX_BITS = 8               # a code never spans more than two bytes
MAX_DEEP_BITS = 6          # levels >= 2: the frontier uses <= 5; Lloyd-Max converges too slowly beyond 6
GRID = 1 << 18             # quadrature points on [0, pi/2]

# Radius formats. The log-scaled norm keeps 8 codes per octave from 2^-16 up; code 0 is an exact zero.
RADIUS_FP16 = 0
RADIUS_LOG8 = 1
RADIUS_NAMES = {RADIUS_FP16: "fp16", RADIUS_LOG8: "log8"}
RADIUS_BITS = {RADIUS_FP16: 16, RADIUS_LOG8: 8}
LOG8_STEPS_PER_OCTAVE = 8
LOG8_MIN_EXPONENT = -16
FP16_STEPS_PER_OCTAVE = 1024  # 10 mantissa bits

# The family's radius format, decided by measurement. By MSE alone the 8-bit log norm wins at every rate (the
# --frontier table shows it), but its error is coherent: it scales q.k itself, so for queries along the key, which
# attention is made of, it dominates. On real K from SmolLM2 (docs/design.md, "How the radius format was chosen") the
# 8-bit norm gave pq46 a logit error of 0.0269 against 0.0101 with fp16 for key-like queries; KLD was a tie.
FAMILY_RADIUS = RADIUS_FP16
# Every type carries its ggml type id (GGML_TYPE_<NAME> in patch 0004). The ids are an on-disk format: a new type
# takes the next free id, and everything that lists the types (the X-macro PQ_FOREACH_TYPE, the Python TYPE_LIST, the
# Metal instances) lists them in id order.
# The rate-optimised family: (name, largest bits/value allowed, ggml id). The name is floor(10 * bits/value).
# pq25 (2026-12-05) is for budgets under 2.75 bits/value at 8K with the exact rows counted; pq22 (2026-12-06) is for
# the values and Gemma-3's sliding-window layers, whose bits pay for the keys of its global layers.
FAMILY = [("pq22", 2.25, 51), ("pq25", 2.5, 50), ("pq27", 2.75, 43), ("pq32", 3.25, 44), ("pq37", 3.75, 45),
          ("pq42", 4.25, 47), ("pq46", 4.625, 48)]
# The paper's configuration: groups of 16, bits 4/2/2/2, fp16 radius per group.
PAPER = ("pq38p", (4, 2, 2, 2), RADIUS_FP16, 46)
# The trellis-coded family (llama_polar.trellis): (name, (L, k, V), ggml id), each the size of the polar type whose
# number it shares, at 0.61-0.67x its relative MSE on Gaussian blocks (docs/measurements.md, "A trellis-coded block").
# The tables are trained deterministically (seeded samples, exact float32 searches, sums in order), so --check holds on
# any machine; more blocks or iterations than these gain under 2% (8192 blocks: 0.0804, 16 iterations: 0.0781 for
# pqt22's 0.0797) at two to four times the generator's time.
TRELLIS = [("pqt22", (8, 2, 1), 52), ("pqt27", (8, 5, 2), 53), ("pqt32", (8, 3, 1), 54)]
TRELLIS_TRAIN = dict(seed=0, blocks=4096, iters=8)
TRELLIS_MSE = dict(seed=1, blocks=4096)       # the expected relative MSE, on other Gaussian blocks
# The MLX page's key mode: one bit per hyperspherical angle, 8-bit norm.
KEY_MODE = "pqk1"
KEY_MODE_ID = 49


# ---------------------------------------------------------------------------------------------------------------
# Angle densities and Lloyd-Max
# ---------------------------------------------------------------------------------------------------------------

def _cumulative(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid integral of g over the grid x, starting at 0."""
    h = x[1] - x[0]
    return np.concatenate([[0.0], np.cumsum((g[1:] + g[:-1]) * (h / 2))])


@dataclass
class Codebook:
    level: int
    bits: int
    centroids: np.ndarray          # radians, float64
    boundaries: np.ndarray         # radians, float64 (level 1: inside the first quadrant)
    angle_mse: float
    mean_cos_error: float          # E[cos(psi - centroid)]


def level1_codebook(bits: int) -> Codebook:
    """Level 1 is uniform on the circle: the Lloyd-Max codebook is the uniform one, in closed form.

    The first 2 bits are the quadrant; the remaining bits split each quadrant evenly."""
    assert 2 <= bits <= MAX_BITS
    width = 2 * math.pi / 2**bits
    centroids = (np.arange(2**bits) + 0.5) * width
    per_quadrant = 2 ** (bits - 2)
    boundaries = np.arange(1, per_quadrant) * (math.pi / 2 / per_quadrant)
    half = width / 2
    return Codebook(1, bits, centroids, boundaries, width**2 / 12, math.sin(half) / half)


class LevelDensity:
    """Lemma 2: for level l >= 2, sin^2(psi) ~ Beta(2^(l-2), 2^(l-2)) on [0, pi/2]."""

    def __init__(self, level: int):
        self.level = level
        psi = np.linspace(0.0, math.pi / 2, GRID + 1)
        f = np.sin(2 * psi) ** (2 ** (level - 1) - 1)
        z = _cumulative(psi, f)[-1]
        self.psi = psi
        self.F = _cumulative(psi, f) / z
        self.M1 = _cumulative(psi, psi * f) / z
        self.M2 = _cumulative(psi, psi * psi * f) / z
        self.C = _cumulative(psi, np.cos(psi) * f) / z
        self.S = _cumulative(psi, np.sin(psi) * f) / z

    def cell_integrals(self, table: np.ndarray, edges: np.ndarray) -> np.ndarray:
        return np.diff(np.interp(edges, self.psi, table))

    def codebook(self, bits: int) -> Codebook:
        k = 2**bits
        if k == 1:
            centroids = np.array([self.M1[-1]])
        else:
            centroids = np.interp((np.arange(k) + 0.5) / k, self.F, self.psi)   # start at the quantiles
            for _ in range(200000):
                edges = np.concatenate([[0.0], (centroids[1:] + centroids[:-1]) / 2, [math.pi / 2]])
                updated = self.cell_integrals(self.M1, edges) / self.cell_integrals(self.F, edges)
                done = np.max(np.abs(updated - centroids)) < 1e-12
                centroids = updated
                if done:
                    break
            else:
                raise RuntimeError(f"Lloyd-Max did not converge for level {self.level}, {bits} bits")
        boundaries = (centroids[1:] + centroids[:-1]) / 2
        edges = np.concatenate([[0.0], boundaries, [math.pi / 2]])
        p = self.cell_integrals(self.F, edges)
        m1 = self.cell_integrals(self.M1, edges)
        m2 = self.cell_integrals(self.M2, edges)
        c = self.cell_integrals(self.C, edges)
        s = self.cell_integrals(self.S, edges)
        mse = float(np.sum(m2 - 2 * centroids * m1 + centroids**2 * p))
        mean_cos = float(np.sum(np.cos(centroids) * c + np.sin(centroids) * s))
        return Codebook(self.level, bits, centroids, boundaries, mse, mean_cos)


def all_codebooks(progress: bool = False) -> dict[tuple[int, int], Codebook]:
    from tqdm import tqdm

    books = {(1, b): level1_codebook(b) for b in range(2, MAX_BITS + 1)}
    deep = [(level, b) for level in range(2, MAX_LEVELS + 1) for b in range(0, MAX_DEEP_BITS + 1)]
    density = None
    for level, b in tqdm(deep, desc="Lloyd-Max codebooks", unit="codebook", disable=not progress, leave=False):
        if density is None or density.level != level:
            density = LevelDensity(level)
        books[level, b] = density.codebook(b)
    return books


# ---------------------------------------------------------------------------------------------------------------
# Radius formats
# ---------------------------------------------------------------------------------------------------------------

def radius_ratio_moments(steps_per_octave: int) -> tuple[float, float]:
    """E[s], E[s^2] for s = decoded/true radius, log-uniform inside a cell of ratio q = 2^(1/steps)."""
    q = 2.0 ** (1.0 / steps_per_octave)
    lq = math.log(q)
    return (q**0.5 - q**-0.5) / lq, (q - 1 / q) / (2 * lq)


RADIUS_MOMENTS = {
    RADIUS_FP16: radius_ratio_moments(FP16_STEPS_PER_OCTAVE),
    RADIUS_LOG8: radius_ratio_moments(LOG8_STEPS_PER_OCTAVE),
}


def rel_mse(rho: float, radius_format: int) -> float:
    es, es2 = RADIUS_MOMENTS[radius_format]
    return 1.0 + es2 - 2.0 * es * rho


def log8_tables() -> tuple[np.ndarray, np.ndarray]:
    """Decoded values for codes 0..255 and the 255 decision boundaries (code = #boundaries below r)."""
    exps = LOG8_MIN_EXPONENT + np.arange(255) / LOG8_STEPS_PER_OCTAVE
    values = np.concatenate([[0.0], 2.0**exps])
    bounds = np.concatenate([[values[1] / 2], 2.0 ** (exps[:-1] + 0.5 / LOG8_STEPS_PER_OCTAVE)])
    return values, bounds


# ---------------------------------------------------------------------------------------------------------------
# Key mode: hyperspherical angles at one bit each
# ---------------------------------------------------------------------------------------------------------------

def key_mode_magnitudes(d: int = BLOCK) -> tuple[np.ndarray, float]:
    """|x_i| / ||x|| after decoding, and rho = E[cos(angle(x, x'))] for isotropic x.

    theta_i = arccos(x_i / ||x[i:]||) has density ~ sin^(n-2) on [0, pi] (n = d - i); its 1-bit Lloyd-Max codebook
    is {c, pi - c} with c = E[theta | theta < pi/2], so the decision is the sign of x_i. The last angle lives on the
    circle and gets 2 bits (its quadrant), i.e. the signs of the last two coordinates."""
    t = np.linspace(0.0, math.pi / 2, GRID + 1)
    mags, carry = [], 1.0
    for i in range(d - 2):
        f = np.sin(t) ** (d - i - 2)
        c = _cumulative(t, t * f)[-1] / _cumulative(t, f)[-1]
        mags.append(carry * math.cos(c))
        carry *= math.sin(c)
    mags += [carry * math.cos(math.pi / 4), carry * math.sin(math.pi / 4)]
    mags = np.array(mags)
    mean_abs = math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)  # E|u_i| on S^(d-1)
    return mags, float(mean_abs * np.sum(mags.astype(np.float32).astype(np.float64)))


# ---------------------------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class TreeType:
    name: str
    level_bits: tuple[int, ...]
    radius_format: int
    ggml_id: int
    levels: int = 0
    groups: int = 0
    code_offset: list[int] = field(default_factory=list)
    rho: float = 0.0

    def __post_init__(self):
        self.levels = len(self.level_bits)
        self.groups = BLOCK >> self.levels
        offsets, pos = [], 0
        for level, bits in enumerate(self.level_bits, start=1):
            offsets.append(pos)
            pos += (BLOCK >> level) * bits
        self.code_offset = offsets
        self.code_bits = pos
        assert self.code_bits % 8 == 0 and self.radius_bits % 8 == 0, self

    @property
    def group_size(self) -> int:
        return 1 << self.levels

    @property
    def radius_bits(self) -> int:
        return self.groups * RADIUS_BITS[self.radius_format]

    @property
    def type_size(self) -> int:
        return (self.radius_bits + self.code_bits) // 8

    @property
    def bits_per_value(self) -> float:
        return self.type_size * 8 / BLOCK

    @property
    def expected_rel_mse(self) -> float:
        return rel_mse(self.rho, self.radius_format)


def level_bits_rate(bits: np.ndarray) -> np.ndarray:
    """Code bits of a 64-value group for an array of allocations (rows = allocations, columns = levels)."""
    per_level = BLOCK >> np.arange(1, bits.shape[1] + 1)
    return bits @ per_level


def search_allocations(books) -> list[tuple[float, float, tuple[int, ...], int]]:
    """Every whole-byte 64-value allocation: (bits/value, rel. MSE, bits per level, radius format), sorted by rate."""
    ranges = [range(2, MAX_BITS + 1)] + [range(0, MAX_DEEP_BITS + 1)] * (MAX_LEVELS - 1)
    alloc = np.array(list(itertools.product(*ranges)), dtype=np.int64)
    log_cos = np.zeros(len(alloc))
    for level in range(1, MAX_LEVELS + 1):
        table = np.array([math.log(books[level, b].mean_cos_error) if (level, b) in books else np.nan
                          for b in range(MAX_BITS + 1)])
        log_cos += table[alloc[:, level - 1]]
    rho = np.exp(log_cos)
    code_bits = level_bits_rate(alloc)
    rows = []
    for fmt in (RADIUS_FP16, RADIUS_LOG8):
        total = code_bits + RADIUS_BITS[fmt]
        ok = total % 8 == 0
        es, es2 = RADIUS_MOMENTS[fmt]
        dist = 1.0 + es2 - 2.0 * es * rho[ok]
        rows += [(t / BLOCK, d, tuple(int(b) for b in a), fmt) for t, d, a in zip(total[ok], dist, alloc[ok])]
    rows.sort()
    return rows


def frontier(rows):
    best, out = math.inf, []
    for row in rows:
        if row[1] < best - 1e-15:
            out.append(row)
            best = row[1]
    return out


def best_allocation(rows, max_rate: float, radius_format: int):
    """The least-distortion row (rate, distortion, bits, format) with this radius format at or under max_rate."""
    return min((r for r in rows if r[0] <= max_rate + 1e-12 and r[3] == radius_format),
               key=lambda r: (r[1], r[0], r[2]))


def build_types(books):
    rows = search_allocations(books)
    types = []
    pname, pbits, pfmt, pid = PAPER
    types.append(TreeType(pname, pbits, pfmt, pid))
    for name, max_rate, ggml_id in FAMILY:
        rate, _, bits, fmt = best_allocation(rows, max_rate, FAMILY_RADIUS)
        assert name == f"pq{int(rate * 10 + 1e-9)}", (name, rate)
        types.append(TreeType(name, bits, fmt, ggml_id))
    for t in types:
        t.rho = float(np.prod([books[level, b].mean_cos_error for level, b in enumerate(t.level_bits, start=1)]))
    return types, rows


@dataclass
class TrellisType:
    name: str
    shape: trellis.TrellisShape
    ggml_id: int
    table: np.ndarray                  # (2^L, V) float32
    expected_rel_mse: float            # measured on Gaussian blocks
    table_offset: int = 0              # its first value in pq_trellis

    @property
    def type_size(self) -> int:
        return self.shape.type_size

    @property
    def bits_per_value(self) -> float:
        return self.type_size * 8 / BLOCK


def trellis_types(progress: bool = False) -> list[TrellisType]:
    from tqdm import tqdm

    out, offset = [], 0
    for name, lkv, ggml_id in tqdm(TRELLIS, desc="trellis tables", unit="type", disable=not progress, leave=False):
        shape = trellis.TrellisShape(*lkv)
        table = trellis.train(shape, **TRELLIS_TRAIN)
        mse = trellis.gaussian_rel_mse(shape, table, **TRELLIS_MSE)
        out.append(TrellisType(name, shape, ggml_id, table, mse, offset))
        assert name == f"pqt{int(out[-1].bits_per_value * 10 + 1e-9)}", (name, out[-1].bits_per_value)
        offset += table.size
    return out


def trellis_tables(trellises: list[TrellisType]) -> np.ndarray:
    """Every trellis type's table, planar (value v of state s at v * 2^L + s), at its table_offset: pq_trellis."""
    return np.concatenate([t.table.T.ravel() for t in trellises])


# ---------------------------------------------------------------------------------------------------------------
# Emitting
# ---------------------------------------------------------------------------------------------------------------

def f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def f32_literal(v: np.float32) -> str:
    """Shortest decimal that reads back as exactly v: directly as a float (C) and through a double (Python)."""
    v = np.float32(v)
    if v == 0:
        return "0.0"
    lo = Fraction(float(np.nextafter(v, np.float32(-np.inf))))
    hi = Fraction(float(np.nextafter(v, np.float32(np.inf))))
    exact = Fraction(float(v))
    for digits in range(6, 10):
        text = "%.*g" % (digits, v)
        if (lo + exact) / 2 < Fraction(text) < (exact + hi) / 2 and np.float32(float(text)) == v:
            return text if any(c in text for c in ".en") else text + ".0"   # "1f" is not a C literal
    raise AssertionError(f"no exact decimal for {v!r}")


@dataclass
class Tables:
    bound: list[np.float32] = field(default_factory=list)
    cos: list[np.float32] = field(default_factory=list)
    sin: list[np.float32] = field(default_factory=list)
    table_offset: dict = field(default_factory=dict)
    bound_offset: dict = field(default_factory=dict)

    def add(self, book: Codebook):
        key = (book.level, book.bits)
        if key in self.table_offset:
            return
        self.table_offset[key] = len(self.cos)
        self.bound_offset[key] = len(self.bound)
        t = np.tan(book.boundaries)
        # Level 1 compares v > tan(b) * u on coordinates; deeper levels compare squared radii, so tan^2.
        self.bound += list(f32(t if book.level == 1 else t * t))
        self.cos += list(f32(np.cos(book.centroids)))
        self.sin += list(f32(np.sin(book.centroids)))

    def offsets(self, t: TreeType) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Each level's first entry in cos/sin and in bound, for type t."""
        keys = list(enumerate(t.level_bits, start=1))
        return tuple(self.table_offset[k] for k in keys), tuple(self.bound_offset[k] for k in keys)


def collect(books, progress: bool = False):
    types, rows = build_types(books)
    tables = Tables()
    for t in types:
        for level, b in enumerate(t.level_bits, start=1):
            tables.add(books[level, b])
    log_values, log_bounds = log8_tables()
    key_mags, key_rho = key_mode_magnitudes()
    return types, rows, tables, f32(log_values), f32(log_bounds), f32(key_mags), key_rho, trellis_types(progress)


def type_list(types, trellises) -> list[tuple[str, str, int]]:
    """(name, kind, ggml id) of every type in id order; kind "tree" (a recursive-polar layout), "key" or "trellis"."""
    entries = sorted([(t.name, "tree", t.ggml_id) for t in types] + [(KEY_MODE, "key", KEY_MODE_ID)]
                     + [(t.name, "trellis", t.ggml_id) for t in trellises], key=lambda e: e[2])
    ids = [e[2] for e in entries]
    assert len(set(ids)) == len(ids), f"two polar types share a ggml id: {entries}"
    return entries


def wrapped(items: list[str], per_line: int = 6) -> str:
    """Comma-separated items, per_line to a line, indented by four spaces, with a trailing comma."""
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "    " + ",\n    ".join(lines) + ","


def c_array(name: str, values) -> str:
    items = [f32_literal(v) + "f" for v in values]
    return f"PQ_TABLE float {name}[{len(items)}] = {{\n{wrapped(items)}\n}};\n"


def c_ints(values) -> str:
    padded = list(values) + [0] * (MAX_LEVELS - len(values))
    return "{ " + ", ".join(str(v) for v in padded) + " }"


KEY_TYPE_SIZE = (8 + BLOCK) // 8   # log8 norm + one sign bit per value


def render_header(types, tables, log_values, log_bounds, key_mags, key_rho, trellises) -> str:
    out = [
        "// Generated by llama-polar codebooks (python/llama_polar/codebooks.py). Do not edit: change it and rerun.",
        "// Shared by the C library, the Metal kernels (flattened into polar.metal) and, through _codebooks.py, NumPy.",
        "#pragma once",
        "",
        "#if defined(__METAL_VERSION__)",
        "#define PQ_TABLE constant static const",
        "#else",
        "#define PQ_TABLE static const",
        "#endif",
        "",
        f"#define PQ_BLOCK {BLOCK}            // values per ggml block, every polar type",
        f"#define PQ_MAX_LEVELS {MAX_LEVELS}",
        f"#define PQ_RADIUS_FP16 {RADIUS_FP16}",
        f"#define PQ_RADIUS_LOG8 {RADIUS_LOG8}",
        "",
        "// Angle codebooks, concatenated; a type's descriptor gives each level's offsets.",
        "// pq_bound: level 1: tan of the boundaries inside a quadrant; level >= 2: tan^2 of the boundaries.",
        "// pq_cos / pq_sin: cos and sin of the centroids (level 1: all 2^bits centroids on the circle).",
        c_array("pq_bound", tables.bound),
        c_array("pq_cos", tables.cos),
        c_array("pq_sin", tables.sin),
        f"// 8-bit log norm: value of each code (0 is zero), and code = number of boundaries below the norm.",
        f"// {LOG8_STEPS_PER_OCTAVE} codes per octave from 2^{LOG8_MIN_EXPONENT}.",
        c_array("pq_log8_value", log_values),
        c_array("pq_log8_bound", log_bounds),
        f"// Key mode ({KEY_MODE}): |x_i| / ||x|| of the decoded vector; the sign is the stored bit.",
        c_array("pq_key_magnitude", key_mags),
        "// Trellis types: each type's 2^L states' V values, planar (value v of state s at v * 2^L + s), concatenated;",
        "// its descriptor gives the offset. Trained on Gaussian blocks (llama_polar.trellis.train).",
        c_array("pq_trellis", trellis_tables(trellises)),
        "// Per type: radius bytes, code bytes, type size, and the descriptor initializer",
        "// { levels, groups, radius format, type size, bits[], code bit offset[], pq_cos/pq_sin offset[],",
        "//   pq_bound offset[] }, levels listed from 1 (pairs of values) up.",
    ]
    for t in types:
        up = t.name.upper()
        table_offsets, bound_offsets = tables.offsets(t)
        out += [
            f"// {t.name}: {t.groups} x {t.group_size} values, bits {'/'.join(map(str, t.level_bits))}, "
            f"{RADIUS_NAMES[t.radius_format]} radius, {t.bits_per_value:g} bits/value",
            f"#define {up}_RADIUS_BYTES {t.radius_bits // 8}",
            f"#define {up}_CODE_BYTES {t.code_bits // 8}",
            f"#define {up}_TYPE_SIZE {t.type_size}",
            f"#define {up}_GROUP_SIZE {t.group_size}",
            f"#define {up}_REL_MSE {t.expected_rel_mse:.6g}f   // closed form on preconditioned data",
            f"#define {up}_DESC {{ {t.levels}, {t.groups}, {t.radius_format}, {t.type_size}, {c_ints(t.level_bits)}, "
            f"{c_ints(t.code_offset)}, {c_ints(table_offsets)}, {c_ints(bound_offsets)} }}",
        ]
    out += [
        f"// {KEY_MODE}: 8-bit log norm + {BLOCK} sign bits",
        f"#define {KEY_MODE.upper()}_TYPE_SIZE {KEY_TYPE_SIZE}",
        f"#define {KEY_MODE.upper()}_GROUP_SIZE {BLOCK}",
        f"#define {KEY_MODE.upper()}_REL_MSE {rel_mse(key_rho, RADIUS_LOG8):.6g}f   // closed form on preconditioned data",
        "// Trellis types: fp16 scale + code bytes; descriptor { L, k, V, type size, pq_trellis offset }. The search's",
        "// arrays (polar-codec.h) are sized for the largest: its states, and its backpointers, (steps - 1) * 2^(L-k).",
        f"#define PQ_TRELLIS_MAX_STATES {max(t.shape.states for t in trellises)}",
        f"#define PQ_TRELLIS_MAX_BACK {max((t.shape.steps - 1) * t.shape.shared for t in trellises)}",
    ]
    for t in trellises:
        up, sh = t.name.upper(), t.shape
        out += [
            f"// {t.name}: 2^{sh.L} states, {sh.k} bits per step of {sh.V} value{'s' * (sh.V > 1)}, fp16 scale, "
            f"{t.bits_per_value:g} bits/value",
            f"#define {up}_CODE_BYTES {sh.code_bits // 8}",
            f"#define {up}_TYPE_SIZE {t.type_size}",
            f"#define {up}_GROUP_SIZE {BLOCK}",
            f"#define {up}_REL_MSE {t.expected_rel_mse:.6g}f   // measured on Gaussian blocks",
            f"#define {up}_DESC {{ {sh.L}, {sh.k}, {sh.V}, {t.type_size}, {t.table_offset} }}",
        ]
    out += [
        "",
        "// Every polar type in ggml type id order, as X(name, NAME, kind, ggml id): kind TREE is a recursive-polar",
        "// layout (NAME##_DESC), KEY the key mode, TRELLIS a trellis-coded block (NAME##_DESC). Code that handles",
        "// every type expands this list instead of naming the types, so a new type is one generator entry (plus its",
        "// GGML_TYPE_ enum line in patch 0004).",
        "#define PQ_FOREACH_TYPE(X) \\",
    ]
    entries = type_list(types, trellises)
    width = max(len(name) for name, _, _ in entries) + 1
    for i, (name, kind, ggml_id) in enumerate(entries):
        more = " \\" if i + 1 < len(entries) else ""
        out.append(f"    X({(name + ',').ljust(width)} {(name.upper() + ',').ljust(width)} {kind.upper()}, {ggml_id}){more}")
    out += [
        "",
        f"#define PQ_TYPE_COUNT {len(entries)}",
        "",
    ]
    return "\n".join(out)


def py_array(name: str, values) -> str:
    return f"{name} = _f32([\n{wrapped([f32_literal(v) for v in values])}\n])\n"


def render_python(types, tables, log_values, log_bounds, key_mags, key_rho, trellises) -> str:
    out = [
        '"""Generated by llama-polar codebooks (python/llama_polar/codebooks.py). Do not edit: change it and rerun.',
        "",
        'The same float32 tables as ggml_polar/polar-codebooks.h (see there for their meaning)."""',
        "import numpy as np",
        "",
        "",
        "def _f32(values):",
        "    return np.array(values, dtype=np.float64).astype(np.float32)",
        "",
        "",
        f"BLOCK = {BLOCK}",
        f"MAX_LEVELS = {MAX_LEVELS}",
        f"RADIUS_FP16 = {RADIUS_FP16}",
        f"RADIUS_LOG8 = {RADIUS_LOG8}",
        "",
        py_array("BOUND", tables.bound),
        py_array("COS", tables.cos),
        py_array("SIN", tables.sin),
        py_array("LOG8_VALUE", log_values),
        py_array("LOG8_BOUND", log_bounds),
        py_array("KEY_MAGNITUDE", key_mags),
        py_array("TRELLIS_TABLE", trellis_tables(trellises)),
        "# name -> layout and the closed-form relative MSE on preconditioned data",
        "TREE_TYPES = {",
    ]
    for t in types:
        table_offsets, bound_offsets = tables.offsets(t)
        out.append(
            f"    {t.name!r}: dict(level_bits={t.level_bits!r}, radius_format={t.radius_format}, "
            f"groups={t.groups}, type_size={t.type_size}, code_offset={tuple(t.code_offset)!r}, "
            f"table_offset={table_offsets!r}, bound_offset={bound_offsets!r}, "
            f"expected_rel_mse={t.expected_rel_mse:.6g}),")
    out += [
        "}",
        "KEY_TYPES = {",
        f"    {KEY_MODE!r}: dict(type_size={KEY_TYPE_SIZE}, "
        f"expected_rel_mse={rel_mse(key_rho, RADIUS_LOG8):.6g}),",
        "}",
        "# name -> trellis layout (TRELLIS_TABLE[table_offset:] holds its V x 2^L values, planar) and the relative MSE measured",
        "# on Gaussian blocks",
        "TRELLIS_TYPES = {",
    ]
    out += [f"    {t.name!r}: dict(L={t.shape.L}, k={t.shape.k}, V={t.shape.V}, type_size={t.type_size}, "
            f"table_offset={t.table_offset}, expected_rel_mse={t.expected_rel_mse:.6g})," for t in trellises]
    out += [
        "}",
        "# every type in ggml type id order: (name, kind), kind 'tree' (TREE_TYPES), 'key' (KEY_TYPES) or 'trellis'",
        "# (TRELLIS_TYPES)",
        "TYPE_LIST = (",
    ]
    entries = type_list(types, trellises)
    out += [f"    ({name!r}, {kind!r})," for name, kind, _ in entries]
    out += [
        ")",
        "GGML_TYPE_IDS = {" + ", ".join(f"{name!r}: {ggml_id}" for name, _, ggml_id in entries) + "}",
        "",
    ]
    return "\n".join(out)


# Flash-attention vec instances: head sizes (dk = dv) with ggml-metal's default elements per thread for each
# (ggml_metal_tuning::fa_vec_baseline_ne; polar types always dispatch that default), and the upstream cache types
# that may sit on the other side of an asymmetric K/V pair: (name, block type, values per t4 call's block, decoder).
METAL_FA_VEC_HEADS = ((64, 2), (128, 1), (256, 1))
METAL_FA_VEC_PARTNERS = (("f16", "half4", 1, "dequantize_f16_t4"), ("q8_0", "block_q8_0", 8, "dequantize_q8_0_t4"))


def metal_polar_side(name: str) -> tuple:
    """A polar type as one side of a Metal flash-attention vec instance: name, block, 4-value groups, decoder."""
    return (name, f"block_{name}", BLOCK // 4, f"dequantize_{name}_t4")


def render_metal_instances(names: list[str]) -> str:
    out = [
        "// Generated by llama-polar codebooks (python/llama_polar/codebooks.py). Do not edit: change it and rerun.",
        "// The polar kernels' host names, as ggml-metal-device.cpp builds them; included at the end of polar.metal.",
        "",
    ]
    for n in names:
        out += [
            f"// {n}",
            f'template [[host_name("kernel_set_rows_f32_i64_{n}")]] kernel set_rows_pq_t kernel_set_rows_pq<int64_t, '
            f"block_{n}, quantize_{n}>;",
            f'template [[host_name("kernel_set_rows_f32_i32_{n}")]] kernel set_rows_pq_t kernel_set_rows_pq<int32_t, '
            f"block_{n}, quantize_{n}>;",
            f'template [[host_name("kernel_cpy_f32_{n}")]] kernel cpy_f32_pq_t kernel_cpy_f32_pq<block_{n}, quantize_{n}>;',
            f'template [[host_name("kernel_cpy_{n}_f32")]] kernel cpy_pq_f32_t kernel_cpy_pq_f32<block_{n}, '
            f"dequantize_{n}>;",
            f'template [[host_name("kernel_flash_attn_ext_kv_{n}_f16")]] kernel kv_pq_f16_t '
            f"kernel_flash_attn_ext_kv_pq_f16<block_{n}, decode_block_{n}>;",
        ]
        polar = metal_polar_side(n)
        pairs = [(polar, polar)]
        pairs += [(other, polar) for other in METAL_FA_VEC_PARTNERS]
        pairs += [(polar, other) for other in METAL_FA_VEC_PARTNERS]
        pairs += [(polar, metal_polar_side(v)) for v in names if v != n]   # K/V splits: -ctk pq46 -ctv pq37
        for k, v in pairs:
            types = k[0] if k is v else f"{k[0]}_{v[0]}"
            for dk, ne in METAL_FA_VEC_HEADS:
                out.append(
                    f'template [[host_name("kernel_flash_attn_ext_vec_{types}_dk{dk}_dv{dk}")]] kernel '
                    f"flash_attn_ext_vec_t kernel_flash_attn_ext_vec<FA_TYPES, {k[1]}, {k[2]}, {k[3]}, "
                    f"{v[1]}, {v[2]}, {v[3]}, {dk}, {dk}, {ne}>;")
        out.append("")
    return "\n".join(out)


def generate(progress: bool = False):
    books = all_codebooks(progress)
    types, rows, tables, log_values, log_bounds, key_mags, key_rho, trellises = collect(books, progress)
    args = (types, tables, log_values, log_bounds, key_mags, key_rho, trellises)
    metal = render_metal_instances([name for name, _, _ in type_list(types, trellises)])
    return books, types, rows, render_header(*args), render_python(*args), metal


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if the checked-in generated files are stale")
    ap.add_argument("--frontier", action="store_true", help="print the rate-distortion frontier and the types")
    ap.add_argument("--header", type=Path, default=HEADER, help="C/Metal header path (default: %(default)s)")
    ap.add_argument("--python", type=Path, default=PYTABLES, help="Python tables path (default: %(default)s)")
    ap.add_argument("--metal", type=Path, default=METAL_INSTANCES,
                    help="Metal instance list path (default: %(default)s)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = ap.parse_args(argv)
    outputs = {"header": args.header, "python": args.python, "metal": args.metal}
    if not args.check and not args.frontier and None in outputs.values():
        ap.error("not in a source checkout: pass --header and --metal to say where to write the C header and the "
                 "Metal instances")

    books, types, rows, header, pytables, metal = generate(progress=not args.no_progress)
    if args.frontier:
        print("bits/value  rel.MSE   bits per level (l=1..6)  radius")
        for rate, dist, bits, fmt in frontier(rows):
            if 2.4 <= rate <= 5.0:
                print(f"{rate:9.4f}  {dist:.5f}   {str(bits):24s} {RADIUS_NAMES[fmt]}")
        print("\nradius format at each family rate: best whole-byte allocation with each format")
        for name, max_rate, _ in FAMILY:
            for fmt in (RADIUS_FP16, RADIUS_LOG8):
                rate, dist, bits, _ = best_allocation(rows, max_rate, fmt)
                print(f"{name:6s} {RADIUS_NAMES[fmt]:5s} {rate:7.4f}  {dist:.5f}   {bits}")
        print("\ntype    bits/value  group  bits per level  radius  closed-form rel.MSE")
        for t in types:
            print(f"{t.name:7s} {t.bits_per_value:10.4f}  {t.group_size:5d}  {'/'.join(map(str, t.level_bits)):14s}  "
                  f"{RADIUS_NAMES[t.radius_format]:6s}  {t.expected_rel_mse:.5f}")
    if args.check:
        checked = [(p, text) for p, text in ((args.header, header), (args.python, pytables), (args.metal, metal))
                   if p is not None]
        stale = [str(p) for p, text in checked if not p.exists() or p.read_text() != text]
        if stale:
            print("stale generated files (run `llama-polar codebooks`): " + ", ".join(stale), file=sys.stderr)
            return 1
        if len(checked) < 3:
            print("(an installed package: only the Python tables were checked; the C header and the Metal "
                  "instances are in a source checkout)")
        print("generated codebooks are up to date")
        return 0
    if not args.frontier:
        args.header.write_text(header)
        args.python.write_text(pytables)
        args.metal.write_text(metal)
        print(f"wrote {args.header}, {args.python} and {args.metal}")
    return 0
