"""The sign-off report: plots, Allure extras, and a real report from a real run, read in a real browser.

The unit tests build verdicts from GateResult objects (the structure write_reports serializes), so they
run in seconds. The end-to-end test runs the packaged Gemma model on 12 questions, renders the report
with `make report REPORTS=<tmp>` and opens it in headless Chromium: the single-file report from
file://, the multi-file one from a local http.server (it fetches its data, which file:// forbids).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from html import unescape
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import pytest

from edgeready.allure_extras import (
    CATEGORIES,
    attach_plots,
    copy_history,
    cpu_model,
    environment_info,
    write_categories,
    write_environment,
)
from edgeready.measurement import Check, GateResult, Measurement
from edgeready.plots import plots_markdown, render_plots, render_trends, variant_label
from edgeready.report import verdicts
from edgeready.stats import Interval
from edgeready.trends import append_history, merge_jsonl, read_history
from tests.conftest import ROOT, run_gate

FIXTURES = ROOT / "tests" / "fixtures" / "targets"
PNG = b"\x89PNG\r\n\x1a\n"
SHA = "ab" * 32


# ---------------------------------------------------------------- synthetic verdicts (real structure)

def _result(cand: str, target: str, role: str, gate: str, value: float, unit: str, iv: tuple[float, float] | None,
            checks: list[Check], details: dict | None = None, policy: str | None = None,
            method: str = "measured") -> GateResult:
    prov: dict = {"sha256": SHA}
    if policy:
        prov["adapter"] = {"adapter": "offload", "policy": policy,
                           "device": {"system_info": "CPU : AVX2 = 1 | FMA = 1 |"}}
    m = Measurement(gate=gate, metric=gate, value=value, unit=unit, n=40,
                    interval=Interval(iv[0], iv[1], 0.95, "test") if iv else None, method=method,  # type: ignore[arg-type]
                    meter="test", provenance=prov, details=details or {})
    status = "pass" if all(c.passed for c in checks) else "fail"
    return GateResult(cand, target, role, gate, status, m, checks)  # type: ignore[arg-type]


def _device(cand: str, weights: float, acc: float, hal: float, mwh: float) -> list[GateResult]:
    t, r = "default", "device"
    return [
        _result(cand, t, r, "accuracy", acc, "", (acc - 0.1, acc + 0.1),
                [Check("accuracy", acc - 0.1, ">=", 0.35, "", "Wilson lower bound (95%)")]),
        _result(cand, t, r, "hallucination", hal, "", (hal - 0.05, hal + 0.05),
                [Check("hallucination_rate", hal + 0.05, "<=", 0.6, "", "bootstrap upper bound")]),
        _result(cand, t, r, "memory", weights * 1.8, "MB", None,
                [Check("weights", weights, "<=", 400, "MB", "GGUF tensor bytes"),
                 Check("peak_rss", weights * 1.8, "<=", 900, "MB", "measured peak RSS")],
                {"weights_mb": weights}),
        _result(cand, t, r, "energy", mwh, "mWh", (0.0, mwh * 2),
                [Check("energy_per_query", mwh * 2, "<=", 0.5, "mWh", "Student-t upper bound")],
                method="estimated"),
    ]


def _offload(cand: str, policy: str, acc: float, share: float, p95: float, p95_ub: float) -> list[GateResult]:
    t, r = "offload/default", "offload"
    by = {"simple": {"n": 20, "accuracy": acc + 0.1, "interval": [acc - 0.1, acc + 0.3]},
          "complex": {"n": 20, "accuracy": acc - 0.1, "interval": [acc - 0.3, acc + 0.1]}}
    return [
        _result(cand, t, r, "accuracy", acc, "", (acc - 0.15, acc + 0.15),
                [Check("accuracy", acc - 0.15, ">=", 0.3, "", "Wilson lower bound (95%)")], {"by_complexity": by},
                policy=policy),
        _result(cand, t, r, "latency", p95, "s", (p95 / 2, p95_ub),
                [Check("p95_latency", p95_ub, "<=", 5.0, "s", "order-statistic upper bound"),
                 Check("share_offloaded", min(1.0, share + 0.1), "<=", 0.7, "", "Wilson upper bound")],
                {"p50_s": p95 / 2, "p95_s": p95, "p95_upper_bound_s": p95_ub, "share_offloaded": share,
                 "share_offloaded_interval": [max(0.0, share - 0.1), min(1.0, share + 0.1)]}, policy=policy),
    ]


def _doc(results: list[GateResult], created: str = "2026-11-24T08:00:00+00:00") -> dict:
    doc = {"edgeready": "0.1.0", "created": created, "versions": {"python": "3.11.7", "llama-cpp-python": "0.3.36"},
           "host": {"system": "Linux"}, "run": {"targets": ["default"], "limit": 40}, "overall": "fail",
           "verdicts": verdicts(results)}
    # Through JSON as write_reports does it: an infinite bound comes back as float('inf').
    return json.loads(json.dumps(doc, default=str))


@pytest.fixture
def full_verdict() -> dict:
    return _doc(_device("gemma3-270m-q4km", 241.0, 0.45, 0.40, 0.2) + _device("smollm2-135m-q4", 92.0, 0.22, 0.55, 0.1)
                + _offload("offload-default", "oracle", 0.40, 0.45, 19.3, float("inf"))
                + _offload("offload-default.device-only", "never", 0.25, 0.0, 1.2, 1.8)
                + _offload("offload-default.server-only", "always", 0.5, 1.0, 3.1, 4.6))


# ---------------------------------------------------------------- plots

def test_every_plot_is_drawn_when_the_gates_are_there(full_verdict, tmp_path):
    paths = render_plots(full_verdict, tmp_path)
    names = {p.name for p in paths}
    assert names == {
        "default__accuracy_vs_size.png", "default__hallucination_vs_size.png", "default__energy_vs_accuracy.png",
        "offload-default__offload_comparison.png",
    }, paths.notes
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG) and 10_000 < len(data) < 300_000, p
    # The offload candidates here have no memory/hallucination/energy gates: each omission is explained.
    assert any("offload-default.server-only left out, no hallucination / memory value" in n for n in paths.notes)
    assert any("Accuracy vs weights size (offload/default): skipped, needs the accuracy and memory gates" in n
               for n in paths.notes)
    assert any("Energy per query vs accuracy (offload/default): skipped" in n for n in paths.notes)


def test_a_plot_without_its_gates_is_skipped_with_the_reason(tmp_path):
    only_accuracy = [r for r in _device("gemma3-270m-q4km", 241.0, 0.45, 0.4, 0.2) if r.gate == "accuracy"]
    paths = render_plots(_doc(only_accuracy), tmp_path)
    assert list(paths) == []
    assert any("Accuracy vs weights size (default): skipped, needs the accuracy and memory gates" in n
               for n in paths.notes)
    assert not list(tmp_path.glob("*.png"))


def test_errored_gates_are_not_drawn(tmp_path):
    rs = _device("gemma3-270m-q4km", 241.0, 0.45, 0.4, 0.2)
    rs[0] = GateResult("gemma3-270m-q4km", "default", "device", "accuracy", "error", error="dataset file not found")
    paths = render_plots(_doc(rs), tmp_path)
    assert "default__accuracy_vs_size.png" not in {p.name for p in paths}
    assert any("gemma3-270m-q4km left out, no accuracy value" in n for n in paths.notes)


def test_variants_are_named_by_their_routing_policy(full_verdict):
    labels = {v["candidate"]: variant_label(v) for v in full_verdict["verdicts"] if v["role"] == "offload"}
    assert labels == {"offload-default": "offload", "offload-default.device-only": "device-only",
                      "offload-default.server-only": "server-only"}


def test_plots_markdown_links_relative_to_the_summary(full_verdict, tmp_path):
    paths = render_plots(full_verdict, tmp_path / "plots")
    lines = plots_markdown(paths, tmp_path)
    assert lines[0] == "## Trade-off plots"
    assert "![Accuracy vs weights size: target default](plots/default__accuracy_vs_size.png)" in lines
    assert plots_markdown([], tmp_path) == []


def test_history_is_appended_once_per_run_and_trends_need_two_runs(full_verdict, tmp_path):
    hist = tmp_path / "history.jsonl"
    assert append_history(full_verdict, hist) == 14  # 2 x 4 device gates + 3 x 2 offload
    assert append_history(full_verdict, hist) == 0  # the same verdict.json rendered again
    first = render_trends(hist, tmp_path)
    assert list(first) == [] and any("one run so far" in n for n in first.notes)
    later = json.loads(json.dumps(full_verdict))
    later["created"] = "2026-11-25T08:00:00+00:00"
    assert append_history(later, hist) == 14
    rows = read_history(hist)
    inf_row = next(r for r in rows if r["candidate"] == "offload-default" and r["gate"] == "latency")
    assert inf_row["high"] is None  # no non-standard Infinity in the JSON lines
    trends = render_trends(hist, tmp_path)
    assert {p.name for p in trends} == {f"trend__{c}.png" for c in (
        "gemma3-270m-q4km", "smollm2-135m-q4", "offload-default", "offload-default.device-only",
        "offload-default.server-only")}


def test_merge_jsonl_keeps_history_chronological(tmp_path):
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text('{"timestamp": 1000, "n": 1}\n{"timestamp": 2000, "n": 2}\n')
    new.write_text('{"timestamp": 3000, "n": 3}\n')
    assert merge_jsonl(old, new) == 2
    assert merge_jsonl(old, new) == 0
    assert [json.loads(x)["n"] for x in new.read_text().splitlines()] == [1, 2, 3]


# ---------------------------------------------------------------- Allure extras

def _parse_properties(text: str) -> dict[str, str]:
    """Java .properties, as far as write_environment writes them."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"((?:\\.|[^=])*)=(.*)", line)
        assert m, line
        key, value = m.groups()
        out[_unescape(key)] = _unescape(value)
    return out


