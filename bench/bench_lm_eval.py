"""Time to verdict: edgeready's accuracy gate vs lm-evaluation-harness on the same questions and model.

    .venv/bin/python bench/bench_lm_eval.py [--n 60] [--rounds 2] [--backend both|inproc|server] [--json FILE]

All sides answer the same N embedded questions (stratified_sample(load_countries_qa(), N, 0): what the
gate asks for sample_size N, seed 0) with the same few-shot prompt text (edgeready.prompts.qa_request),
greedy, at most 16 tokens, stopping at the newline, on the same GGUF, with ONE llama.cpp thread each
(2 cores shared with other jobs). Each side is a fresh process and its wall time includes interpreter
start, imports and the model load:

- edgeready: `run_gate("-m", "device and accuracy", "--target=<temp target, sample_size N, threads 1>",
  "--no-cache", ...)` from tests/conftest.py: pytest, the plugin, the gate, the Wilson verdict, the reports.
- lm-eval, `inproc`: a child process calling `lm_eval.simple_evaluate` with a small custom `LM` subclass
  that wraps `llama_cpp.Llama` (n_batch = n_ubatch = 64, logits_all=False) and answers `generate_until`
  with `create_completion(context, max_tokens=max_gen_toks, temperature=0, stop=until)`, and a
  `TaskManager(include_path=..., include_defaults=False)`, which skips indexing the bundled tasks:
  lm-eval at its fastest.
- lm-eval, `server`: `edgeready.server_process.LlamaCppServer` (threads 1) started inside the timed window,
  then the real CLI `python -m lm_eval run --model local-completions` against its /v1/completions
  (tokenizer_backend=None: lm-eval sends the prompt text and the server tokenizes it). This is lm-eval as
  its README runs it: the CLI always indexes every bundled task YAML before loading ours.

The lm-eval task is a YAML task written to a temp dir (`--include_path`) over a local JSONL of the same
questions: `doc_to_text: "{{prompt}}"` (the complete few-shot prompt, so num_fewshot = 0),
`output_type: generate_until`, `generation_kwargs: {until: ["\\n"], max_gen_toks: 16, do_sample: false,
temperature: 0}`, and `process_results: !function utils.process_results` where utils.py calls
`edgeready.scoring.qa.score_response(response, doc["answers"])`: the gate's own "contains a gold answer
after normalization" rule, so both tools score identically. Metrics `contains` and `exact`, aggregation
mean. lm-eval reports a mean and its standard error, not a verdict; the Wilson lower bound and the
pass/fail are computed here from its count afterwards (microseconds, not timed).

The ratio is edgeready wall / lm-eval wall per round (rounds alternate the order of the sides).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_common import ROOT, Stopwatch, emit, gemma_path, machine, median, questions

from edgeready.prompts import qa_request
from edgeready.scoring.qa import score_response
from edgeready.stats import wilson

GOAL = 0.25  # issue 16: at most a quarter of lm-eval at its fastest (the in-process backend)
TASK = "edgeready_countries_qa"
MIN_ACCURACY = 0.35
CONFIDENCE = 0.95
THREADS = 1
N_CTX = 2048
N_BATCH = 64
MAX_TOKENS = 16

TASK_YAML = """\
# Written by bench/bench_lm_eval.py: the gate's questions and prompts as an lm-eval task.
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
num_fewshot: 0
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answers[0]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: {max_tokens}
  do_sample: false
  temperature: 0.0
process_results: !function utils.process_results
metric_list:
  - metric: contains
    aggregation: mean
    higher_is_better: true
  - metric: exact
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

UTILS_PY = '''\
"""process_results for the edgeready task: the gate's own scoring rule (edgeready.scoring.qa)."""
from edgeready.scoring.qa import score_response


def process_results(doc, results):
    s = score_response(results[0], doc["answers"])
    return {"contains": float(s.correct), "exact": float(s.exact)}
'''

TARGET_YAML = """\
# Written by bench/bench_lm_eval.py: the accuracy gate alone, on {n} embedded questions, one thread.
name: bench-lm-eval
role: device
description: time-to-verdict benchmark against lm-evaluation-harness
profile: {{device: benchmark host, ram_mb: 8192, app_memory_budget_mb: 2048, threads: {threads}, n_ctx: {n_ctx},
  n_batch: {n_batch}, parallel: {parallel}}}
gates:
  accuracy:
    dataset: {{kind: countries-kb}}
    sample_size: {n}
    seed: 0
    min_accuracy: {min_accuracy}
    confidence: {confidence}
    max_tokens: {max_tokens}
"""


