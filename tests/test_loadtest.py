"""llama-server under load (llama_polar.loadtest), the short version that `make test` runs: concurrent streaming
clients against --parallel 4 with a polar cache, some generating past a slot's context, while bad requests arrive;
no request fails, the bad ones get clear errors, the server keeps serving and its RSS stays bounded. The long runs
and their table: `llama-polar loadtest` (docs/measurements.md)."""
from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys

from llama_polar import loadtest


def test_mixed_requests_run_past_a_slot_but_no_prompt_fills_it():
    text = "To be, or not to be, that is the question. " * 2000
    reqs = loadtest.mixed_requests(text, slot_ctx=256)
    approx_tokens = [len(r["prompt"]) / 3.5 for r in reqs]     # SmolLM2 on English text: 3.5-4 characters a token
    assert max(approx_tokens) < 256
    assert any(t + r["n_predict"] > 256 for t, r in zip(approx_tokens, reqs))   # context shift
    assert len({r["n_predict"] for r in reqs}) > 1 and all(r["stream"] for r in reqs)


def test_summary_counts_failures_and_percentiles():
    results = [loadtest.Result(ok=True, ttft=0.1, gaps=[0.01, 0.03], tokens=3),
               loadtest.Result(ok=True, ttft=0.3, gaps=[0.02], tokens=2),
               loadtest.Result(ok=False, error="HTTP 500: boom")]
    s = loadtest.summarize(results, seconds=2.0)
    assert (s["ok"], s["failed"], s["errors"]) == (2, 1, ["HTTP 500: boom"])
    assert math.isclose(s["ttft_p50"], 0.2) and math.isclose(s["token_p50"], 0.02)
    assert math.isclose(s["tokens_per_s"], 2.5)
    left = loadtest.summarize(results + [loadtest.Result(ok=False, dropped=True, tokens=4)], seconds=2.0)
    assert (left["ok"], left["failed"], left["dropped"]) == (2, 1, 1)    # a client that left is not a failure


def test_the_steady_rss_is_the_first_sample_after_the_warm_up(monkeypatch):
    rss = iter(range(100, 200, 10))

    class FakeServer:
        url = "http://unused"

        def rss_mib(self):
            return next(rss)

    async def load(url, clients, duration, requests):
        await asyncio.sleep(duration)
        return {"ok": 1}

    monkeypatch.setattr(loadtest, "drive", load)
    stats = asyncio.run(loadtest.drive_sampling_rss(FakeServer(), 1, 0.55, [], every=0.1, steady_after=0.25))
    times = [t for t, _ in stats["rss_samples"]]
    first_steady = next(mib for t, mib in stats["rss_samples"] if t >= 0.25)
    assert len(times) >= 5 and stats["rss_1min"] == first_steady and first_steady not in (100, stats["rss_samples"][-1][1])


def test_server_under_load_with_bad_requests(bin_dir, model_path, text_path):
    text = text_path.read_text()
    ctx, parallel, clients = 1024, 4, 6
    slot_ctx = ctx // parallel
    with loadtest.Server(model_path, "pq46", "pq46", parallel=parallel, ctx=ctx) as server:
        warm = asyncio.run(loadtest._one(server.url, {"prompt": "Hello", "n_predict": 4, "stream": True}))
        assert warm.ok, warm.error
        rss_start = server.rss_mib()

        async def load_and_abuse():
            return await asyncio.gather(
                loadtest.drive_sampling_rss(server, clients, 15, loadtest.mixed_requests(text, slot_ctx), every=4),
                loadtest.bad_requests(server.url, slot_ctx, text))

        stats, bad = asyncio.run(load_and_abuse())
        log = server.log_text()
        assert server.alive(), log[-3000:]
        rss_end = server.rss_mib()

    assert stats["failed"] == 0, stats["errors"]
    assert stats["ok"] >= clients
    assert log.count("slot context shift") >= 1, "no generation ran past a slot's context"
    for name in ("malformed json", "prompt past the context", "prompt of the wrong type"):
        status, message = bad[name]
        assert status == 400 and message, (name, status, message)   # a client error, said in words
    assert bad["dropped stream"] == (200, "slot freed"), "the server kept generating for a client that left"
    assert rss_end - rss_start < 64, (rss_start, rss_end)    # MiB: the KV cache is allocated before the warm-up
    assert len(stats["rss_samples"]) >= 3
    assert all(abs(mib - rss_start) < 64 for _, mib in stats["rss_samples"]), stats["rss_samples"]


