"""Where llama_polar finds things: the checkout's folders and the built libraries and tools.

One locator for every built file, first match wins:

  libggml_polar.so (the C codec, for llama_polar.native):
      $LLAMA_POLAR_NATIVE_LIB (the file itself), then the package's lib/ folder, then build/bin/ (`make native`,
      `make llama`), then build-native/bin/ (the codec alone, `cmake -DLLAMA_POLAR_BUILD_LLAMA=OFF`; the tests make
      it when nothing else is there).
  libllama.so, the ggml libraries beside it (for llama_polar.llama), and the llama.cpp tools (llama-perplexity,
  llama-bench, ...):
      $LLAMA_CPP_LIB_PATH (the folder; llama-cpp-python's own variable), then the package's lib/ folder, then
      build/bin/ (`make llama`).

A file that is not there raises LibraryError, which names what was looked for, where, and the make command that
builds it. On macOS the libraries end in .dylib instead of .so.

In a source checkout, downloads are kept in its .cache/; an installed package (pip install) keeps them in
~/.cache/llama-polar; $LLAMA_POLAR_CACHE overrides both.

This module, like llama_polar.pypi and llama_polar.models, uses the standard library only: the Makefile runs those
with the system python before .venv exists.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent.parent                    # the source checkout (python/llama_polar/ is two levels down)
# False for an installed package (pip install): then ROOT is no checkout, and downloads go to the user's cache.
IN_CHECKOUT = (ROOT / "pyproject.toml").is_file() and (ROOT / "patches").is_dir()
CACHE_ENV = "LLAMA_POLAR_CACHE"
# downloads from PyPI (the llama-cpp-python sdist, model wheels): $LLAMA_POLAR_CACHE, else the checkout's .cache/,
# else ~/.cache/llama-polar ($XDG_CACHE_HOME/llama-polar)
CACHE = Path(os.environ.get(CACHE_ENV) or (ROOT / ".cache" if IN_CHECKOUT else
             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llama-polar"))
BUILD_BIN = ROOT / "build" / "bin"              # the one CMake build: llama.cpp with the polar types, and the codec
NATIVE_BUILD = ROOT / "build-native"            # the codec alone, without llama.cpp
LLAMA_TREE = ROOT / "build" / "src" / "llama.cpp"   # the patched llama.cpp source (scripts/prepare_llama_cpp.py)

NATIVE_LIB_ENV = "LLAMA_POLAR_NATIVE_LIB"
LLAMA_LIB_ENV = "LLAMA_CPP_LIB_PATH"


class LibraryError(ImportError):
    """A built library or tool is missing, or is not the polar-enabled build."""


def shared_library(stem: str) -> str:
    """The file name of shared library `stem` on this platform: libSTEM.so (libSTEM.dylib on macOS)."""
    return f"lib{stem}.dylib" if sys.platform == "darwin" else f"lib{stem}.so"


def _locate(filename: str, env: str, env_is_folder: bool, folders: list[Path], make: str) -> Path:
    value = os.environ.get(env)
    if value:
        path = Path(value) / filename if env_is_folder else Path(value)
        if not path.is_file():
            raise LibraryError(f"{env}={value}: {path} is not a file")
        return path
    for folder in folders:
        if (folder / filename).is_file():
            return folder / filename
    how = f"build it with `{make}`" if IN_CHECKOUT else "reinstall llama-polar (`pip install` builds it)"
    raise LibraryError(f"{filename} not found: {how} or set {env} (looked in: {', '.join(map(str, folders))})")


def native_library() -> Path:
    """libggml_polar.so, the C codec that llama_polar.native binds."""
    return _locate(shared_library("ggml_polar"), NATIVE_LIB_ENV, False,
                   [PACKAGE / "lib", BUILD_BIN, NATIVE_BUILD / "bin"], "make native")


def llama_library_dir() -> Path:
    """The folder of the polar-enabled libllama.so and the ggml libraries (what llama-cpp-python loads)."""
    return _locate(shared_library("llama"), LLAMA_LIB_ENV, True, [PACKAGE / "lib", BUILD_BIN], "make llama").parent


def tool(name: str) -> Path:
    """A llama.cpp tool of the polar-enabled build (llama-perplexity, llama-bench, ...), beside its libllama.so."""
    path = llama_library_dir() / name
    if not path.is_file():
        raise LibraryError(f"{name} not found in {path.parent}: build it with `make llama`")
    return path
