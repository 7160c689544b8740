#!/usr/bin/env python3
"""ggml's Metal backend on the emulated device (issue 18), checked by upstream's test-backend-ops against the CPU.

Builds the emulator (tests/metal_emu/CMakeLists.txt) into its own folder beside the llama.cpp build it reuses, runs
test-backend-ops on the emulated device (MTL0) for the polar cases of SET_ROWS, CPY and FLASH_ATTN_EXT, prints
test-backend-ops' own case lines, and then checks that every kind of case issue 18 names ran and passed: the cache
write and copies of every polar type; flash attention for decode (nb=1, the vec kernels) and for batches (nb>1,
through the f16 conversion) at head sizes 64, 128 and 256; polar K with a polar, f16 or q8_0 V and the other way
round; the exact-rows cases. A FAIL anywhere fails it.

test-backend-ops has about 6100 polar flash-attention cases, every combination of its parameters; on the emulator
they take hours. The default run takes every SET_ROWS and CPY case and a covering selection of the flash-attention
ones: for each K/V pair, every head size with every batch size, and every value of every other parameter (kv
length, masks, sinks, ALiBi, softcap, precision, permutations, broadcasts, views, exact rows) at least once in
decode and once in a batch, the cheapest case first.

  python tests/metal_emu/backend_ops.py          # every SET_ROWS/CPY case, the covering FA cases (make test-metal-emu)
  python tests/metal_emu/backend_ops.py --all    # every polar case (hours on two cores)
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from llama_polar.type_names import POLAR_TYPES  # the generated list: a new type is a kind of case to cover

ROOT = Path(__file__).resolve().parent.parent.parent
EMU_BUILD = ROOT / "build-metal-emu"
TREE = ROOT / "build" / "src" / "llama.cpp"
BIN = ROOT / "build" / "bin"
LIBRARY = "libggml-metal-emu.so"

HEAD_SIZES = (64, 128, 256)

# (op, params regex) pairs, test-backend-ops -o OP -p REGEX: the ops whose polar cases all run, and flash attention's
ALL_CASES = (
    ("SET_ROWS", "type_dst=pq"),
    ("CPY", "pq"),
)
FLASH_ATTN = ("FLASH_ATTN_EXT", "type_[KV]=pq")
CASE = re.compile(r"^(?:\[\w+\] .*?   )?\s*(\w+)\((.*)\): (?:\x1b\[[0-9;]*m)?(OK|FAIL|not supported|SUPPORTED|NOT SUPPORTED)")


@dataclass
class Case:
    op: str
    params: dict[str, str]
    status: str  # OK, FAIL, not supported; SUPPORTED or NOT SUPPORTED in test-backend-ops' support mode
    text: str = ""  # the parameters as test-backend-ops prints them


def parse_case(line: str) -> Case | None:
    m = CASE.match(line.rstrip("\n"))
    if m is None:
        return None
    params = dict(kv.split("=", 1) for kv in re.split(r",(?![^\[]*\])", m.group(2)) if "=" in kv)
    return Case(m.group(1), params, m.group(3), m.group(2))


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


def backend_ops_env(library: Path) -> dict[str, str]:
    # test-backend-ops runs its own fa_vec slice after FLASH_ATTN_EXT whatever -p says: left out
    return dict(os.environ, GGML_BACKEND_PATH=str(library), LLAMA_TEST_FA_VEC_DISABLE="1")


def run_cases(library: Path, op: str, pattern: str, echo: bool = True, bin_dir: Path = BIN,
              printed: list[str] | None = None) -> tuple[list[Case], int]:
    """test-backend-ops on the emulated device for op's cases whose parameters match pattern; the lines worth
    printing (all but the unsupported cases) are echoed, or appended to printed."""
    cmd = [str(bin_dir / "test-backend-ops"), "-b", "MTL0", "-o", op, "-p", pattern]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=backend_ops_env(library))
    cases = []
    for line in proc.stdout:
        case = parse_case(line)
        if case:
            cases.append(case)
        if case is None or case.status != "not supported":
            if echo:
                print(line, end="", flush=True)
            if printed is not None:
                printed.append(line)
    return cases, proc.wait()


def supported_cases(library: Path, op: str, pattern: str, bin_dir: Path = BIN) -> list[Case]:
    """op's cases matching pattern that the emulated device supports (test-backend-ops' support mode runs none)."""
    cmd = [str(bin_dir / "test-backend-ops"), "support", "-b", "MTL0", "-o", op, "-p", pattern]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=backend_ops_env(library)).stdout
    return [c for c in map(parse_case, out.splitlines()) if c and c.status == "SUPPORTED"]


def fa_cost(case: Case) -> float:
    """Rough cost of a flash-attention case on the emulator: a batch (nb > 1) converts K and V to f16 and runs
    upstream's f16 kernel, whose simdgroup matrices every lane computes; a decode case is far cheaper."""
    p = case.params
    kv, nb, hs = int(p["kv"]), int(p["nb"]), int(p.get("hsk") or p["hs"])
    return kv * hs * (nb if nb > 1 else 0.05) * (4 if "n_slots" in p else 1)


