"""Device adapter for a Hugging Face checkpoint (`format: hf`): transformers on the CPU, in-process, float32.

The same contract as the llama.cpp device adapter, so every device gate runs on a checkpoint before step 2
compiles it: one request at a time, the KV cache carried from step to step, greedy as an argmax and sampling
with the shared seeded sampler (adapters/sampling.py: a (prompt, seed) pair always yields the same text), stop
strings and end-of-generation tokens, prompt evaluation and generation timed apart. Chat requests use the
checkpoint's own chat template through its tokenizer. `loglikelihood` reads the forward pass's logits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeready.adapters.base import AdapterStats, Loglikelihood, continuation_tokens
from edgeready.adapters.llama_cpp_batch import first_stop
from edgeready.adapters.sampling import pick
from edgeready.errors import MeasurementError
from edgeready.prompts import PromptStyle, form_for
from edgeready.records import GenerationRequest, Response, Timings

RUNTIME = "transformers (PyTorch, CPU, float32)"


class TransformersDevice:
    """A checkpoint folder loaded by transformers. `threads` sets torch's intra-op threads (for the process:
    torch has no per-model setting); `n_ctx` bounds prompt + max_tokens as the llama.cpp adapter's does."""

    def __init__(self, folder: Path, *, threads: int, n_ctx: int, name: str = "",
                 prompt_style: PromptStyle = "few-shot"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name or folder.name
        self.folder, self.threads, self.n_ctx, self.prompt_style = folder, threads, n_ctx, prompt_style
        started = time.perf_counter()
        torch.set_num_threads(threads)
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        self._model.eval()
        self.load_s = time.perf_counter() - started
        eos = self._model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer.eos_token_id is not None:
            self._eos.add(self._tokenizer.eos_token_id)
        self.prompt_tokens_evaluated = 0

    # -- protocol ------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        return [self._one(r) for r in requests]

    def describe(self) -> dict[str, object]:
        import transformers

        return {"adapter": "transformers-device", "runtime": RUNTIME, "transformers": transformers.__version__,
                "torch": self._torch.__version__, "model_path": str(self.folder), "threads": self.threads,
                "n_ctx": self.n_ctx, "prompt_style": self.prompt_style, "parallel": 1,
                "load_s": round(self.load_s, 3)}

    def stats(self) -> AdapterStats:
        return AdapterStats(prompt_tokens_evaluated=self.prompt_tokens_evaluated, prompt_tokens_reused=0)

    def close(self) -> None:
        self._model = None

    # -- log-likelihoods -----------------------------------------------------------------------------------
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[Loglikelihood]:
        """As the llama.cpp adapter splits them (lm-eval's HF convention), from one forward pass each."""
        out = []
        for context, continuation in pairs:
            head, tail = continuation_tokens(context, continuation, self._encode, self.name)
            out.append(self._score(head + tail, len(head)))
        return out

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Loglikelihood]:
        out = []
        for text in texts:
            tokens = self._encode(text)
            if len(tokens) < 2:
                raise MeasurementError(f"{self.name}: a text of fewer than two tokens has nothing to score")
            out.append(self._score(tokens, 1))
        return out

    def _score(self, tokens: list[int], start: int) -> Loglikelihood:
        if len(tokens) > self.n_ctx:
            raise MeasurementError(f"{self.name}: {len(tokens)} tokens to score exceed n_ctx {self.n_ctx}")
        torch = self._torch
        with torch.inference_mode():
            logits = self._model(torch.tensor([tokens])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        total, greedy = 0.0, True
        for i in range(start, len(tokens)):
            total += float(logprobs[i - 1, tokens[i]])
            greedy = greedy and int(torch.argmax(logits[i - 1])) == tokens[i]
        self.prompt_tokens_evaluated += len(tokens)
        return Loglikelihood(total, greedy, len(tokens) - start, start)

    # -- internals -----------------------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def tokenize(self, request: GenerationRequest) -> list[int]:
        request = form_for(request, self.prompt_style)
        if request.messages:
            if not self._tokenizer.chat_template:
                raise ValueError(f"{self.folder} has no chat template; use prompt_style few-shot")
            text = self._tokenizer.apply_chat_template(
                [{"role": r, "content": c} for r, c in request.messages], tokenize=False, add_generation_prompt=True)
            return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._encode(request.prompt)

    def _one(self, req: GenerationRequest) -> Response:
        torch = self._torch
        tokens = self.tokenize(req)
        if len(tokens) + req.max_tokens > self.n_ctx:
            raise ValueError(f"prompt of {len(tokens)} tokens + max_tokens {req.max_tokens} exceeds n_ctx {self.n_ctx}")
        rng = np.random.default_rng(req.seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self._model(torch.tensor([tokens]), use_cache=True)
        self.prompt_tokens_evaluated += len(tokens)
        t1 = time.perf_counter()
        generated: list[int] = []
        logprobs: list[float] = []
        text, finish, first_token_s = "", "length", None
        for step in range(req.max_tokens):
            logits = out.logits[0, -1].double().numpy()
            token, logprob = pick(logits, req.temperature, rng, want_logprob=req.logprobs)
            if token in self._eos:
                finish = "stop"
                break
            generated.append(token)
            first_token_s = first_token_s if first_token_s is not None else time.perf_counter() - t0
            if req.logprobs:
                logprobs.append(logprob)
            text = self._tokenizer.decode(generated, skip_special_tokens=True)
            hit = first_stop(text, req.stop)
            if hit is not None:
                text, finish = text[:hit], "stop"
                break
            if step + 1 < req.max_tokens:
                with torch.inference_mode():
                    out = self._model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
        t2 = time.perf_counter()
        return Response(text=text, prompt_tokens=len(tokens), completion_tokens=len(generated),
                        timings=Timings(total_s=t2 - t0, prompt_eval_s=t1 - t0, generation_s=t2 - t1,
                                        first_token_s=first_token_s),
                        finish_reason=finish, token_logprobs=tuple(logprobs) if req.logprobs else None,
                        served_by="device")

