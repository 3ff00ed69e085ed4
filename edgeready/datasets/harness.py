"""lm-eval tasks as the accuracy gate's items: `dataset: {kind: lm-eval, task: NAME, include_path: DIR}`.

Documents, prompts (few-shot included), targets, filters and the per-item metric all come from lm-eval's own
task machinery (`Task.build_all_requests`, the task's filter ensembles, `Task.process_results`), run on the
items the gate samples, exactly as lm-eval's evaluator runs them on its own; the gate adds what lm-eval lacks
(intervals, sequential and paired decisions, per-item evidence, advice).

- generate_until tasks: through any adapter (device, server, offload router), greedy, with the task's stop
  strings and token budget, through the generation store like every other generation;
- multiple_choice and loglikelihood tasks: by log-likelihood on the in-process device model (llama.cpp's logits,
  exact; edgeready.adapters.base.text_scorer), single-stream.
The per-item metric must be 0 or 1 (acc, exact_match, contains...): the gate's tests are Bernoulli tests. A
metric lm-eval aggregates over the corpus (bleu, perplexity) is refused when the task loads.
Offline only: a task's data must be local (its own `custom_dataset`, or `dataset_path: json|csv|parquet|text`
with `data_files` on disk, or a local folder); a task that would download is refused before anything loads.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from edgeready.adapters.base import Adapter, text_scorer
from edgeready.errors import ConfigError, MeasurementError
from edgeready.prompts import common_preamble
from edgeready.records import GenerationRequest, QAItem, Response, Timings
from edgeready.schema import Strict
from edgeready.scoring.qa import QAScore

# The shipped task YAMLs (data files of the edgeready.lm_eval package, which builds on this module).
SHIPPED_TASKS = Path(__file__).parents[1] / "lm_eval" / "tasks"
# Loaders of `datasets` that read files named in data_files, never the Hub.
_LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas"})
_SUPPORTED = ("generate_until", "multiple_choice", "loglikelihood")


class LmEvalTaskSpec(Strict):
    """An lm-eval task as the accuracy gate's question source. `include_path`: a folder of task YAMLs
    (absolute, or relative to the working directory), searched with the shipped tasks
    (edgeready/lm_eval/tasks); `metric` and `filter` pick which of the task's per-item results the gate
    decides by (default: its first metric, its first filter)."""

    kind: Literal["lm-eval"]
    task: str = Field(min_length=1)
    include_path: str | None = None
    metric: str | None = None
    filter: str | None = None

    @field_validator("include_path")
    @classmethod
    def _a_folder(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_dir():
            raise ValueError(f"include_path {value} is not a folder (absolute, or relative to the working directory)")
        return value


def dataset_label(spec: LmEvalTaskSpec) -> str:
    return f"lm-eval:{spec.task}"


@dataclass
class TaskSource:
    """One loaded lm-eval task: its documents as QAItems (id `<task>/<doc_id>`), and the instances lm-eval built
    for each, which the gate fills with responses and scores with the task's own filters and metric."""

    spec: LmEvalTaskSpec
    task: Any  # lm_eval.api.task.Task
    output_type: str
    metric: str
    filter: str
    items: list[QAItem]
    instances: dict[str, list[Any]]  # item id -> the task's Instances for that document, in lm-eval's order
    docs: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    _prefix: str | None = None

    # -- asking ---------------------------------------------------------------------------------------
    def prompt(self, item: QAItem) -> str:
        return str(self.instances[item.id][0].args[0])

    def requests(self, items: Sequence[QAItem], max_tokens: int) -> list[GenerationRequest]:
        """Greedy requests with the task's stop strings and token budget (`max_gen_toks`, else the gate's)."""
        if self.output_type != "generate_until":
            raise MeasurementError(f"lm-eval task {self.spec.task} is {self.output_type}: it is scored by "
                                   "log-likelihood, not by generated text")
        out = []
        shared = self._shared_prefix()
        for it in items:
            context, kwargs = self.instances[it.id][0].args
            until = kwargs.get("until") or ()
            out.append(GenerationRequest(prompt=context, max_tokens=int(kwargs.get("max_gen_toks", max_tokens)),
                                         stop=tuple([until] if isinstance(until, str) else until),
                                         tag=it.complexity, shared_prefix=shared))
        return out

    def ask(self, adapter: Adapter, items: Sequence[QAItem], max_tokens: int) -> tuple[list[str], list[Response]]:
        """Each item's prompt and response. Multiple choice: the response is the choice with the highest
        log-likelihood; the log-likelihoods themselves go into the task's instances for its metric."""
        if self.output_type == "generate_until":
            reqs = self.requests(items, max_tokens)
            return [r.prompt for r in reqs], adapter.generate(reqs)
        scorer = text_scorer(adapter)
        out = []
        for it in items:
            insts = self.instances[it.id]
            started = time.perf_counter()
            scores = scorer.loglikelihood([(str(i.args[0]), str(i.args[1])) for i in insts])
            for inst, s in zip(insts, scores, strict=True):
                inst.resps = [(s.logprob, s.greedy)]
            best = max(range(len(scores)), key=lambda k: scores[k].logprob)
            out.append(Response(
                text=str(insts[best].args[1]).strip(), prompt_tokens=scores[0].context_tokens,
                completion_tokens=sum(s.tokens for s in scores),
                timings=Timings(total_s=time.perf_counter() - started), served_by="device",
                meta={"loglikelihoods": [round(s.logprob, 6) for s in scores]}))
        return [self.prompt(it) for it in items], out

    def score(self, item: QAItem, text: str | None = None) -> QAScore:
        """The task's own filters and metric on the item's instances: a generation task's on `text` (the
        response), a log-likelihood task's on the log-likelihoods `ask` left in them."""
        insts = self.instances[item.id]
        if self.output_type == "generate_until":
            if text is None:
                raise MeasurementError(f"lm-eval task {self.spec.task}: no response text to score for {item.id}")
            insts[0].resps = [text]
        for ensemble in self.task._filters:
            ensemble.apply(insts)
        results = self.task.process_results(self.docs[item.id], [i.filtered_resps[self.filter] for i in insts])
        if self.metric not in results:
            raise MeasurementError(f"lm-eval task {self.spec.task}: process_results gave no {self.metric!r} "
                                   f"(it gave {sorted(results)})")
        value = results[self.metric]
        if value not in (0, 1, True, False):
            raise MeasurementError(f"lm-eval task {self.spec.task}: metric {self.metric!r} gave {value!r} for "
                                   f"{item.id}; the accuracy gate needs a 0 or 1 per item")
        answer = insts[0].filtered_resps[self.filter]
        text = answer if isinstance(answer, str) else ""
        if self.output_type != "generate_until":  # the likeliest choice, as `ask` wrote it
            text = str(insts[max(range(len(insts)), key=lambda k: insts[k].resps[0][0])].args[1]).strip()
        return QAScore(correct=bool(value), exact=bool(value), answer=text)

    def _shared_prefix(self) -> str:
        """What every prompt of the task repeats: evaluated once by the device adapter (and the same hint
        edgeready's lm-eval model gives for any two or more of these prompts, so both ask the same requests)."""
        if self._prefix is None:
            self._prefix = common_preamble([str(insts[0].args[0]) for insts in self.instances.values()])
        return self._prefix


