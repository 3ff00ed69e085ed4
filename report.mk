# The sign-off report (docs/REPORT.md). Included by the Makefile (`include report.mk`), which defines
# PY, STAMP and LLAMA_CMAKE_ARGS.
#
#   make report                 # from reports/ (after make gate)
#   make report REPORTS=dir     # from a run made with --reports dir
#   make report PREVIOUS_REPORT=dir   # CI: carry the history of the last published report over
#
# Allure 3 comes from npm, pinned in package.json / package-lock.json and installed into ./node_modules
# with `npm ci` (never globally). Rendering is offline: the report's scripts and fonts are in the package.

REPORTS ?= reports
PREVIOUS_REPORT ?=
NPM ?= npm
ALLURE_VERSION := 3.18.0
ALLURE := node_modules/.bin/allure
ALLURE_STAMP := node_modules/.allure-$(ALLURE_VERSION)

.PHONY: report report-deps

$(ALLURE_STAMP): package.json package-lock.json
	$(NPM) ci --no-audit --no-fund --loglevel=error
	@test "$$($(ALLURE) --version 2>/dev/null | tr -d '[:space:]')" = "$(ALLURE_VERSION)" || \
		{ echo "allure is not $(ALLURE_VERSION): check package.json"; exit 1; }
	touch $@

report-deps: $(ALLURE_STAMP)

# Plots, history, environment and categories first (Python, no network), then Allure twice: the
# multi-file report and the single-file one. Allure neither clears its output folder nor replaces a
# report in it (it nests the new one), so both folders are removed first; history lives outside them,
# and a copy goes into the published report so that the next CI job can restore it (PREVIOUS_REPORT;
# `|| true`: the first run has no Allure history yet).
report: $(STAMP) $(ALLURE_STAMP)
	$(PY) -m edgeready.report_cli --reports $(REPORTS) --llama-cmake-args "$(LLAMA_CMAKE_ARGS)" \
		$(if $(PREVIOUS_REPORT),--previous-report $(PREVIOUS_REPORT))
	rm -rf $(REPORTS)/allure-report $(REPORTS)/allure-report-single
	EDGEREADY_REPORTS=$(REPORTS) $(ALLURE) generate --config allurerc.mjs \
		--output $(REPORTS)/allure-report $(REPORTS)/allure-results
	EDGEREADY_REPORTS=$(REPORTS) EDGEREADY_SINGLE_FILE=1 $(ALLURE) generate --config allurerc.mjs \
		--output $(REPORTS)/allure-report-single $(REPORTS)/allure-results
	mkdir -p $(REPORTS)/allure-report/history
	cp $(REPORTS)/allure-history.jsonl $(REPORTS)/history.jsonl $(REPORTS)/allure-report/history/ 2>/dev/null || true
	@echo "report: $(REPORTS)/allure-report/index.html (serve it: python -m http.server -d $(REPORTS)/allure-report)"
	@echo "report: $(REPORTS)/allure-report-single/index.html (opens from file://)"
