"""The C library itself: headers clean as C and C++, the codec clean under AddressSanitizer and UBSan."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "ggml_polar"
WARNINGS = ["-Wall", "-Wextra", "-Wpedantic", "-Werror"]


def compiler(*names):
    for name in names:
        if shutil.which(name):
            return name
    pytest.fail(f"none of {names} found: install a C/C++ compiler (build-essential)")


@pytest.mark.parametrize("lang,std,tool", [("c", "-std=c11", ("cc", "gcc", "clang")),
                                           ("c++", "-std=c++17", ("c++", "g++", "clang++"))])
def test_public_header_compiles_warning_free(tmp_path, lang, std, tool):
    unit = tmp_path / ("unit.c" if lang == "c" else "unit.cpp")
    unit.write_text('#include "ggml-polar.h"\n'
                    'int main(void) { block_pq38p b; return (int) sizeof(b) + ggml_polar_type_count(); }\n')
    result = subprocess.run([compiler(*tool), "-x", lang, std, *WARNINGS, "-fsyntax-only", "-I", str(SRC),
                             str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_codec_is_clean_under_address_and_undefined_sanitizers(tmp_path):
    exe = tmp_path / "codec_sanitize"
    build = subprocess.run([compiler("cc", "gcc", "clang"), "-std=c11", "-O1", "-g", "-ffp-contract=off",
                            "-fsanitize=address,undefined", "-fno-sanitize-recover=all", *WARNINGS,
                            "-I", str(SRC), str(ROOT / "tests" / "c" / "codec_sanitize.c"), str(SRC / "ggml-polar.c"),
                            "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 failures" in run.stdout


PRECONDITIONS = ["ref_quantize_row_k", "ref_dequantize_row_k", "ref_vec_dot_nrc", "ref_vec_dot_n", "quantize_row_k",
                 "quantize_row_partner", "dequantize_row_k", "decode_lanes_n", "decode_lanes_stride",
                 "decode_tile_stride", "attn_nq_zero", "attn_nq_over", "attn_dk", "attn_dv_zero", "attn_stride",
                 "attn_no_type", "attn_rows"]


@pytest.fixture(scope="module")
def preconditions(tmp_path_factory):
    """tests/c/preconditions.c over the reference and SIMD sources, as a Release build (-O2 -DNDEBUG)."""
    exe = tmp_path_factory.mktemp("pre") / "preconditions"
    sources = [ROOT / "tests" / "c" / "preconditions.c", SRC / "ggml-polar.c",
               *sorted((SRC / "cpu").glob("polar-cpu-*.c"))]
    build = subprocess.run([compiler("cc", "gcc", "clang"), "-std=c11", "-O2", "-DNDEBUG", "-ffp-contract=off",
                            *WARNINGS, "-I", str(SRC), *map(str, sources), "-lm", "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe


def test_correct_calls_pass_the_checks(preconditions):
    result = subprocess.run([str(preconditions), "valid"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("case", PRECONDITIONS)
def test_a_broken_precondition_stops_a_release_build(preconditions, case):
    result = subprocess.run([str(preconditions), case], capture_output=True, text=True, timeout=60)
    assert result.returncode == -6 and "ggml_polar: precondition failed" in result.stderr, \
        (result.returncode, result.stdout, result.stderr)
