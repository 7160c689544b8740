"""The SIMD CPU codec (ggml_polar/cpu/) against the reference, on every ISA path it has.

tests/c/simd_parity.c is built once per path and run: AVX-512 and AVX2 where this CPU has them, plain C, and ARM
NEON with Debian's aarch64 cross compiler under qemu-user (.ci/run installs both). Decoded values and encoded blocks
must be bit-identical to the reference; dot products agree within the bound stated in simd_parity.c.
"""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "ggml_polar"
CPU_SOURCES = [SRC / "cpu" / "polar-cpu-decode.c", SRC / "cpu" / "polar-cpu-attn.c", SRC / "cpu" / "polar-cpu-encode.c",
               SRC / "ggml-polar.c"]
SOURCES = [ROOT / "tests" / "c" / "simd_parity.c", *CPU_SOURCES]
FLAGS = ["-std=c11", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-I", str(SRC)]


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


X86_PATHS = {
    "avx512": (["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mavx2", "-mfma", "-mf16c"],
               {"avx512f", "avx512dq", "avx512vl", "avx512bw"}),
    "avx2": (["-mavx2", "-mfma", "-mf16c"], {"avx2", "fma", "f16c"}),
    "scalar": (["-mno-avx"], set()),
}


def build_and_run(tmp_path: Path, compiler: str, flags: list[str], runner: list[str]) -> str:
    exe = tmp_path / "simd_parity"
    build = subprocess.run([compiler, *FLAGS, *flags, *map(str, SOURCES), "-lm", "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


def x86_flags(isa: str) -> list[str]:
    """The compiler flags of an x86 path this host can run (a skip, saying why, where it cannot)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("an x86-64 host runs these paths")
    flags, needs = X86_PATHS[isa]
    missing = needs - cpu_flags()
    if missing:
        pytest.skip(f"this CPU lacks {sorted(missing)}: the {isa} path cannot run here")
    return flags


@pytest.mark.parametrize("isa", list(X86_PATHS))
def test_x86_paths_match_the_reference(tmp_path, isa):
    last = build_and_run(tmp_path, shutil.which("cc") or "gcc", x86_flags(isa), [])
    lanes = {"avx512": 16, "avx2": 8, "scalar": 1}[isa]
    assert last == f"{isa} {lanes} lanes: 0 failures"


@pytest.mark.parametrize("isa", list(X86_PATHS))
def test_x86_paths_are_clean_under_address_and_undefined_sanitizers(tmp_path, isa):
    """simd_parity.c hands every codec function heap buffers of exactly the size it is given, so an access one byte
    past them is an AddressSanitizer error; -O1 keeps the vector code (intrinsics) as written."""
    sanitize = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    last = build_and_run(tmp_path, shutil.which("cc") or "gcc", [*x86_flags(isa), *sanitize], [])
    assert last.endswith("lanes: 0 failures")


def test_neon_path_matches_the_reference_under_qemu(tmp_path):
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if not cc or not qemu:
        pytest.fail("aarch64-linux-gnu-gcc and qemu-aarch64 are needed (.ci/run installs gcc-aarch64-linux-gnu, "
                    "qemu-user)")
    last = build_and_run(tmp_path, cc, ["-static"], [qemu])
    assert last == "neon 4 lanes: 0 failures"


def test_codec_benchmark_builds_and_reports(tmp_path):
    exe = tmp_path / "codec_bench"
    build = subprocess.run([shutil.which("cc") or "gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(SRC),
                            str(ROOT / "scripts" / "codec_bench.c"), *map(str, CPU_SOURCES), "-lm", "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe), "pq46"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("pq46 (") and "ns per cache row" in run.stdout
    bad = subprocess.run([str(exe), "pq99"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown type pq99" in bad.stderr


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_adaptive_decode_cost_model_builds_and_reports(tmp_path, isa):
    """scripts/explore_adaptive_decode.c, the measurement behind dropping radius-adaptive bits, still builds and times
    its three decoders on each x86 path it has."""
    exe = tmp_path / "explore_adaptive_decode"
    build = subprocess.run([shutil.which("cc") or "gcc", *FLAGS, *x86_flags(isa), "-I", str(SRC / "cpu"),
                            str(ROOT / "scripts" / "explore_adaptive_decode.c"), str(SRC / "ggml-polar.c"), "-lm",
                            "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"{isa}, {dict(avx512=16, avx2=8)[isa]} lanes")
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        built, level1, ratio1, levels12, ratio12 = map(lambda c: float(c.rstrip("x")), cells[1:])
        assert built > 0 and level1 > 0 and levels12 > 0
        assert abs(ratio1 - level1 / built) < 0.01 and abs(ratio12 - levels12 / built) < 0.01


def test_adaptive_decode_cost_model_profiles_are_the_explorers():
    """The cost model's bits per rank are copied from scripts/explore_adaptive_bits.py's rank_profile (a C file cannot
    import it): they must still be its profiles for pq37's levels 1 and 2, groups of 8."""
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    import explore_adaptive_bits as explorer
    from llama_polar import _codebooks as gen

    source = (ROOT / "scripts" / "explore_adaptive_decode.c").read_text()
    profile = explorer.rank_profile(tuple(gen.TREE_TYPES["pq37"]["level_bits"]), 8)
    for level in (1, 2):
        found = re.search(rf"profile_l{level}\[16\] = {{ ([\d, ]+) }};", source)
        assert found, f"profile_l{level} not found"
        assert [int(v) for v in found[1].split(",")] == [int(v) for v in profile[level]]


def test_trellis_cost_model_checks_itself_and_reports(tmp_path):
    """scripts/explore_trellis_cost.c, the cost of a trellis codec at the polar types' sizes (docs/measurements.md),
    still builds and passes its own checks on the AVX2 path: its three encoders write the same bytes and the decoders
    return the encoder's path. Its AVX-512 path is only compiled here: no machine of this project has run it."""
    source = ROOT / "scripts" / "explore_trellis_cost.c"
    cc = shutil.which("cc") or "gcc"
    compiled = subprocess.run([cc, *FLAGS, *X86_PATHS["avx512"][0], "-I", str(SRC / "cpu"), "-c", str(source),
                               "-o", str(tmp_path / "avx512.o")], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    exe = tmp_path / "explore_trellis_cost"
    build = subprocess.run([cc, *FLAGS, *x86_flags("avx2"), "-I", str(SRC / "cpu"), str(source),
                            str(SRC / "ggml-polar.c"), "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    checks = [line for line in run.stdout.splitlines() if line.startswith("| L=") and "| yes |" in line]
    assert len(checks) == 5
    encode = [line for line in run.stdout.splitlines() if re.match(r"\| \d \| L=", line) and line.count("x |") == 3]
    assert len(encode) == 15
    for row in encode:
        cells = [c.strip() for c in row.strip("|").split("|")]
        shipped, simd, ratio = float(cells[3]), float(cells[8]), float(cells[9].rstrip("x"))
        assert shipped > 0 and simd > 0 and abs(ratio - simd / shipped) < 0.05 * ratio
