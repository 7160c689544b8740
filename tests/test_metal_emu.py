"""The Metal emulator's parts (issue 18), run on the CPU:

* the SIMT executor (tests/metal_emu/simt.h): each thread of a threadgroup a fiber, threadgroup barriers and
  simdgroup collectives real synchronization points, the threads run in several orders between them;
  tests/metal_emu/simt_test.cpp checks it;
* the kernel library (tests/metal_emu/gen_kernels.py): the embedded polar.metal (the text a Mac compiles) as C++,
  each kernel registered by host_name with its parameters in declaration order;
* the polar cache-write and context-shift kernels dispatched through both, against the C library
  (tests/metal_emu/polar_kernels_test.cpp);
* ggml's Metal backend itself on the emulated device (tests/metal_emu/device.cpp, context.cpp): upstream's
  test-backend-ops against the CPU for every polar SET_ROWS and CPY case and a covering selection of the
  flash-attention ones (make test-metal-emu's run; backend_ops.py --all runs every case), and three one-character
  breaks, in a polar Metal decoder, in a dispatch size and in a threadgroup memory size, that each make cases FAIL;
* a model (SmolLM2) with its KV cache and attention on the emulated device, within a KLD bound of the CPU.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import POLAR_TYPES, run_tool
from llama_polar import perplexity
from test_metal import CLANG_FLAGS, TREE, find_clang

ROOT = Path(__file__).resolve().parent.parent
EMU = ROOT / "tests" / "metal_emu"
sys.path.insert(0, str(EMU))
sys.path.insert(0, str(ROOT / "scripts"))
import backend_ops  # noqa: E402
import gen_kernels  # noqa: E402
import metal_embed  # noqa: E402

EMU_FLAGS = [*[f for f in CLANG_FLAGS if not f.startswith("-Werror")], "-DPQ_METAL_SIMT", "-I", str(EMU), "-I",
             str(TREE / "ggml" / "src" / "ggml-metal"), "-I", str(ROOT / "ggml_polar"), "-O1"]


@pytest.fixture(scope="module")
def polar_source(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("emu-src")
    return metal_embed.embed(TREE, "polar", metal_embed.flatten_polar(tmp / "polar.metal"))


def compile_and_link(tmp: Path, exe: str, sources: list[Path]) -> Path:
    objs = []
    for src in sources:
        obj = tmp / (src.stem + ".o")
        if src.suffix == ".c":
            cmd = [find_clang().replace("++", ""), "-O1", "-I", str(ROOT / "ggml_polar"), "-c", str(src), "-o", str(obj)]
        elif src.name == "simt.cpp":
            cmd = [find_clang(), "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-c", str(src), "-o", str(obj)]
        else:
            cmd = [find_clang(), *EMU_FLAGS, "-c", str(src), "-o", str(obj)]
        build = subprocess.run(cmd, capture_output=True, text=True)
        assert build.returncode == 0, f"{src.name}: {build.stderr[-4000:]}"
        objs.append(str(obj))
    link = subprocess.run([find_clang(), *objs, "-lm", "-o", str(tmp / exe)], capture_output=True, text=True)
    assert link.returncode == 0, link.stderr[-4000:]
    return tmp / exe


def test_simt_executor_synchronizes_and_reports_misuse(tmp_path):
    exe = compile_and_link(tmp_path, "simt_test", [EMU / "simt.cpp", EMU / "simt_test.cpp"])
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == "simt: 9 checks, 0 failures"


def test_every_kernel_is_registered_with_its_parameters(polar_source):
    source, count = gen_kernels.rewrite(polar_source)
    hosts = re.findall(r'host_name\("([^"]+)"\)', polar_source)
    registered = re.findall(r'emu::kernel_entry emu_kernel_\d+\("([^"]+)"', source)
    assert count == len(registered) and set(hosts) <= set(registered) and len(hosts) > 250
    assert "[[host_name" not in source and "function_constant(" not in source
    # upstream's vec template: 9 buffers (args first), threadgroup memory 0, then three attributes
    entry = next(line for line in source.splitlines() if '"kernel_flash_attn_ext_vec_pq46_dk128_dv128"' in line)
    params = re.findall(r"\{emu::pk::(\w+), (\d+)\}", entry)
    assert params == [("buffer", str(i)) for i in range(9)] + [("tg_memory", "0"), ("group_pos", "0"),
                                                                ("simd_lane", "0"), ("simd_group", "0")]
    only, n = gen_kernels.rewrite(polar_source, only=r"kernel_cpy_f32_pq46")
    assert n == 1 and not re.search(r"template\s+kernel\s+\w+\s+kernel_flash_attn_ext_vec<", only)


def test_polar_copy_kernels_run_on_the_executor(polar_source, tmp_path):
    lib = tmp_path / "kernels.cpp"
    lib.write_text(gen_kernels.library(polar_source, only=r"kernel_(cpy|set_rows)_.*"))
    exe = compile_and_link(tmp_path, "polar_kernels_test",
                           [lib, EMU / "simt.cpp", EMU / "polar_kernels_test.cpp", ROOT / "ggml_polar" / "ggml-polar.c"])
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    n = len(POLAR_TYPES)        # 4 kernels a type (cpy both ways, set_rows i32/i64), 20 checks a type
    assert last == f"polar kernels on the SIMT executor: {n} types, {4 * n} kernels in the library, {20 * n} checks, " \
                   "0 failures", last


@pytest.fixture(scope="module")
def emu_library(bin_dir, llama_tree) -> Path:
    """The emulated Metal device with every kernel (build-metal-emu/), built once for the module."""
    return backend_ops.build(quiet=True, tree=llama_tree, bin_dir=bin_dir)


def test_metal_backend_on_the_emulated_device(bin_dir, emu_library):
    cases, failed_runs = backend_ops.run_polar_cases(emu_library, bin_dir=bin_dir, echo=False)
    failed = [f"{c.op}({c.text})" for c in cases if c.status == "FAIL"]
    assert failed_runs == 0 and not failed, failed[:5]
    assert backend_ops.missing_kinds(cases) == []
    assert sum(c.op == "FLASH_ATTN_EXT" and c.status == "OK" for c in cases) >= 300


# SmolLM2 with its KV cache and attention on the emulated device, the weights on the CPU (-ot): the mean KLD
# against the CPU's run of the same cache. Not zero, since Metal rounds Q to half and a quantized cache turns any
# rounding difference into other codes (docs/metal.md: 0.0037 for f16, 0.029 for pq46 measured); garbage is nats.
# 4 chunks of 64 tokens: llama-perplexity prints its statistics from 100 scored tokens on.
@pytest.mark.parametrize("cache, bound", [("f16", 0.02), ("pq46", 0.15)])
def test_a_model_on_the_emulated_device(bin_dir, emu_library, model_path, text_path, tmp_path, cache, bound):
    args = ["-m", model_path, "-f", text_path, "-c", 64, "-b", 64, "--chunks", 4, "-fa", "on", "-ctk", cache,
            "-ctv", cache, "--kl-divergence-base", tmp_path / "cpu.kld"]
    cpu = run_tool("llama-perplexity", *args, timeout=300)
    assert cpu.returncode == 0, cpu.stderr[-2000:]
    emu = run_tool("llama-perplexity", *args, "--kl-divergence", "-ngl", 99, "-ot", ".*=CPU", "-v", timeout=600,
                   env={"GGML_BACKEND_PATH": str(emu_library), "GGML_METAL_GRAPH_DEBUG": "1"})
    log = emu.stdout + emu.stderr
    assert emu.returncode == 0, log[-2000:]
    assert re.search(r"MTL0 KV buffer size", log)
    encoded = re.findall(r"ggml_metal_op_encode_impl: node\[ *\d+\] - (\w+)", log)
    assert encoded.count("FLASH_ATTN_EXT") >= 30 and encoded.count("SET_ROWS") >= 60
    result = perplexity.parse_divergence(log)
    assert result.kld < bound and result.same_top > 60, result


# One character each: the polar t4 decoder (the vec kernels' K and V reads) returns its fourth value twice; the vec
# flash attention's grid, in its several-workgroups branch, takes nsg for nwg (fewer workgroups than the reduction
# reads); its threadgroup memory holds one V row per query instead of two.
BREAKS = {
    "decoder": ("polar.metal", "reg = (T4) float4(v[0], v[1], v[2], v[3]);", "reg = (T4) float4(v[0], v[1], v[3], v[3]);"),
    "dispatch": ("ggml-metal-ops.cpp", "ne03*nwg, 32, nsg, 1);\n\n            // sync the 2 kernels",
                 "ne03*nsg, 32, nsg, 1);\n\n            // sync the 2 kernels"),
    "threadgroup memory": ("ggml-metal-ops.cpp", "(dk_pad + 4*ncpsg + 2*dv_pad)", "(dk_pad + 4*ncpsg + 1*dv_pad)"),
}
BREAK_KERNELS = ("kernel_flash_attn_ext_(pad|blk|vec_reduce)|kernel_flash_attn_ext_vec_pq46_dk64_dv64")
BREAK_CASES = ("FLASH_ATTN_EXT", "hsk=64,.*nr23=\\[1,1\\],kv=113,nb=1,mask=1,sinks=1,max_bias=0.0+,logit_softcap=0.0+,"
                                 "prec=f32,type_K=pq46,.*permute=\\[0,1,2,3\\]")


def broken(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the break's text is not found once: {old}"
    return text.replace(old, new)


@pytest.fixture(scope="module")
def break_build(tmp_path_factory, llama_tree, polar_source):
    """A build folder for the breaks (each reconfigures it), with the kernels the break cases need."""
    return tmp_path_factory.mktemp("emu-breaks")


@pytest.mark.parametrize("name", list(BREAKS))
def test_a_one_character_break_fails_cases(name, break_build, bin_dir, llama_tree, polar_source):
    where, old, new = BREAKS[name]
    metal_dir = polar_metal = None
    if where == "polar.metal":
        polar_metal = break_build / "polar-broken.metal"
        polar_metal.write_text(broken(polar_source, old, new))
    else:
        metal_dir = break_build / "ggml-metal"
        shutil.rmtree(metal_dir, ignore_errors=True)
        shutil.copytree(llama_tree / "ggml" / "src" / "ggml-metal", metal_dir)
        ops = metal_dir / where
        ops.write_text(broken(ops.read_text(), old, new))
    library = backend_ops.build(break_build / "build", kernels=BREAK_KERNELS, metal_dir=metal_dir,
                                polar_metal=polar_metal, quiet=True, tree=llama_tree, bin_dir=bin_dir)
    cases, rc = backend_ops.run_cases(library, *BREAK_CASES, echo=False, bin_dir=bin_dir)
    assert cases and rc != 0
    assert sum(c.status == "FAIL" for c in cases) >= len(cases) // 2, [(c.params, c.status) for c in cases]
