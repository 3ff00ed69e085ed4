"""The pytest side of edgeready: options, (candidate x target) parametrization, reports.

Targets and candidates are validated in pytest_configure, before collection, so a bad YAML stops
the run in a second with one message naming file, key and line, and no model is ever loaded.
The gate tests, their parameters and the markers come from the gate registry (edgeready/gates/): one test
per (gate, pair) in suites/test_gates.py, marked with the gate's name and the target's role. Measurements
happen in the `measurement` fixture: a measurement that cannot be made is reported by pytest as an ERROR
(setup failure), a threshold that is missed as a FAILED test.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeready.baseline import BaselineRun, resolve_baseline
from edgeready.candidates import Candidate, resolve_candidate
from edgeready.config_errors import where
from edgeready.errors import ConfigError
from edgeready.gates import Gate, gate_named, gate_names, gates
from edgeready.measurement import GateResult, Measurement
from edgeready.report import terminal_table, write_reports, write_status
from edgeready.run import Run, run_digests
from edgeready.schema import ROLES, Pair, Target
from edgeready.shard import assign, cell_id, load_durations, parse_shard, record_durations
from edgeready.targets import check_run_options, gate_settings, resolve_target

# llama.cpp's OpenMP threads spin while they wait; on a shared machine a busy neighbour then makes two
# threads 8x slower than one (measured here). Passive waiting costs little when the machine is quiet.
# Set before llama_cpp is imported, inherited by the memory probe and the servers; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
# Without --candidate: the embedded default for device and server targets, and the default offload
# deployment for offload targets (each runs only on the roles it fits, see run.runs_on).
DEFAULT_CANDIDATES = ("gemma3-270m-q4km", "offload-default")
RUN_KEY = pytest.StashKey[Run]()
SHARD_KEY = pytest.StashKey["tuple[int, int] | None"]()
DURATIONS_KEY = pytest.StashKey["dict[str, float]"]()
BALANCE_KEY = pytest.StashKey["dict[str, float]"]()  # the durations the shard assignment was computed from
IN_PROGRESS = pytest.StashKey["tuple[Pair, str] | None"]()
ROLE_HELP = {"device": "gates of a device target (a phone, an embedded board)",
             "server": "gates of an edge-server target",
             "offload": "gates of an offload deployment (device + server + routing policy)"}


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
    g.addoption("--baseline", default=None, metavar="NAME|PATH",
                help="the model the candidates replace, for targets with a `baseline:` block: a candidate name, "
                     "manifest or GGUF path, or an earlier run's reports folder (overrides baseline.candidate)")
    g.addoption("--shard", default=None, metavar="I/N",
                help="run shard I of N: whole (candidate, target) pairs, balanced by earlier runs' durations; "
                     "`python -m edgeready merge` puts the shards' reports back together")
    g.addoption("--compare", action="store_true",
                help="offload targets: also judge device-only and server-only variants of each offload candidate")
    g.addoption("--no-cache", action="store_true",
                help="generate everything again instead of reusing stored generations (.cache/generations.sqlite)")
    g.addoption("--cache-dir", default=str(ROOT / ".cache"), metavar="DIR", help="assembled models, digests")


def compare_variants(candidate: Candidate) -> list[Candidate]:
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
    # Markers from the registry: `-m "device and accuracy"` selects what it says, for any registered gate.
    for role in ROLES:
        config.addinivalue_line("markers", f"{role}: {ROLE_HELP[role]}")
    for g in gates():
        config.addinivalue_line("markers", f"{g.name}: {g.description}")
    opt = config.option
    reports = Path(opt.reports)
    writes = _writes_reports(config)
    try:
        _check_usage(config)
        _configure_plugins(config)
        data_dir = Path(opt.data_dir) if opt.data_dir else _default_data_dir()
        selected = _selected(config)
        config.stash[SHARD_KEY] = parse_shard(opt.shard) if opt.shard else None
        candidates, targets = _candidates_and_targets(opt, data_dir, selected)
        run = Run.create(candidates, targets, reports_dir=reports, cache_dir=Path(opt.cache_dir),
                         candidates_dir=ROOT / "candidates", data_dir=data_dir, limit=opt.limit,
                         use_cache=not opt.no_cache, baselines=_baselines(opt.baseline, targets, selected),
                         worker=_worker_index(config))
    except (ConfigError, pytest.UsageError) as exc:
        message = f"edgeready configuration error:\n{exc}" if isinstance(exc, ConfigError) else str(exc)
        if writes:  # CI reads verdict.json: an earlier run's pass must not survive a refused one
            _reset_reports(config, reports, "error", message)
        raise pytest.UsageError(message) from None
    if writes:  # a run killed outright leaves `running`, never an earlier pass
        _reset_reports(config, reports, "running", "the run is under way (or was killed before it finished)")
    config.stash[RUN_KEY] = run


def _check_usage(config: pytest.Config) -> None:
    opt = config.option
    if config.rootpath != ROOT and (opt.candidate or opt.target or opt.data_dir):
        # pytest chooses its rootdir from path-like arguments before any plugin defines options,
        # so `--target /elsewhere/t.yaml` moves it out of the project and the suites vanish.
        raise pytest.UsageError(
            f"pytest chose rootdir {config.rootpath}, not the edgeready project {ROOT}: write path "
            f"options as --target=PATH (with '='), or add -c {ROOT / 'pyproject.toml'}"
        )
    if opt.limit is not None and opt.limit < 1:
        raise pytest.UsageError(f"--limit must be >= 1, got {opt.limit}")


def _writes_reports(config: pytest.Config) -> bool:
    """The process that writes the reports: a run of the gate suites, on the xdist controller, for real."""
    return _runs_suites(config) and not _is_worker(config) and not config.option.collectonly


def _reset_reports(config: pytest.Config, reports: Path, overall: str, note: str) -> None:
    """Replace what an earlier run left: its evidence files, its Allure results (when they are ours) and its
    verdict, by a verdict that says `overall`."""
    shutil.rmtree(reports / "items", ignore_errors=True)
    ours = str(reports / "allure-results")
    if overall == "error" and getattr(config.option, "allure_report_dir", None) in (None, ours):
        shutil.rmtree(ours, ignore_errors=True)  # allure-pytest will not run to clean them
    write_status(reports, overall, note)


def _selected(config: pytest.Config) -> Callable[[str, str], bool]:
    """Whether `-m` selects a (gate, role) cell, so that validation considers the gates that will run."""
    expr = config.option.markexpr
    if not expr:
        return lambda gate, role: True
    try:
        from _pytest.mark.expression import Expression  # pytest's own parser for -m

        compiled = Expression.compile(expr)
    except Exception:  # a malformed -m is pytest's to report; validate everything meanwhile
        return lambda gate, role: True
    return lambda gate, role: compiled.evaluate(lambda name, **_: name in (gate, role))


def _configure_plugins(config: pytest.Config) -> None:
    """What the run asks of hypothesis, allure-pytest and pytest-xdist."""
    opt = config.option
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
        opt.allure_report_dir = str(Path(opt.reports) / "allure-results")
        # One run's results per report (history is kept by `make report`); only the xdist
        # controller cleans, or workers would delete each other's results.
        if not hasattr(config, "workerinput"):
            opt.clean_alluredir = True
    if getattr(opt, "dist", "no") == "load":
        opt.dist = "loadgroup"  # `-n auto` alone: keep each candidate's tests on one worker


def _candidates_and_targets(opt: Any, data_dir: Path | None,
                            selected: Callable[[str, str], bool]) -> tuple[list[Candidate], list[Target]]:
    """The options' candidates and targets, validated (ConfigError names the file, line and key): the
    schemas, then what only the run's options tell, for the gates `-m` selects: --limit and data files."""
    candidates = [resolve_candidate(c, ROOT / "candidates") for c in (opt.candidate or DEFAULT_CANDIDATES)]
    if opt.target:
        targets = [resolve_target(t, ROOT / "thresholds") for t in opt.target]
    else:
        targets = [resolve_target(f"{role}/default", ROOT / "thresholds")
                   for role in ROLES if (ROOT / "thresholds" / role / "default.yaml").is_file()]
    if opt.compare:
        candidates += [v for c in candidates if c.offload is not None for v in compare_variants(c)]
    for t in targets:
        blocks = {name: b for name, b in t.gates.configured().items() if selected(name, t.role)}
        check_run_options(t, blocks, opt.limit, data_dir)
    return candidates, targets


