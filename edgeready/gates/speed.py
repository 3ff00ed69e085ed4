"""Speed on the device: time to first token, and prompt-processing and generation tokens/s as llama-bench
measures them.

Everything is timed afresh on the live adapter (never from the generation store), greedy, with the target's
threads, context and batch size, after one untimed warm-up request (llama-bench warms up too):

- **Time to first token** (TTFT): the gate's first `prompts` questions of the accuracy gate (the embedded set
  for a target without one), asked as the app asks them (few-shot preamble + question). Seconds from the
  request's start to its first generated token, as the adapter times it. The preamble every question shares
  stays in the KV cache between requests, as in an app (or llama.cpp's server) with a fixed preamble; the
  report gives the prompt tokens evaluated and reused per request. p50 and p95 with a distribution-free upper
  confidence bound of p95 (the order statistic of edgeready.gates.latency), which `max_ttft_p95_s` compares.
- **pp** (llama-bench's pp512): a prompt of about `pp_tokens` tokens of real text (embedded questions, a
  different start each repetition so nothing is reused), evaluated tokens / prompt-evaluation seconds.
  The tokens counted are those llama.cpp evaluated (the adapter's counter), never the requested number.
- **tg** (llama-bench's tg128): `tg_tokens` generated tokens, no stop strings, temperature 0; generated
  tokens / generation seconds. A generation that ended early (end of sequence) is reported with the tokens it
  generated, never as a full one. `min_generation_tps` compares the Student-t lower bound of the mean over
  the repetitions (single stream: what one user waits for).
- **tg batched**: when the adapter decodes several sequences at once (`parallel: B` in its describe()), B
  generation requests in one generate() call: their generated tokens / the call's wall time (prompt
  evaluation included). Otherwise it is reported as not measured.

- **Sustained speed and heat**: the median time of the first and of the last tenth of the TTFT requests, and
  the slowdown between them (`max_throttle_pct` bounds it: a phone that throttles as it heats is reported as
  such). On a phone (profile.phone) the battery's and the thermal zones' temperatures are read before the
  gate, after the TTFT requests and at its end.

On a phone the requests go to the on-device server through adb forward, streamed: TTFT is the first content
event's arrival on the host (adb's round trip included: about a millisecond over USB, more over Wi-Fi), pp
and tg come from the server's own timings where it reports them (llama.cpp's llama-server does), else from
the pace of the events (tg) or not at all (pp, when the stream carries no prompt token counts).

TTFT, pp and tg run one sequence at a time, on a single-stream adapter of the same model when the target
decodes in batches (`parallel` > 1: that adapter pads every step to a fixed batch, adapters/llama_cpp_batch.py):
they are what one user of the app sees. pp, tg and batched are each repeated `repetitions` times: mean and
sample standard deviation (llama-bench's avg and stdev over its samples). The figures are the host's that ran
the suite, with the target's settings:
they describe the device named in the profile only when the suite runs there.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from edgeready.adapters.base import Adapter
from edgeready.candidates import Candidate
from edgeready.gates.accuracy import AccuracyConfig, questions
from edgeready.gates.base import Gate, RunResources, register
from edgeready.gates.latency import quantile_upper_bound
from edgeready.measurement import Check, Judgement, Measurement, MeasurementError
from edgeready.prompts import qa_request
from edgeready.records import GenerationRequest, QAItem, Response
from edgeready.schema import GateConfig, Pair, Profile, Target
from edgeready.stats import Interval, student_t

if TYPE_CHECKING:
    from edgeready.phone import PhoneServer

METER = "wall clock (time.perf_counter) around llama.cpp decode on the host"
PHONE_METER = ("wall clock on the host around the streamed replies of the on-device server on {where} (through adb "
               "forward); the server's own timings where it reports them")
P95 = 0.95
# Requests the throttle check needs: a first and a last tenth of at least one request each.
THROTTLE_MIN = 10
# Room the pp prompt's estimate of its length keeps in the context, and what a tg prompt takes.
PP_SHARE_OF_CTX = 0.9
TG_PROMPT_ROOM = 64
# Not one of the timed questions: it warms the model and leaves the shared preamble in the KV cache.
WARMUP = qa_request(QAItem(id="speed-warmup", question="Which country has the largest population?", answers=(),
                           hops=1, source="speed warm-up"), 2)


def min_requests(q: float, confidence: float) -> int:
    """The fewest requests for which the distribution-free upper bound of the q-quantile at `confidence` is an
    observed time (the largest one): 1 - q^n >= confidence. 59 for p95 at 95 %."""
    n = max(1, math.ceil(math.log(1 - confidence) / math.log(q)))
    while 1 - q ** n < confidence:
        n += 1
    return n


class SpeedConfig(GateConfig):
    """`gates.speed` (device targets): optional bounds on TTFT p95 and generation tokens/s, and how to measure.
    With no bound the gate reports the figures and gates nothing."""

    max_ttft_p95_s: float | None = Field(default=None, gt=0, description="upper bound of p95 TTFT must be below")
    min_generation_tps: float | None = Field(default=None, gt=0,
                                             description="lower bound of single-stream generated tokens/s")
    # 60: enough for a distribution-free bound of p95 at 95 % confidence (59 requests).
    prompts: int = Field(default=60, ge=2, le=10_000, description="requests timed for time to first token")
    pp_tokens: int = Field(default=512, ge=8, le=1_048_576, description="prompt tokens per pp run (pp512)")
    tg_tokens: int = Field(default=128, ge=1, le=1_048_576, description="generated tokens per tg run (tg128)")
    repetitions: int = Field(default=3, ge=1, le=100, description="runs of pp and tg (llama-bench's -r)")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    max_throttle_pct: float | None = Field(default=None, gt=0, lt=100,
                                           description="slowdown of the last tenth of the TTFT requests vs the first")

    @model_validator(mode="after")
    def _bounds_can_be_shown(self) -> SpeedConfig:
        need = min_requests(P95, self.confidence)
        if self.max_ttft_p95_s is not None and self.prompts < need:
            raise ValueError(f"prompts: {self.prompts} requests cannot bound TTFT p95 at confidence "
                             f"{self.confidence:g} (max_ttft_p95_s needs at least {need})")
        if self.max_throttle_pct is not None and self.prompts < THROTTLE_MIN:
            raise ValueError(f"prompts: {self.prompts} requests have no first and last tenth to compare "
                             "(max_throttle_pct needs at least 10)")
        if self.min_generation_tps is not None and self.repetitions < 2:
            raise ValueError("repetitions: min_generation_tps is compared through a lower confidence bound over "
                             "the repetitions, which needs at least 2")
        return self

    def check_target(self, target: Target) -> None:
        if target.role != "device":
            raise ValueError(f"gates.speed applies to device targets only (this target's role is {target.role}): "
                             "remove the block")
        # A batched adapter gives each sequence n_ctx / parallel cells (adapters/llama_cpp_batch.py).
        n_ctx = target.profile.n_ctx // target.profile.parallel
        where = "profile.n_ctx" if target.profile.parallel == 1 else "profile.n_ctx / profile.parallel"
        if self.pp_tokens > PP_SHARE_OF_CTX * n_ctx:
            raise ValueError(f"gates.speed.pp_tokens ({self.pp_tokens}) does not fit {where} ({n_ctx}): at "
                             f"most {int(PP_SHARE_OF_CTX * n_ctx)}")
        if self.tg_tokens + TG_PROMPT_ROOM > n_ctx:
            raise ValueError(f"gates.speed.tg_tokens ({self.tg_tokens}) and its prompt do not fit {where} "
                             f"({n_ctx}): at most {n_ctx - TG_PROMPT_ROOM}")
        acc = target.gates.get("accuracy")
        if isinstance(acc, AccuracyConfig) and self.prompts > acc.cap:
            raise ValueError(f"gates.speed.prompts ({self.prompts}) exceeds the {acc.cap} questions of "
                             "gates.accuracy, which the speed gate times")

    def check_limit(self, n: int) -> None:
        if self.max_throttle_pct is not None and min(n, self.prompts) < THROTTLE_MIN:
            raise ValueError(f"max_throttle_pct compares tenths of at least {THROTTLE_MIN} timed requests, --limit "
                             f"leaves {n}")
        need = min_requests(P95, self.confidence)
        if self.max_ttft_p95_s is not None and min(n, self.prompts) < need:
            raise ValueError(f"max_ttft_p95_s needs at least {need} timed requests, --limit leaves {n}")


@dataclass
class SpeedInputs:
    adapter: Adapter  # as the target runs the model (batched when profile.parallel > 1)
    single: Adapter  # one sequence at a time: TTFT, pp and tg are what one user of the app sees
    profile: Profile
    requests: list[GenerationRequest]  # the TTFT requests, as the app sends them
    items: list[QAItem]  # text for the pp prompts and tg requests
    provenance: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    phone: PhoneServer | None = None  # the model runs there: its temperatures are read too


@register
class Speed(Gate[SpeedConfig, SpeedInputs]):
    name = "speed"
    order = 6
    config = SpeedConfig
    description = "speed (time to first token, prompt and generation tokens/s, llama-bench style)"
    roles = ("device",)

    def gather(self, run: RunResources, pair: Pair, cfg: SpeedConfig) -> SpeedInputs:
        acc = pair.target.gates.get("accuracy")
        if isinstance(acc, AccuracyConfig):
            items, max_tokens = questions(run, pair)[0], acc.max_tokens
        else:
            from edgeready.datasets.countries import load_countries_qa
            from edgeready.datasets.sampling import stratified_sample

            # At least 64 questions: the pp prompts are made of their text.
            items, max_tokens = stratified_sample(load_countries_qa(), max(cfg.prompts, 64), 0), 16
        n = min(cfg.prompts, len(items), run.limit if run.limit is not None else cfg.prompts)
        notes = [f"{cfg.prompts} TTFT requests asked for, {n} timed (capped by --limit or the questions)"] \
            if n < cfg.prompts else []
        adapter = run.live(pair)
        single = run.live(single_stream(pair))
        phone = run.phone() if pair.target.profile.phone is not None else None
        return SpeedInputs(adapter, single, pair.target.profile, [qa_request(it, max_tokens) for it in items[:n]],
                           items, run.provenance(pair), notes, phone)

    def measure(self, inputs: SpeedInputs, cfg: SpeedConfig) -> Measurement:
        return measure_speed(inputs, cfg)

    def judge(self, m: Measurement, cfg: SpeedConfig, subject: Candidate) -> Judgement:
        ttft, tg = m.details["ttft"], m.details["tg"]
        checks = []
        if cfg.max_ttft_p95_s is not None:
            bound = ttft["p95_upper_bound_s"]
            checks.append(Check("ttft_p95", math.inf if bound is None else bound, "<=", cfg.max_ttft_p95_s, "s",
                                f"order-statistic upper bound of p95 ({ttft['confidence']:.0%}), n={ttft['n']}"))
        if cfg.min_generation_tps is not None:
            bound = tg["lower_bound_tps"]
            checks.append(Check("generation_tps", 0.0 if bound is None else bound, ">=", cfg.min_generation_tps,
                                "tokens/s", f"Student-t lower bound ({tg['confidence']:.0%}) of the mean over "
                                f"{tg['n']} repetitions, single stream"))
        if cfg.max_throttle_pct is not None:
            sus = m.details["sustained"]
            # Too few timed requests (a short dataset) is no evidence of a cool device: it fails, as a missing bound.
            checks.append(Check("throttle", sus["slowdown_pct"] if sus["measured"] else math.inf, "<=",
                                cfg.max_throttle_pct, "%", f"median request time, last {sus['n_each']} vs first "
                                f"{sus['n_each']} of {ttft['n']}"))
        if not checks and REPORT_ONLY not in m.notes:
            # Nothing to compare: the verdict says so beside the figures (a note is what every report shows).
            m.notes.append(REPORT_ONLY)
        return Judgement(checks, speed_advice(checks, m.details))


def single_stream(pair: Pair) -> Pair:
    """The pair with its profile decoding one sequence at a time. A batched adapter decodes fixed rows per step
    (adapters/llama_cpp_batch.py), so one request through it costs a full batch: not what one user sees."""
    # A phone's server serves one request alone when sent one.
    return pair if pair.target.profile.phone is not None else pair.with_parallel(1)


REPORT_ONLY = ("report only: this target sets no speed bound (max_ttft_p95_s, min_generation_tps), so the figures "
               "are not gated")


def speed_advice(checks: list[Check], details: dict[str, Any]) -> str:
    """What to try when a speed check fails (shown only then)."""
    failed = [c for c in checks if not c.passed]
    parts = []
    for c in failed:
        if c.name == "throttle":
            sus = details["sustained"]
            parts.append(f"throttle: the last requests ran {c.observed:.3g} % slower than the first: the device "
                         "heats and lowers its clocks; fewer threads (the big cores only), fewer bits, or a "
                         "cooler sustained workload" if sus["measured"]
                         else f"throttle: not measured ({sus['reason']})")
            continue
        point = details["ttft"]["p95_s"] if c.name == "ttft_p95" else details["tg"]["tokens_per_s"]
        if point <= c.threshold if c.op == "<=" else point >= c.threshold:
            parts.append(f"{c.name}: inconclusive, the point estimate ({point:.4g}) meets {c.threshold:g} but its "
                         "bound does not: time more " + ("prompts" if c.name == "ttft_p95" else "repetitions"))
        elif c.name == "ttft_p95":
            parts.append(f"ttft_p95: {c.observed:.3g} s over {c.threshold:g} s: shorten the prompt (or keep its "
                         "preamble cached), raise profile.n_batch for faster prompt processing, or fewer bits")
        else:
            parts.append(f"generation_tps: {c.observed:.3g} tokens/s under {c.threshold:g}: generation reads every "
                         "weight per token, so fewer bits (Q4_0, Q4_K_M), a Q4_0 token embedding, pruning or a "
                         "smaller model")
    return "; ".join(parts) or "speed within its bounds"


# -- measuring ------------------------------------------------------------------------------------------
def measure_speed(inputs: SpeedInputs, cfg: SpeedConfig) -> Measurement:
    single, phone = inputs.single, inputs.phone
    described = inputs.adapter.describe()
    heat: dict[str, Any] = {"before": phone.temperatures()} if phone is not None else {}
    single.generate([WARMUP])  # untimed, as llama-bench's warm-up run
    ttft, ttft_items = _ttft(single, inputs.requests, cfg.confidence)
    if phone is not None:
        heat["during"] = phone.temperatures()
    pp, pp_items = _prompt_processing(single, inputs.items, cfg)
    tg, tg_items = _generation(single, inputs.items, cfg)
    batched, batched_items = _batched(inputs.adapter, inputs.items, cfg, described.get("parallel"), tg)
    if phone is not None:
        heat.update(after=phone.temperatures(), where=phone.where, meter="dumpsys battery (tenths of a degree) "
                    "and /sys/class/thermal/thermal_zone*/temp (millidegrees), over adb")
    else:
        heat = {"measured": False, "reason": "the model ran on the host (no profile.phone): no phone to read"}
    notes = [*inputs.notes, *_shortfalls(ttft, pp, tg, batched)]
    meter = PHONE_METER.format(where=phone.where) if phone is not None else METER
    for fig in (ttft, pp, tg):
        fig["meter"] = meter
    upper = ttft["p95_upper_bound_s"]
    p = inputs.profile
    return Measurement(
        gate="speed",
        metric="time to first token, p95",
        value=ttft["p95_s"],
        unit="s",
        n=ttft["n"],
        interval=None if upper is None else Interval(low=ttft["p50_s"], high=upper, confidence=cfg.confidence,
                                                     method="order-statistic upper bound of p95 (low = median)"),
        method="measured",
        meter=meter,
        provenance={**inputs.provenance, "adapter": described},
        details={
            "ttft": ttft, "pp": pp, "tg": tg, "tg_batched": batched, "sustained": _sustained(ttft_items),
            "heat": heat,
            "settings": {"threads": p.threads, "n_ctx": p.n_ctx, "n_batch": p.n_batch,
                         "parallel": described.get("parallel"), "warmup_requests": 1, "decoding": "greedy",
                         "where": f"{phone.where}, its on-device server" if phone is not None else
                                  "the host that ran the suite, with the target profile's settings (not "
                                  f"{p.device} unless the suite ran there)"},
        },
        notes=notes,
        items=[*ttft_items, *pp_items, *tg_items, *batched_items],
    )


def _sustained(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Median request time of the first and of the last tenth of the TTFT requests (at least one each), and the
    slowdown between them in percent (negative: the end was faster)."""
    times = [it["total_s"] for it in items if it["total_s"]]
    k = len(times) // 10
    if len(times) < THROTTLE_MIN:
        return {"measured": False, "n_each": k, "slowdown_pct": None,
                "reason": f"{len(times)} timed requests, fewer than {THROTTLE_MIN}: no tenths to compare"}
    first, last = statistics.median(times[:k]), statistics.median(times[-k:])
    return {"measured": True, "n_each": k, "first_tenth_median_s": first, "last_tenth_median_s": last,
            "slowdown_pct": (last / first - 1) * 100,
            "how": "median request time of the last tenth of the TTFT requests over the first tenth's, minus 1"}


