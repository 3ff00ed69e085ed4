# The benchmarks (docs/PERFORMANCE.md). Included by the Makefile (`include bench.mk`), which defines PY and
# STAMP.
#
#   make bench                          # all six, one after another; table + reports/bench/
#   make bench BENCH_ARGS="--only cache,sequential"
#
# lm-evaluation-harness is not a dependency of the suite; `make bench` installs it (the `bench` extra,
# lm-eval[api]==0.4.13, which adds no torch: the venv's torch 2.13.0+cpu stays).

BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: bench

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PIP) install --quiet --find-links $(WHEELHOUSE) -e ".[dev,models,bench]"
	touch $@

bench: $(STAMP) $(BENCH_STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)