def _unescape(s: str) -> str:
    return re.sub(r"\\u([0-9a-f]{4})|\\(.)", lambda m: chr(int(m[1], 16)) if m[1] else
                  {"n": "\n", "t": "\t", "r": "\r"}.get(m[2], m[2]), s)


def test_environment_properties_escape_and_round_trip(tmp_path):
    info = {"model.x.sha256": SHA, "a key": "x=y: z", "path": "C:\\models\\m.gguf", "cpu": "Snapdragon™ 865",
            "multi": "line 1\nline 2", "none": None}
    path = write_environment(tmp_path, info)
    text = path.read_text(encoding="ascii")  # Allure 2 reads ISO-8859-1: nothing else in the file
    assert "a\\ key=" in text and "\\u2122" in text
    assert _parse_properties(text) == {k: v for k, v in info.items() if v is not None}


def test_environment_info_comes_from_the_verdict(full_verdict):
    info = environment_info(full_verdict, llama_cmake_args="-DGGML_NATIVE=OFF")
    assert info["python"] == "3.11.7" and info["llama-cpp-python"] == "0.3.36"
    assert info["llama.cpp.build_flags"] == "-DGGML_NATIVE=OFF"
    assert info["llama.cpp.system_info"] == "CPU : AVX2 = 1 | FMA = 1 |"
    assert info["model.gemma3-270m-q4km.sha256"] == SHA
    assert info["host.cpu"] == cpu_model()


