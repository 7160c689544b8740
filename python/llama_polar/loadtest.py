"""llama-server under load: N concurrent streaming clients, for a fixed time, against `llama-server --parallel P`
with a given K/V cache, prompts of mixed lengths, and some generations that run past a slot's context so that
context shift runs. What it reports per configuration: requests ok/failed, p50/p95 time to first token, p50/p95
time per generated token, generated tokens/s over the run, and the server's RSS after a warm-up request, a minute
into the load (sampled every 10 s) and at the end.

    with Server(model, "pq46", "pq46", parallel=4, ctx=2048) as server:
        stats = asyncio.run(drive(server.url, clients=8, duration=60, requests=mixed_requests(text, 512)))

Linux only for the RSS (/proc/<pid>/status).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import paths

CHARS_PER_TOKEN = 4   # tinyshakespeare with SmolLM2's tokenizer: about 3.6; prompts are sized with margin


@dataclass
class Result:
    ok: bool
    error: str = ""
    ttft: float | None = None                     # seconds from the request to its first generated text
    gaps: list[float] = field(default_factory=list)  # seconds between successive streamed tokens
    tokens: int = 0
    dropped: bool = False                         # the client left mid-stream on purpose (leaving_clients)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """llama-server on a free loopback port, with its log in a temporary file; `with` starts it and waits until
    /health answers, and stops it on exit."""

    def __init__(self, model: Path, type_k: str, type_v: str, parallel: int = 4, ctx: int = 2048, threads: int = 2,
                 env: dict[str, str] | None = None, extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [str(paths.tool("llama-server")), "-m", str(model), "--host", "127.0.0.1", "--port",
                     str(self.port), "-np", str(parallel), "-c", str(ctx), "-t", str(threads), "-fa", "on",
                     "-ctk", type_k, "-ctv", type_v, "--context-shift", "--no-webui",
                     # no host-memory prompt cache (it would grow RSS by design, up to 8 GiB by default)
                     "--cache-ram", "0", *extra]
        self.env = env
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        self.final_log = ""   # the log's text once the file is gone (__exit__)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if asyncio.run(_health(self.url)):
                return self
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"llama-server did not answer /health in 180 s:\n{self.log_text()[-3000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.final_log = self.log_text()   # the file goes; its text stays readable
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and asyncio.run(_health(self.url))

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc/<pid>/status")

    def log_text(self) -> str:
        path = Path(self.log.name)
        return path.read_text(errors="replace") if path.exists() else self.final_log

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        """Whether `text` appears in the log within `timeout` seconds: llama.cpp's logger thread writes a line after
        the request that caused it may already have been answered."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


async def _health(url: str) -> bool:
    import aiohttp
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


def mixed_requests(text: str, slot_ctx: int, seed: int = 0) -> list[dict]:
    """Request bodies for /completion: short, medium and long prompts cut from text, short and long generations;
    every long prompt with a long generation runs past slot_ctx tokens (context shift), no prompt alone fills it."""
    rng = np.random.default_rng(seed)
    shapes = [(0.05, 32), (0.25, 64), (0.5, 128), (0.6, slot_ctx)]   # prompt share of the slot, tokens to generate
    out = []
    for prompt_share, n_predict in shapes * 4:
        n_chars = int(prompt_share * slot_ctx * CHARS_PER_TOKEN * 0.8)
        start = int(rng.integers(0, max(1, len(text) - n_chars)))
        out.append({"prompt": text[start:start + n_chars], "n_predict": n_predict, "stream": True,
                    "cache_prompt": False, "ignore_eos": True, "temperature": 0.8, "seed": int(rng.integers(0, 2**31))})
    rng.shuffle(out)
    return out