# -- loading ------------------------------------------------------------------------------------------
def include_paths(spec: LmEvalTaskSpec) -> list[str]:
    paths = [str(SHIPPED_TASKS)]
    if spec.include_path:  # a folder: checked when the target loads
        paths.append(str(Path(spec.include_path).expanduser().resolve()))
    return paths


@functools.cache
def _manager(paths: tuple[str, ...], defaults: bool, data_dir: str | None) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths), include_defaults=defaults,
                       metadata={"data_dir": data_dir} if data_dir else None)


def task_manager(spec: LmEvalTaskSpec, data_dir: Path | None) -> Any:
    """lm-eval's TaskManager over the include paths; lm-eval's own thousands of tasks are indexed only when the
    task is not among them (that takes seconds)."""
    paths, where = tuple(include_paths(spec)), str(data_dir) if data_dir else None
    manager = _manager(paths, False, where)
    if spec.task not in manager.all_tasks:
        manager = _manager(paths, True, where)
    if spec.task not in manager.all_tasks:
        raise ConfigError(f"lm-eval task {spec.task!r} is unknown: not in lm-eval's tasks nor in "
                          f"{', '.join(paths)} (dataset.task, dataset.include_path)")
    return manager


def check_local(name: str, config: dict[str, Any], where: str) -> None:
    """Refuse a task whose data would come from the Hub: the suite runs offline."""
    if config.get("custom_dataset") is not None:
        return
    path = config.get("dataset_path")
    if path is None:
        raise ConfigError(f"lm-eval task {name} ({where}) names no dataset_path or custom_dataset")
    if str(path) in _LOCAL_BUILDERS:
        files = (config.get("dataset_kwargs") or {}).get("data_files")
        names = list(files.values()) if isinstance(files, dict) else [files] if isinstance(files, str) else files
        flat = [str(f) for group in names or [] for f in (group if isinstance(group, list) else [group])]
        missing = [f for f in flat if not Path(f).expanduser().exists()]
        if not flat or missing:
            raise ConfigError(f"lm-eval task {name} ({where}): dataset_path {path} needs dataset_kwargs.data_files "
                              f"on this disk; not found: {', '.join(missing) or 'none given'}")
        return
    if Path(str(path)).expanduser().is_dir():
        return
    raise ConfigError(f"lm-eval task {name} ({where}): dataset_path {path!r} is read from the Hugging Face Hub, "
                      "a download the suite never makes; give the task local data (dataset_path: json with "
                      "dataset_kwargs.data_files, or a custom_dataset)")