# -- the lm-eval child (in-process backend) -------------------------------------------------------
def child_inproc(task_dir: str, out_dir: str, model: str, threads: int) -> int:
    """Runs in a fresh interpreter (so its import and load costs are counted like edgeready's)."""
    import llama_cpp
    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    class LlamaCppLM(LM):
        """generate_until only: the task never asks for log-likelihoods."""

        def __init__(self) -> None:
            super().__init__()
            self.llama = llama_cpp.Llama(model_path=model, n_ctx=N_CTX, n_batch=N_BATCH, n_ubatch=N_BATCH,
                                         n_threads=threads, n_threads_batch=threads, logits_all=False,
                                         verbose=False)

        def generate_until(self, requests: Any, disable_tqdm: bool = False) -> list[str]:
            out: list[str] = []
            for req in requests:
                context, gen = req.args
                done: Any = self.llama.create_completion(
                    context, max_tokens=int(gen.get("max_gen_toks", MAX_TOKENS)), temperature=0,
                    stop=list(gen.get("until", [])))
                out.append(done["choices"][0]["text"])
            return out

        def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            raise NotImplementedError("generate_until task only")

        def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> list[float]:
            raise NotImplementedError("generate_until task only")

    # include_defaults=False: skip indexing lm-eval's thousands of bundled task YAMLs (about 9 s here, which
    # the CLI always pays); this backend is lm-eval at its fastest.
    manager = TaskManager(include_path=task_dir, include_defaults=False)
    results: Any = simple_evaluate(model=LlamaCppLM(), tasks=[TASK], task_manager=manager, batch_size=1,
                                   log_samples=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results["results"], default=str))
    with (out / "samples.jsonl").open("w") as fh:
        for s in results["samples"][TASK]:
            fh.write(json.dumps({"doc": s["doc"], "resps": s["resps"]}, default=str) + "\n")
    return 0


# -- the parent -----------------------------------------------------------------------------------
def write_inputs(tmp: Path, n: int, parallel: int) -> tuple[Path, Path]:
    items = questions(n, 0)
    data = tmp / "data" / "questions.jsonl"
    data.parent.mkdir(parents=True)
    with data.open("w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps({"id": it.id, "question": it.question, "answers": list(it.answers),
                                 "prompt": qa_request(it, MAX_TOKENS).prompt}, ensure_ascii=False) + "\n")
    task_dir = tmp / "task"
    task_dir.mkdir()
    (task_dir / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data, max_tokens=MAX_TOKENS))
    (task_dir / "utils.py").write_text(UTILS_PY)
    target = tmp / "bench-lm-eval.yaml"
    # Batched: 256 KV cells per sequence at least (a prompt and its answer need about 130).
    target.write_text(TARGET_YAML.format(n=n, threads=THREADS, n_ctx=max(N_CTX, 256 * parallel), n_batch=N_BATCH,
                                         parallel=parallel, min_accuracy=MIN_ACCURACY, confidence=CONFIDENCE,
                                         max_tokens=MAX_TOKENS))
    return task_dir, target


def child_env(tmp: Path) -> dict[str, str]:
    # Offline (no network here anyway: fail fast instead of retrying), and a private datasets cache so no
    # run is sped up by another's Arrow conversion of the JSONL.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update({"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp / "hf-datasets"),
                "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(THREADS)})
    return env


def run_edgeready(target: Path, reports: Path) -> dict[str, Any]:
    from tests.conftest import run_gate

    with Stopwatch() as sw:
        proc = run_gate("-m", "device and accuracy", f"--target={target}", "--no-cache", f"--reports={reports}",
                        timeout=1800)
    verdict_file = reports / "verdict.json"
    if not verdict_file.is_file():
        raise RuntimeError(f"edgeready run wrote no verdict (rc {proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-2000:]}")
    acc = json.loads(verdict_file.read_text())["verdicts"][0]["gates"]["accuracy"]
    items_file = next((reports / "items").glob("*__accuracy.jsonl"))
    answers = {}
    for line in items_file.read_text().splitlines():
        rec = json.loads(line)
        answers[rec["id"]] = (rec["response"], bool(rec["correct"]))
    return {"wall_s": sw.s, "rc": proc.returncode, "status": acc["status"], "n": acc["n"], "value": acc["value"],
            "lower": acc["interval"]["low"], "answers": answers}


