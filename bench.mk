# The benchmarks (docs/PERFORMANCE.md). Included by the Makefile (`include bench.mk`), which defines PY and
# STAMP.
#
#   make bench                          # all six, one after another; table + reports/bench/
#   make bench BENCH_ARGS="--only cache,sequential"
#
# lm-evaluation-harness, the time-to-verdict opponent, is a dependency of the suite (edgeready/lm_eval/).

BENCH_ARGS ?=

.PHONY: bench

bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)