async def one_request(session, url: str, body: dict, drop_after: int | None = None) -> Result:
    """One streamed /completion: ok when it ends with a stop event and no error. drop_after: the client closes the
    connection after that many tokens (a user who leaves), the result marked dropped."""
    import aiohttp
    t0 = time.monotonic()
    last = None
    res = Result(ok=False)
    try:
        async with session.post(f"{url}/completion", json=body) as r:
            if r.status != 200:
                return Result(ok=False, error=f"HTTP {r.status}: {(await r.text())[:200]}")
            async for raw in r.content:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return Result(ok=False, error=str(event["error"])[:200])
                now = time.monotonic()
                if event.get("content"):
                    if last is None:
                        res.ttft = now - t0
                    else:
                        res.gaps.append(now - last)
                    last = now
                    res.tokens += 1
                    if drop_after is not None and res.tokens >= drop_after:
                        res.dropped = True
                        return res      # leaving the block closes the connection (force_close: never pooled)
                if event.get("stop"):
                    res.ok = True
                    return res
        res.error = "the stream ended without a stop event"
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"
    return res


async def drive(url: str, clients: int, duration: float, requests: list[dict]) -> dict:
    """clients concurrent loops over the requests until duration seconds have passed (requests in flight then are
    finished); the statistics of every request."""
    import aiohttp
    results: list[Result] = []
    bodies = itertools.cycle(requests)
    deadline = time.monotonic() + duration

    async def client(session):
        while time.monotonic() < deadline:
            results.append(await one_request(session, url, next(bodies)))

    t0 = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=600)
    # a connection per request: llama-server may close one after a streamed response, and a pooled connection it
    # closed fails the next request with "Can not write request body"
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return summarize(results, time.monotonic() - t0)


async def leaving_clients(url: str, prompts: list[str], seed: int = 0) -> list[Result]:
    """One client per prompt, two at a time, each asking for an endless generation and leaving after a random
    number of tokens (1-16): a server that does not notice keeps their slots busy."""
    import aiohttp
    rng = np.random.default_rng(seed)
    pending = [(p, int(rng.integers(1, 17))) for p in prompts]
    results: list[Result] = []

    async def client(session):
        while pending:
            prompt, drop_after = pending.pop()
            body = {"prompt": prompt, "n_predict": 100000, "stream": True, "ignore_eos": True, "cache_prompt": False}
            results.append(await one_request(session, url, body, drop_after))

    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300), connector=connector) as session:
        await asyncio.gather(client(session), client(session))
    return results


async def drive_sampling_rss(server: "Server", clients: int, duration: float, requests: list[dict],
                             every: float = 10.0, steady_after: float = 60.0) -> dict:
    """drive() with the server's RSS sampled every `every` seconds: rss_samples [(seconds, MiB)], and rss_1min, the
    first sample `steady_after` seconds into the load (the last sample of a shorter run), the steady state the load
    must not grow from."""
    samples: list[tuple[float, float]] = []

    async def sample():
        t0 = time.monotonic()
        while True:
            samples.append((time.monotonic() - t0, server.rss_mib()))
            await asyncio.sleep(every)

    sampler = asyncio.create_task(sample())
    try:
        stats = await drive(server.url, clients, duration, requests)
    finally:
        sampler.cancel()
    later = [mib for t, mib in samples if t >= steady_after]
    return {**stats, "rss_samples": samples, "rss_1min": later[0] if later else samples[-1][1]}


def summarize(results: list[Result], seconds: float) -> dict:
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok and not r.dropped]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    gaps = [g for r in ok for g in r.gaps]

    def pct(values, q):
        return float(np.percentile(values, q)) if values else float("nan")

    return {"ok": len(ok), "failed": len(failed), "dropped": sum(r.dropped for r in results),
            "errors": sorted({r.error for r in failed}),
            "ttft_p50": pct(ttft, 50), "ttft_p95": pct(ttft, 95), "token_p50": pct(gaps, 50),
            "token_p95": pct(gaps, 95), "tokens_per_s": sum(r.tokens for r in ok) / seconds, "seconds": seconds}