def lm_eval_outcome(samples: list[dict[str, Any]], reported: dict[str, Any]) -> dict[str, Any]:
    """Re-score lm-eval's responses (for the per-item comparison) and keep lm-eval's own aggregate, which
    must equal the recount."""
    answers = {}
    for s in samples:
        text = s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0]
        answers[s["doc"]["id"]] = (text, score_response(text, s["doc"]["answers"]).correct)
    k = sum(c for _, c in answers.values())
    n = len(answers)
    low = wilson(k, n, CONFIDENCE).low
    own = reported.get("contains,none")
    if own is None or abs(own - k / n) > 1e-9:
        raise RuntimeError(f"lm-eval reports contains={own}, the recount of its responses gives {k}/{n}")
    return {"n": n, "value": k / n, "lower": low, "status": "pass" if low >= MIN_ACCURACY else "fail",
            "lm_eval_reported": {"contains": own, "contains_stderr": reported.get("contains_stderr,none"),
                                 "exact": reported.get("exact,none")},
            "answers": answers}


def run_lm_eval_inproc(tmp: Path, task_dir: Path, model: Path, tag: str) -> dict[str, Any]:
    out = tmp / f"lm-eval-inproc-{tag}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-inproc", str(task_dir), str(out), str(model)]
    with Stopwatch() as sw:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=child_env(tmp), timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"lm-eval (in-process LM) failed with rc {proc.returncode}:\n{proc.stderr[-4000:]}")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    reported = json.loads((out / "results.json").read_text())[TASK]
    return {"wall_s": sw.s, "rc": 0, **lm_eval_outcome(samples, reported)}


def run_lm_eval_server(tmp: Path, task_dir: Path, model: Path, tag: str) -> dict[str, Any]:
    from edgeready.server_process import LlamaCppServer

    out = tmp / f"lm-eval-server-{tag}"
    server = LlamaCppServer(model, n_ctx=N_CTX, threads=THREADS, n_batch=N_BATCH, model_alias="gemma")
    try:
        with Stopwatch() as sw:
            server.start()
            model_args = (f"base_url={server.base_url}/completions,model=gemma,tokenizer_backend=None,"
                          f"num_concurrent=1,max_retries=3,max_gen_toks={MAX_TOKENS},max_length={N_CTX}")
            cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args",
                   model_args, "--tasks", TASK, "--include_path", str(task_dir), "--batch_size", "1",
                   "--output_path", str(out), "--log_samples"]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=child_env(tmp), timeout=1800)
    finally:
        server.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"lm-eval (local-completions) failed with rc {proc.returncode}:\n{proc.stderr[-4000:]}")
    sample_files = sorted(out.rglob(f"samples_{TASK}_*.jsonl"))
    if not sample_files:
        raise RuntimeError(f"lm-eval wrote no samples under {out}:\n{proc.stderr[-3000:]}")
    samples = [json.loads(line) for line in sample_files[-1].read_text().splitlines()]
    results_file = sorted(out.rglob("results_*.json"))[-1]
    reported = json.loads(results_file.read_text())["results"][TASK]
    return {"wall_s": sw.s, "rc": 0, **lm_eval_outcome(samples, reported)}


def agreement(a: dict[str, tuple[str, bool]], b: dict[str, tuple[str, bool]]) -> dict[str, Any]:
    common = sorted(set(a) & set(b))
    text_diff = [i for i in common if a[i][0].strip() != b[i][0].strip()]
    score_diff = [i for i in common if a[i][1] != b[i][1]]
    return {"compared": len(common), "text_mismatches": len(text_diff), "score_mismatches": len(score_diff),
            "examples": [{"id": i, "edgeready": a[i][0], "lm_eval": b[i][0]} for i in text_diff[:3]]}


