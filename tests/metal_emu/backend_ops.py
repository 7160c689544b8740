#!/usr/bin/env python3
"""ggml's Metal backend on the emulated device (issue 18), checked by upstream's test-backend-ops against the CPU.

Builds the emulator (tests/metal_emu/CMakeLists.txt) into its own folder beside the llama.cpp build it reuses, runs
test-backend-ops on the emulated device (MTL0) for the polar cases of SET_ROWS, CPY and FLASH_ATTN_EXT, prints
test-backend-ops' own case lines, and then checks that every kind of case issue 18 names ran and passed: the cache
write and copies of every polar type; flash attention for decode (nb=1, the vec kernels) and for batches (nb>1,
through the f16 conversion) at head sizes 64, 128 and 256; polar K with a polar, f16 or q8_0 V and the other way
round; the exact-rows cases. A FAIL anywhere fails it.

  python tests/metal_emu/backend_ops.py            # every polar case (make test-metal-emu)
  python tests/metal_emu/backend_ops.py --quick    # a subset that still covers each kind (make test)
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
EMU_BUILD = ROOT / "build-metal-emu"
TREE = ROOT / "build" / "src" / "llama.cpp"
BIN = ROOT / "build" / "bin"
LIBRARY = "libggml-metal-emu.so"

POLAR_TYPES = ("pq27", "pq32", "pq37", "pq38p", "pq42", "pq46", "pqk1")
HEAD_SIZES = (64, 128, 256)

# (op, params regex) pairs: test-backend-ops -o OP -p REGEX
FULL = (
    ("SET_ROWS", "type_dst=pq"),
    ("CPY", "pq"),
    ("FLASH_ATTN_EXT", "type_[KV]=pq"),
)
# One mask/sinks/bias setting of the general cases per type and head size, decode and a batch; the exact-rows cases
# at head size 64 for decode with every pair of types, and one batch (an exact-rows batch costs about 15 s here).
QUICK = (
    ("SET_ROWS", "type_dst=pq.*nr23=\\[2,3\\].*v=1"),
    ("CPY", "pq.*permute_src=\\[0,2,1,3\\]"),
    ("FLASH_ATTN_EXT", "hsk=(64|128|256),.*nr23=\\[1,1\\],kv=113,nb=(1|32),mask=1,sinks=1,max_bias=0.0+,"
                       "logit_softcap=0.0+,prec=f32,type_K=pq[0-9a-z]+,.*permute=\\[0,1,2,3\\]"),
    ("FLASH_ATTN_EXT", "hs=64,.*(nb=1,type_K=(pq|f16|q8_0)[0-9a-z_]*,type_V=(pq|f16|q8_0)[0-9a-z_]*|"
                       "nb=75,type_K=pq46,type_V=pq46),.*v_rows=1"),
)

CASE = re.compile(r"^(?:\[\w+\] .*?   )?\s*(\w+)\((.*)\): (?:\x1b\[[0-9;]*m)?(OK|FAIL|not supported)")


@dataclass
class Case:
    op: str
    params: dict[str, str]
    status: str  # OK, FAIL, not supported


def find_clang() -> str:
    for name in ("clang++-19", "clang++-18", "clang++-17", "clang++-16", "clang++"):
        path = shutil.which(name)
        if path and re.search(r"clang version (1[6-9]|[2-9][0-9])", subprocess.run(
                [path, "--version"], capture_output=True, text=True).stdout):
            return path
    raise SystemExit("clang >= 16 not found: the emulator compiles Metal source as C++ with it (.ci/run installs it)")


def build(build_dir: Path = EMU_BUILD, kernels: str = ".*", metal_dir: Path | None = None,
          polar_metal: Path | None = None, quiet: bool = False, tree: Path = TREE, bin_dir: Path = BIN) -> Path:
    """Configures and builds the emulator against the llama.cpp tree and build (bin_dir: its libggml-base.so);
    returns the backend module's path."""
    if not (bin_dir / "test-backend-ops").exists():
        raise SystemExit(f"{bin_dir / 'test-backend-ops'} not found: run make llama first")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = ["cmake", "-S", str(ROOT / "tests" / "metal_emu"), "-B", str(build_dir), *generator,
                 f"-DLLAMA_TREE={tree}", f"-DGGML_LIB_DIR={bin_dir}", f"-DPython3_EXECUTABLE={sys.executable}",
                 f"-DCMAKE_CXX_COMPILER={find_clang()}", f"-DEMU_KERNELS={kernels}",
                 f"-DEMU_METAL_DIR={metal_dir or ''}", f"-DEMU_POLAR_METAL={polar_metal or ''}"]
    out = subprocess.DEVNULL if quiet else None
    subprocess.run(configure, check=True, stdout=out)
    jobs = str(os.cpu_count() or 2)
    subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True, stdout=out)
    return build_dir / LIBRARY


