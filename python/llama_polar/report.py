"""The quality/speed/memory report for one model and one text: a markdown table and PNG plots (llama-polar report).

Steps (a tqdm progress bar on stderr counts them):
  1. quality: llama-perplexity against an f16 cache (flash attention on both sides) for every cache type, as users
     get it, and for every configuration (llama_polar.cache_config: K/V pairs and key treatments, such as upstream
     q4_0 with the polar types' centering and sink rows): mean KLD, its 99.9th percentile, PPL and same-top-token
     rate, at the long context users compress a cache for (chunks of 8192 tokens unless asked otherwise; bits per
     value from the KV buffers llama.cpp allocated, every exact row and center counted), then at 512 tokens, then
     in decode: one chunk read token by token (-ub 1), as generation reads the cache (each token sees its recent
     window exact, where a batch's earlier tokens see rows the batch quantized), for q4_0 and the decode list;
  2. speed: llama-bench for every type (and configuration) at each depth (bench_runs), ratios to f16 and q4_0 from
     the same run;
  3. memory: KV-cache size per type at context lengths up to the model's, from its GGUF metadata.
write() puts <out>/report.md, <out>/kld_vs_bits.png (the frontier: KLD against bits per value, polar and upstream
types), <out>/speed_vs_depth.png (where a type was benched at two depths or more), <out>/kv_memory.png, and
<out>/report.json with every figure.
"""
from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from . import llama as polar_llama
from . import cache_config, models
from .bench import format_ratio, run_llama_bench, with_ratios
from .perplexity import BATCH, base_run, kl_divergence, sequences
from .type_names import POLAR_TYPES


