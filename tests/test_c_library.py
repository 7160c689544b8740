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