def test_cpu_model_reads_proc_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum\n\nprocessor\t: 1\n"
                 "model name\t: Intel(R) Xeon(R) Platinum\n")
    assert cpu_model(f) == "Intel(R) Xeon(R) Platinum x 2 logical CPUs"


@pytest.mark.parametrize(("status", "message", "trace", "expected"), [
    ("failed", "accuracy gate FAIL\n  next (step 1): inconclusive rather than bad: ...", "",
     "Inconclusive (bound vs point)"),
    ("failed", "accuracy gate FAIL for x@default\n  next (step 1): quantize at more bits", "", "Gate failed"),
    ("broken", "RuntimeError", "Traceback...\nedgeready.measurement.MeasurementError: no GGUF", "Measurement error"),
    ("broken", "x", "edgeready.energy.reading.EnergyUnavailable: no RAPL", "Measurement error"),
    ("broken", "x", "Traceback\nKeyError: 'oops'", None),  # a bug in the suite: Allure's own "Test defects"
])
def test_categories_match_in_allure2_and_allure3_semantics(tmp_path, status, message, trace, expected):
    cats = json.loads(write_categories(tmp_path).read_text())
    assert cats == CATEGORIES

    def first_match(full: bool) -> str | None:
        for c in cats:
            if status not in c["matchedStatuses"]:
                continue
            ok = True
            for key, text in (("messageRegex", message), ("traceRegex", trace)):
                if key in c:
                    # Allure 2: Java's matches() (whole text); Allure 3: JavaScript's test() (search)
                    ok &= bool(re.fullmatch(c[key], text) if full else re.search(c[key], text))
            if ok:
                return c["name"]
        return None

    assert first_match(full=True) == expected
    assert first_match(full=False) == expected


