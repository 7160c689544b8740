"""llama-perplexity on `chunks` x `ctx` tokens of a text (512 unless asked), flash attention on: the f16 base run,
which writes the base logits and gives the PPL, and KL-divergence runs of a cache type against those logits.

    ppl_f16 = base_logits(model, text, 4, "f16.kld")
    r = kl_divergence(model, text, 4, "f16.kld", "pq46")      # r.ppl, r.kld (mean KLD), r.same_top (%)

A failed run raises RuntimeError with the tail of the tool's log. The figures are read by parse_divergence, which
takes every number printf prints: a mean KLD of -0.000001 (an f16 cache against f16 logits rounds either way), and
nan or inf (a run whose logits overflowed) come back as floats, for the caller to report.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .paths import tool


@dataclass(frozen=True)
class Divergence:
    ppl: float          # perplexity with the cache type
    kld: float          # mean KL divergence of the token distributions from the f16 cache's
    same_top: float     # % of tokens whose most likely next token is the f16 cache's
    kld_p99: float      # 99th percentile of the per-token KLD
    kld_p999: float     # 99.9th percentile: the tail a mean hides
    kv_mib: float       # the KV cache's buffers as llama.cpp allocated them (exact rows and centers included)


@dataclass(frozen=True)
class BaseRun:
    ppl: float          # perplexity with the base cache
    kv_mib: float       # its KV buffers, the 16 bits/value every other cache's bits are relative to


BATCH = 2048    # llama-perplexity's default batch, which every run here passes


def sequences(ctx: int) -> int:
    """The sequences llama-perplexity runs side by side (and allocates cells for) at chunks of ctx tokens."""
    return max(1, BATCH // ctx)


def _run(model, text, chunks: int, base, extra: list[str], threads: int, timeout: float | None,
         env: dict | None = None, ctx: int = 512) -> str:
    # a chunk longer than BATCH goes through in batches of BATCH tokens, shorter ones several at a time (sequences)
    # -lv 4: llama.cpp's own info lines, among them the KV buffer sizes
    cmd = [str(tool("llama-perplexity")), "-m", str(model), "-f", str(text), "-c", str(ctx), "-b", str(BATCH),
           "--chunks", str(chunks), "-fa", "on", "-t", str(threads), "-lv", "4", "--kl-divergence-base", str(base),
           *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                         env=dict(os.environ, **env) if env else None)
    if out.returncode != 0:
        raise RuntimeError(f"llama-perplexity failed:\n{out.stderr[-2000:]}")
    return out.stdout + out.stderr


# a number as C's printf writes it: a sign, digits, a fraction, an exponent, or nan/inf (glibc: "-nan", "inf")
NUMBER = r"([-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?))"


def _number(label: str, log: str) -> float:
    """The number after `label` (a regular expression) in the log."""
    m = re.search(label + r"\s*" + NUMBER, log, re.IGNORECASE)
    if not m:
        raise RuntimeError(f"llama-perplexity printed no {label!r}:\n{log[-2000:]}")
    return float(m.group(1))


def kv_buffer_mib(log: str) -> float:
    """The KV cache's buffers in MiB: the sum of llama.cpp's "KV buffer size" lines (a model with sliding-window
    layers has two caches, a split model one buffer per device); 0 where the log has none."""
    return sum(float(m) for m in re.findall(r"KV buffer size =\s*" + NUMBER + r" MiB", log))


def parse_divergence(log: str) -> Divergence:
    """The figures of a --kl-divergence run's log."""
    return Divergence(ppl=_number(r"Mean PPL\(Q\)\s+:", log), kld=_number(r"Mean\s+KLD:", log),
                      same_top=_number(r"Same top p:", log), kld_p99=_number(r"99\.0%\s+KLD:", log),
                      kld_p999=_number(r"99\.9%\s+KLD:", log), kv_mib=kv_buffer_mib(log))


def base_run(model, text, chunks: int, base: Path | str, *, cache: str = "f16", threads: int = 2,
             timeout: float | None = None, env: dict | None = None, ctx: int = 512, args: tuple = ()) -> BaseRun:
    """Runs the f16 (or `cache`) cache over chunks of ctx tokens and writes its logits to `base`. env: extra
    environment; args: more llama-perplexity arguments (e.g. ("-ub", "1"))."""
    log = _run(model, text, chunks, base, ["-ctk", cache, "-ctv", cache, *map(str, args)], threads, timeout, env, ctx)
    return BaseRun(ppl=_number(r"Final estimate: PPL =", log), kv_mib=kv_buffer_mib(log))


def base_logits(model, text, chunks: int, base: Path | str, **kwargs) -> float:
    """base_run's PPL."""
    return base_run(model, text, chunks, base, **kwargs).ppl


def kl_divergence(model, text, chunks: int, base: Path | str, type_k: str, type_v: str | None = None, *,
                  threads: int = 2, timeout: float | None = None, env: dict | None = None,
                  ctx: int = 512, args: tuple = ()) -> Divergence:
    """Runs a type_k/type_v cache (type_v defaults to type_k) against the base logits of the same text, chunks and
    ctx. env: extra environment for the run (e.g. {"LLAMA_K_CENTER": "off"}); args: more llama-perplexity
    arguments (e.g. ("-ub", "64"))."""
    return parse_divergence(divergence_log(model, text, chunks, base, type_k, type_v, threads=threads,
                                           timeout=timeout, env=env, ctx=ctx, args=args))


def divergence_log(model, text, chunks: int, base: Path | str, type_k: str, type_v: str | None = None, *,
                   threads: int = 2, timeout: float | None = None, env: dict | None = None, ctx: int = 512,
                   args: tuple = ()) -> str:
    """kl_divergence's run, its whole log (stdout and stderr) returned."""
    return _run(model, text, chunks, base, ["-ctk", type_k, "-ctv", type_v or type_k, "--kl-divergence",
                                            *map(str, args)], threads, timeout, env, ctx)
