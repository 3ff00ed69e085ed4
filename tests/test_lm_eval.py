"""lm-eval as a part of the suite: its tasks as the accuracy gate's items, edgeready as an lm-eval model, and
parity between the two (the gate's per-item result is lm-eval's own for the same model, task and documents)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeready.datasets.harness import SHIPPED_TASKS, LmEvalTaskSpec, load_task
from edgeready.errors import ConfigError, MeasurementError
from edgeready.prompts import common_preamble, qa_request
from edgeready.records import GenerationRequest
from tests.conftest import ROOT, SHARED_DATA, run_gate

FIXTURES = ROOT / "tests" / "fixtures" / "targets"


def spec(task: str, include: Path | None = None, **kw: str) -> LmEvalTaskSpec:
    return LmEvalTaskSpec(kind="lm-eval", task=task, include_path=str(include) if include else None, **kw)


def write_task(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(f"task: {name}\n{body}", encoding="utf-8")
    return folder


# -- the shipped tasks, without a model -------------------------------------------------------------------------
def test_countries_qa_task_asks_exactly_the_gates_own_prompts():
    # lm-eval builds the prompt (description, four few-shot examples, the question); it must be the native
    # gate's, character for character, on every embedded question.
    source = load_task(spec("edgeready_countries_qa"), None)
    assert len(source.items) == 854
    for item in source.items:
        assert source.prompt(item) == qa_request(item, 16).prompt, item.id
    req = source.requests(source.items[:1], 99)[0]
    assert req.stop == ("\n",) and req.max_tokens == 16 and req.temperature == 0  # the task's own settings
    assert req.prompt.startswith(req.shared_prefix) and req.shared_prefix.endswith("Answer: Au\n\n")


def test_countries_mc_choices_hold_the_gold_once_and_no_other_accepted_answer():
    source = load_task(spec("edgeready_countries_mc"), None)
    assert source.output_type == "multiple_choice" and source.metric == "acc"
    positions = set()
    for item in source.items:
        doc = source.docs[item.id]
        choices, label = doc["choices"], doc["label"]
        assert len(set(choices)) == 4 and choices[label] == doc["answers"][0] == item.answers[0], item.id
        accepted = {a.casefold() for a in doc["answers"]}
        assert sum(c.casefold() in accepted for c in choices) == 1, item.id
        positions.add(label)
        # One lm-eval instance per choice, each continuing the same context with " <choice>".
        assert [i.args[1] for i in source.instances[item.id]] == [f" {c}" for c in choices]
    assert positions == {0, 1, 2, 3}  # the gold is not always in one place


def test_scoring_uses_the_tasks_own_metric(tmp_path):
    source = load_task(spec("edgeready_countries_qa"), None)
    item = next(it for it in source.items if it.answers == ("Vienna",))
    assert source.score(item, " Vienna, of course").correct
    assert not source.score(item, " Paris").correct
    with pytest.raises(MeasurementError, match="no response text"):
        source.score(item)


# -- bad input: named, before any model loads -----------------------------------------------------------------
def test_unknown_task_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="'no_such_task_xyz' is unknown"):
        load_task(spec("no_such_task_xyz"), None)


def test_a_task_that_would_download_is_refused(tmp_path):
    folder = write_task(tmp_path / "tasks", "hub_task", "dataset_path: someone/some_dataset\n"
                        "output_type: generate_until\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n")
    with pytest.raises(ConfigError, match=r"hub_task .*hub_task.yaml.*someone/some_dataset.*Hugging Face Hub"):
        load_task(spec("hub_task", folder), None)


def test_local_files_must_exist(tmp_path):
    folder = write_task(tmp_path / "tasks", "json_task", "dataset_path: json\ndataset_kwargs:\n  data_files:\n"
                        f"    test: {tmp_path / 'missing.jsonl'}\noutput_type: generate_until\ntest_split: test\n"
                        "doc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n")
    with pytest.raises(ConfigError, match=r"missing\.jsonl"):
        load_task(spec("json_task", folder), None)


def test_a_users_local_json_task_loads_and_scores(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"q": f"Q{i}?", "a": f"A{i}"}) for i in range(5)), encoding="utf-8")
    folder = write_task(tmp_path / "tasks", "json_task", "dataset_path: json\ndataset_kwargs:\n  data_files:\n"
                        f"    test: {data}\noutput_type: generate_until\ntest_split: test\n"
                        "doc_to_text: \"Question: {{q}}\\nAnswer:\"\ndoc_to_target: '{{a}}'\n"
                        "generation_kwargs: {until: [\"\\n\"], max_gen_toks: 8}\n"
                        "metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]\n")
    source = load_task(spec("json_task", folder), None)
    assert [it.id for it in source.items] == [f"json_task/{i}" for i in range(5)]
    assert source.prompt(source.items[2]) == "Question: Q2?\nAnswer:" and source.items[2].answers == ("A2",)
    assert source.score(source.items[2], "A2").correct and not source.score(source.items[2], "A3").correct


def test_metrics_the_gate_cannot_decide_by_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="'bleu' is not one of its metrics"):
        load_task(spec("edgeready_countries_qa", metric="bleu"), None)
    with pytest.raises(ConfigError, match="filter 'maj' is not one of its filters"):
        load_task(spec("edgeready_countries_qa", filter="maj"), None)
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"text": "some text"}), encoding="utf-8")
    rolling = write_task(tmp_path / "r", "rolling_task", f"dataset_path: json\ndataset_kwargs: {{data_files: {{test: "
                         f"{data}}}}}\noutput_type: loglikelihood_rolling\ntest_split: test\ndoc_to_text: ''\n"
                         "doc_to_target: '{{text}}'\n")
    with pytest.raises(ConfigError, match="loglikelihood_rolling: the accuracy gate takes"):
        load_task(spec("rolling_task", rolling), None)
    median = write_task(tmp_path / "m", "median_task", f"dataset_path: json\ndataset_kwargs: {{data_files: {{test: "
                        f"{data}}}}}\noutput_type: generate_until\ntest_split: test\ndoc_to_text: '{{{{text}}}}'\n"
                        "doc_to_target: x\nmetric_list: [{metric: exact_match, aggregation: median}]\n")
    with pytest.raises(ConfigError, match="aggregated by median over the corpus"):
        load_task(spec("median_task", median), None)


def test_target_refuses_unknown_keys_and_a_missing_include_path_when_it_loads(tmp_path):
    from edgeready.targets import load_target

    bad_key = tmp_path / "device" / "bad.yaml"
    bad_key.parent.mkdir()
    text = (FIXTURES / "lm-eval-parity.yaml").read_text()
    bad_key.write_text(text.replace("task: edgeready_countries_mc}", "task: edgeready_countries_mc, taks: x}"))
    with pytest.raises(ConfigError, match="taks"):
        load_target(bad_key)
    bad_key.write_text(text.replace("task: edgeready_countries_mc}",
                                    f"task: edgeready_countries_mc, include_path: {tmp_path / 'nowhere'}}}"))
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: gates\.accuracy\.dataset\.lm-eval\.include_path: .*nowhere "
                                          r"is not a folder"):
        load_target(bad_key)


@given(st.lists(st.text(alphabet="ab\n ", max_size=12), min_size=2, max_size=6))
def test_common_preamble_is_a_line_aligned_prefix_of_every_prompt(prompts):
    pre = common_preamble(prompts)
    assert all(p.startswith(pre) for p in prompts)
    assert pre == "" or pre.endswith("\n")
    # Nothing after it is shared up to a line end: the next line differs somewhere, or does not end.
    rest = [p[len(pre):] for p in prompts]
    shared_line = os.path.commonprefix(rest)  # noqa: RUF071 (character-wise on purpose: an independent oracle)
    assert "\n" not in shared_line


# -- log-likelihoods on the device model ----------------------------------------------------------------------
def test_loglikelihood_of_a_greedy_continuation_equals_its_generated_logprobs(gemma_path):
    from edgeready.adapters.llama_cpp_device import LlamaCppDevice

    dev = LlamaCppDevice(gemma_path, threads=2, n_ctx=512)
    try:
        context = "Question: What is the capital of France?\nAnswer:"
        gen = dev.generate([GenerationRequest(prompt=context, max_tokens=4, logprobs=True)])[0]
        assert gen.token_logprobs and gen.text.strip()
        [scored] = dev.loglikelihood([(context, gen.text)])
        # The same llama.cpp logits read two ways: by the decoder that picked the tokens, and by the scorer.
        assert scored.greedy and scored.tokens == len(gen.token_logprobs)
        assert scored.logprob == pytest.approx(sum(gen.token_logprobs), abs=1e-3)
        [other] = dev.loglikelihood([(context, " Berlin and more")])
        assert not other.greedy and other.logprob < scored.logprob
        # A context's trailing space moves to the continuation, as lm-eval's HF model splits them.
        assert dev.loglikelihood([(context + " ", gen.text.lstrip())])[0].logprob == pytest.approx(scored.logprob)
        [rolled] = dev.loglikelihood_rolling(["The capital of France is Paris."])
        assert rolled.logprob < 0 and rolled.tokens >= 6 and rolled.context_tokens == 1
    finally:
        dev.close()


def test_a_batched_adapter_refuses_loglikelihoods(gemma_path):
    from edgeready.adapters.llama_cpp_device import LlamaCppDevice

    dev = LlamaCppDevice(gemma_path, threads=2, n_ctx=1024, parallel=2)
    try:
        with pytest.raises(MeasurementError, match=r"single-stream.*parallel to 1"):
            dev.loglikelihood([("a", " b")])
    finally:
        dev.close()


# -- parity: the gate says what lm-eval says ------------------------------------------------------------------
@pytest.fixture(scope="module")
def gate_run(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    proc = run_gate("-m", "device and accuracy", "--target", str(FIXTURES / "lm-eval-parity.yaml"),
                    "--target", str(FIXTURES / "lm-eval-parity-qa.yaml"), "--candidate", "gemma3-270m-q4km",
                    "--reports", str(reports))
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return reports


@pytest.mark.e2e
@pytest.mark.parametrize(("target", "task", "metric"), [("lm-eval-parity", "edgeready_countries_mc", "acc"),
                                                        ("lm-eval-parity-qa", "edgeready_countries_qa", "contains")])
def test_gate_value_equals_lm_evals_own_result_per_item(gate_run, target, task, metric):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from edgeready.lm_eval.model import EdgeReadyLM

    verdict = json.loads((gate_run / "verdict.json").read_text())
    acc = verdict["verdicts"][[v["target"] for v in verdict["verdicts"]].index(target)]["gates"]["accuracy"]
    assert acc["status"] in ("pass", "fail") and acc["measurement"]["provenance"]["task"] == task
    records = [json.loads(x) for x in (gate_run / "items" / f"gemma3-270m-q4km__{target}__accuracy.jsonl").open()]
    by_doc = {int(r["id"].split("/")[1]): r for r in records}
    assert len(by_doc) == len(records) >= 16
    # lm-eval's evaluator on the same documents, the same model under the same profile, generating afresh.
    model = EdgeReadyLM(candidate="gemma3-270m-q4km", target=str(FIXTURES / f"{target}.yaml"), cache="false")
    try:
        out = lm_eval.simple_evaluate(model=model, tasks=[task], samples={task: sorted(by_doc)},
                                      task_manager=TaskManager(include_path=str(SHIPPED_TASKS)), log_samples=True)
    finally:
        model.close()
    samples = {s["doc_id"]: s for s in out["samples"][task]}
    assert sorted(samples) == sorted(by_doc)
    for doc_id, rec in by_doc.items():
        assert float(rec["correct"]) == samples[doc_id][metric], (doc_id, rec["response"], samples[doc_id]["resps"])
        if metric == "contains":
            assert rec["response"] == samples[doc_id]["resps"][0][0]
            assert rec["prompt"] == samples[doc_id]["arguments"][0][0]  # (context, gen_kwargs)
        else:
            theirs = [r[0][0] for r in samples[doc_id]["resps"]]
            assert rec["loglikelihoods"] == pytest.approx(theirs, abs=1e-5)
    assert acc["value"] == pytest.approx(out["results"][task][f"{metric},none"])


@pytest.mark.e2e
def test_shipped_webqsp_task_judges_the_default_with_shared_data(tmp_path):
    assert (SHARED_DATA / "webqsp" / "WebQSP.train.json").is_file(), "CI runs with ../shared beside the repo"
    proc = run_gate("-m", "device and accuracy", "--target", "device/lm-eval-webqsp", "--candidate",
                    "gemma3-270m-q4km", "--data-dir", str(SHARED_DATA), "--limit", "30", "--reports", str(tmp_path))
    acc = json.loads((tmp_path / "verdict.json").read_text())["verdicts"][0]["gates"]["accuracy"]
    assert acc["status"] in ("pass", "fail"), proc.stdout[-3000:] + proc.stderr[-3000:]
    prov = acc["measurement"]["provenance"]
    assert prov["task"] == "edgeready_webqsp" and prov["population"] > 3000 and acc["n"] == 30


@pytest.mark.e2e
def test_lm_eval_command_runs_a_shipped_task_on_the_offload_default(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgeready.lm_eval", "run", "--model", "edgeready", "--model_args",
         "candidate=offload-default", "--tasks", "edgeready_countries_qa", "--limit", "4", "--log_samples",
         "--output_path", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [results] = tmp_path.rglob("results_*.json")
    doc = json.loads(results.read_text())
    assert doc["config"]["model"] == "edgeready" and doc["config"]["model_args"] == {"candidate": "offload-default"}
    value = doc["results"]["edgeready_countries_qa"]["contains,none"]
    [samples] = tmp_path.rglob("samples_edgeready_countries_qa_*.jsonl")
    rows = [json.loads(x) for x in samples.open()]
    assert len(rows) == 4 and value == pytest.approx(sum(r["contains"] for r in rows) / 4)
    assert all(r["resps"][0][0].strip() for r in rows)  # the router answered every question


PAIRED = "baseline: {candidate: smollm2-135m-q4, margins: {accuracy: 0.5}}\n"


@pytest.mark.e2e
def test_a_generation_task_is_compared_with_a_baseline_and_a_choice_task_is_refused(tmp_path):
    (tmp_path / "device").mkdir()
    qa = tmp_path / "device" / "qa.yaml"
    qa.write_text((FIXTURES / "lm-eval-parity-qa.yaml").read_text() + PAIRED)
    mc = tmp_path / "device" / "mc.yaml"
    mc.write_text((FIXTURES / "lm-eval-parity.yaml").read_text() + PAIRED)
    proc = run_gate("-m", "device and accuracy", "--target", str(qa), "--target", str(mc), "--candidate",
                    "gemma3-270m-q4km", "--reports", str(tmp_path / "reports"))
    doc = json.loads((tmp_path / "reports" / "verdict.json").read_text())
    by_target = {v["target"]: v["gates"]["accuracy"] for v in doc["verdicts"]}
    refused = by_target["lm-eval-parity"]
    assert refused["status"] == "error" and "multiple_choice; a baseline is compared on generation tasks only" \
        in refused["error"], proc.stdout[-3000:]
    paired = by_target["lm-eval-parity-qa"]
    assert paired["status"] in ("pass", "fail") and paired["measurement"]["paired"] is not None, proc.stdout[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "reports" / "items" /
                                    "gemma3-270m-q4km__lm-eval-parity-qa__accuracy.jsonl").open()]
    assert rows and all("baseline_response" in r for r in rows)
    # The baseline's answers are scored by the task's own metric, like the candidate's.
    from edgeready.scoring.qa import score_response

    assert all(r["baseline_correct"] == score_response(r["baseline_response"], r["gold"]).correct for r in rows)


def test_log_likelihood_tasks_are_read_single_stream_on_a_batched_target(tmp_path):
    from edgeready.candidates import resolve_candidate
    from edgeready.gates import gate_named
    from edgeready.run import Run
    from edgeready.schema import Pair
    from edgeready.targets import load_target

    path = tmp_path / "device" / "t.yaml"
    path.parent.mkdir()
    path.write_text((FIXTURES / "lm-eval-parity.yaml").read_text().replace("n_ctx: 2048}", "n_ctx: 2048, parallel: 4}"))
    target = load_target(path)
    cand = resolve_candidate("gemma3-270m-q4km", ROOT / "candidates")
    run = Run.create([cand], [target], reports_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                     candidates_dir=ROOT / "candidates")
    try:
        inputs = gate_named("accuracy").gather(run, Pair(cand, target), target.gates.accuracy)
        assert target.profile.parallel == 4 and inputs.adapter.describe()["parallel"] == 1
    finally:
        run.close()