def machine() -> str:
    """The CPU, as /proc/cpuinfo names it, and its core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


SHORT_CTX = 512  # the secondary table's context


def measure_quality(model, text, chunks, ctx, types, progress, configs=(), centers=None, ubatch=None) -> dict:
    """At `chunks` x `ctx` tokens: PPL, mean KLD, its 99.9th percentile and same-top-token % of each type against
    the f16 cache (f16 itself: KLD 0), then of each configuration (cache_config specs; centers: the calibrated
    centers' file, for the "calib" ones). bits: from the KV buffers, relative to f16's 16, of the run's `seqs`
    sequences (perplexity.sequences); formula_bits: cache_config's count for one sequence, what a user gets.
    ubatch: llama-perplexity's -ub for every run, the base's included (1: decode; None: its default)."""
    rows = []
    n_layer = models.metadata(str(model))["n_layer"]      # the bits of types per layer
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "f16.kld"
        progress.set_description(f"quality at {ctx}: f16 logits")
        args = ("-ub", ubatch) if ubatch else ()
        f16 = base_run(model, text, chunks, base, ctx=ctx, args=args)
        progress.update()
        rows.append({"type": "f16", "bits": 16.0, "formula_bits": 16.0, "ppl": f16.ppl, "kld": 0.0, "kld_p999": 0.0,
                     "top": 100.0})
        runs = [(cache_config.parse(t), False) for t in types if t != "f16"]
        runs += [(cache_config.parse(c), True) for c in configs]
        for cfg, is_config in runs:
            progress.set_description(f"quality at {ctx}: {cfg.spec}")
            r = kl_divergence(model, text, chunks, base, cfg.type_k, cfg.type_v, env=cfg.env(centers), ctx=ctx,
                              args=args)
            progress.update()
            rows.append({"type": cfg.spec, "config": is_config, "bits": 16.0 * r.kv_mib / f16.kv_mib,
                         "formula_bits": cfg.bits(ctx, n_layer=n_layer), "seqs": sequences(ctx), "ppl": r.ppl, "kld": r.kld, "kld_p999": r.kld_p999,
                         "top": r.same_top})
    return {"ctx": ctx, "chunks": chunks, "ubatch": ubatch, "rows": rows}


def measure_memory(meta: dict, types) -> tuple[list[int], dict[str, list[float]]]:
    """KV-cache MiB of each type at context lengths up to the model's (at least 8192)."""
    ctxs = [c for c in (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072) if c <= max(meta["n_ctx"], 8192)]
    return ctxs, {t: [polar_llama.kv_cache_bytes(meta, t, t, c) / 2**20 for c in ctxs] for t in types}


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower-left hull in (bits, KLD): points no other point beats on both."""
    best, out = float("inf"), []
    for b, k in sorted(points):
        if k < best:
            out.append((b, k))
            best = k
    return out


def depth_lines(speed: list[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """The speed plot's lines: per test, (depth, tokens/s) of each type benched at more than one depth (none when the
    report benched one depth only: there is no plot then)."""
    lines = {}
    for test in sorted({r["test"] for r in speed}):
        by_type = {t: sorted((r["depth"], r["tps"]) for r in speed if r["type"] == t and r["test"] == test)
                   for t in dict.fromkeys(r["type"] for r in speed)}
        by_type = {t: pts for t, pts in by_type.items() if len(pts) > 1}
        if by_type:
            lines[test] = by_type
    return lines


def label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:       # a panel with nothing measured has no legend to show
        ax.legend(fontsize=7, ncol=2)


def save(fig, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def label_offsets(points: list[tuple[float, float]], near: tuple[float, float] = (0.2, 0.06)) -> list[tuple[int, int]]:
    """Where each point's name goes (offset points, to its right), points in order of bits: a name goes lower while
    it would lie on an earlier one's, i.e. within `near` of it as a fraction of the plot's width and of its log height
    (a name is about a fifth of the width long)."""
    import math

    xs, ys = [b for b, _ in points], [math.log(k) for _, k in points]
    width, height = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float, int]] = []
    out = []
    for x, y in zip(xs, ys):
        dy = -3
        while any(abs(x - px) < near[0] * width and abs(y - py) < near[1] * height and dy == pdy
                  for px, py, pdy in placed):
            dy -= 10
        placed.append((x, y, dy))
        out.append((5, dy))
    return out


def kld_panel(ax, run: dict, names: dict[str, str]) -> None:
    """One quality run's mean KLD against bits per value, log scale, with its frontier; names only on the frontier
    and for upstream's types, so that they do not stack (the tables have every point)."""
    q = [r for r in run["rows"] if r["type"] != "f16" and r["kld"] > 0]
    hull = frontier([(r["bits"], r["kld"]) for r in q])
    groups = {"polar": lambda r: not r.get("config") and r["type"] in POLAR_TYPES,
              "upstream": lambda r: not r.get("config") and r["type"] not in POLAR_TYPES,
              "configurations": lambda r: r.get("config", False)}
    for group, marker, color in (("polar", "o", "tab:blue"), ("upstream", "s", "tab:red"),
                                 ("configurations", "^", "tab:green")):
        pts = [r for r in q if groups[group](r)]
        ax.scatter([r["bits"] for r in pts], [r["kld"] for r in pts], marker=marker, color=color, label=group)
    named = sorted((r for r in q if (r["bits"], r["kld"]) in hull or groups["upstream"](r)), key=lambda r: r["bits"])
    for r, offset in zip(named, label_offsets([(r["bits"], r["kld"]) for r in named])):
        ax.annotate(names[r["type"]], (r["bits"], r["kld"]), textcoords="offset points", xytext=offset, fontsize=8)
    ax.plot([b for b, _ in hull], [k for _, k in hull], "k--", lw=0.8, label="frontier")
    ax.set_yscale("log")
    label(ax, "bits per cached value", "mean KLD vs f16 cache (log)", run_words(run))