def load_task(spec: LmEvalTaskSpec, data_dir: Path | None) -> TaskSource:
    """Load, check and build every request of the task (no model is involved)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = task_manager(spec, data_dir)
    entry = manager.task_index[spec.task]
    where = str(entry.yaml_path) if entry.yaml_path else "inline config"
    if entry.yaml_path is None or getattr(entry.kind, "name", "") not in ("TASK", "PY_TASK"):
        raise ConfigError(f"lm-eval {spec.task!r} ({where}) is a group or tag; name one of its tasks")
    check_local(spec.task, load_yaml(entry.yaml_path, resolve_func=False), where)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        task = manager.load([spec.task])["tasks"][spec.task]
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise ConfigError(f"lm-eval task {spec.task} ({where}) could not load its data: {exc}") from None
    output_type = task.OUTPUT_TYPE
    if output_type not in _SUPPORTED:
        raise ConfigError(f"lm-eval task {spec.task} ({where}) is {output_type}: the accuracy gate takes "
                          f"{', '.join(_SUPPORTED)} tasks")
    metric = _metric(spec, task, where)
    filters = [f.name for f in task._filters]
    chosen_filter = spec.filter or filters[0]
    if chosen_filter not in filters:
        raise ConfigError(f"lm-eval task {spec.task}: filter {chosen_filter!r} is not one of its filters "
                          f"({', '.join(filters)}) (dataset.filter)")
    task.build_all_requests(limit=None, cache_requests=False)
    instances: dict[str, list[Any]] = {}
    for inst in task.instances:
        instances.setdefault(f"{spec.task}/{inst.doc_id}", []).append(inst)
    docs, items = {}, []
    for key, insts in instances.items():
        insts.sort(key=lambda i: i.idx)
        doc = insts[0].doc
        docs[key] = doc
        question = doc.get("question") if isinstance(doc, dict) else None
        question = question if isinstance(question, str) else str(task.doc_to_text(doc))
        items.append(QAItem(id=key, question=question, answers=_golds(task, doc),
                            hops=int(doc.get("hops", 1)) if isinstance(doc, dict) else 1,
                            source=dataset_label(spec)))
    import lm_eval

    prov = {"lm_eval": lm_eval.__version__, "task": spec.task, "task_file": where, "output_type": output_type,
            "metric": metric, "filter": chosen_filter, "num_fewshot": task.config.num_fewshot}
    return TaskSource(spec, task, output_type, metric, chosen_filter, items, instances, docs, prov)


def _metric(spec: LmEvalTaskSpec, task: Any, where: str) -> str:
    listed = [m["metric"] for m in task.config.metric_list or []] or list(task._metric_fn_list)
    metric = spec.metric or (listed[0] if listed else None)
    if metric is None or metric not in listed:
        raise ConfigError(f"lm-eval task {spec.task} ({where}): metric {metric!r} is not one of its metrics "
                          f"({', '.join(map(str, listed))}) (dataset.metric)")
    aggregation = task.aggregation().get(metric)
    name = getattr(aggregation, "__name__", str(aggregation))
    if name != "mean":
        raise ConfigError(f"lm-eval task {spec.task}: metric {metric!r} is aggregated by {name} over the corpus, "
                          "not averaged from a per-item 0/1 score; the accuracy gate cannot decide by it")
    return str(metric)


def _golds(task: Any, doc: Any) -> tuple[str, ...]:
    """The accepted answers as text, for the evidence: the gold choice, or the target(s)."""
    target = task.doc_to_target(doc)
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = task.doc_to_choice(doc)
        golds = target if isinstance(target, list) else [target]
        return tuple(str(choices[g]) if isinstance(g, int) else str(g) for g in golds)
    if isinstance(doc, dict) and isinstance(doc.get("answers"), list):
        return tuple(str(a) for a in doc["answers"])
    return tuple(str(t) for t in target) if isinstance(target, list) else (str(target),)