def covering(cases: list[Case]) -> list[Case]:
    """Flash-attention cases, cheapest first, each taken if it covers something not yet covered: for its K/V pair
    (general and exact-rows cases apart), its head size with its batch size, and each of its other parameters'
    values in its route (decode or batch)."""
    def covers(c: Case) -> set[tuple]:
        p = c.params
        pair = (p["type_K"], p["type_V"], "n_slots" in p)
        route = "decode" if p["nb"] == "1" else "batch"
        keys = {(pair, "head size and batch", p.get("hsk") or p["hs"], p["nb"])}
        return keys | {(pair, route, k, v) for k, v in p.items() if k not in ("type_K", "type_V", "nb")}

    chosen, covered = [], set()
    for case in sorted(cases, key=fa_cost):
        new = covers(case) - covered
        if new:
            chosen.append(case)
            covered |= new
    return chosen


def exactly(cases: list[Case]) -> str:
    """A test-backend-ops -p pattern (ECMAScript) that matches these cases' parameters and no others."""
    def escape(text: str) -> str:
        return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)
    return "^(" + "|".join(escape(c.text) for c in cases) + ")$"


def run_polar_cases(library: Path, select=covering, bin_dir: Path = BIN, echo: bool = True,
                    chunk: int = 48) -> tuple[list[Case], int]:
    """Every polar SET_ROWS and CPY case, and select(the supported polar flash-attention cases), in test-backend-ops
    runs of at most chunk cases each, as many at once as there are cores; returns the cases and the number of runs
    that failed."""
    cases, failed_runs = [], 0
    for op, pattern in ALL_CASES:
        found, rc = run_cases(library, op, pattern, echo, bin_dir)
        cases += found
        failed_runs += rc != 0
    chosen = select(supported_cases(library, *FLASH_ATTN, bin_dir=bin_dir))
    chosen.sort(key=lambda c: (c.params["type_K"], c.params["type_V"]))
    chunks = [chosen[i:i + chunk] for i in range(0, len(chosen), chunk)]

    def run_chunk(group: list[Case]) -> tuple[list[Case], bool, list[str]]:
        printed: list[str] = []
        found, rc = run_cases(library, FLASH_ATTN[0], exactly(group), False, bin_dir, printed)
        return found, rc != 0 or {c.text for c in found} != {c.text for c in group}, printed

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for found, failed, printed in pool.map(run_chunk, chunks):
            if echo:
                print("".join(printed), end="", flush=True)
            cases += found
            failed_runs += failed
    return cases, failed_runs


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
    ap.add_argument("--all", action="store_true", help="every polar flash-attention case (hours on two cores)")
    args = ap.parse_args(argv[1:])
    library = build()
    cases, failed_runs = run_polar_cases(library, select=list if args.all else covering)
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
