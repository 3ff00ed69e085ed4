"""edgeready's adapters as an lm-eval model: `--model edgeready --model_args candidate=NAME[,target=REF,cache=false]`.

Any candidate the suite can judge answers lm-eval's requests: a GGUF model in-process (device), an endpoint or
a llama.cpp server the run starts (server), or the offload router. Generations go through the generation store
for device candidates, keyed as the gates key them. `loglikelihood` and `loglikelihood_rolling` read llama.cpp's
logits of a GGUF device model (transformers' of a checkpoint), single-stream (a target's `parallel` applies
to generation only).

lm-eval 0.4.13 has no entry points for models: importing this module registers the model with lm-eval's
registry, and `python -m edgeready.lm_eval` is lm-eval's own command line after that import.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from edgeready.adapters.base import text_scorer
from edgeready.candidates import resolve_candidate
from edgeready.errors import ConfigError
from edgeready.pool import AdapterPool
from edgeready.prompts import common_preamble
from edgeready.records import GenerationRequest
from edgeready.schema import Pair, runs_on
from edgeready.targets import resolve_target

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's own default when a task names none


def _flag(value: object) -> bool:
    return str(value).strip().lower() not in ("0", "false", "no", "off")


@register_model("edgeready")
class EdgeReadyLM(LM):
    """An edgeready candidate under the target it would be judged by (`target`, default `<role>/default`),
    whose profile sets threads, context and batching."""

    def __init__(self, candidate: str = "gemma3-270m-q4km", target: str | None = None, cache: object = True,
                 cache_dir: str | None = None, root: str | None = None, **_: Any):
        super().__init__()
        base = Path(root) if root else ROOT
        cand = resolve_candidate(candidate, base / "candidates")
        role = {"gguf": "device", "hf": "device", "endpoint": "server"}.get(cand.format, "offload")
        tgt = resolve_target(target or f"{role}/default", base / "thresholds")
        if not runs_on(cand, tgt.role):
            raise ConfigError(f"edgeready model: candidate {cand.name} ({cand.format}) does not run on target "
                              f"{tgt.key} (role {tgt.role})")
        self.candidate, self.target = cand, tgt
        self._pool = AdapterPool(Path(cache_dir) if cache_dir else base / ".cache", base / "candidates",
                                 _flag(cache), 0)
        atexit.register(self._pool.close)
        self._pair = Pair(cand, tgt, None)
        self._single = self._pair.with_parallel(1)  # log-likelihoods are read on one stream

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        # The prompts' common preamble as the shared-prefix hint: the gate's own requests for the same task carry
        # it (edgeready.datasets.harness), and the prompt's batch shapes, hence its greedy answer, depend on it.
        preamble = common_preamble([str(r.args[0]) for r in requests])
        asked = []
        for req in requests:
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or ()
            sampled = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature") or 0) > 0
            asked.append(GenerationRequest(
                prompt=context, max_tokens=int(kwargs.get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS),
                stop=tuple([until] if isinstance(until, str) else until),
                temperature=float(kwargs["temperature"]) if sampled else 0.0, seed=int(kwargs.get("seed") or 0),
                shared_prefix=preamble if str(context).startswith(preamble) else ""))
        return [r.text for r in self._pool.cached(self._pair).generate(asked)]

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        scorer = text_scorer(self._pool.live(self._single_device()))
        return [(s.logprob, s.greedy) for s in scorer.loglikelihood([tuple(r.args) for r in requests])]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        scorer = text_scorer(self._pool.live(self._single_device()))
        return [s.logprob for s in scorer.loglikelihood_rolling([r.args[0] for r in requests])]

    def close(self) -> None:
        """Close the models and servers this model opened (also done at exit)."""
        self._pool.close()

    def _single_device(self) -> Pair:
        if self.candidate.format not in ("gguf", "hf") or self.target.role != "device":
            raise ConfigError(f"edgeready model: {self.candidate.name} on {self.target.key} generates text only; "
                              "log-likelihood tasks need a GGUF or checkpoint candidate on a device target")
        return self._single