def _baselines(ref: str | None, targets: list[Target],
               selected: Callable[[str, str], bool]) -> dict[str, Candidate | BaselineRun]:
    """What each target with a `baseline:` block compares its candidates with (--baseline wins), resolved and
    checked now: an unknown baseline, a margin with no baseline, or an earlier run measured with other
    settings stop the run before any model loads."""
    out: dict[str, Candidate | BaselineRun] = {}
    for t in targets:
        spec = t.baseline
        gates_ = [g for g in (spec.margins if spec else {}) if selected(g, t.role)]
        if spec is None or not gates_:
            continue
        chosen = ref or spec.candidate
        if chosen is None:
            raise ConfigError(f"{where(t.source or Path(t.name), ('baseline',))}: baseline.margins compares "
                              f"{', '.join(gates_)} with a baseline, but none is given: set baseline.candidate "
                              "or pass --baseline")
        out[t.key] = resolve_baseline(chosen, ROOT / "candidates", t.key)
        base = out[t.key]
        if isinstance(base, BaselineRun):
            for gate in gates_:
                base.check_settings(gate, gate_settings(t, gate))
    if ref is not None and not out:
        raise ConfigError(f"--baseline {ref}: no selected target compares its candidates with a baseline (give "
                          "one a `baseline: {margins: {accuracy: 0.05}}` block)")
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize a gate test over (gate, pair): every registered gate, every pair it runs on."""
    if not {"gate", "pair"} <= set(metafunc.fixturenames):
        return
    cells = _cells(metafunc.config, mine=True)
    # The gate and the role become markers of the param, so `-m "device and accuracy"` selects by both;
    # xdist_group: with `-n`, every test of a candidate runs on one worker, which loads it once.
    metafunc.parametrize("gate, pair", [
        pytest.param(g, p, id=f"{g.name}:{p.id}", marks=[getattr(pytest.mark, g.name), getattr(pytest.mark, p.role),
                                                        pytest.mark.xdist_group(p.candidate.name)])
        for g, p in cells])


def _cells(config: pytest.Config, mine: bool) -> list[tuple[Gate, Pair]]:  # type: ignore[type-arg]
    """The (gate, pair) cells of the run, in run order; `mine`: only this shard's (all of them unsharded)."""
    run = config.stash[RUN_KEY]
    order = {name: i for i, name in enumerate(gate_names())}
    cells = sorted(((g, p) for g in gates() for p in run.pairs(g.name)),
                   key=lambda gp: (gp[1].candidate.name, gp[1].target.name, order[gp[0].name]))
    shard = config.stash.get(SHARD_KEY, None)
    if not mine or shard is None:
        return cells
    # The assignment sees the cells -m selects, so that every shard of one command splits the same matrix,
    # with the durations as they were when the run started (a shard never writes them: see sessionfinish).
    selected = _selected(config)
    matrix = [cell_id(g.name, p.id) for g, p in cells if selected(g.name, p.role)]
    where = assign(matrix, shard[1], config.stash.setdefault(BALANCE_KEY, load_durations(run.cache_dir)))
    return [(g, p) for g, p in cells if where.get(p.id) == shard[0]]


