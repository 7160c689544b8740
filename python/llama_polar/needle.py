"""A needle in a long text: one sentence carrying a five-digit number, placed at a depth of a stretch of the
evaluation text, and the same sentence's beginning at the end. The model reads the whole stretch through the cache
(llama-cpp-python on the polar build, flash attention on, ubatches of 512 as llama-completion takes them), then the
number's tokens one at a time as decoding reads them: the cache finds the needle when each is the model's first
choice (what greedy decoding writes), and the number's log-probability says by how much it won or lost, which a
found/missed count of a few prompts cannot.

    from llama_polar import needle
    p = needle.prompt(text, n_chars=24000, depth=0.5, number=48213)
    hit = needle.find(model, cache_config.parse("pq46"), p, 48213, ctx=8192)
    # Hit(number, answer, n_prompt, found, logprob)
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache_config import CacheConfig

NEEDLE = "The secret number of the library is {number}."
QUESTION = "\n\nThe secret number of the library is"
CHARS_PER_TOKEN = 3.0      # Paradise Lost: 3.34 characters per SmolLM2 token; fewer, so the prompt fits the context


@dataclass(frozen=True)
class Hit:
    number: int
    answer: str       # the model's first choice at each of the number's tokens, as text
    n_prompt: int     # the prompt's tokens
    found: bool       # every one of the number's tokens was the first choice
    logprob: float    # log-probability of the number's tokens, natural log


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


@contextmanager
def _environment(env: dict[str, str]):
    """env set while llama.cpp reads it (the cache's settings are read when a context is made), then put back."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def find(model: Path | str, config: CacheConfig, text: str, number: int, ctx: int, threads: int = 2,
         centers: Path | None = None) -> Hit:
    """The prompt text through the cache of config, then the number teacher-forced: its tokens' log-probability and
    whether each was the first choice. A fresh context per prompt, so no state (centers, rows) carries over."""
    from .llama import Llama, llama_cpp     # loads llama.cpp: only when a needle is looked for
    from .simulate import log_softmax

    with _environment(config.env(centers)):
        llm = Llama(model_path=str(model), n_ctx=ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                    n_threads_batch=threads, type_k=config.type_k, type_v=config.type_v, flash_attn=True,
                    verbose=False)
    try:
        tokens = llm.tokenize(text.encode(), add_bos=True)
        answer = llm.tokenize(f" {number}".encode(), add_bos=False, special=False)
        if len(tokens) + len(answer) > ctx:
            raise ValueError(f"the prompt's {len(tokens)} tokens and the answer's {len(answer)} exceed ctx {ctx}")
        llm.eval(tokens)
        logprob, firsts = 0.0, []
        for i, t in enumerate(answer):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
            logprob += float(log_softmax(logits.astype(np.float64))[t])
            firsts.append(int(logits.argmax()))
            if i + 1 < len(answer):         # the next token's logits; none are read after the last
                llm.eval([t])
        shown = llm.detokenize(firsts).decode("utf-8", errors="replace")
        return Hit(number, shown.strip(), len(tokens), firsts == answer, logprob)
    finally:
        llm.close()