def default_parallel() -> int:
    """The accuracy gate's decoding setting in thresholds/device/default.yaml (its own `parallel`, else the
    profile's): the suite as `make gate` asks its questions."""
    import yaml

    target = yaml.safe_load((ROOT / "thresholds" / "device" / "default.yaml").read_text())
    accuracy = target["gates"]["accuracy"]
    return int(accuracy.get("parallel") or target["profile"].get("parallel", 1))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-inproc"]:
        return child_inproc(argv[1], argv[2], argv[3], THREADS)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2, help="rounds; the order of the sides alternates")
    ap.add_argument("--backend", choices=("both", "inproc", "server"), default="both")
    ap.add_argument("--parallel", type=int, default=default_parallel(),
                    help="edgeready's profile.parallel (default: the default device target's); lm-eval's "
                         "llama.cpp LM decodes one sequence at a time")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (task, data, outputs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    try:
        import lm_eval  # noqa: F401
    except Exception as exc:
        print(f"lm-eval cannot be imported here ({type(exc).__name__}: {exc}); install it with "
              "`.venv/bin/pip install lm-eval==0.4.13` (it keeps torch 2.13.0+cpu). No numbers without it.")
        return 2

    info = machine()
    model = gemma_path()
    tmp = Path(tempfile.mkdtemp(prefix="edgeready-bench-lm-eval-"))
    task_dir, target = write_inputs(tmp, args.n, args.parallel)
    backends = ["inproc", "server"] if args.backend == "both" else [args.backend]
    sides = ["edgeready", *(f"lm_eval_{b}" for b in backends)]
    print(f"# time to verdict, {args.n} questions, threads={THREADS} everywhere, edgeready at parallel "
          f"{args.parallel}, {args.rounds} round(s); temp {tmp}")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    try:
        for rnd in range(args.rounds):
            order = sides if rnd % 2 == 0 else sides[::-1]
            for side in order:
                tag = f"r{rnd}"
                if side == "edgeready":
                    res = run_edgeready(target, tmp / f"edgeready-{tag}")
                elif side == "lm_eval_inproc":
                    res = run_lm_eval_inproc(tmp, task_dir, model, tag)
                else:
                    res = run_lm_eval_server(tmp, task_dir, model, tag)
                runs[side].append(res)
                print(f"round {rnd} {side:16s} {res['wall_s']:7.2f} s  accuracy {res['value']:.3f} "
                      f"(n={res['n']}, Wilson LB {res['lower']:.3f} -> {res['status']})", flush=True)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    result: dict[str, Any] = {
        "benchmark": "lm_eval",
        "what": "time to verdict, fresh process each, model load included, same questions/prompts/model, 1 thread",
        "n_questions": args.n,
        "edgeready_parallel": args.parallel,
        "rounds": args.rounds,
        "lm_eval_version": info["versions"]["lm_eval"],
        "wall_s": {s: [round(r["wall_s"], 2) for r in runs[s]] for s in sides},
        "accuracy": {s: runs[s][0]["value"] for s in sides},
        "verdict": {s: runs[s][0]["status"] for s in sides},
        "lm_eval_reported": {s: runs[s][0]["lm_eval_reported"] for s in sides if s != "edgeready"},
        "machine": info,
    }
    best_ratio = None
    for b in backends:
        side = f"lm_eval_{b}"
        ratios = [e["wall_s"] / le["wall_s"] for e, le in zip(runs["edgeready"], runs[side], strict=True)]
        result[f"ratio_vs_{b}"] = round(median(ratios), 4)
        result[f"agreement_vs_{b}"] = agreement(runs["edgeready"][0]["answers"], runs[side][0]["answers"])
        best_ratio = max(best_ratio or 0.0, median(ratios))
    # The headline compares with the faster lm-eval setup: the conservative choice for edgeready's claim.
    result["ratio"] = round(best_ratio or 0.0, 4)
    result["goal"] = f"edgeready/lm-eval <= {GOAL} (headline: against the faster lm-eval backend, in-process)"
    result["goal_met"] = (best_ratio or 0.0) <= GOAL
    result["loadavg_end"] = machine()["loadavg_1_5_15"]
    for b in backends:
        ag = result[f"agreement_vs_{b}"]
        print(f"edgeready / lm-eval ({b}): median ratio {result[f'ratio_vs_{b}']:.3f}; answers compared "
              f"{ag['compared']}, text mismatches {ag['text_mismatches']}, score mismatches {ag['score_mismatches']}")
        for ex in ag["examples"]:
            print(f"  {ex}")
    print(f"headline ratio {result['ratio']:.3f}; goal <= {GOAL}: {'met' if result['goal_met'] else 'NOT met'}")
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
