"""Serving with PolarQuant caches (loopback only, bounded in count and time): llama-server with concurrent
requests, and llama-cpp-python's OpenAI-compatible server through llama_polar.server, cache types by name."""
import contextlib
import json
import re
import socket
import subprocess
import sys
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


@contextlib.contextmanager
def serving(cmd, port, log_path, health, env=None):
    """Run a server until `health` answers 200 (or fail with its log), and stop it afterwards."""
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{cmd[0]} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if request(port, health, timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{' '.join(map(str, cmd[:3]))} did not answer {health} within 120 s")
            time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def polar_server(bin_dir, model_path, tmp_path):
    port = free_port()
    cmd = [str(bin_dir / "llama-server"), "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port),
           "--parallel", "4", "-c", "2048", "-ctk", "pq46", "-ctv", "pq42", "-fa", "on", "-t", "2", "-v"]
    with serving(cmd, port, tmp_path / "server.log", "/health"):
        yield port, tmp_path / "server.log"


def python_server_command(model_path, port, *options):
    return [sys.executable, "-m", "llama_polar.server", "--model", str(model_path), "--host", "127.0.0.1", "--port",
            str(port), "--n_ctx", "512", "--n_threads", "2", *options]


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


def test_python_server_answers_an_openai_completion_with_a_polar_cache(bin_dir, model_path, tmp_path):
    port = free_port()
    cmd = python_server_command(model_path, port, "--type_k", "pq46", "--type_v", "pq42", "--flash_attn", "true")
    with serving(cmd, port, tmp_path / "server.log", "/v1/models"):
        status, body = request(port, "/v1/completions", {"prompt": "The quick brown fox", "max_tokens": 8,
                                                         "temperature": 0})
        status_chat, chat = request(port, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8, "temperature": 0})
    assert status == 200 and body["object"] == "text_completion"
    assert len(body["choices"][0]["text"].strip()) > 0 and 0 < body["usage"]["completion_tokens"] <= 8
    assert status_chat == 200 and len(chat["choices"][0]["message"]["content"].strip()) > 0
    log = (tmp_path / "server.log").read_text()
    assert "K (pq46)" in log and "V (pq42)" in log, log[-3000:]       # llama.cpp's cache line: the types it made


@pytest.mark.parametrize("options,message", [
    (["--type_k", "pq46"], "type_k='pq46' is a PolarQuant cache type and needs flash attention: pass --flash_attn"),
    (["--type_k", "pq99", "--flash_attn", "true"], "type_k: unknown cache type 'pq99'; known: f32, f16"),
    (["--type_v", "q4_0"], "type_v='q4_0' is a quantized V cache type and needs flash attention"),
])
def test_python_server_refuses_what_llama_cpp_would_not_run(bin_dir, model_path, options, message):
    result = subprocess.run(python_server_command(model_path, free_port(), *options), capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Uvicorn running" not in result.stderr + result.stdout


def test_serve_is_the_python_server(bin_dir):
    result = subprocess.run([sys.executable, "-m", "llama_polar", "serve", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: llama-polar serve ")
    assert "K cache type: f32" in result.stdout and "--config_file" in result.stdout
