"""What to run for a budget of bits per value: the measured configuration with the lowest mean KLD within it.

The measurements are a report's (llama-polar report; the package carries the project's own, `report.json` beside this
module, a copy `make report` keeps of docs/report/report.json, and one per other model it measured,
`report-<name>.json`, which packaged() finds by the model's file name): its decode table (long context, token by token, as
generation reads the cache), else its long-context batched one, bits per value from the KV buffers llama.cpp
allocated. A configuration string (llama_polar.cache_config) becomes what a shell runs: its
environment assignments, then llama.cpp's cache arguments.

    rows = recommend.candidates(json.loads(Path(recommend.PACKAGED).read_text()))
    best = recommend.choose(rows, 3.75)       # Candidate(spec, bits, kld, kld_p999, vs_q4_0)
    recommend.fragment(best.spec)             # "-ctk pq42 -ctv pq32"
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from . import cache_config
from .report import headline_run

PACKAGED = Path(__file__).with_name("report.json")      # SmolLM2-135M's, the default


def packaged(model_name: str | None = None) -> Path:
    """The shipped report of the model file model_name (report*.json beside this module), else PACKAGED."""
    if model_name:
        for path in sorted(PACKAGED.parent.glob("report*.json")):
            if json.loads(path.read_text()).get("model") == model_name:
                return path
    return PACKAGED


@dataclass(frozen=True)
class Candidate:
    spec: str
    bits: float
    kld: float
    kld_p999: float | None
    vs_q4_0: float | None


def measurement(report: dict) -> dict:
    """The report's run the recommendations come from (report.headline_run)."""
    return headline_run(report)[0]


def candidates(report: dict, calibrated: bool = False, per_layer: bool = False) -> list[Candidate]:
    """Every measured cache but f16, with its bits (from the KV buffers at long context, else the formula); those
    with calibrated centers only if calibrated (a user has a centers file of the model), those with types per layer
    only if per_layer (they were chosen for the report's model: llama_polar.layer_types)."""
    run, bits = headline_run(report)
    q4_0 = next((r["kld"] for r in run["rows"] if r["type"] == "q4_0"), None)
    configs = {r["type"]: cache_config.parse(r["type"]) for r in run["rows"]}
    return [Candidate(r["type"], r[bits], r["kld"], r.get("kld_p999"), r["kld"] / q4_0 if q4_0 else None)
            for r in run["rows"]
            if r["type"] != "f16" and (calibrated or configs[r["type"]].center != "calib")
            and (per_layer or not configs[r["type"]].layers)]


def choose(rows: list[Candidate], budget: float) -> Candidate:
    """The lowest mean KLD within budget bits per value (fewer bits breaking a tie); ValueError if none fits."""
    fits = [r for r in rows if r.bits <= budget + 1e-9]
    if not fits:
        least = min(rows, key=lambda r: r.bits)
        raise ValueError(f"no measured configuration fits {budget:g} bits/value: the smallest is {least.spec} at "
                         f"{least.bits:.3f}")
    return min(fits, key=lambda r: (r.kld, r.bits))


def fragment(spec: str, centers: Path | str | None = None) -> str:
    """A configuration as a shell fragment: NAME=VALUE assignments, then -ctk/-ctv (with -fa on, which a polar K
    cache needs), usable before and after a llama.cpp tool's name: `LLAMA_... llama-cli -m m.gguf -ctk ... `."""
    cfg = cache_config.parse(spec)
    env = [f"{k}={shlex.quote(v)}" for k, v in cfg.env(centers).items()]
    return " ".join([*env, "-ctk", cfg.type_k, "-ctv", cfg.type_v, "-fa", "on"])


BUDGETS = (4.75, 4.25, 3.75, 3.25, 2.75)   # the README's table: about q4_0's size, then the budgets issue 17 sets


def fitting(rows: list[Candidate], budget: float) -> Candidate | None:
    """choose(), with None where nothing fits (a table's empty row)."""
    try:
        return choose(rows, budget)
    except ValueError:
        return None


def won_per_layer(report: dict, budgets=BUDGETS) -> list[float]:
    """The budgets at which the report's configurations with types per layer win: what --model picks there is not
    what the plain command picks."""
    plain, own = candidates(report), candidates(report, per_layer=True)
    return [b for b in budgets if fitting(plain, b) != fitting(own, b)]


def table(report: dict, budgets=BUDGETS, per_layer: bool = False) -> list[str]:
    """Markdown rows: for each budget, what choose() picks and its figures (the README's "Choosing a type");
    per_layer: the report's configurations with types per layer compete (what --model picks for its model)."""
    rows = candidates(report, per_layer=per_layer)
    out = ["| budget, bits/value | run | bits/value | mean KLD | vs q4_0 |", "|---:|---|---:|---:|---:|"]
    for budget in budgets:
        best = fitting(rows, budget)
        if best is None:
            out.append(f"| {budget:g} | nothing measured fits | | | |")
            continue
        ratio = f"{best.vs_q4_0:.2f}x" if best.vs_q4_0 is not None else "-"
        out.append(f"| {budget:g} | `{fragment(best.spec)}` | {best.bits:.3f} | {best.kld:.4f} | {ratio} |")
    return out