def _counted(adapter: Adapter) -> int | None:
    return adapter.stats().prompt_tokens_evaluated


def _ttft(adapter: Adapter, requests: list[GenerationRequest], confidence: float
          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import numpy as np

    items, times, evaluated = [], [], []
    for i, req in enumerate(requests):
        before = _counted(adapter)
        r = adapter.generate([req])[0]
        after = _counted(adapter)
        fresh = after - before if before is not None and after is not None else None
        if r.timings.first_token_s is not None:
            times.append(r.timings.first_token_s)
        if fresh is not None:
            evaluated.append(fresh)
        items.append({"id": f"ttft-{i}", "kind": "ttft", "prompt": req.prompt[-80:], "prompt_tokens": r.prompt_tokens,
                      "prompt_tokens_evaluated": fresh, "first_token_s": r.timings.first_token_s,
                      "total_s": r.timings.total_s, "completion_tokens": r.completion_tokens,
                      "response": r.text})
    if not times:
        raise MeasurementError(f"time to first token: none of {len(requests)} requests generated a token "
                               "(or the adapter does not time the first token)")
    n = len(times)
    need = min_requests(P95, confidence)
    prompt_tokens = [it["prompt_tokens"] for it in items]
    return {
        "p50_s": float(np.percentile(times, 50)),
        "p95_s": float(np.percentile(times, 95)),
        "p95_upper_bound_s": quantile_upper_bound(times, P95, confidence) if n >= need else None,
        "p95_upper_bound_needs": need,
        "confidence": confidence,
        "mean_s": statistics.fmean(times),
        "max_s": max(times),
        "n": n,
        "requests": len(requests),
        "requests_without_token": len(requests) - n,
        "prompt_tokens_mean": statistics.fmean(prompt_tokens),
        "prompt_tokens_evaluated_mean": statistics.fmean(evaluated) if evaluated else None,
        "how": "request start to first generated token; the shared few-shot preamble kept in the KV cache "
               "between requests (prompt_tokens_evaluated_mean: what each request evaluated afresh)",
        "meter": METER,
        "method": "measured",
    }, items


def _filler(items: list[QAItem], start: int, chars: int) -> str:
    """Real text of at least `chars` characters: the questions, from the start-th on (cyclically)."""
    out: list[str] = []
    size, i = 0, start
    while size < chars:
        q = items[i % len(items)].question
        out.append(q)
        size, i = size + len(q) + 1, i + 1
    return " ".join(out)


def _pp_request(items: list[QAItem], start: int, chars: int) -> GenerationRequest:
    """About `chars` characters of real text, to the end of the word it reaches."""
    text = _filler(items, start, chars + 64)
    end = text.find(" ", chars)
    return GenerationRequest(prompt=text[:end] if end > 0 else text, max_tokens=1, seed=start)


def _prompt_processing(adapter: Adapter, items: list[QAItem], cfg: SpeedConfig
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Prompt tokens evaluated per second. The prompt's length is calibrated on an untimed request (its token
    count per character); each repetition starts with a different question, so no KV cache is reused."""
    # At least 3 characters a token in English text: the calibration prompt fits wherever pp_tokens does.
    calib = _pp_request(items, len(items) // 2, 3 * cfg.pp_tokens)
    got = adapter.generate([calib])[0]
    if got.prompt_tokens <= 0 and _counted(adapter) is None:
        return {"measured": False, "reason": "the server reports no prompt token counts (no usage in its stream, "
                "no timings): prompt tokens/s cannot be counted, only the time to first token",
                "tokens_requested": cfg.pp_tokens, "tokens_evaluated": [], "tokens_per_s": None, "n": 0}, []
    chars_per_token = len(calib.prompt) / max(got.prompt_tokens - 1, 1)  # the BOS token has no text
    chars = max(1, round((cfg.pp_tokens - 1) * chars_per_token))
    samples, counted, records = [], [], []
    for rep in range(cfg.repetitions):
        before = _counted(adapter)
        r = adapter.generate([_pp_request(items, rep, chars)])[0]
        after = _counted(adapter)
        tokens = after - before if before is not None and after is not None else r.prompt_tokens
        seconds = r.timings.prompt_eval_s
        if not seconds or tokens <= 0:
            raise MeasurementError(f"pp: repetition {rep} evaluated {tokens} prompt tokens in {seconds} s: no rate")
        samples.append(tokens / seconds)
        counted.append(tokens)
        records.append({"id": f"pp-{rep}", "kind": "pp", "prompt_tokens": r.prompt_tokens,
                        "prompt_tokens_evaluated": tokens, "prompt_eval_s": seconds, "tokens_per_s": tokens / seconds})
    return {**_mean_sd(samples, cfg.confidence, lower=False), "label": f"pp{round(statistics.fmean(counted))}",
            "tokens_requested": cfg.pp_tokens, "tokens_evaluated": counted,
            "counted_by": "the adapter's counter of prompt tokens llama.cpp evaluated" if _counted(adapter)
            is not None else "the prompt's token count (the adapter keeps no evaluation counter)",
            "how": "evaluated prompt tokens / prompt-evaluation seconds, one untimed calibration run before",
            "meter": METER, "method": "measured"}, records


def _tg_request(item: QAItem, tokens: int, seed: int) -> GenerationRequest:
    return GenerationRequest(prompt=f"Question: {item.question}\nAnswer in detail, in several paragraphs:\n",
                             max_tokens=tokens, temperature=0.0, seed=seed, stop=())


def _generation(adapter: Adapter, items: list[QAItem], cfg: SpeedConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    samples, generated, records = [], [], []
    for rep in range(cfg.repetitions):
        r = adapter.generate([_tg_request(items[rep % len(items)], cfg.tg_tokens, rep)])[0]
        seconds = r.timings.generation_s
        if not seconds or r.completion_tokens <= 0:
            raise MeasurementError(f"tg: repetition {rep} generated {r.completion_tokens} tokens in {seconds} s")
        samples.append(r.completion_tokens / seconds)
        generated.append(r.completion_tokens)
        records.append({"id": f"tg-{rep}", "kind": "tg", "completion_tokens": r.completion_tokens,
                        "finish_reason": r.finish_reason, "generation_s": seconds,
                        "tokens_per_s": r.completion_tokens / seconds, "response": r.text})
    return {**_mean_sd(samples, cfg.confidence, lower=True), "label": f"tg{cfg.tg_tokens}",
            "tokens_requested": cfg.tg_tokens, "tokens_generated": generated,
            "complete": all(g == cfg.tg_tokens for g in generated),
            "how": "generated tokens / generation seconds (each token decoded once), greedy, no stop strings",
            "meter": METER, "method": "measured"}, records


def _batched(adapter: Adapter, items: list[QAItem], cfg: SpeedConfig, parallel: object, single: dict[str, Any]
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """B generation requests in one generate() call, when the adapter decodes several sequences at once."""
    b = parallel if isinstance(parallel, int) and not isinstance(parallel, bool) else None
    if b is None or b <= 1:
        why = "the adapter decodes one sequence at a time" + ("" if b is None else f" (parallel = {b})")
        return {"measured": False, "reason": why, "parallel": b}, []
    # Untimed: a first batched call may set up what later ones reuse (llama-bench warms up every test).
    adapter.generate([_tg_request(items[-1 - k % len(items)], 2, k) for k in range(b)])
    samples, records = [], []
    for rep in range(cfg.repetitions):
        reqs = [_tg_request(items[(rep * b + k) % len(items)], cfg.tg_tokens, rep * b + k) for k in range(b)]
        start = time.perf_counter()
        rs: list[Response] = adapter.generate(reqs)
        wall = time.perf_counter() - start
        tokens = sum(r.completion_tokens for r in rs)
        samples.append(tokens / wall)
        records.append({"id": f"tg-batched-{rep}", "kind": "tg_batched", "parallel": b, "wall_s": wall,
                        "completion_tokens": [r.completion_tokens for r in rs], "tokens_per_s": tokens / wall})
    summary = _mean_sd(samples, cfg.confidence, lower=False)
    return {"measured": True, "parallel": b, **summary, "label": f"tg{cfg.tg_tokens} x{b}",
            "tokens_generated": [sum(r["completion_tokens"]) for r in records],
            "tokens_requested": b * cfg.tg_tokens, "warmup_calls": 1,
            "speedup_vs_single": summary["tokens_per_s"] / single["tokens_per_s"],
            "how": f"{b} generation requests in one generate() call: their generated tokens / the call's wall "
                   "time (prompt evaluation included)",
            "meter": METER, "method": "measured"}, records


def _mean_sd(samples: list[float], confidence: float, *, lower: bool) -> dict[str, Any]:
    """llama-bench's avg and stdev over its samples; with `lower`, the Student-t lower bound of the mean."""
    mean = statistics.fmean(samples)
    sd = statistics.stdev(samples) if len(samples) > 1 else None
    out: dict[str, Any] = {"tokens_per_s": mean, "sd": sd, "samples_tps": samples, "n": len(samples),
                           "confidence": confidence}
    if lower:
        # One-sided at `confidence`: the low end of the two-sided interval at 2 x confidence - 1.
        interval = student_t(samples, 2 * confidence - 1)  # floored at 0: a rate is never below 0
        out["lower_bound_tps"] = None if interval is None else interval.low
    return out


def _shortfalls(ttft: dict[str, Any], pp: dict[str, Any], tg: dict[str, Any], batched: dict[str, Any]) -> list[str]:
    """Say so when a run measured fewer tokens than asked (never a silently shorter measurement)."""
    notes = []
    if ttft["requests_without_token"]:
        notes.append(f"ttft: {ttft['requests_without_token']} of {ttft['requests']} requests generated no token "
                     "(end of sequence first) and have no time to first token")
    short = [g for g in tg["tokens_generated"] if g < tg["tokens_requested"]]
    if short:
        notes.append(f"tg: {len(short)} of {tg['n']} runs ended early (end of sequence) after "
                     f"{', '.join(map(str, short))} of {tg['tokens_requested']} tokens; their rate is over the tokens "
                     "they generated")
    if batched.get("measured") and any(g < batched["tokens_requested"] for g in batched["tokens_generated"]):
        notes.append(f"tg batched: generated {batched['tokens_generated']} of {batched['tokens_requested']} tokens "
                     "per call (some sequences ended early)")
    off = [t for t in pp["tokens_evaluated"] if abs(t - pp["tokens_requested"]) > 0.05 * pp["tokens_requested"]]
    if off:
        notes.append(f"pp: the prompts evaluated {off} tokens, not {pp['tokens_requested']}")
    return notes