def test_copy_history_restores_both_layouts(tmp_path):
    report, results, reports = tmp_path / "prev-report", tmp_path / "reports" / "allure-results", tmp_path / "reports"
    (report / "history").mkdir(parents=True)
    (report / "history" / "history-trend.json").write_text("[]")
    (report / "history" / "allure-history.jsonl").write_text('{"timestamp": 1}\n')
    (report / "history" / "history.jsonl").write_text('{"timestamp": "2026-11-23T00:00:00+00:00"}\n')
    (reports).mkdir()
    (reports / "history.jsonl").write_text('{"timestamp": "2026-11-24T00:00:00+00:00"}\n')
    written = copy_history(report, results)
    assert (results / "history" / "history-trend.json").is_file() and (results / "history-trend.json").is_file()
    assert (reports / "allure-history.jsonl").read_text() == '{"timestamp": 1}\n'
    assert [json.loads(x)["timestamp"][:10] for x in (reports / "history.jsonl").read_text().splitlines()] == [
        "2026-11-23", "2026-11-24"]
    assert len(written) == 4
    assert copy_history(tmp_path / "no-report", results) == []


def test_plots_become_global_attachments_replaced_on_rerun(full_verdict, tmp_path):
    plots = render_plots(full_verdict, tmp_path / "plots")
    results = tmp_path / "allure-results"
    doc = json.loads(attach_plots(results, plots).read_text())
    assert [a["name"] for a in doc["attachments"]] == [p.name for p in plots]
    assert all((results / a["source"]).read_bytes().startswith(PNG) for a in doc["attachments"])
    attach_plots(results, plots[:1])
    assert len(list(results.glob("*-attachment.png"))) == 1
    assert attach_plots(results, []) is None and not list(results.glob("*globals.json"))


# ---------------------------------------------------------------- end to end, in a browser