def run(model: Path, type_k: str, type_v: str, text: str, clients: int, duration: float, parallel: int = 4,
        ctx: int = 2048, threads: int = 2, env: dict[str, str] | None = None) -> dict:
    """One configuration: start the server, warm it up with one request, drive it, and check that it is still
    serving; the statistics with the RSS (MiB) after the warm-up and at the end."""
    requests = mixed_requests(text, ctx // parallel)
    with Server(model, type_k, type_v, parallel, ctx, threads, env) as server:
        warm = asyncio.run(_one(server.url, {**requests[0], "n_predict": 8}))
        if not warm.ok:
            raise RuntimeError(f"the warm-up request failed: {warm.error}")
        rss_start = server.rss_mib()
        stats = asyncio.run(drive_sampling_rss(server, clients, duration, requests))
        stats.update(rss_start=rss_start, rss_end=server.rss_mib(), alive=server.alive(),
                     context_shifts=server.log_text().count("slot context shift"), type_k=type_k, type_v=type_v)
    return stats


async def _one(url: str, body: dict) -> Result:
    import aiohttp
    async with aiohttp.ClientSession() as session:
        return await one_request(session, url, body)


async def bad_requests(url: str, slot_ctx: int, text: str) -> dict[str, tuple[int, str]]:
    """Requests a server must refuse or survive, sent while others are served: malformed JSON, a prompt past a
    slot's context, a prompt of the wrong type, and a client that drops a stream after its first tokens. For each:
    (HTTP status, the start of the error message); the dropped stream: (HTTP status, "slot freed" or "slot still
    busy"), as the server's own /slots says within DROP_GRACE seconds of the drop (its request asks for far more
    tokens than that time allows, so only a server that notices the drop frees the slot)."""
    import aiohttp
    out = {}
    n_long = 4 * slot_ctx * CHARS_PER_TOKEN   # characters: about four slots' worth of tokens
    long_prompt = (text * (1 + n_long // max(1, len(text))))[:n_long]
    cases = {"malformed json": {"data": b"{\"prompt\": \"Hello", "headers": {"Content-Type": "application/json"}},
             "prompt past the context": {"json": {"prompt": long_prompt, "n_predict": 4}},
             "prompt of the wrong type": {"json": {"prompt": {"not": "text"}, "n_predict": 4}}}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for name, kwargs in cases.items():
            async with session.post(f"{url}/completion", **kwargs) as r:
                body = await r.text()
                try:
                    message = json.loads(body)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = body
                out[name] = (r.status, message[:160])
        slot = 0      # pinned, so that /slots tells which slot the stream holds
        async with session.post(f"{url}/completion", json={"prompt": text[:400], "n_predict": 100000,
                                                           "stream": True, "ignore_eos": True, "id_slot": slot}) as r:
            seen = 0
            async for raw in r.content:
                seen += raw.startswith(b"data: ")
                if seen >= 3:
                    break
            task = await _slot_task(session, url, slot)
            r.close()   # drops the connection mid-stream
            freed = await _slot_freed(session, url, slot, task, DROP_GRACE)
            out["dropped stream"] = (r.status, "slot freed" if freed else "slot still busy")
    return out


DROP_GRACE = 10.0   # seconds a server has to free the slot of a dropped stream


async def busy_slots(url: str, grace: float = 0.0) -> int:
    """How many slots the server's /slots says are processing, once they are all idle or `grace` seconds have
    passed."""
    import aiohttp
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def busy() -> int:
            return sum(bool(s["is_processing"]) for s in await _slots(session, url))
        return await _poll(busy, lambda n: n == 0, grace)


async def _slots(session, url: str) -> list[dict]:
    """The server's /slots: one dict per slot."""
    async with session.get(f"{url}/slots") as r:
        return await r.json()


async def _poll(read, done, grace: float):
    """read() every 0.2 s until done(its value) or `grace` seconds have passed; the last value read."""
    deadline = time.monotonic() + grace
    while True:
        value = await read()
        if done(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(0.2)


async def _slot_task(session, url: str, slot: int) -> int | None:
    """The task slot `slot` is processing, from the server's /slots, or None if it is idle."""
    state = next(s for s in await _slots(session, url) if s["id"] == slot)
    return state.get("id_task") if state["is_processing"] else None


async def _slot_freed(session, url: str, slot: int, task: int | None, grace: float) -> bool:
    """Whether slot `slot` stops processing `task` within `grace` seconds (idle, or on another task)."""
    return await _poll(lambda: _slot_task(session, url, slot), lambda t: t != task, grace) != task