def run_cases(library: Path, op: str, pattern: str, echo: bool = True, bin_dir: Path = BIN) -> tuple[list[Case], int]:
    """test-backend-ops on the emulated device for op's cases whose parameters match pattern (its own fa_vec
    slice, which ignores the pattern, is left out)."""
    env = dict(os.environ, GGML_BACKEND_PATH=str(library), LLAMA_TEST_FA_VEC_DISABLE="1")
    cmd = [str(bin_dir / "test-backend-ops"), "-b", "MTL0", "-o", op, "-p", pattern]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    cases = []
    for line in proc.stdout:
        m = CASE.match(line.rstrip("\n"))
        if m:
            params = dict(kv.split("=", 1) for kv in re.split(r",(?![^\[]*\])", m.group(2)) if "=" in kv)
            cases.append(Case(m.group(1), params, m.group(3)))
        if echo and (m is None or m.group(3) != "not supported"):
            print(line, end="", flush=True)
    return cases, proc.wait()


def missing_kinds(cases: list[Case]) -> list[str]:
    """The kinds of polar case issue 18 names that have no passing case."""
    ok = [c for c in cases if c.status == "OK"]

    def passed(op: str, **want: str) -> bool:
        return any(c.op == op and all(re.fullmatch(v, c.params.get(k, "")) for k, v in want.items()) for c in ok)

    need = []
    for t in POLAR_TYPES:
        need += [("SET_ROWS", {"type_dst": t}), ("CPY", {"type_src": "f32", "type_dst": t}),
                 ("CPY", {"type_src": t, "type_dst": "f32"})]
        for hs in HEAD_SIZES:
            need += [("FLASH_ATTN_EXT", {"hsk": str(hs), "nb": "1", "type_K": t}),
                     ("FLASH_ATTN_EXT", {"hsk": str(hs), "nb": "(3|32|75)", "type_K": t})]
    for partner in ("pq[0-9a-z]+", "f16", "q8_0"):  # exact rows: polar K with each kind of V, and the other way
        need += [("FLASH_ATTN_EXT", {"hs": "64", "type_K": "pq[0-9a-z]+", "type_V": partner})]
        need += [("FLASH_ATTN_EXT", {"hs": "64", "type_K": partner, "type_V": "pq[0-9a-z]+"})]
    need += [("FLASH_ATTN_EXT", {"hs": "64|128", "nb": "(3|75)", "type_K": "pq[0-9a-z]+"})]  # exact rows, a batch
    return [f"{op} {want}" for op, want in need if not passed(op, **want)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the subset make test runs")
    args = ap.parse_args(argv[1:])
    library = build()
    cases, failed_runs = [], 0
    for op, pattern in QUICK if args.quick else FULL:
        found, rc = run_cases(library, op, pattern)
        cases += found
        failed_runs += rc != 0
    fails = [c for c in cases if c.status == "FAIL"]
    missing = missing_kinds(cases)
    counts = {s: sum(c.status == s for c in cases) for s in ("OK", "FAIL", "not supported")}
    print(f"emulated Metal device: {counts['OK']} polar cases passed, {counts['FAIL']} failed, "
          f"{counts['not supported']} not supported")
    for m in missing:
        print(f"no passing case of: {m}")
    return 1 if fails or missing or failed_runs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
