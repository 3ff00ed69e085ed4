"""Target schema: every bad input is one clear error naming the file, key and line."""

import json
import resource
import time
from pathlib import Path

import pytest

from edgeready.config_errors import ConfigError
from edgeready.targets import load_target, resolve_target
from tests.conftest import ROOT, run_gate

SHIPPED = (ROOT / "thresholds" / "device" / "default.yaml").read_text()
SEQUENTIAL_BLOCK = "    mode: sequential\n    sample_size: 854\n    round_size: 10\n    delta: 0.10\n"
# The default target with a fixed-n accuracy gate: the cases below edit it.
GOOD = SHIPPED.replace(SEQUENTIAL_BLOCK, "    sample_size: 120\n")


def write(tmp_path: Path, text: str, role: str = "device") -> Path:
    path = tmp_path / role / "t.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "thresholds" / "device").glob("*.yaml")))
def test_shipped_device_targets_load(name):
    t = load_target(ROOT / "thresholds" / "device" / name)
    assert t.role == "device" and t.gates.accuracy is not None and t.gates.memory is not None


def test_misspelled_key_names_file_key_and_line(tmp_path):
    text = GOOD.replace("min_accuracy:", "min_acuracy:")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_target(path)
    msg = str(exc.value)
    assert f"{path}:{line_of(text, 'min_acuracy')}: gates.accuracy.min_acuracy: unknown key" in msg


def test_wrong_type_names_the_key(tmp_path):
    text = GOOD.replace("threads: 2", "threads: two")
    with pytest.raises(ConfigError, match=r"t\.yaml:\d+: profile\.threads: Input should be a valid integer"):
        load_target(write(tmp_path, text))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_target(tmp_path / "nope.yaml")


def test_unknown_target_name_lists_where_it_looked():
    with pytest.raises(ConfigError, match="no file among"):
        resolve_target("no-such-target", ROOT / "thresholds")


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"t\.yaml:\d+: invalid YAML"):
        load_target(write(tmp_path, "name: x\nprofile: [unclosed\n"))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("min_accuracy: 0.35", "min_accuracy: 1.5", "gates.accuracy.min_accuracy: Input should be less than 1"),
        ("sample_size: 120", "sample_size: 2", "min_accuracy 0.35 is unreachable with 2 questions"),
        ("max_peak_rss_mb: 900", "max_peak_rss_mb: 5000", "exceeds profile.app_memory_budget_mb"),
        ("max_weights_mb: 400", "max_weights_mb: 950", "exceeds max_peak_rss_mb"),
        ("app_memory_budget_mb: 1024", "app_memory_budget_mb: 9000", "exceeds ram_mb"),
        ("dataset: {kind: countries-kb}", "dataset: {kind: webqsp}", "needs a 'path'"),
        # Sequential keys on a fixed gate are errors, never silently ignored.
        ("min_accuracy: 0.35", "min_accuracy: 0.35\n    delta: 0.05", "delta: only used with mode: sequential"),
        ("max_rate: 0.9", "max_rate: 0.9\n    round_size: 3", "round_size: only used with mode: sequential"),
        ("min_accuracy: 0.35", "min_accuracy: 0.35\n    mode: sequential\n    delta: 0", "an SPRT needs an "
         "indifference margin"),
        ("min_accuracy: 0.35", "min_accuracy: 0.35\n    mode: sequential\n    max_items: 5\n    round_size: 10",
         "max_items \\(5\\) is smaller than round_size"),
        ("min_accuracy: 0.35", "min_accuracy: 0.97\n    mode: sequential\n    delta: 0.02\n    max_items: 30",
         "unreachable within 30 items"),
        ("min_accuracy: 0.35", "min_accuracy: 0.35\n    mode: sequential\n    power: 0.4", "power: Input should be "
         "greater than 0.5"),
        ("max_rate: 0.9", "max_rate: 0.9\n    mode: sequential\n    delta: 0.95", "delta must be within"),
        # The promised power must hold at the budget, "not shown" stops included (exact).
        ("sample_size: 120", "sample_size: 300\n    mode: sequential\n    delta: 0.05", "max_items 300 is too small "
         "for power 0.95 at 0.4: a model at min_accuracy \\+ delta would not pass in"),
        ("max_rate: 0.9", "max_rate: 0.02\n    mode: sequential\n    delta: 0.01", "cannot be shown within 10"),
    ],
)
def test_impossible_thresholds_are_errors(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        load_target(write(tmp_path, GOOD.replace(old, new)))


def test_role_must_match_folder(tmp_path):
    with pytest.raises(ConfigError, match="role is 'device' but the file lives under thresholds/server/"):
        load_target(write(tmp_path, GOOD, role="server"))


def test_misspelled_key_stops_the_gate_run_fast_and_loads_no_model(tmp_path):
    path = write(tmp_path, GOOD.replace("max_peak_rss_mb:", "max_peak_rss:"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # Python's import log shows whether llama_cpp (the only way a device model is loaded) was imported.
    proc = run_gate("-m", "device", "--target", str(path), "--reports", str(tmp_path / "r"),
                    env={"PYTHONPROFILEIMPORTTIME": "1"})
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "gates.memory.max_peak_rss: unknown key" in proc.stderr
    assert str(path) in proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "edgeready.gates" in imported, "the import log is missing: the check below would prove nothing"
    assert not {m for m in imported if m.split(".")[0] == "llama_cpp"}, "a model runtime was loaded"
    # Fast: pytest and the plugin start (about 2 s of CPU on a 2-core VM; a bound that close to it
    # failed on CI from noise alone), and never a model load and generation.
    assert cpu < 6.0 and elapsed < 30, f"{cpu:.2f} s CPU, {elapsed:.2f} s wall"
    # The reports say the run was refused (an earlier run's pass would otherwise stay for CI to read).
    refused = json.loads((tmp_path / "r" / "verdict.json").read_text())
    assert refused["overall"] == "error" and "max_peak_rss: unknown key" in refused["note"]


def test_limit_that_makes_the_minimum_unreachable_is_a_usage_error(tmp_path):
    proc = run_gate("-m", "device and accuracy", "--limit", "2", "--reports", str(tmp_path / "r"))
    assert proc.returncode != 0
    assert "--limit 2 with target" in proc.stdout + proc.stderr


def test_a_sequential_target_loads_with_its_error_rates(tmp_path):
    text = GOOD.replace("min_accuracy: 0.35", "min_accuracy: 0.35\n    mode: sequential\n    max_items: 400\n"
                        "    power: 0.9\n    delta: 0.1")
    text = text.replace("max_rate: 0.9", "max_rate: 0.9\n    mode: sequential")
    t = load_target(write(tmp_path, text))
    acc, hal = t.gates.accuracy, t.gates.hallucination
    assert acc.cap == 400 and acc.beta == pytest.approx(0.1) and acc.test == "sprt" and acc.delta == 0.1
    assert hal.cap == hal.sample_size == 10 and hal.round_size == 5 and hal.beta == pytest.approx(0.05)


def test_the_shipped_default_is_sequential():
    assert SEQUENTIAL_BLOCK in SHIPPED
    acc = load_target(ROOT / "thresholds" / "device" / "default.yaml").gates.accuracy
    assert acc.mode == "sequential" and acc.test == "sprt" and acc.cap == 854 and acc.delta == 0.10
