"""The Metal kernels, checked on Linux through a metal_stdlib stand-in (tests/metal/metal_stdlib) and clang >= 16.

* The source checked is what a Mac compiles: scripts/metal_embed.py runs ggml_polar/metal/flatten.cmake (the
  configure-time step of the patched ggml-metal CMakeLists.txt) and then ggml-metal's own embed steps.
* Syntax: the embedded polar.metal and the upstream kernel files next to it compile with -fsyntax-only, which
  instantiates every explicit template: every set_rows, cpy, kv->f16 and flash-attention vec instance.
* Parity: tests/metal/polar_shim_run.cpp runs the Metal quantize, dequantize (4x4 and t4), the set_rows, cpy and
  kv->f16 kernels and the FA-vec dot on the CPU, on the same inputs as the C library, and the codes and decoded
  values must be identical.
Not checked here (see docs/metal.md): address spaces, threadgroup memory limits, simdgroup execution, GPU float
subnormal flushing; those need Apple hardware (test-backend-ops -b Metal).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llama_polar import TYPES, native

ROOT = Path(__file__).resolve().parent.parent
SHIM_DIR = ROOT / "tests" / "metal"
TREE = ROOT / "build" / "src" / "llama.cpp"
sys.path.insert(0, str(ROOT / "scripts"))
import metal_embed  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "metal_emu"))
import backend_ops  # noqa: E402
import gen_kernels  # noqa: E402

CLANG_FLAGS = ["-std=c++14", "-Werror=c++17-extensions", "-I", str(SHIM_DIR), "-DGGML_METAL_EMBED_LIBRARY", "-Wno-unknown-attributes",
               "-Wno-unknown-pragmas", "-Wno-duplicate-decl-specifier"]
# Upstream kernel files the polar library builds on (its own includes) or sits beside: they must still compile,
# which also shows the stand-in is good enough to catch real errors in the same constructs.
UPSTREAM_KINDS = ["fa_aux", "fa_vec_f16", "fa_vec_q8_0", "quantize"]
INSTANCES_BEGIN = "// ---- ggml_polar: polar-instances.metal ----"
INSTANCES_END = "// ---- end of polar-instances.metal ----"


def find_clang() -> str:
    try:
        return backend_ops.find_clang()
    except SystemExit as e:
        pytest.fail(str(e))


def for_clang(text: str) -> str:
    """What the stand-in cannot express: [[host_name]] on explicit instantiations (clang rejects it there),
    [[threadgroup(N)]] (its keyword is defined away), and function constants (made ordinary statics)."""
    return gen_kernels.FUNCTION_CONSTANT.sub(r"static \1 \2 = \1();", gen_kernels.without_stand_in_attributes(text))


@pytest.fixture(scope="session")
def clang():
    return find_clang()


@pytest.fixture(scope="session")
def embedded_polar(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("metal")
    return metal_embed.embed(TREE, "polar", metal_embed.flatten_polar(tmp / "polar.metal"))


def syntax_check(clang: str, text: str, path: Path) -> subprocess.CompletedProcess:
    path.write_text(for_clang(text))
    return subprocess.run([clang, *CLANG_FLAGS, "-include", "metal_stdlib", "-fsyntax-only", str(path)],
                          capture_output=True, text=True)


def test_flattened_polar_metal_is_self_contained(tmp_path):
    # before the embed step, the only includes left are ggml-metal's own, which that step inlines; the compile
    # tests below run in a folder with nothing else in it, so an unresolved include would fail them too
    flat = metal_embed.flatten_polar(tmp_path / "polar.metal").read_text()
    includes = re.findall(r'^\s*#\s*include\s*"([^"]+)"', flat, flags=re.M)
    assert includes == ["common.h", "dequantize.h", "fa_vec_common.metal"]
    # the generated tables came in whole, from the generated header, and the generated instance list with them
    header = (ROOT / "ggml_polar" / "polar-codebooks.h").read_text()
    table = re.search(r"PQ_TABLE float pq_cos\[\d+\] = \{[^}]*\};", header).group(0)
    assert table in flat
    assert (ROOT / "ggml_polar" / "metal" / "polar-instances.metal").read_text().split("\n", 2)[2] in flat


def test_embed_script_writes_the_checked_text(embedded_polar, tmp_path):
    out = tmp_path / "polar.metal"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "metal_embed.py"), "--kind", "polar", "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_text() == embedded_polar
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "metal_embed.py"), "--kind", "no_such_kernel",
                          "--out", str(tmp_path / "x.metal")], capture_output=True, text=True)
    assert bad.returncode == 1 and "no kernel source" in bad.stderr


def test_flattening_is_what_the_patched_cmake_runs():
    cmake = (TREE / "ggml" / "src" / "ggml-metal" / "CMakeLists.txt").read_text()
    assert "flatten.cmake" in cmake and "kernels/polar.metal" in cmake


def test_embedded_polar_metal_compiles(clang, embedded_polar, tmp_path):
    result = syntax_check(clang, embedded_polar, tmp_path / "polar.cpp")
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("kind", UPSTREAM_KINDS)
def test_upstream_kernel_files_compile(clang, kind, tmp_path):
    result = syntax_check(clang, metal_embed.embed(TREE, kind), tmp_path / f"{kind}.cpp")
    assert result.returncode == 0, result.stderr[-4000:]


def test_syntax_check_catches_a_broken_instance(clang, embedded_polar, tmp_path):
    # a decoder with the wrong signature in one flash-attention instance must fail the check
    broken = embedded_polar.replace("block_q8_0, 8, dequantize_q8_0_t4, 64, 64, 2>",
                                    "block_q8_0, 8, dequantize_q8_0, 64, 64, 2>", 1)
    assert broken != embedded_polar
    result = syntax_check(clang, broken, tmp_path / "broken.cpp")
    assert result.returncode != 0 and "error" in result.stderr


def test_every_polar_kernel_name_the_host_asks_for_exists(embedded_polar):
    names = set(re.findall(r'host_name\("([^"]+)"\)', embedded_polar))
    for t in TYPES:
        expected = {f"kernel_set_rows_f32_i64_{t}", f"kernel_set_rows_f32_i32_{t}", f"kernel_cpy_f32_{t}",
                    f"kernel_cpy_{t}_f32", f"kernel_flash_attn_ext_kv_{t}_f16"}
        for dk in (64, 128, 256):
            splits = [f"{t}_{v}" for v in TYPES if v != t]                # polar K with another polar V
            for pair in (t, f"f16_{t}", f"q8_0_{t}", f"{t}_f16", f"{t}_q8_0", *splits):
                expected.add(f"kernel_flash_attn_ext_vec_{pair}_dk{dk}_dv{dk}")
        assert expected <= names, sorted(expected - names)
    assert "kernel_flash_attn_ext_kv_f16_f16" in embedded_polar
    assert "kernel_flash_attn_ext_kv_exact_f16" in embedded_polar   # exact rows, any cache type


@pytest.mark.parametrize("source", ["ggml-metal-device.cpp", "ggml-metal-ops.cpp"])
def test_patched_metal_host_sources_compile(source):
    # the dispatch changes (use_kv_f16, per-side kv->f16 pipelines, asymmetric vec names) are plain C++; the
    # Objective-C part (supports_op, library registration) needs Apple's SDK
    ggml = TREE / "ggml"
    result = subprocess.run(["c++", "-std=c++17", "-fsyntax-only", "-I", str(ggml / "include"), "-I", str(ggml / "src"),
                             "-I", str(ggml / "src" / "ggml-metal"), str(ggml / "src" / "ggml-metal" / source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


# ---------------------------------------------------------------------------------------------------------------
# Parity with the C library
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def shim_runner(clang, embedded_polar, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("shim")
    a, b = embedded_polar.index(INSTANCES_BEGIN), embedded_polar.index(INSTANCES_END)
    source = tmp / "polar_device.metal.cpp"
    source.write_text(for_clang(embedded_polar[:a] + embedded_polar[b:]))
    exe = tmp / "polar_shim_run"
    build = subprocess.run([clang, *CLANG_FLAGS, "-O1", "-ffp-contract=off", f'-DPOLAR_EMBEDDED_SOURCE="{source}"',
                            str(SHIM_DIR / "polar_shim_run.cpp"), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    return exe


def parity_values(rng) -> np.ndarray:
    rows = [rng.standard_normal((48, 64)).astype(np.float32),
            (rng.standard_normal((8, 64)) * 1e4).astype(np.float32),       # radius past fp16: saturates
            (rng.standard_normal((8, 64)) * 1e-6).astype(np.float32),      # tiny radii, subnormal fp16
            np.zeros((2, 64), np.float32)]
    special = np.zeros((6, 64), np.float32)
    special[0, ::3] = np.nan
    special[1, 5] = np.inf
    special[2, 7] = -np.inf
    special[3, :] = -0.0
    special[4, 0] = 3e38
    special[5, 1::2] = 1e-40                                               # float subnormals
    rows.append(special)
    rows.append(rng.standard_normal((8, 64)).astype(np.float32) * np.float32(0.3))
    return np.concatenate(rows)


@pytest.mark.parametrize("name", list(TYPES))
def test_metal_codec_matches_the_c_library(shim_runner, tmp_path, name):
    rng = np.random.default_rng(sum(map(ord, name)))
    values = parity_values(rng)
    query = rng.standard_normal(64).astype(np.float32)
    type_size = TYPES[name].type_size
    encoded = native.quantize(values, name).reshape(len(values), type_size)
    # decode both the encoder's output and arbitrary bytes (every code, every radius bit pattern)
    random_blocks = rng.integers(0, 256, size=(64, type_size), dtype=np.uint8)
    blocks = np.concatenate([encoded, random_blocks])
    (tmp_path / "values.f32").write_bytes(values.tobytes())
    (tmp_path / "blocks.bin").write_bytes(blocks.tobytes())
    (tmp_path / "query.f32").write_bytes(query.tobytes())
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run([str(shim_runner), name, str(tmp_path / "values.f32"), str(tmp_path / "blocks.bin"),
                          str(tmp_path / "query.f32"), str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr

    def read(file, dtype):
        return np.fromfile(out / file, dtype=dtype)

    # identical codes: the device function, the cache-write kernel (rows land reversed) and the f32 -> polar copy
    assert np.array_equal(read("quantize.bin", np.uint8).reshape(encoded.shape), encoded)
    assert np.array_equal(read("set_rows.bin", np.uint8).reshape(encoded.shape), encoded[::-1])
    assert np.array_equal(read("cpy_f32.bin", np.uint8).reshape(encoded.shape), encoded)

    # identical decoded values, bit for bit (NaN where the bytes say so: a NaN fp16 radius)
    ref = native.dequantize(blocks.reshape(-1), name).reshape(len(blocks), 64)
    ref_bits = ref.view(np.uint32)
    for file in ("deq4x4.f32", "deq_t4.f32", "cpy_pq.f32"):
        got = read(file, np.float32).reshape(ref.shape)
        same = (got.view(np.uint32) == ref_bits) | (np.isnan(got) & np.isnan(ref))
        assert same.all(), (file, np.argwhere(~same)[:5])
    with np.errstate(over="ignore"):
        ref_half = ref.astype(np.float16)
    for file in ("deq_t4.f16", "kv_f16.f16"):
        got = read(file, np.float16).reshape(ref.shape)
        same = (got.view(np.uint16) == ref_half.view(np.uint16)) | (np.isnan(got) & np.isnan(ref_half))
        assert same.all(), (file, np.argwhere(~same)[:5])

    # the FA-vec dot reads K and q as half; against the C dot product of the float values:
    # |metal - c| <= 2^-9 * sum |k_i q_i| (two half roundings per product) + 1e-6 * (1 + |c|)
    finite = np.isfinite(ref).all(axis=1) & (np.abs(ref).max(axis=1) < 6e4)
    dots = read("dot.f32", np.float32)
    for b in np.flatnonzero(finite):
        c = native.vec_dot(blocks[b], query, name)
        bound = 2.0 ** -9 * float(np.abs(ref[b].astype(np.float64) * query).sum()) + 1e-6 * (1 + abs(c))
        assert abs(float(dots[b]) - c) <= bound, (b, dots[b], c, bound)


def test_metal_exact_rows_overwrite_their_cells(shim_runner, tmp_path):
    # kernel_flash_attn_ext_kv_exact_f16 on run_exact_rows' case: slot j of stream s replaces the row of cell
    # cells[s][j] in every head; an unused slot (-1) and a cell past the copy (8) change nothing
    run = subprocess.run([str(shim_runner), "exact", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    got = np.fromfile(tmp_path / "exact.f16", dtype=np.float16).reshape(2, 2, 8, 64)   # [stream, head, cell, value]
    expected = np.arange(got.size, dtype=np.float32).astype(np.float16).reshape(got.shape)
    rows = (-1.0 - np.arange(2 * 3 * 2 * 64, dtype=np.float32)).astype(np.float16).reshape(2, 3, 2, 64)  # [s, slot, h, v]
    for s, cells in enumerate([(7, -1, 8), (0, 2, 1)]):
        for j, cell in enumerate(cells):
            if 0 <= cell < 8:
                expected[s, :, cell] = rows[s, j]
    assert np.array_equal(got, expected)
    assert (got < 0).sum() == 4 * 2 * 64          # four used slots in range, two heads each
