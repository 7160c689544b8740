"""A needle in a long text: one sentence carrying a five-digit number, placed at a depth of a stretch of the
evaluation text, and the same sentence's beginning at the end; a cache finds the needle when greedy decoding
completes the number. The model reads the whole stretch through the cache, so the number is retrieved from a key
and value written thousands of positions earlier, and decode reads every position of the cache.

    from llama_polar import needle
    p = needle.prompt(text, n_chars=24000, depth=0.5, number=48213)
    hit = needle.find(model, cache_config.parse("pq46"), p, ctx=8192)     # Hit(number, answer, n_prompt, found)
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .cache_config import CacheConfig
from .paths import tool

NEEDLE = "The secret number of the library is {number}."
QUESTION = "\n\nThe secret number of the library is"
CHARS_PER_TOKEN = 3.0      # Paradise Lost: 3.34 characters per SmolLM2 token; fewer, so the prompt fits the context


@dataclass(frozen=True)
class Hit:
    number: int
    answer: str       # what the model wrote after the question
    n_prompt: int     # the prompt's tokens, as llama.cpp counted them
    found: bool


def numbers(count: int, seed: int = 0) -> list[int]:
    """count five-digit numbers, the same for every cache of a run."""
    rng = random.Random(seed)
    return [rng.randrange(10000, 100000) for _ in range(count)]


def prompt(text: str, n_chars: int, depth: float, number: int) -> str:
    """The first n_chars of text (cut at a line end) with the needle on its own line at `depth` (0: the start, 1: the
    end, at the nearest line break), then the question."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth must be within 0..1, not {depth}")
    hay = text[:n_chars]
    hay = hay[:hay.rfind("\n") + 1] or hay
    at = int(depth * len(hay))
    at = hay.rfind("\n", 0, at) + 1 if at < len(hay) else len(hay)
    return hay[:at] + NEEDLE.format(number=number) + "\n" + hay[at:] + QUESTION


def chars_for(ctx: int, answer_tokens: int = 16) -> int:
    """Characters of text whose prompt fits a context of ctx tokens with room for the answer."""
    return int((ctx - answer_tokens - 32) * CHARS_PER_TOKEN)


def find(model: Path | str, config: CacheConfig, text: str, number: int, ctx: int, threads: int = 2,
         timeout: float | None = None, centers: Path | None = None) -> Hit:
    """Greedy decoding of the prompt text through the cache of config (llama-completion, flash attention on)."""
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompt.txt"
        prompt_file.write_text(text)
        cmd = [str(tool("llama-completion")), "-m", str(model), "-f", str(prompt_file), "-c", str(ctx), "-n", "8",
               "--temp", "0", "-no-cnv", "--no-display-prompt", "-fa", "on", "-t", str(threads),
               "-ctk", config.type_k, "-ctv", config.type_v]
        out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                             env={**os.environ, **config.env(centers)})
    if out.returncode != 0:
        raise RuntimeError(f"llama-completion failed for {config.spec}:\n{out.stderr[-2000:]}")
    n_prompt = re.search(r"prompt eval time =.*?/\s*(\d+) tokens", out.stderr)
    answer = out.stdout.strip()
    digits = re.match(r"\s*(\d+)", answer)
    return Hit(number, answer, int(n_prompt[1]) if n_prompt else 0, bool(digits) and int(digits[1]) == number)
