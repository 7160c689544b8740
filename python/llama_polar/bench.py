"""llama-bench over KV-cache types: tokens/s per (type, test, depth), and each record's ratio to f16 and q4_0.

For each cache type (K and V the same) or configuration (a K/V pair, key treatments: llama_polar.cache_config),
llama-bench runs with flash attention on: prompt processing (pp<n>) and
generation (tg<n>) at each depth (tokens already in the cache; llama-bench fills them first, untimed). Run the types
back to back and compare ratios within one run: absolute tokens/s on a shared machine are not stable.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from . import cache_config
from .paths import tool
from .type_names import POLAR_TYPES

DEFAULT_TYPES = ("f16", "q8_0", "q4_0", *POLAR_TYPES)


def run_llama_bench(model: Path, cache_type: str, depths: list[int], n_prompt: int, n_gen: int, reps: int,
                    threads: int, timeout: float | None = None, centers: Path | None = None) -> list[dict]:
    """One llama-bench run for one cache type, or configuration (llama_polar.cache_config: "q8_0/pq46",
    "pq46+plain"): a record per (test, depth) with tokens/s and its deviation."""
    config = cache_config.parse(cache_type)
    cmd = [str(tool("llama-bench")), "-m", str(model), "-fa", "1", "-ctk", config.type_k, "-ctv", config.type_v,
           "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps),
           "-d", ",".join(map(str, depths)), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                         env={**os.environ, **config.env(centers)})
    if out.returncode != 0:
        raise RuntimeError(f"llama-bench failed for {cache_type}:\n{out.stderr[-2000:]}")
    records = []
    for r in json.loads(out.stdout):
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        records.append({"type": cache_type, "test": test, "depth": r["n_depth"], "tps": r["avg_ts"],
                        "sd": r["stddev_ts"]})
    return records


def with_ratios(records: list[dict]) -> list[dict]:
    """Adds each record's ratio to f16 and to q4_0 at the same test and depth (None where that type is missing)."""
    base = {(r["type"], r["test"], r["depth"]): r["tps"] for r in records}
    for r in records:
        for ref in ("f16", "q4_0"):
            b = base.get((ref, r["test"], r["depth"]))
            r[f"vs_{ref}"] = r["tps"] / b if b else None
    return records


def format_ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def table(records: list[dict]) -> str:
    width = max([7, *(len(r["type"]) for r in records)])
    lines = [f"{'type':{width}s} {'test':>6s} {'depth':>6s} {'tokens/s':>14s} {'vs f16':>7s} {'vs q4_0':>8s}"]
    for r in records:
        lines.append(f"{r['type']:{width}s} {r['test']:>6s} {r['depth']:6d} {r['tps']:8.2f} ± {r['sd']:5.2f} "
                     f"{format_ratio(r['vs_f16']):>7s} {format_ratio(r['vs_q4_0']):>8s}")
    return "\n".join(lines)