def plot(report: dict, out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files, names = [], report_names(report)
    runs = [report["quality"][name] for name in ("decode", "long") if name in report["quality"]]
    fig, axes = plt.subplots(1, len(runs), figsize=(7 * len(runs), 4.5), squeeze=False)
    for ax, run in zip(axes[0], runs):
        kld_panel(ax, run, names)
    fig.suptitle(f"{report['model']}: quality per bit")
    files.append(save(fig, out, "kld_vs_bits.png"))

    lines = depth_lines(report["speed"])
    (out / "speed_vs_depth.png").unlink(missing_ok=True)    # not left from an earlier report where none is drawn
    if lines:
        fig, axes = plt.subplots(1, len(lines), figsize=(6 * len(lines), 4.5), squeeze=False)
        for ax, (test, by_type) in zip(axes[0], lines.items()):
            for t, pts in by_type.items():
                style = "--s" if t in ("f16", "q8_0", "q4_0") else "-o"
                ax.plot([d for d, _ in pts], [v for _, v in pts], style, label=names[t], ms=4)
            label(ax, "depth (tokens already in the cache)", "tokens/s",
                  f"{test}, {report['threads']} threads, flash attention on")
        files.append(save(fig, out, "speed_vs_depth.png"))

    ctxs, mem = report["memory"]["context"], report["memory"]["mib"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in report["types"]:
        ax.plot(ctxs, mem[t], "-o" if t in POLAR_TYPES else "--s", label=t, ms=3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    label(ax, "context length (tokens)", "KV cache (MiB, log)", f"{report['model']}: KV cache size")
    files.append(save(fig, out, "kv_memory.png"))
    return files


def markdown(report: dict, command: str) -> str:
    long, short = report["quality"]["long"], report["quality"].get("short")
    decode, names = report["quality"].get("decode"), report_names(report)
    lines = [f"# KV-cache types on {report['model']}", "",
             f"Measured on {report['machine']}, {report['date']}, with `{command}`.", ""]
    if decode:
        window = (f", and at {decode['ctx']} tokens its last {cache_config.DEFAULT_RECENT} positions, "
                  f"{cache_config.DEFAULT_RECENT_SWA} in a sliding-window cache of at least "
                  f"{cache_config.DEFAULT_RECENT_SWA_CELLS} cells per sequence"
                  if decode["ctx"] >= cache_config.DEFAULT_RECENT_CELLS else "")
        lines += [f"## Quality in decode at {decode['ctx']} tokens ({report['text']}, {run_words(decode)})", ""]
        lines += measured_again(decode)
        lines += ["llama-perplexity at `-ub 1`: each token reads the cache as generation reads it, the build's "
                  f"exact rows included (a polar K cache keeps its first position exact{window}). Bits/value from "
                  "the KV buffers, every exact row and center counted.", ""]
        lines += quality_table(decode["rows"], "bits", names) + [""]
    lines += [f"## Quality at {long['ctx']} tokens in batches ({report['text']}, {run_words(long)}, flash "
              "attention on)", "", *measured_again(long),
              "Each type as users get it: a polar K cache centered with one exact sink row and, from "
              f"{cache_config.DEFAULT_RECENT_CELLS} cells per sequence, {cache_config.DEFAULT_RECENT} exact recent "
              "rows (the build's default), an upstream type as upstream stores it. Then the configurations (K/V "
              f"pairs, key treatments; `llama_polar.cache_config`). llama-perplexity's batches of {BATCH} tokens, in "
              "ubatches of 512: with a recent window each query reads exact the window as it was before its ubatch "
              "and the ubatch's earlier rows (f16 copies in the compute graph, not in the KV buffer), without one "
              "the rows its ubatch quantized. Bits/value from the KV buffers llama.cpp allocated at this context, "
              "relative to f16's, exact rows and centers included.", ""]
    lines += quality_table(long["rows"], "bits", names)
    lines += layer_types_list(names)
    lines += ["", "![KLD against bits per value](kld_vs_bits.png)", ""]
    if short:
        lines += [f"## Quality at {short['ctx']} tokens ({short['chunks']} chunks)", "",
                  f"The same at a short context, where a cache is a few MiB: bits/value for one sequence at "
                  f"{short['ctx']} tokens, sink rows counted.", ""]
        lines += quality_table(short["rows"], "formula_bits", names)
    lines += ["",
              f"## Speed (llama-bench, {report['threads']} threads, {report['reps']} repetitions, ratios from the same "
              "run)", "", "| type | test | depth | tokens/s | vs f16 | vs q4_0 |", "|---|---|---:|---:|---:|---:|"]
    for r in report["speed"]:
        lines.append(f"| {names[r['type']]} | {r['test']} | {r['depth']} | {r['tps']:.2f} ± {r['sd']:.2f} | "
                     f"{format_ratio(r['vs_f16'])} | {format_ratio(r['vs_q4_0'])} |")
    ctxs, mem = report["memory"]["context"], report["memory"]["mib"]
    if depth_lines(report["speed"]):
        lines += ["", "![tokens/s against depth](speed_vs_depth.png)"]
    lines += ["", "## KV-cache memory (MiB, from the model's GGUF metadata)", "",
              "| type | " + " | ".join(str(c) for c in ctxs) + " |", "|---|" + "---:|" * len(ctxs)]
    for t in report["types"]:
        lines.append(f"| {t} | " + " | ".join(f"{m:.1f}" for m in mem[t]) + " |")
    lines += ["", "![KV cache size against context length](kv_memory.png)", ""]
    return "\n".join(lines)


def quality_table(rows: list[dict], bits: str, names: dict[str, str]) -> list[str]:
    """Markdown rows of a quality measurement, types first, then configurations, each by bits (`bits`: the column)."""
    out = ["| type | bits/value | mean KLD vs f16 | vs q4_0 | 99.9% KLD | PPL | same top token |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    q4_0 = next((r["kld"] for r in rows if r["type"] == "q4_0"), None)
    for r in sorted(rows, key=lambda r: (bool(r.get("config")), -r[bits])):
        ratio = format_ratio(r["kld"] / q4_0) if q4_0 and r["type"] != "f16" else "-"
        p999 = "-" if r["kld_p999"] is None else f"{r['kld_p999']:.3f}"
        out.append(f"| {names[r['type']]} | {r[bits]:.3f} | {r['kld']:.4f} | {ratio} | {p999} | "
                   f"{r['ppl']:.3f} | {r['top']:.2f}% |")
    return out


def display_names(specs) -> dict[str, str]:
    """Each configuration's name in tables and plots: its label (CacheConfig.label, which counts the layers with
    types of their own instead of listing them), numbered as in layer_types_list where two labels would be the same."""
    configs = {s: cache_config.parse(s) for s in specs}
    per_layer = [s for s, c in configs.items() if c.layers]
    uses = Counter(c.label for c in configs.values())
    return {s: f"{c.label} [{per_layer.index(s) + 1}]" if uses[c.label] > 1 else c.label for s, c in configs.items()}


def report_names(report: dict) -> dict[str, str]:
    """display_names of every configuration a report measured, in the order its tables list them."""
    runs = [report["quality"][run] for run in ("decode", "long", "short") if run in report["quality"]]
    return display_names([r["type"] for run in runs for r in run["rows"]] + [r["type"] for r in report["speed"]] +
                         report.get("benched", report["types"]))


def layer_types_list(names: dict[str, str]) -> list[str]:
    """The whole strings of the configurations with types per layer, numbered as display_names numbers them."""
    specs = [s for s in names if cache_config.parse(s).layers]
    if not specs:
        return []
    return ["", "The configurations with types per layer, as they run (`llama-polar recommend` prints them as a "
            "shell fragment):", "", *[f"{i}. `{s}`" for i, s in enumerate(specs, 1)]]


def bench_runs(types: list[str], depths: list[int], deep: list[str] | None) -> list[tuple[str, list[int]]]:
    """What llama-bench runs, at which depths: the types and deep's configurations at every depth if deep names
    them (None: every type), the other types at the first depth only (at 8192 tokens an upstream quantized cache
    takes minutes to fill for each test)."""
    names = list(types) + [c for c in deep or () if c not in types]
    return [(t, depths if deep is None or t in deep else depths[:1]) for t in names]


def measure(model: Path, text: Path, chunks: int, types: list[str], depths: list[int], reps: int,
            threads: int, configs: list[str] = (), centers: Path | None = None, ctx: int = 8192,
            short_chunks: int = 16, deep: list[str] | None = None, decode: list[str] = ()) -> dict:
    """Every figure of the report: quality at chunks x ctx tokens and short_chunks x 512 (0: none), speed and
    memory of each cache type (types must include f16; speed at the depths bench_runs gives), the quality of
    each configuration (centers: the calibrated centers for the "calib" ones), and in decode (one chunk of ctx
    tokens at -ub 1) the quality of q4_0 and of each of `decode` (none: no decode run)."""
    meta = models.metadata(str(model))
    runs = len(types) + len(configs)
    benches = bench_runs(types, depths, deep)
    decode = decode_configs(decode)
    steps = len(benches) + runs * (2 if short_chunks else 1) + (len(decode) + 2 if decode else 0)
    with tqdm(total=steps, unit="step", desc="report") as progress:
        quality = {"long": measure_quality(model, text, chunks, ctx, types, progress, configs, centers)}
        if short_chunks:
            quality["short"] = measure_quality(model, text, short_chunks, SHORT_CTX, types, progress, configs,
                                               centers)
        if decode:
            quality["decode"] = measure_decode(model, text, ctx, decode, centers, progress)
        speed = []
        for t, at in benches:
            progress.set_description(f"speed: {t}")
            speed += run_llama_bench(model, t, at, 512, 64, reps, threads)
            progress.update()
        with_ratios(speed)
        ctxs, mem = measure_memory(meta, types)
        progress.set_description("done")
    return {"model": model.name, "text": text.name, "threads": threads, "reps": reps,
            "types": types, "configs": list(configs), "decode": decode, "benched": [t for t, _ in benches], "date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "quality": quality, "speed": speed, "memory": {"context": ctxs, "mib": mem}}


def decode_configs(configs: list[str]) -> list[str]:
    """The configurations a decode run scores besides q4_0, which it always runs: the report's "decode" list."""
    return [c for c in configs if c != "q4_0"]


def measure_decode(model: Path, text: Path, ctx: int, decode: list[str], centers: Path | None, progress) -> dict:
    """The decode run: one chunk of ctx tokens at -ub 1, f16 (the base), q4_0 and each of `decode` besides (a
    decode_configs list)."""
    return measure_quality(model, text, 1, ctx, ["f16", "q4_0"], progress, decode, centers, ubatch=1)


def decode_run(model: Path, text: Path, ctx: int, decode: list[str], centers: Path | None, desc: str) -> dict:
    """measure_decode with a progress bar of its own, for a decode run measured apart from a whole report."""
    with tqdm(total=len(decode) + 2, unit="step", desc=desc) as progress:
        return measure_decode(model, text, ctx, decode, centers, progress)


def redo_run(report: dict, run: str, model: Path, text: Path, ctx: int, chunks: int, configs: list[str],
             centers: Path | None, command: str) -> dict:
    """report with one quality run measured again, the other figures kept: "decode" (q4_0 and `configs` in decode,
    one chunk of ctx tokens; about an hour, where the whole report takes two) or "long" (the report's types and
    `configs` in batches, chunks x ctx tokens). The new run carries its own date, machine and command. ValueError
    for a report of another model or text, whose figures it would mix with this one's."""
    same_source(report, model, text)
    if run == "decode":
        configs = decode_configs(configs)
        new = decode_run(model, text, ctx, configs, centers, "decode")
    else:
        with tqdm(total=len(report["types"]) + len(configs), unit="step", desc="long") as progress:
            new = measure_quality(model, text, chunks, ctx, report["types"], progress, configs, centers)
    new.update(date=time.strftime("%Y-%m-%d"), machine=machine(), command=command)
    return {**report, "decode" if run == "decode" else "configs": list(configs),
            "quality": {**report["quality"], run: new}}


def same_source(report: dict, model: Path, text: Path) -> None:
    """ValueError for a report of another model or text, whose figures a new run would mix with this one's."""
    if (report["model"], report["text"]) != (model.name, text.name):
        raise ValueError(f"the report is of {report['model']} on {report['text']}, not {model.name} on {text.name}")


# How far q4_0's KLD, measured again beside added rows, may be from the run's. Its figure held across CPUs (an AMD
# EPYC's runs and an Intel Xeon's agreed within 0.1% on both shipped reports, 2026-12-07); a build that changes
# upstream's types, or another text or window, moves it, and rows measured there would not compare with the run's
ADD_TOLERANCE = 0.005


def add_to_decode(report: dict, model: Path, text: Path, ctx: int, configs: list[str], centers: Path | None,
                  command: str) -> dict:
    """report with `configs` measured in decode and added to its decode run (a row of the same configuration
    replaced), the other rows kept: about five minutes a configuration where redo_run measures them all. q4_0 is
    measured again beside them and must agree with the run's within ADD_TOLERANCE (relative), else ValueError, which
    names the rows' mean KLD so the run is not lost."""
    same_source(report, model, text)
    old = quality_runs(report).get("decode")
    if old is None or old["ctx"] != ctx:
        raise ValueError(f"the report has no decode run at {ctx} tokens to add rows to")
    configs = decode_configs(configs)
    new = decode_run(model, text, ctx, configs, centers, "decode, added")
    q4_0 = [next(r["kld"] for r in run["rows"] if r["type"] == "q4_0") for run in (old, new)]
    if abs(q4_0[1] - q4_0[0]) > ADD_TOLERANCE * q4_0[0]:
        measured = ", ".join(f"{r['type']} {r['kld']:.5f}" for r in new["rows"] if r["type"] in configs)
        raise ValueError(f"q4_0 measured again is {q4_0[1]:.5f}, the run's {q4_0[0]:.5f}: another build, text or "
                         f"machine; measure the whole run again (--redo decode without --add). Measured, not added: "
                         f"{measured}")
    rows = [r for r in old["rows"] if r["type"] not in configs] + [r for r in new["rows"] if r["type"] in configs]
    added = {"configs": configs, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "command": command,
             "q4_0": q4_0[1]}
    run = {**old, "rows": rows, "added": [*old.get("added", []), added]}
    return {**report, "decode": [*(c for c in report["decode"] if c not in configs), *configs],
            "quality": {**report["quality"], "decode": run}}


def measured_again(run: dict) -> list[str]:
    """The lines that date a run measured again (redo_run) and its added rows (add_to_decode), none for a run of
    the report's own command."""
    lines = []
    if "date" in run:
        lines += [f"Measured again on {run['machine']}, {run['date']}, with `{run['command']}`; the other sections are "
                  "of the run above.", ""]
    for a in run.get("added", []):
        lines += [f"Rows {', '.join(a['configs'])} added on {a['machine']}, {a['date']}, with `{a['command']}` (q4_0 "
                  f"measured again beside them: {a['q4_0']:.4f}).", ""]
    return lines


def quality_runs(report: dict) -> dict:
    """The report's quality runs by name ("long", "short"); a report made before long-context runs (2026-12-02 and
    earlier: one list of rows at 512 tokens) has only "short", and no 99.9th percentile (None)."""
    q = report["quality"]
    if isinstance(q, dict):
        return q
    rows = [{"formula_bits": r["bits"], "kld_p999": None, **r} for r in q]
    return {"short": {"ctx": SHORT_CTX, "chunks": report["chunks"], "rows": rows}}


def headline_run(report: dict) -> tuple[dict, str]:
    """The run the README and recommend quote and its rows' bits column: decode where there is one (what
    generation reads; reports before 2026-12-05 have none), else the long-context batched run, with bits from the
    KV buffers; else the 512-token one, with the formula's bits."""
    runs = quality_runs(report)
    for name in ("decode", "long"):
        if name in runs:
            return runs[name], "bits"
    return runs["short"], "formula_bits"


def readme_tables(report: dict, source: str) -> dict[str, str]:
    """The README's tables, generated from a report (source: its path, for the line that cites it): "quality" (the
    longest context the report measured), "speed" (ratios at the deepest depth, and decode at depth 0 vs q4_0) and
    "choose" (what llama-polar recommend picks for a few budgets)."""
    run, bits = headline_run(report)
    names = report_names(report)
    when = f"measured again {run['date']} on {run['machine']}" if "date" in run else report["date"]
    if run.get("added"):
        when += f", rows added {run['added'][-1]['date']} on {run['added'][-1]['machine']}"
    quality = [f"From [{source}]({source}) ({when}, {report['model']}, {report['text']}, "
               f"{run_words(run)}):", "", *quality_table(run["rows"], bits, names)]
    long = quality_runs(report).get("long")
    if long is not None and long is not run:
        again = f", measured again {long['date']}" if "date" in long else ""
        quality += ["", f"The same text in batches ({run_words(long)}, llama-perplexity's batches of {BATCH} tokens"
                    f"{again}; with the recent window a query reads its ubatch's earlier rows exact):",
                    "", *quality_table(long["rows"], "bits", names)]
    depth = max(r["depth"] for r in report["speed"])
    speed = {(r["type"], r["test"], r["depth"]): r for r in report["speed"]}
    rows = [f"From the same report (llama-bench, {report['threads']} threads, {report['reps']} repetitions, ratios "
            "within the run):", "", f"| type | pp512 @ {depth}, vs f16 | tg64 @ {depth}, vs f16 | tg64 @ 0, vs q4_0 |",
            "|---|---:|---:|---:|"]
    def ratio(t, test, d, ref):
        return format_ratio(speed[t, test, d][ref]) if (t, test, d) in speed else "-"

    for t in report.get("benched", report["types"]):
        if t != "f16":
            rows.append(f"| {names[t]} | {ratio(t, 'pp512', depth, 'vs_f16')} | "
                        f"{ratio(t, 'tg64', depth, 'vs_f16')} | {ratio(t, 'tg64', 0, 'vs_q4_0')} |")
    from .recommend import table, won_per_layer     # recommend reads reports: imported here, not at the top
    choose = [f"What `llama-polar recommend --bits B` picks from the report below ({run_words(run)}):", "",
              *table(report)]
    won = won_per_layer(report)
    if won:
        choose += ["", f"With `--model` {report['model']} its own types per layer compete too, and win at "
                   f"{', '.join(f'{b:g}' for b in won)} bits/value:", "", *table(report, won, per_layer=True)]
    return {"quality": "\n".join(quality), "speed": "\n".join(rows), "choose": "\n".join(choose)}


def run_words(run: dict) -> str:
    """A quality run in words: "2 chunks of 8192 tokens", "1 chunk of 8192 tokens read token by token"."""
    words = f"{run['chunks']} chunk{'s' if run['chunks'] != 1 else ''} of {run['ctx']} tokens"
    return words + (" read token by token" if run.get("ubatch") == 1 else "")


def sync_readme(readme: str, tables: dict[str, str]) -> str:
    """readme with each block between `<!-- report:NAME -->` and `<!-- /report:NAME -->` replaced by tables[NAME];
    ValueError for a block the README lacks."""
    for name, table in tables.items():
        begin, end = f"<!-- report:{name} -->", f"<!-- /report:{name} -->"
        if begin not in readme or end not in readme:
            raise ValueError(f"the README has no {begin} ... {end} block")
        head, rest = readme.split(begin, 1)
        readme = head + begin + "\n" + table + "\n" + end + rest.split(end, 1)[1]
    return readme


def write(report: dict, out: Path, command: str) -> Path:
    """report.md, its three plots and report.json (with the command) into out/; returns the markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    report = {**report, "command": command}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return render(report, out)


def render(report: dict, out: Path) -> Path:
    """report.md and its plots from a report's figures: again, when only the way they are shown has changed."""
    plot(report, out)
    (out / "report.md").write_text(markdown(report, report.get("command") or quoted_command(out / "report.md")))
    return out / "report.md"


def quoted_command(md: Path) -> str:
    """The command a report.md says it was made with (reports before 2026-12-04 kept it only there)."""
    m = re.search(r"with `(llama-polar report[^`]*)`", md.read_text()) if md.is_file() else None
    if not m:
        raise ValueError(f"{md.parent / 'report.json'} has no command, and {md} names none")
    return m[1]
