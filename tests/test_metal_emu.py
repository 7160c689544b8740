"""The SIMT executor that runs Metal kernel source on the CPU (issue 18, tests/metal_emu/simt.h): each thread of a
threadgroup a fiber, threadgroup barriers and simdgroup collectives real synchronization points, the threads run
in several orders between them. tests/metal_emu/simt_test.cpp checks it; this builds and runs that program."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from test_metal import find_clang

ROOT = Path(__file__).resolve().parent.parent
EMU = ROOT / "tests" / "metal_emu"


@pytest.fixture(scope="module")
def simt_test(tmp_path_factory) -> Path:
    exe = tmp_path_factory.mktemp("simt") / "simt_test"
    build = subprocess.run([find_clang(), "-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-I", str(EMU),
                            str(EMU / "simt.cpp"), str(EMU / "simt_test.cpp"), "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    return exe


def test_simt_executor_synchronizes_and_reports_misuse(simt_test):
    run = subprocess.run([str(simt_test)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == "simt: 8 checks, 0 failures"
