# The benchmarks (docs/PERFORMANCE.md). Included by the Makefile (`include bench.mk`), which defines PY and
# STAMP.
#
#   make bench                          # all four, one after another; table + reports/bench/
#   make bench BENCH_ARGS="--only cache,sequential"
#
# lm-evaluation-harness is not a dependency of the suite; the lm-eval benchmark needs it in the venv:
#   .venv/bin/pip install "lm-eval[api]==0.4.13"   (adds no torch: the venv's torch 2.13.0+cpu stays)
# Without it that benchmark says so and the run exits 1; the others still report.

BENCH_ARGS ?=

.PHONY: bench

bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)
