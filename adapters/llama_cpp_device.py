"""Device adapter: a GGUF model run in-process by llama.cpp (llama-cpp-python).

One decoding loop serves every request, greedy or sampled, with or without log-probabilities:
- it reuses the KV cache of the longest common token prefix with the previous request, so a
  few-shot preamble shared by all questions is evaluated once (as llama.cpp's own server does);
- it asks llama.cpp for the last position's logits only (logits_all=False): keeping every position's
  logits would cost n_ctx x n_vocab floats, 2 GiB for Gemma's 262k vocabulary at 2k context;
- greedy is an argmax over those logits; sampling is a temperature softmax drawn with a NumPy
  generator seeded per request, so a (prompt, seed) pair always yields the same text;
- prompt evaluation and generation are timed separately, with the token counts of each;
- with `parallel` > 1, requests are decoded several at a time in one llama.cpp batch
  (adapters/llama_cpp_batch.py): same prompt batches, same sampler per request, one call per token step.
Chat-style requests are rendered with the model's own chat template (from its GGUF metadata), after a
static audit of it (edgeready.template_audit: an "error" finding refuses the model before anything renders)
and under a time limit (RENDER_TIMEOUT_S): llama-cpp-python's Jinja sandbox stops attribute escapes, not a
template that loops for hours.
"""

from __future__ import annotations

import ctypes
import functools
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from edgeready.adapters.base import AdapterStats, Loglikelihood, continuation_tokens
from edgeready.adapters.llama_cpp_batch import BatchDecoder, Job, first_stop
from edgeready.adapters.sampling import logsumexp as _logsumexp
from edgeready.adapters.sampling import pick as _pick
from edgeready.errors import MeasurementError
from edgeready.prompts import PromptStyle, form_for
from edgeready.records import GenerationRequest, Response, Timings
from edgeready.template_audit import audit_chat_template, errors

RUNTIME = "llama.cpp via llama-cpp-python"
# Wall-clock seconds one chat-template render may take, compiling the template included (real templates take
# milliseconds). Enforced on the main thread only (see _time_limit).
RENDER_TIMEOUT_S = 2.0


class _Overtime(Exception):
    """Raised by the SIGALRM handler inside a render that ran past its limit."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _Overtime inside the block once it has run `seconds` of wall time. Jinja2 renders in pure Python,
    so the handler runs between bytecodes and interrupts it. The previous SIGALRM handler and timer are put
    back afterwards; a timer of someone else's that fell due meanwhile fires at once then, late by at most
    `seconds`.

    Signals reach the main thread only: off it (an adapter used from a worker thread) nothing is enforced,
    and the static audit of the template, run before any render, is the only guard."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    armed = True

    def on_alarm(signum: int, frame: object) -> None:
        if armed:  # not once the block is over: an alarm racing its end must not hit the restoring code
            raise _Overtime

    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if outer_delay > 0:
            left = outer_delay - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), outer_interval)


@functools.lru_cache(maxsize=8)
def _formatter(template: str, bos: str, eos: str) -> Jinja2ChatFormatter:
    """The compiled template (llama-cpp-python compiles it in its sandbox when the formatter is made)."""
    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True)


def render_template(template: str, messages: Sequence[tuple[str, str]], *, bos: str, eos: str, model: str,
                    timeout_s: float = RENDER_TIMEOUT_S) -> str:
    """`messages` rendered with `template` as llama-cpp-python renders it, within `timeout_s` (compiling
    included). Audits nothing: callers audit the template first (LlamaCppDevice.render_chat does)."""
    try:
        with _time_limit(timeout_s):
            formatter = _formatter(template, bos, eos)
            return formatter(messages=[{"role": r, "content": c} for r, c in messages]).prompt
    except _Overtime:
        raise MeasurementError(f"{model}: rendering its chat template took longer than the limit of {timeout_s:g} s "
                               "(a template that loops or does heavy work); refused") from None


def system_info() -> str:
    """llama.cpp's build flags and backends (SIMD, BLAS, OpenMP...): what decides which kernels run."""
    return llama_cpp.llama_print_system_info().decode(errors="replace").strip()


