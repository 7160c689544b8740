#!/usr/bin/env python3
"""Reproduce ggml-metal's embed step on Linux: the exact Metal source a Mac compiles for one kernel file.

With GGML_METAL_EMBED_LIBRARY (what llama-cpp-python builds on Apple), ggml/src/ggml-metal/CMakeLists.txt turns each
kernels/<kind>.metal into one flat text, then embeds it in the library; at run time Metal compiles that text. CMake's
Metal configuration needs Apple's frameworks, so it cannot run here; this script performs the same steps:

  1. concatenate kernels/common.h, the headers the file includes (dequantize.h, quantize.h, fa_common.metal,
     fa_vec_common.metal), and the file;
  2. delete every line holding one of those includes or `#pragma once`;
  3. replace the line holding `__embed_ggml-common.h__` with ggml/src/ggml-common.h;
  4. replace the line holding `#include "ggml-metal-impl.h"` with ggml-metal-impl.h.

For `polar`, the file is ggml_polar/metal/polar.metal after ggml_polar/metal/flatten.cmake, which the patched
CMakeLists.txt runs at configure time; this script runs the same CMake script. `STEP_FINGERPRINTS` holds the
CMakeLists.txt commands these steps mirror: if upstream changes them, the script stops instead of drifting.

  scripts/metal_embed.py --kind polar --out build/metal/polar.metal
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TREE = ROOT / "build" / "src" / "llama.cpp"

# Headers in the order CMake prepends them, each with the include line that makes it apply (common.h always does).
EMBED_HEADERS = (
    ("common.h", None),
    ("dequantize.h", '#include "dequantize.h"'),
    ("quantize.h", '#include "quantize.h"'),
    ("fa_common.metal", '#include "fa_common.metal"'),
    ("fa_vec_common.metal", '#include "fa_vec_common.metal"'),
)
DELETED_LINES = ('#include "common.h"', '#include "dequantize.h"', '#include "quantize.h"',
                 '#include "fa_common.metal"', '#include "fa_vec_common.metal"', "#pragma once")
COMMON_SENTINEL = "__embed_ggml-common.h__"
IMPL_INCLUDE = '#include "ggml-metal-impl.h"'

STEP_FINGERPRINTS = (
    'COMMAND cat ${HEADERS_FOR_SRC} ${SRC} > "${EMBED}.tmp1"',
    'COMMAND sed -e "/\\#include \\"common.h\\"/d" -e "/\\#include \\"dequantize.h\\"/d" '
    '-e "/\\#include \\"quantize.h\\"/d" -e "/\\#include \\"fa_common.metal\\"/d" '
    '-e "/\\#include \\"fa_vec_common.metal\\"/d" -e "/\\#pragma once/d" < "${EMBED}.tmp1" > "${EMBED}.tmp2"',
    'COMMAND sed -e "/__embed_ggml-common.h__/r ${METALLIB_COMMON}" -e "/__embed_ggml-common.h__/d" '
    '< "${EMBED}.tmp2" > "${EMBED}.tmp3"',
    'COMMAND sed -e "/\\#include \\"ggml-metal-impl.h\\"/r ${METALLIB_IMPL}" '
    '-e "/\\#include \\"ggml-metal-impl.h\\"/d" < "${EMBED}.tmp3" > "${EMBED}"',
)


class EmbedError(RuntimeError):
    pass


def metal_dir(tree: Path) -> Path:
    return tree / "ggml" / "src" / "ggml-metal"


def check_fingerprints(tree: Path) -> None:
    cmake = (metal_dir(tree) / "CMakeLists.txt").read_text()
    flat = re.sub(r"\s+", " ", cmake)
    missing = [f for f in STEP_FINGERPRINTS if re.sub(r"\s+", " ", f) not in flat]
    if missing:
        raise EmbedError("ggml-metal's embed step changed; update scripts/metal_embed.py. Not found:\n  "
                         + "\n  ".join(missing))


def flatten_polar(out: Path) -> Path:
    """Run the configure-time flattening (the same CMake script the build runs)."""
    subprocess.run(["cmake", f"-DGGML_POLAR_DIR={ROOT / 'ggml_polar'}", f"-DOUTPUT={out}", "-P",
                    str(ROOT / "ggml_polar" / "metal" / "flatten.cmake")], check=True)
    return out


def replace_line_with(lines: list[str], marker: str, body: str) -> list[str]:
    out = []
    for line in lines:
        if marker in line:
            out.extend(body.splitlines(keepends=True))
        else:
            out.append(line)
    return out


def embed(tree: Path, kind: str, source: Path | None = None) -> str:
    mdir = metal_dir(tree)
    check_fingerprints(tree)
    src = source or mdir / "kernels" / f"{kind}.metal"
    if not src.exists():
        raise EmbedError(f"no kernel source {src}")
    src_text = src.read_text()
    parts = []
    for header, trigger in EMBED_HEADERS:
        if trigger is None or any(trigger in line for line in src_text.splitlines()):
            parts.append((mdir / "kernels" / header).read_text())
    parts.append(src_text)
    # step 1: cat (files are joined as bytes, as cat does)
    lines = "".join(parts).splitlines(keepends=True)
    # step 2: sed /pattern/d for each include and #pragma once
    lines = [line for line in lines if not any(d in line for d in DELETED_LINES)]
    # steps 3 and 4: sed /pattern/r file + /pattern/d
    lines = replace_line_with(lines, COMMON_SENTINEL, (tree / "ggml" / "src" / "ggml-common.h").read_text())
    lines = replace_line_with(lines, IMPL_INCLUDE, (mdir / "ggml-metal-impl.h").read_text())
    return "".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", required=True, help="kernel file without .metal (fa_aux, quantize, polar, ...)")
    ap.add_argument("--tree", type=Path, default=DEFAULT_TREE, help="patched llama.cpp tree (default: %(default)s)")
    ap.add_argument("--out", type=Path, required=True, help="where to write the embedded source")
    args = ap.parse_args(argv)
    try:
        if args.kind == "polar":
            with tempfile.TemporaryDirectory() as tmp:
                text = embed(args.tree, "polar", flatten_polar(Path(tmp) / "polar.metal"))
        else:
            text = embed(args.tree, args.kind)
    except (EmbedError, OSError, subprocess.CalledProcessError) as e:
        print(f"metal_embed: {e}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
