# PolarQuant KV-cache types for llama.cpp.
#   make demo   build what is missing and run the codec demo (C vs NumPy, quality per type)
#   make test   build what is missing and run the whole test suite (what CI runs)
PYTHON    ?= python3
VENV      := .venv
PY        := $(VENV)/bin/python
BUILD     := build
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")
NATIVE    := $(BUILD)/ggml_polar/libggml_polar.so

.PHONY: all venv native codebooks check-codebooks test demo clean

all: native

venv: $(VENV)/.ready
$(VENV)/.ready: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release -DGGML_POLAR_WERROR=ON

native: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) --target ggml_polar ggml_polar_shared

codebooks: venv
	$(PY) scripts/gen_codebooks.py

check-codebooks: venv
	$(PY) scripts/gen_codebooks.py --check

test: venv native check-codebooks
	$(PY) -m pytest tests

demo: venv native
	$(PY) scripts/validate.py

clean:
	rm -rf $(BUILD)
