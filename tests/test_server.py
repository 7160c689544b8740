"""llama-server with a PolarQuant cache serving concurrent requests (loopback only, bounded in count and time)."""
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, path, body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return response.status, json.loads(response.read())


@pytest.fixture
def polar_server(bin_dir, model_path, tmp_path):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([str(bin_dir / "llama-server"), "-m", str(model_path), "--host", "127.0.0.1", "--port",
                             str(port), "--parallel", "4", "-c", "2048", "-ctk", "pq46", "-ctv", "pq42", "-fa", "on",
                             "-t", "2", "-v"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited with {proc.returncode}: {(tmp_path / 'server.log').read_text()[-2000:]}")
            try:
                if request(port, "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama-server did not become healthy within 120 s")
            time.sleep(0.5)
        yield port, tmp_path / "server.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_parallel_requests_with_a_polar_cache(polar_server):
    port, log_path = polar_server
    prompts = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The three primary colors are"]
    results = [None] * len(prompts)

    def run(i):
        results[i] = request(port, "/completion", {"prompt": prompts[i], "n_predict": 24, "temperature": 0, "ignore_eos": True,
                                                    "cache_prompt": False})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(r is not None for r in results), "a request did not finish"
    for status, body in results:
        assert status == 200 and len(body["content"].strip()) > 0
        assert body["tokens_predicted"] == 24
    log = log_path.read_text()
    assert "K (pq46)" in log and "V (pq42)" in log
    # the four requests were in flight together: more than one slot was used
    slots = {int(s) for s in re.findall(r"slot\s+launch_slot_: id\s+(\d+)", log)}
    assert len(slots) > 1, slots