def test_loadtest_command_prints_its_table(bin_dir, model_path, tmp_path):
    out = tmp_path / "load.json"
    run = subprocess.run([sys.executable, "-m", "llama_polar", "loadtest", "--model", str(model_path), "--configs",
                          "pq46", "--clients", "2", "--duration", "5", "--ctx", "512", "--json", str(out)],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert re.search(r"^\| pq46 \| \d+ \| 0 \|( [\d.]+ \|){8} \d+ \|$", run.stdout, flags=re.M), run.stdout
    row, = json.loads(out.read_text())
    assert row["ok"] >= 2 and row["rss_start"] > 0 and row["rss_samples"]


def test_server_refuses_a_state_file_from_another_cache_or_a_truncated_one(bin_dir, model_path, tmp_path):
    import aiohttp

    async def post(url, path, body):
        async with aiohttp.ClientSession() as session:
            async with session.post(url + path, json=body) as r:
                return r.status, await r.text()

    save = ("--slot-save-path", str(tmp_path))
    with loadtest.Server(model_path, "pq46", "pq46", parallel=2, ctx=1024, extra=save) as server:
        assert asyncio.run(post(server.url, "/completion", {"prompt": "Hello there", "n_predict": 8, "id_slot": 0}))[0] == 200
        assert asyncio.run(post(server.url, "/slots/0?action=save", {"filename": "pq46.bin"}))[0] == 200
        state = (tmp_path / "pq46.bin").read_bytes()
        (tmp_path / "truncated.bin").write_bytes(state[:len(state) // 2])
        status, body = asyncio.run(post(server.url, "/slots/1?action=restore", {"filename": "truncated.bin"}))
        assert status == 400 and "invalid slot save file" in body
        assert asyncio.run(post(server.url, "/slots/1?action=restore", {"filename": "pq46.bin"}))[0] == 200
        assert server.alive()
    with loadtest.Server(model_path, "q4_0", "q4_0", parallel=2, ctx=1024, extra=save) as server:
        status, body = asyncio.run(post(server.url, "/slots/0?action=restore", {"filename": "pq46.bin"}))
        assert status == 400 and "invalid slot save file" in body
        assert server.wait_for_log("error loading sequence state file"), server.log_text()[-2000:]  # the reason
        assert asyncio.run(loadtest._one(server.url, {"prompt": "Hello", "n_predict": 4, "stream": True})).ok


def test_clients_that_leave_mid_stream_free_their_slots(bin_dir, model_path, text_path):
    """Eight clients ask for endless generations and leave after 1-16 tokens while three others are served: no
    request fails, and once the load stops every slot is idle (the server's /slots) and the RSS is back at its idle
    value."""
    text = text_path.read_text()
    with loadtest.Server(model_path, "pq46", "pq37", parallel=4, ctx=1024) as server:
        warm = asyncio.run(loadtest._one(server.url, {"prompt": "Hello", "n_predict": 4, "stream": True}))
        assert warm.ok, warm.error
        rss_idle = server.rss_mib()

        async def load_and_leave():
            return await asyncio.gather(
                loadtest.drive(server.url, 3, 15, loadtest.mixed_requests(text, 256)),
                loadtest.leaving_clients(server.url, [text[i * 300:i * 300 + 200] for i in range(8)], seed=1))

        stats, left = asyncio.run(load_and_leave())
        busy = asyncio.run(loadtest.busy_slots(server.url, grace=loadtest.DROP_GRACE))
        rss_end = server.rss_mib()
        assert server.alive(), server.log_text()[-3000:]
    assert stats["failed"] == 0 and stats["ok"] >= 3, stats
    assert len(left) == 8 and all(r.dropped and 1 <= r.tokens <= 16 for r in left), left
    assert busy == 0, "slots still generating for clients that left"
    assert rss_end - rss_idle < 64, (rss_idle, rss_end)    # MiB
