"""The quality/speed/memory report for one model and one text: a markdown table and PNG plots (llama-polar report).

Steps (a tqdm progress bar on stderr counts them):
  1. quality: llama-perplexity against an f16 cache (flash attention on both sides) for every cache type, as users
     get it, and for every configuration (llama_polar.cache_config: K/V pairs and key treatments, such as upstream
     q4_0 with the polar types' centering and sink rows): mean KLD, PPL and same-top-token rate;
  2. speed: llama-bench for every type at each depth (llama_polar.bench), ratios to f16 and q4_0 from the same run;
  3. memory: KV-cache size per type at context lengths up to the model's, from its GGUF metadata.
write() puts <out>/report.md, <out>/kld_vs_bits.png (the frontier: KLD against bits per value, polar and upstream
types), <out>/speed_vs_depth.png, <out>/kv_memory.png, and <out>/report.json with every figure.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from . import llama as polar_llama
from . import cache_config
from .bench import format_ratio, run_llama_bench, with_ratios
from .perplexity import base_logits, kl_divergence
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


N_CTX = 512  # the context of the quality runs, which the sink rows' share of the bits depends on


def measure_quality(model, text, chunks, types, progress, configs=(), centers=None) -> list[dict]:
    """PPL, mean KLD and same-top-token % of each type against the f16 cache (f16 itself: KLD 0), then of each
    configuration (cache_config specs; centers: the calibrated centers' file, for the "calib" ones)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "f16.kld"
        progress.set_description("quality: f16 logits")
        ppl_f16 = base_logits(model, text, chunks, base)
        progress.update()
        for t in types:
            if t == "f16":
                rows.append({"type": t, "bits": polar_llama.bits_per_value(t), "ppl": ppl_f16, "kld": 0.0,
                             "top": 100.0})
                continue
            progress.set_description(f"quality: {t}")
            r = kl_divergence(model, text, chunks, base, t)
            progress.update()
            rows.append({"type": t, "bits": polar_llama.bits_per_value(t), "ppl": r.ppl, "kld": r.kld,
                         "top": r.same_top})
        for cfg in map(cache_config.parse, configs):
            progress.set_description(f"quality: {cfg.spec}")
            r = kl_divergence(model, text, chunks, base, cfg.type_k, cfg.type_v, env=cfg.env(centers))
            progress.update()
            rows.append({"type": cfg.spec, "config": True, "bits": cfg.bits(N_CTX), "ppl": r.ppl, "kld": r.kld,
                         "top": r.same_top})
    return rows


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


def label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def save(fig, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def plot(report: dict, out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    q = [r for r in report["quality"] if r["type"] != "f16" and r["kld"] > 0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = {"polar": lambda r: not r.get("config") and r["type"] in POLAR_TYPES,
              "upstream": lambda r: not r.get("config") and r["type"] not in POLAR_TYPES,
              "configurations": lambda r: r.get("config", False)}
    for group, marker, color in (("polar", "o", "tab:blue"), ("upstream", "s", "tab:red"),
                                 ("configurations", "^", "tab:green")):
        pts = [r for r in q if groups[group](r)]
        ax.scatter([r["bits"] for r in pts], [r["kld"] for r in pts], marker=marker, color=color, label=group)
        for r in pts:
            ax.annotate(r["type"], (r["bits"], r["kld"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    hull = frontier([(r["bits"], r["kld"]) for r in q])
    ax.plot([b for b, _ in hull], [k for _, k in hull], "k--", lw=0.8, label="frontier")
    ax.set_yscale("log")
    label(ax, "bits per cached value", "mean KLD vs f16 cache (log)",
          f"{report['model']}: quality per bit ({report['chunks']} x 512 tokens)")
    files.append(save(fig, out, "kld_vs_bits.png"))

    speed = report["speed"]
    tests = sorted({r["test"] for r in speed})
    fig, axes = plt.subplots(1, len(tests), figsize=(6 * len(tests), 4.5), squeeze=False)
    for ax, test in zip(axes[0], tests):
        for t in report["types"]:
            pts = sorted((r["depth"], r["tps"]) for r in speed if r["type"] == t and r["test"] == test)
            if pts:
                style = "-o" if t in POLAR_TYPES else "--s"
                ax.plot([d for d, _ in pts], [v for _, v in pts], style, label=t, ms=4)
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
    lines = [f"# KV-cache types on {report['model']}", "",
             f"Measured on {report['machine']}, {report['date']}, with `{command}`.", "",
             f"## Quality ({report['text']}, {report['chunks']} chunks of 512 tokens, flash attention on)", "",
             "Each type as users get it: a polar K cache centered with one exact sink row (the build's default), an "
             "upstream type as upstream stores it. Then the configurations (K/V pairs, key treatments; "
             "`llama_polar.cache_config`), their bits/value counting the sink rows' f16 copies at the 512-token "
             "context scored.", "",
             "| type | bits/value | mean KLD vs f16 | vs q4_0 | PPL | same top token |",
             "|---|---:|---:|---:|---:|---:|"]
    q4_0 = next((r["kld"] for r in report["quality"] if r["type"] == "q4_0"), None)
    for r in sorted(report["quality"], key=lambda r: (bool(r.get("config")), -r["bits"])):
        ratio = format_ratio(r["kld"] / q4_0) if q4_0 and r["type"] != "f16" else "-"
        lines.append(f"| {r['type']} | {r['bits']:.3f} | {r['kld']:.4f} | {ratio} | {r['ppl']:.3f} | "
                     f"{r['top']:.2f}% |")
    lines += ["", "![KLD against bits per value](kld_vs_bits.png)", "",
              f"## Speed (llama-bench, {report['threads']} threads, {report['reps']} repetitions, ratios from the same "
              "run)", "", "| type | test | depth | tokens/s | vs f16 | vs q4_0 |", "|---|---|---:|---:|---:|---:|"]
    for r in report["speed"]:
        lines.append(f"| {r['type']} | {r['test']} | {r['depth']} | {r['tps']:.2f} ± {r['sd']:.2f} | "
                     f"{format_ratio(r['vs_f16'])} | {format_ratio(r['vs_q4_0'])} |")
    ctxs, mem = report["memory"]["context"], report["memory"]["mib"]
    lines += ["", "![tokens/s against depth](speed_vs_depth.png)", "",
              "## KV-cache memory (MiB, from the model's GGUF metadata)", "",
              "| type | " + " | ".join(str(c) for c in ctxs) + " |", "|---|" + "---:|" * len(ctxs)]
    for t in report["types"]:
        lines.append(f"| {t} | " + " | ".join(f"{m:.1f}" for m in mem[t]) + " |")
    lines += ["", "![KV cache size against context length](kv_memory.png)", ""]
    return "\n".join(lines)


def measure(model: Path, text: Path, chunks: int, types: list[str], depths: list[int], reps: int,
            threads: int, configs: list[str] = (), centers: Path | None = None) -> dict:
    """Every figure of the report: quality, speed and memory of each cache type (types must include f16), and the
    quality of each configuration (centers: the calibrated centers for the "calib" ones)."""
    meta = polar_llama.model_metadata(str(model))
    steps = len(types) * 2 + ("f16" not in types) + len(configs)
    with tqdm(total=steps, unit="step", desc="report") as progress:
        quality = measure_quality(model, text, chunks, types, progress, configs, centers)
        speed = []
        for t in types:
            progress.set_description(f"speed: {t}")
            speed += run_llama_bench(model, t, depths, 512, 64, reps, threads)
            progress.update()
        with_ratios(speed)
        ctxs, mem = measure_memory(meta, types)
        progress.set_description("done")
    return {"model": model.name, "text": text.name, "chunks": chunks, "threads": threads, "reps": reps,
            "types": types, "configs": list(configs), "date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "quality": quality, "speed": speed, "memory": {"context": ctxs, "mib": mem}}


def write(report: dict, out: Path, command: str) -> Path:
    """report.md, its three plots and report.json into out/; returns the markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    plot(report, out)
    (out / "report.md").write_text(markdown(report, command))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return out / "report.md"