class LlamaCppDevice:
    """The in-process device adapter. `threads` and `n_ctx` come from the target profile."""

    def __init__(
        self, model_path: Path, *, threads: int, n_ctx: int, n_batch: int = 64, name: str = "",
        prompt_style: PromptStyle = "few-shot", parallel: int = 1,
    ):
        self.name = name or model_path.stem
        self.prompt_style = prompt_style
        self.model_path = model_path
        self.threads = threads
        self.n_ctx = n_ctx
        # Prompt tokens decoded per batch. Small on purpose: llama.cpp reserves its compute buffer
        # for n_ubatch output rows of n_vocab logits (512 x 262k floats = 512 MiB for Gemma), and
        # small aligned chunks let a few-shot preamble be reused across questions.
        self.chunk = min(n_batch, n_ctx)
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {parallel}")
        self.parallel = parallel
        load_start = time.perf_counter()
        self._llama = llama_cpp.Llama(
            model_path=str(model_path),
            # Batched, every sequence lives in the decoder's context: this one only tokenizes, so keep it small.
            n_ctx=n_ctx if parallel == 1 else self.chunk,
            n_batch=self.chunk,
            n_ubatch=self.chunk,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,
            verbose=False,
        )
        try:
            self._batcher = (BatchDecoder(self._llama, parallel=parallel, n_ctx=n_ctx, chunk=self.chunk,
                                          threads=threads, is_end=self._is_end, detokenize=self._detokenize,
                                          pick=lambda lg, t, rng, want: _pick(lg, t, rng, want_logprob=want),
                                          boundaries=self.boundaries)
                             if parallel > 1 else None)
        except BaseException:
            self._llama.close()
            raise
        self.load_s = time.perf_counter() - load_start
        self._n_vocab = self._llama.n_vocab()
        self._eos = self._llama.token_eos()
        self._template = self._llama.metadata.get("tokenizer.chat_template")
        self._template_audited = False  # audited when a chat request first needs the template
        self.prompt_tokens_evaluated = 0
        self.prompt_tokens_reused = 0
        # The last evaluated prompt and its last-position logits: N samples of one prompt (as
        # SelfCheck draws them) then evaluate the prompt once and restore this state N-1 times.
        self._prompt_state: tuple[list[int], np.ndarray] | None = None

    # -- protocol -----------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        if self._batcher is None:
            return [self._one(r) for r in requests]
        # Every request through the batched path, even one alone, so a batched adapter never mixes two decoders.
        return self._batcher.run([self._job(i, r) for i, r in enumerate(requests)])

    def _job(self, index: int, req: GenerationRequest) -> Job:
        tokens = self.tokenize(req)
        self._check_fits(tokens, req)
        form = form_for(req, self.prompt_style)
        return Job(index, req, tokens, self._shared_len(form, tokens) if not form.messages else 0)

    def _check_fits(self, tokens: list[int], req: GenerationRequest) -> None:
        if len(tokens) + req.max_tokens > self.n_ctx:
            raise ValueError(
                f"prompt of {len(tokens)} tokens + max_tokens {req.max_tokens} exceeds n_ctx {self.n_ctx}"
            )

    def _is_end(self, token: int) -> bool:
        return token == self._eos or bool(llama_cpp.llama_vocab_is_eog(self._llama._model.vocab, token))

    def _detokenize(self, tokens: list[int]) -> str:
        return self._llama.detokenize(tokens).decode("utf-8", errors="ignore")

    def describe(self) -> dict[str, object]:
        return {
            "adapter": "llama-cpp-device",
            "runtime": RUNTIME,
            "llama_cpp_python": llama_cpp.__version__,
            "system_info": system_info(),
            "model_path": str(self.model_path),
            "threads": self.threads,
            "n_ctx": self.n_ctx,
            "prompt_style": self.prompt_style,
            "parallel": self.parallel,
            "load_s": round(self.load_s, 3),
        }

    def stats(self) -> AdapterStats:
        b = self._batcher
        evaluated, reused = (b.prompt_tokens_evaluated, b.prompt_tokens_reused) if b else (0, 0)
        return AdapterStats(prompt_tokens_evaluated=self.prompt_tokens_evaluated + evaluated,
                            prompt_tokens_reused=self.prompt_tokens_reused + reused)

    def close(self) -> None:
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            batcher.close()
            self._batcher = None
        llama = getattr(self, "_llama", None)
        if llama is not None:
            llama.close()
            self._llama = None  # type: ignore[assignment]

    # -- log-likelihoods (lm-eval's loglikelihood and loglikelihood_rolling) ---------------------
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[Loglikelihood]:
        """log P(continuation | context) for each (context, continuation), from llama.cpp's own logits, and
        whether greedy decoding would have produced the continuation. Split into tokens as lm-eval's HF model
        does (a context's trailing spaces move to the continuation; the continuation's tokens are those the
        whole text has beyond the context's), so a choice scores the tokens the model would read."""
        self._need_single_stream("loglikelihood")

        def encode(text: str) -> list[int]:
            return self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)

        return [self._score_tokens(*continuation_tokens(c, k, encode, self.name)) for c, k in pairs]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Loglikelihood]:
        """log P(text) token by token from the start of the sequence (BOS as the only context). A text longer
        than the context window is refused (lm-eval would score it in windows; ours would differ)."""
        self._need_single_stream("loglikelihood_rolling")
        out = []
        for text in texts:
            tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
            if len(tokens) < 2:
                raise MeasurementError(f"{self.name}: an empty text has no tokens to score")
            out.append(self._score_tokens(tokens[:1], tokens[1:]))
        return out

    def _need_single_stream(self, what: str) -> None:
        if self._batcher is not None:
            raise MeasurementError(f"{self.name}: {what} runs on a single-stream device adapter; this one decodes "
                                   f"{self.parallel} sequences together (set the target's profile.parallel to 1)")

    def _score_tokens(self, head: list[int], tail: list[int]) -> Loglikelihood:
        if len(head) + len(tail) > self.n_ctx:
            raise MeasurementError(f"{self.name}: {len(head)} + {len(tail)} tokens to score exceed n_ctx {self.n_ctx}")
        # The context in the adapter's fixed batch shapes (its logits do not depend on what came before), then
        # each scored token alone: position i's logits give token i + 1.
        self._prompt_state = None
        self._eval_prompt(head)
        logits, total, greedy = self._last_logits(), 0.0, True
        for i, token in enumerate(tail):
            total += float(logits[token]) - _logsumexp(logits)
            greedy = greedy and int(np.argmax(logits)) == token
            if i + 1 < len(tail):
                self._llama.eval([token])
                logits = self._last_logits()
        self.prompt_tokens_evaluated += len(tail) - 1
        return Loglikelihood(total, greedy, len(tail), len(head))

    # -- internals ----------------------------------------------------------------------------
    def render_chat(self, messages: Sequence[tuple[str, str]]) -> str:
        if not self._template:
            raise ValueError(f"{self.model_path.name} has no chat template in its GGUF; use prompt_style few-shot")
        self._audit_template()
        llama = self._llama
        return render_template(self._template, messages, model=self.model_path.name,
                               eos=llama.detokenize([self._eos]).decode(errors="ignore"),
                               bos=llama.detokenize([llama.token_bos()]).decode(errors="ignore"))

    def _audit_template(self) -> None:
        """The static audit, before the first render: an "error" finding refuses the model (every time asked)."""
        if self._template_audited:
            return
        refused = errors(audit_chat_template(self._template))
        if refused:
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            raise MeasurementError(f"{self.model_path.name}: its chat template is refused by the static audit, "
                                   f"nothing rendered: {refused[0]}{more}")
        self._template_audited = True

    def tokenize(self, request: GenerationRequest) -> list[int]:
        request = form_for(request, self.prompt_style)
        if request.messages:
            text = self.render_chat(request.messages)
            # The rendered template already holds BOS and special tokens as text.
            return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return self._llama.tokenize(request.prompt.encode("utf-8"), add_bos=True, special=False)

    def _prompt_logits(self, tokens: list[int], shared: int = 0) -> np.ndarray:
        """Logits after the prompt, restoring the saved state when the same prompt comes again:
        the KV cache still holds the prompt's positions, the generated ones are dropped."""
        llama = self._llama
        state = self._prompt_state
        if (
            state is not None
            and state[0] == tokens
            and llama.n_tokens >= len(tokens)
            and llama.input_ids[: len(tokens)].tolist() == tokens
            and llama._ctx.kv_cache_seq_rm(-1, len(tokens), -1)
        ):
            llama.n_tokens = len(tokens)
            self.prompt_tokens_reused += len(tokens)
            return state[1].copy()
        self._eval_prompt(tokens, shared)
        logits = self._last_logits()
        self._prompt_state = (list(tokens), logits.copy())
        return logits

    def boundaries(self, tokens: list[int], shared: int = 0) -> list[int]:
        """Where the prompt's decode batches start: every `chunk` tokens from 0, and, when the request
        names a shared prefix (a few-shot preamble) of `shared` tokens, also at its end, counting
        chunks again from there. Depends on the prompt alone, never on what was decoded before."""
        if 0 < shared < len(tokens):
            return [*range(0, shared, self.chunk), *range(shared, len(tokens), self.chunk)]
        return list(range(0, len(tokens), self.chunk))

    def _shared_len(self, req: GenerationRequest, tokens: list[int]) -> int:
        if not req.shared_prefix or not tokens or not req.prompt.startswith(req.shared_prefix):
            return 0
        head = self._llama.tokenize(req.shared_prefix.encode("utf-8"), add_bos=True, special=False)
        # Only when the preamble tokenizes the same alone as inside the prompt (no merge across it).
        return len(head) if tokens[: len(head)] == head else 0

    def _eval_prompt(self, tokens: list[int], shared: int = 0) -> None:
        """Evaluate `tokens`, reusing cached whole batches of a common prefix.

        The prompt is always decoded in the same batches (`boundaries`): a reused batch was computed
        from exactly the same tokens in exactly the same batch shape as a fresh evaluation would
        compute it, so a prompt's logits do not depend on which prompt came before (llama.cpp's
        kernels differ by batch size, and free-form prefix reuse would make answers depend on item
        order). A shared preamble ends a batch, so the next question reuses all of it.
        """
        llama = self._llama
        cached = llama.input_ids[: llama.n_tokens].tolist()
        prefix = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            prefix += 1
        # Keep whole batches only, and always decode the last one for fresh last-position logits.
        starts = self.boundaries(tokens, shared)
        keep = max(b for b in starts if b <= min(prefix, len(tokens) - 1))
        if keep > 0 and llama._ctx.kv_cache_seq_rm(-1, keep, -1):
            llama.n_tokens = keep
        else:
            llama.reset()
            keep = 0
        ends = [*starts[1:], len(tokens)]
        for start, end in zip(starts, ends, strict=True):
            if start >= keep:
                llama.eval(tokens[start:end])
        self.prompt_tokens_reused += keep
        self.prompt_tokens_evaluated += len(tokens) - keep

    def _last_logits(self) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self._llama._ctx.ctx, -1)
        arr = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,))
        return arr.astype(np.float64, copy=True)

    def _one(self, req: GenerationRequest) -> Response:
        llama = self._llama
        tokens = self.tokenize(req)
        self._check_fits(tokens, req)
        rng = np.random.default_rng(req.seed)
        t0 = time.perf_counter()
        form = form_for(req, self.prompt_style)
        logits = self._prompt_logits(tokens, self._shared_len(form, tokens) if not form.messages else 0)
        t1 = time.perf_counter()
        out: list[int] = []
        logprobs: list[float] = []
        text, finish = "", "length"
        first_token_s = None
        for step in range(req.max_tokens):
            if step:
                logits = self._last_logits()
            token, logprob = _pick(logits, req.temperature, rng, want_logprob=req.logprobs)
            if self._is_end(token):
                finish = "stop"
                break
            out.append(token)
            if first_token_s is None:
                first_token_s = time.perf_counter() - t0
            if req.logprobs:
                logprobs.append(logprob)
            text = self._detokenize(out)
            hit = first_stop(text, req.stop)
            if hit is not None:
                text, finish = text[:hit], "stop"
                break
            if step + 1 < req.max_tokens:  # the last token's logits would never be read
                llama.eval([token])
        t2 = time.perf_counter()
        return Response(
            text=text,
            prompt_tokens=len(tokens),
            completion_tokens=len(out),
            timings=Timings(total_s=t2 - t0, prompt_eval_s=t1 - t0, generation_s=t2 - t1,
                            first_token_s=first_token_s),
            finish_reason=finish,
            token_logprobs=tuple(logprobs) if req.logprobs else None,
            served_by="device",
        )