def _chromium() -> str | None:
    env = os.environ.get("EDGEREADY_CHROMIUM")
    return env or next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _browser(url: str, profile: Path, *action: str) -> subprocess.CompletedProcess[str]:
    # Flags that keep a headless Chromium off the network (these runners have none) and give the
    # page's scripts ten seconds of virtual time to fetch and render before the DOM or pixels are read.
    cmd = [_chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", *action, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _page_text(url: str, profile: Path) -> str:
    proc = _browser(url, profile, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", proc.stdout, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def _screenshot(url: str, profile: Path, out: Path) -> Path:
    proc = _browser(url, profile, f"--screenshot={out}", "--window-size=1400,1000")
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    return out


def _looks_rendered(png: Path) -> bool:
    """A blank or error page is one or two colours; a rendered report has text, badges and icons."""
    from PIL import Image

    with Image.open(png) as im:
        colors = im.convert("RGB").resize((350, 250)).getcolors(maxcolors=100_000)
    return colors is not None and len(colors) > 200


@pytest.fixture(scope="module")
def http_root() -> Iterator[tuple[list[Path], str]]:
    """A local web server (http.server, 127.0.0.1, a free port) whose root the test sets."""
    root: list[Path] = [ROOT]

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root[0]), **kw)

        def log_message(self, *args):  # quiet: pytest shows stderr on failure only anyway
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _make_report(reports: Path) -> subprocess.CompletedProcess[str]:
    """`make report REPORTS=...`; with -f report.mk as well while the Makefile does not include it yet.
    -o: the venv stamp is taken as up to date (this test runs inside that venv)."""
    included = re.search(r"^\s*-?include\s+report\.mk", (ROOT / "Makefile").read_text(), flags=re.M)
    files = [] if included else ["-f", "Makefile", "-f", "report.mk"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(["make", *files, "-o", ".venv/.installed", "report", f"REPORTS={reports}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def real_report(tmp_path_factory) -> Path:
    missing = [tool for tool in ("make", "npm", "node") if not shutil.which(tool)]
    if not _chromium():
        missing.append("chromium (apt-get install -y chromium)")
    if missing:
        pytest.skip(f"the report's end-to-end test needs {', '.join(missing)}")
    reports = tmp_path_factory.mktemp("report")
    gate = run_gate("-m", "device and accuracy", "--target", str(FIXTURES / "e2e-fail.yaml"), "--limit", "12",
                    "--reports", str(reports))
    assert gate.returncode == 1, gate.stdout[-3000:] + gate.stderr[-3000:]  # the accuracy gate fails
    made = _make_report(reports)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    return reports


@pytest.mark.e2e
def test_report_is_rendered_from_a_real_run(real_report):
    results = real_report / "allure-results"
    assert (results / "environment.properties").is_file() and (results / "categories.json").is_file()
    assert (real_report / "allure-report" / "index.html").is_file()
    assert (real_report / "allure-report-single" / "index.html").is_file()
    assert len((real_report / "allure-history.jsonl").read_text().splitlines()) == 1  # one run, one point
    assert len(read_history(real_report / "history.jsonl")) == 1
    again = _make_report(real_report)  # rendering the same run again adds no history point
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len((real_report / "allure-history.jsonl").read_text().splitlines()) == 1
    assert len(read_history(real_report / "history.jsonl")) == 1
    assert (real_report / "allure-report" / "history" / "allure-history.jsonl").is_file()
    # Only the accuracy gate ran: no trade-off plot has both of its axes, and none is faked.
    assert not list((real_report / "plots").glob("*.png"))


@pytest.mark.e2e
def test_single_file_report_shows_the_failing_gate_in_chromium(real_report, tmp_path):
    url = (real_report / "allure-report-single" / "index.html").as_uri()
    text = _page_text(url, tmp_path / "profile")
    assert "edgeready sign-off" in text
    assert "device/e2e-fail" in text and "accuracy" in text and "gemma3-270m-q4km" in text
    # The test's title comes from the gate's description (edgeready/gates/accuracy.py) and the pair.
    assert "generalization accuracy (question answering): gemma3-270m-q4km@e2e-fail" in text
    assert re.search(r"Failed 1\b", text), text[:2000]
    assert f"llama-cpp-python {metadata.version('llama-cpp-python')}" in text  # environment.properties
    cats = _page_text(url + "#categories", tmp_path / "profile")
    assert "Gate failed 1" in cats or "Inconclusive (bound vs point) 1" in cats, cats[:2000]


@pytest.mark.e2e
def test_multi_file_report_served_over_http_and_screenshots(real_report, tmp_path, http_root):
    root, base = http_root
    root[0] = real_report / "allure-report"
    text = _page_text(f"{base}/index.html", tmp_path / "profile")
    assert "gemma3-270m-q4km" in text and "device/e2e-fail" in text and re.search(r"Failed 1\b", text)
    by_id = json.loads((real_report / "allure-report" / "test-results.json").read_text())["byId"]
    failed = next(t["id"] for t in by_id.values() if t["status"] == "failed")
    detail = _page_text(f"{base}/index.html#{failed}", tmp_path / "profile")
    assert "accuracy gate FAIL for gemma3-270m-q4km@e2e-fail" in detail and "next (step 1)" in detail
    assert "Category: Gate failed" in detail or "Category: Inconclusive" in detail
    shots = {
        "overview": _screenshot(f"{base}/index.html", tmp_path / "profile", tmp_path / "overview.png"),
        "failed-gate": _screenshot(f"{base}/index.html#{failed}", tmp_path / "profile", tmp_path / "failed.png"),
    }
    for png in shots.values():
        assert png.read_bytes().startswith(PNG) and _looks_rendered(png), png
    # Kept for the README (docs/img/report.png is copied from here by hand): reports/ is not committed.
    keep = ROOT / "reports" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    for name, png in shots.items():
        shutil.copyfile(png, keep / f"report-{name}.png")