@pytest.fixture(scope="session")
def run(request: pytest.FixtureRequest) -> Run:
    return request.config.stash[RUN_KEY]


@pytest.fixture
def measurement(request: pytest.FixtureRequest, run: Run, pair: Pair,
                gate: Gate) -> Iterator[Measurement]:  # type: ignore[type-arg]
    _allure_labels(pair, gate)
    if not gate.first_tier and pair.id in run.failed_first_tier:
        pytest.skip(f"{pair.id} did not pass its first-tier gate: not sent to {gate.name}")
    # Remembered while the gate runs: a run interrupted now reports this gate as broken, not as missing.
    request.config.stash[IN_PROGRESS] = (pair, gate.name)
    started = time.perf_counter()
    try:
        yield run.measure(pair, gate.name)
    finally:  # kept for balancing later shards (edgeready/shard.py), errors included: they took the time too
        durations = request.config.stash.setdefault(DURATIONS_KEY, {})
        durations[cell_id(gate.name, pair.id)] = time.perf_counter() - started
    request.config.stash[IN_PROGRESS] = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Conformance tests first (stable otherwise), so that their verdict can spare the other gates."""
    first = {g.name for g in gates() if g.first_tier}
    items.sort(key=lambda it: 0 if any(it.get_closest_marker(name) for name in first) else 1)


def _allure_labels(pair: Pair, gate: Gate) -> None:  # type: ignore[type-arg]
    try:
        import allure
    except ImportError:  # allure-pytest is a dependency, but the gates must not need it
        return
    allure.dynamic.description(inspect.getdoc(inspect.getmodule(type(gate))) or gate.description)
    allure.dynamic.epic(f"{pair.role}/{pair.target.name}")  # every role has a `default`
    allure.dynamic.feature(gate.name)
    allure.dynamic.story(pair.candidate.name)
    allure.dynamic.severity(getattr(allure.severity_level, gate.severity.upper()))


def attach_result(result: GateResult) -> None:
    try:
        import allure
    except ImportError:
        return
    # Set here, in the test's call: allure-pytest ignores a title given while a fixture sets up.
    allure.dynamic.title(f"{gate_named(result.gate).description}: {result.pair}")
    allure.attach(json.dumps(result.to_json(), indent=2, default=str), name="measurement",
                  attachment_type=allure.attachment_type.JSON)
    m = result.measurement
    if m is not None and m.items:
        worst = sorted(m.items, key=lambda r: r.get("score", 0.0))[:10] if m.gate == "accuracy" else m.items[:10]
        allure.attach("\n".join(json.dumps(r, ensure_ascii=False) for r in worst), name="worst items",
                      attachment_type=allure.attachment_type.TEXT)
    if m is not None and m.paired is not None and m.paired.flips:
        allure.attach("\n".join(json.dumps(f, ensure_ascii=False) for f in m.paired.flips),
                      name=f"flipped items vs {m.paired.baseline}", attachment_type=allure.attachment_type.TEXT)
    if result.advice:
        allure.attach(result.advice, name="step-1 advice", attachment_type=allure.attachment_type.TEXT)


def junit_properties(result: GateResult) -> list[tuple[str, object]]:
    """Each check's observed value, threshold and verdict, and the measurement's value, interval and n, as
    JUnit properties (GitLab and Jenkins show them in their test tabs)."""
    m = result.measurement
    props: list[tuple[str, object]] = [("status", result.status)]
    if m is not None:
        props += [("value", m.value), ("n", m.n), ("method", m.method), ("meter", m.meter)]
        if m.interval is not None:
            props += [("interval", f"[{m.interval.low:.6g}, {m.interval.high:.6g}] {m.interval.confidence:.0%} "
                                   f"{m.interval.method}")]
    for c in result.checks:
        props += [(f"check.{c.name}", f"{c.observed:.6g} {c.op} {c.threshold:.6g} {c.unit}".strip()
                   + (" ok" if c.passed else " FAIL"))]
    return props


def failure_text(result: GateResult) -> str:
    """The assertion message: its first line carries the step-1 advice (JUnit's failure message is the first
    line), then the full account."""
    why = result.advice or result.error or "see the checks below"
    return f"{result.gate} gate {result.status.upper()} for {result.pair}: {why}\n{result.message()}"


def _worker_index(config: pytest.Config) -> int:
    """This xdist worker's number (gw3 -> 3), 0 in a serial run: it owns one endpoint of each pool."""
    workerid = str(getattr(config, "workerinput", {}).get("workerid", "gw0"))
    return int(workerid[2:]) if workerid[2:].isdigit() else 0


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
            run.results.extend(GateResult.from_json(d) for d in json.loads(payload))
            durations = config.stash.setdefault(DURATIONS_KEY, {})
            durations.update(json.loads(output.get("edgeready_durations") or "{}"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(RUN_KEY, None)
    if run is None:
        return
    run.close()
    if _is_worker(session.config):
        # Workers hand their results to the controller, which writes one set of reports.
        session.config.workeroutput["edgeready_results"] = json.dumps(  # type: ignore[attr-defined]
            [r.to_json() for r in run.results], default=str)
        session.config.workeroutput["edgeready_durations"] = json.dumps(  # type: ignore[attr-defined]
            session.config.stash.get(DURATIONS_KEY, {}))
        return
    # Workers finish in any order: sort so verdict.json is the same for serial and parallel runs.
    order = {name: i for i, name in enumerate(gate_names())}
    run.results.sort(key=lambda r: (r.candidate, r.target, order.get(r.gate, len(order))))
    if not _writes_reports(session.config):
        return
    overall, note = None, None
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        overall, note = "interrupted", "the run was interrupted: gates that did not finish have no result"
        _allure_broken(session.config, session.config.stash.get(IN_PROGRESS, None))
    elif not run.results:
        overall, note = "error", f"no gate ran (pytest exit status {int(exitstatus)}): check -m, --candidate, --target"
    if session.config.stash.get(SHARD_KEY, None) is None:
        # Shards leave the balancing input alone (the next shard of the same pipeline must split alike); their
        # durations go into their verdicts, and `merge` writes them out for the next pipeline's cache.
        record_durations(run.cache_dir, session.config.stash.get(DURATIONS_KEY, {}))
    write_reports(run.results, run.recorder.reports_dir, {
        "candidates": [c.name for c in run.candidates],
        "targets": [t.key for t in run.targets],
        "limit": run.limit,
        "data_dir": str(run.data_dir) if run.data_dir else None,
        "exitstatus": int(exitstatus),
        **_matrix_info(session.config),
    }, overall=overall, note=note)


def _matrix_info(config: pytest.Config) -> dict[str, object]:
    """What `merge` checks: which cells the whole command covers, which this shard ran, and the digests of
    the target files and candidates (shards of different inputs must not be merged)."""
    run, shard, selected = config.stash[RUN_KEY], config.stash.get(SHARD_KEY, None), _selected(config)
    matrix = sorted(cell_id(g.name, p.id) for g, p in _cells(config, mine=False) if selected(g.name, p.role))
    mine = sorted(cell_id(g.name, p.id) for g, p in _cells(config, mine=True) if selected(g.name, p.role))
    durations = config.stash.get(DURATIONS_KEY, {})
    balanced = config.stash.setdefault(BALANCE_KEY, load_durations(run.cache_dir))
    return {"shard": f"{shard[0]}/{shard[1]}" if shard else None, "matrix": matrix, "cells": mine,
            "digests": run_digests(run), "durations": {k: round(v, 3) for k, v in durations.items()},
            "balanced_by": hashlib.sha256(json.dumps(balanced, sort_keys=True).encode()).hexdigest()[:16]}



def _allure_broken(config: pytest.Config, cell: tuple[Pair, str] | None) -> None:
    """The gate an interrupt stopped, as a broken test of the sign-off report (allure-pytest writes nothing
    for a test whose setup was interrupted, so the report would silently miss it)."""
    folder = getattr(config.option, "allure_report_dir", None)
    if cell is None or not folder:
        return
    pair, gate = cell
    now = int(time.time() * 1000)
    name = f"{gate_named(gate).description}: {pair.id}"
    doc = {"uuid": str(uuid.uuid4()), "historyId": f"{gate}:{pair.id}", "name": name, "fullName": name,
           "status": "broken", "stage": "finished", "start": now, "stop": now,
           "statusDetails": {"message": f"interrupted while the {gate} gate was measuring {pair.id}: no verdict"},
           "labels": [{"name": "epic", "value": f"{pair.role}/{pair.target.name}"}, {"name": "feature", "value": gate},
                      {"name": "story", "value": pair.candidate.name}]}
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{doc['uuid']}-result.json").write_text(json.dumps(doc), encoding="utf-8")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    run = terminalreporter.config.stash.get(RUN_KEY, None)
    if run is None or not run.results:
        return
    terminalreporter.section("edgeready verdict")
    for line in terminal_table(run.results):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"reports: {run.recorder.reports_dir}/verdict.json, summary.md, items/")
