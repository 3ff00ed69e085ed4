"""The pytest side of edgeready: options, (candidate x target) parametrization, reports.

Targets and candidates are validated in pytest_configure, before collection, so a bad YAML stops
the run in a second with one message naming file, key and line, and no model is ever loaded.
Measurements happen in the `measurement` fixture: a measurement that cannot be made is reported by
pytest as an ERROR (setup failure), a threshold that is missed as a FAILED test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgeready.candidates import Candidate, resolve_candidate
from edgeready.config_errors import ConfigError
from edgeready.measurement import GateResult, Measurement
from edgeready.report import terminal_table, write_reports
from edgeready.run import GATES, Pair, RunContext
from edgeready.targets import ROLES, resolve_target

# llama.cpp's OpenMP threads spin while they wait; on a shared machine a busy neighbour then makes two
# threads 8x slower than one (measured here). Passive waiting costs little when the machine is quiet.
# Set before llama_cpp is imported, inherited by the memory probe and the servers; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
# Without --candidate: the embedded default for device and server targets, and the default offload
# deployment for offload targets (each runs only on the roles it fits, see run.runs_on).
DEFAULT_CANDIDATES = ("gemma3-270m-q4km", "offload-default")
RUN_KEY = pytest.StashKey[RunContext]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("edgeready")
    g.addoption("--candidate", action="append", default=[], metavar="NAME|PATH",
                help=f"candidate name, manifest or GGUF path (repeatable; default {', '.join(DEFAULT_CANDIDATES)})")
    g.addoption("--target", action="append", default=[], metavar="NAME|PATH",
                help="target name (default, role/name) or YAML path (repeatable; default: each role's default)")
    g.addoption("--limit", type=int, default=None, metavar="N", help="cap the questions of each gate")
    g.addoption("--data-dir", default=None, metavar="DIR",
                help="base for relative dataset paths (default ../shared/data when it exists)")
    g.addoption("--reports", default=str(ROOT / "reports"), metavar="DIR", help="where reports are written")
    g.addoption("--compare", action="store_true",
                help="offload targets: also judge device-only and server-only variants of each offload candidate")
    g.addoption("--no-cache", action="store_true",
                help="generate everything again instead of reusing stored generations (.cache/generations.sqlite)")
    g.addoption("--cache-dir", default=str(ROOT / ".cache"), metavar="DIR", help="assembled models, digests")


def baselines(candidate: Candidate) -> list[Candidate]:
    """Device-only and server-only variants of an offload candidate, for the side-by-side comparison
    on the same questions (the seed's Fig. 5c)."""
    assert candidate.offload is not None
    return [
        candidate.model_copy(update={"name": f"{candidate.name}.{label}",
                                     "offload": candidate.offload.model_copy(update={"policy": policy})})
        for label, policy in (("device-only", "never"), ("server-only", "always"))
    ]


def _default_data_dir() -> Path | None:
    shared = ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def _runs_suites(config: pytest.Config) -> bool:
    args = [a for a in config.args if not a.startswith("-")]
    return not args or any(Path(a).resolve().is_relative_to(ROOT / "suites") for a in args if Path(a).exists())


def _only_suites(config: pytest.Config) -> bool:
    """The run collects the gate suites and nothing else (no path given, or only paths inside suites/)."""
    args = [a for a in config.args if not a.startswith("-")]
    return not args or all(Path(a).exists() and Path(a).resolve().is_relative_to(ROOT / "suites") for a in args)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    if config.rootpath != ROOT and (opt.candidate or opt.target or opt.data_dir):
        # pytest chooses its rootdir from path-like arguments before any plugin defines options,
        # so `--target /elsewhere/t.yaml` moves it out of the project and the suites vanish.
        raise pytest.UsageError(
            f"pytest chose rootdir {config.rootpath}, not the edgeready project {ROOT}: write path "
            f"options as --target=PATH (with '='), or add -c {ROOT / 'pyproject.toml'}"
        )
    reports = Path(opt.reports)
    if _only_suites(config):
        # The gate suites hold no hypothesis test, but hypothesis's pytest plugin (installed with the dev
        # extra) imports all of hypothesis in its terminal summary: 1.5 s of every gate run here, most of
        # a fully cached re-run. Its own pytest_configure has run or runs now; nothing else of it is needed.
        plugin = config.pluginmanager.get_plugin("hypothesispytest")
        if plugin is not None:
            config.pluginmanager.unregister(plugin)
    # Allure results follow --reports unless --alluredir was given; tryfirst so that allure-pytest,
    # configured after us, sees the value.
    if getattr(opt, "allure_report_dir", None) is None and _runs_suites(config):
        opt.allure_report_dir = str(reports / "allure-results")
        # One run's results per report (history is kept by `make report`); only the xdist
        # controller cleans, or workers would delete each other's results.
        if not hasattr(config, "workerinput"):
            opt.clean_alluredir = True
    if getattr(opt, "dist", "no") == "load":
        opt.dist = "loadgroup"  # `-n auto` alone: keep each candidate's tests on one worker
    if opt.limit is not None and opt.limit < 1:
        raise pytest.UsageError(f"--limit must be >= 1, got {opt.limit}")
    try:
        candidates = [resolve_candidate(c, ROOT / "candidates") for c in (opt.candidate or DEFAULT_CANDIDATES)]
        if opt.target:
            targets = [resolve_target(t, ROOT / "thresholds") for t in opt.target]
        else:
            targets = [resolve_target(f"{role}/default", ROOT / "thresholds")
                       for role in ROLES if (ROOT / "thresholds" / role / "default.yaml").is_file()]
        if opt.compare:
            candidates += [v for c in candidates if c.offload is not None for v in baselines(c)]
        if opt.limit is not None:
            for t in targets:
                for gate in (t.gates.accuracy, t.gates.hallucination):
                    try:
                        if gate is not None:
                            gate.ensure_reachable(opt.limit)
                    except ValueError as exc:
                        raise ConfigError(f"--limit {opt.limit} with target {t.source}: {exc}") from None
    except ConfigError as exc:
        raise pytest.UsageError(f"edgeready configuration error:\n{exc}") from None
    data_dir = Path(opt.data_dir) if opt.data_dir else _default_data_dir()
    config.stash[RUN_KEY] = RunContext(
        candidates=candidates, targets=targets, data_dir=data_dir, reports_dir=reports,
        cache_dir=Path(opt.cache_dir), candidates_dir=ROOT / "candidates", limit=opt.limit,
        use_cache=not opt.no_cache,
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pair" not in metafunc.fixturenames:
        return
    gates = [m.name for m in metafunc.definition.iter_markers() if m.name in GATES]
    if len(gates) != 1:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: a gate test needs exactly one gate marker {GATES}")
    run = metafunc.config.stash[RUN_KEY]
    # Grouped by candidate so each model is loaded once; the role becomes a marker of the param,
    # so `-m device` selects device targets whatever suite file the gate lives in.
    pairs = sorted(run.pairs(gates[0]), key=lambda p: (p.candidate.name, p.target.name))
    # xdist_group: with `-n`, every test of a candidate runs on one worker, which loads it once.
    metafunc.parametrize(
        "pair",
        [pytest.param(p, marks=[getattr(pytest.mark, p.role), pytest.mark.xdist_group(p.candidate.name)], id=p.id)
         for p in pairs],
    )


@pytest.fixture(scope="session")
def run(request: pytest.FixtureRequest) -> RunContext:
    return request.config.stash[RUN_KEY]


@pytest.fixture
def measurement(request: pytest.FixtureRequest, run: RunContext, pair: Pair) -> Measurement:
    gate = next(m.name for m in request.node.iter_markers() if m.name in GATES)
    _allure_labels(pair, gate)
    if gate != "conformance" and pair.id in run.failed_first_tier:
        pytest.skip(f"{pair.id} failed the conformance gate (KL divergence from its base): not sent to {gate}")
    return run.measure(pair, gate)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Conformance tests first (stable otherwise), so that their verdict can spare the other gates."""
    items.sort(key=lambda it: 0 if it.get_closest_marker("conformance") else 1)


def _allure_labels(pair: Pair, gate: str) -> None:
    try:
        import allure
    except ImportError:  # allure-pytest is a dependency, but the gates must not need it
        return
    allure.dynamic.epic(f"{pair.role}/{pair.target.name}")  # every role has a `default`
    allure.dynamic.feature(gate)
    allure.dynamic.story(pair.candidate.name)
    critical = gate in ("accuracy", "memory")
    allure.dynamic.severity(allure.severity_level.CRITICAL if critical else allure.severity_level.NORMAL)


def attach_result(result: GateResult) -> None:
    try:
        import allure
    except ImportError:
        return
    allure.attach(json.dumps(result.to_json(), indent=2, default=str), name="measurement",
                  attachment_type=allure.attachment_type.JSON)
    m = result.measurement
    if m is not None and m.items:
        worst = sorted(m.items, key=lambda r: r.get("score", 0.0))[:10] if m.gate == "accuracy" else m.items[:10]
        allure.attach("\n".join(json.dumps(r, ensure_ascii=False) for r in worst), name="worst items",
                      attachment_type=allure.attachment_type.TEXT)
    if result.advice:
        allure.attach(result.advice, name="step-1 advice", attachment_type=allure.attachment_type.TEXT)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist controller: gather the gate results each worker measured."""
    output = getattr(node, "workeroutput", {}) or {}
    payload = output.get("edgeready_results")
    config = getattr(node, "config", None)
    if payload and config is not None:
        run = config.stash.get(RUN_KEY, None)
        if run is not None:
            run.results += [GateResult.from_json(d) for d in json.loads(payload)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(RUN_KEY, None)
    if run is None:
        return
    run.close()
    if _is_worker(session.config):
        # Workers hand their results to the controller, which writes one set of reports.
        session.config.workeroutput["edgeready_results"] = json.dumps(  # type: ignore[attr-defined]
            [r.to_json() for r in run.results], default=str)
        return
    # Workers finish in any order: sort so verdict.json is the same for serial and parallel runs.
    run.results.sort(key=lambda r: (r.candidate, r.target, GATES.index(r.gate) if r.gate in GATES else 99))
    if run.results:
        write_reports(run.results, run.reports_dir, {
            "candidates": [c.name for c in run.candidates],
            "targets": [t.key for t in run.targets],
            "limit": run.limit,
            "data_dir": str(run.data_dir) if run.data_dir else None,
            "exitstatus": int(exitstatus),
        })


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    run = terminalreporter.config.stash.get(RUN_KEY, None)
    if run is None or not run.results:
        return
    terminalreporter.section("edgeready verdict")
    for line in terminal_table(run.results):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"reports: {run.reports_dir}/verdict.json, summary.md, items/")
