"""Several sequences decoded together in one llama.cpp context (the device adapter's `parallel` setting).

On a CPU, decoding one token is bound by reading the weights; a batch of B tokens from B sequences reads them
once, so generated tokens per second rise with B until compute binds. The decoder:

- owns one llama.cpp context with `parallel` slots, each its own stream of n_ctx / parallel KV cells (as
  llama-server splits its context over its slots), so a sequence attends over exactly the cells it would
  have alone;
- evaluates each prompt alone, in exactly the batches the single-stream path uses (the preamble's, then the
  rest in `chunk`s from its end), so prompt logits are computed from the same batch shapes; a few-shot
  preamble or a whole prompt (SelfCheck's N samples) already in a running slot is copied from it
  (`llama_memory_seq_cp`), not evaluated again;
- then decodes one token of every running sequence per llama.cpp call, each sequence with its own sampler
  state (a NumPy generator seeded per request, as the single-stream path seeds it) and its own stops; a
  finished sequence frees its slot and its cells, and the next request starts there (continuous batching).

A decode llama.cpp refuses (no free KV cells) is a MeasurementError, never a shorter answer; a request that
cannot fit one slot's share of the context is a ConfigError naming the largest `parallel` that fits.

Fixed rows: llama.cpp's CPU kernels choose by the number of rows in a product (from 4 rows, a blocked
product over groups of 4, which rounds differently from the one-row product; a remainder of 1-3 rows goes
the one-row way). Were a step to decode only the running sequences, a request's tokens would depend on how
many others happened to share its steps (the call's other requests, a round's size, which answers the
store already had): measured, 28 of 30 sampled SelfCheck texts changed between one call and one call per
concept, since a draw from the full vocabulary's long tail turns on the last bits of its probability.
So every generation step decodes the same `rows` rows (`parallel` rounded up to a multiple of 4), one per
slot, a free slot's row a dummy token whose cell is dropped after: each row is then computed by the same
kernel whatever its companions, and a request's answer depends on the request and `parallel` alone. It is
still not single stream's (one row): a near-tie can resolve differently, so the store keys batched answers
by `parallel`, and docs/PERFORMANCE.md counts the differences. The dummies cost compute when few sequences
run (the tail of a call, short answers), not memory reads.
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import llama_cpp
import numpy as np
from llama_cpp import _internals as internals
from llama_cpp._utils import suppress_stdout_stderr

from edgeready.errors import ConfigError, MeasurementError
from edgeready.records import GenerationRequest, Response, Timings

ROW_BLOCK = 4  # llama.cpp's blocked CPU products take rows in groups of 4 ("Fixed rows" above)
# (logits, temperature, generator, want the log-probability) -> (token, its log-probability or 0)
Pick = Callable[[np.ndarray, float, np.random.Generator, bool], tuple[int, float]]


@dataclass
class Job:
    """One request as the decoder runs it: its prompt tokens (and the length of its shared preamble)."""

    index: int
    request: GenerationRequest
    tokens: list[int]
    shared: int
    slot: int = -1
    pos: int = 0
    logits: np.ndarray | None = None  # after the last token decoded
    prompt_logits: np.ndarray | None = None  # after the prompt (shared with a job of the same prompt)
    rng: np.random.Generator | None = None
    out: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish: str = "length"
    start: float = 0.0
    prompt_s: float = 0.0
    first_token_s: float | None = None


class BatchDecoder:
    """Runs requests `parallel` at a time in its own llama.cpp context (see the module docstring)."""

    def __init__(self, llama: llama_cpp.Llama, *, parallel: int, n_ctx: int, chunk: int, threads: int,
                 is_end: Callable[[int], bool], detokenize: Callable[[list[int]], str], pick: Pick,
                 boundaries: Callable[[list[int], int], list[int]]):
        if n_ctx // parallel < 1:
            raise ConfigError(f"profile.parallel {parallel} exceeds n_ctx {n_ctx}: each sequence needs KV cells")
        self.parallel = parallel
        self.n_ctx = n_ctx
        self.per_sequence = n_ctx // parallel  # llama-server's split: each slot gets n_ctx / parallel cells
        # Every generation step decodes exactly `rows` rows, one per slot, the free ones a dummy token: see
        # "Fixed rows" in the module docstring. Slots from `parallel` on only ever hold dummies.
        self.rows = max(ROW_BLOCK, -(-parallel // ROW_BLOCK) * ROW_BLOCK)
        self.chunk = chunk
        self._is_end, self._detokenize, self._pick = is_end, detokenize, pick
        self._boundaries = boundaries  # the single-stream path's prompt batches (LlamaCppDevice.boundaries)
        self._n_vocab = llama.n_vocab()
        params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)
        params.n_ctx = self.per_sequence * self.rows
        params.n_seq_max = self.rows
        # One stream of cells per sequence, not one pool: attention then runs over the same cells, in the same
        # order, as for a sequence decoded alone. (The matrix products still see as many rows as sequences
        # decode in a step, and llama.cpp picks its kernel by that count: see the module docstring.)
        params.kv_unified = False
        params.n_batch = params.n_ubatch = max(chunk, self.rows)
        with suppress_stdout_stderr(disable=False):  # llama.cpp logs its cache layout on stderr
            self._ctx = internals.LlamaContext(model=llama._model, params=params, verbose=False)
        try:
            self._batch = internals.LlamaBatch(n_tokens=max(chunk, self.rows), embd=0, n_seq_max=1, verbose=False)
        except BaseException:
            self._ctx.close()
            raise
        self.prompt_tokens_evaluated = 0
        self.prompt_tokens_reused = 0
        self.widest = 0  # the most sequences one generation decode has carried (is the batching real?)
        # The tokens whose cells each slot holds from position 0 (a running job's prompt; after it finished,
        # its preamble only).
        self._held: dict[int, list[int]] = {}
        self._dummy = llama.token_bos()  # what a free slot's row decodes (any token would do)
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, threads)), thread_name_prefix="sampler")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._batch.close()
        self._ctx.close()

    # -- planning -----------------------------------------------------------------------------------
    def check_fits(self, jobs: Sequence[Job]) -> None:
        """Raise ConfigError when a request does not fit one slot's share of the context."""
        need = max((len(j.tokens) + j.request.max_tokens for j in jobs), default=0)
        if need > self.per_sequence:
            raise ConfigError(f"profile.parallel {self.parallel}: a request needs {need} KV cells (prompt + "
                              f"max_tokens) but each of the {self.parallel} slots has n_ctx / parallel = "
                              f"{self.per_sequence}; the largest parallel that fits is {max(self.n_ctx // need, 1)}"
                              " (or raise n_ctx)")

    # -- running ------------------------------------------------------------------------------------
    def run(self, jobs: list[Job]) -> list[Response]:
        self.check_fits(jobs)
        pending, running = deque(jobs), {}
        done: dict[int, Response] = {}
        try:
            while pending or running:
                for slot in range(self.parallel):
                    if slot not in running and pending:
                        job = pending.popleft()
                        self._admit(job, slot, running)
                        running[slot] = job
                self._step(running, done)
        except BaseException:
            self._ctx.kv_cache_seq_rm(-1, 0, -1)  # a slot's cells may be half-written: start the next call empty
            self._held = {}
            raise
        return [done[j.index] for j in jobs]

    def _admit(self, job: Job, slot: int, running: dict[int, Job]) -> None:
        """Put the job's prompt in `slot`. Cells already computed are reused: a running job's with the same
        prompt (SelfCheck's samples), or a few-shot preamble that this or another slot holds (a finished job
        leaves its preamble in its slot, also across calls). The rest is evaluated in the single-stream path's
        batches (the preamble's chunks, then chunks from its end), so the same batch shapes compute it."""
        job.slot, job.start = slot, time.perf_counter()
        job.rng = np.random.default_rng(job.request.seed)
        tokens, shared = job.tokens, job.shared
        twin = next((j for j in running.values() if j.tokens == tokens and j.prompt_logits is not None), None)
        if twin is not None:
            self._copy(twin.slot, slot, len(tokens))
            job.prompt_logits = twin.prompt_logits
            self.prompt_tokens_reused += len(tokens)
        else:
            start = self._preamble_into(slot, tokens[:shared]) if 0 < shared < len(tokens) else 0
            if start == 0:
                self._ctx.kv_cache_seq_rm(slot, 0, -1)
            starts = [b for b in self._boundaries(tokens, shared) if b >= start]
            ends = [*starts[1:], len(tokens)]
            for a, b in zip(starts, ends, strict=True):
                job.prompt_logits = self._decode_prompt(tokens[a:b], a, slot)
        self._held[slot] = tokens
        assert job.prompt_logits is not None
        job.logits = job.prompt_logits.copy()
        job.pos = len(tokens)
        job.prompt_s = time.perf_counter() - job.start

    def _preamble_into(self, slot: int, head: list[int]) -> int:
        """Make `slot` hold the preamble `head` from cells already computed; its length, or 0 when none has it."""
        if self._held.get(slot) != head:
            holder = next((s for s, held in self._held.items() if s != slot and held[:len(head)] == head), None)
            if holder is None:
                return 0
            self._copy(holder, slot, len(head))
        self.prompt_tokens_reused += len(head)
        return len(head)

    def _copy(self, src: int, dst: int, keep: int) -> None:
        """Slot `dst` gets the cells of positions [0, keep) of slot `src`. Across streams llama.cpp copies only
        whole sequences (a partial range aborts the process), so copy all of it and drop what follows."""
        self._ctx.kv_cache_seq_cp(src, dst, 0, -1)
        self._ctx.kv_cache_seq_rm(dst, keep, -1)

    def _decode_prompt(self, part: list[int], pos: int, seq: int) -> np.ndarray:
        b = self._batch.batch
        for i, tok in enumerate(part):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0], b.logits[i] = tok, pos + i, 1, seq, False
        b.logits[len(part) - 1] = True
        b.n_tokens = len(part)
        self._decode(f"a prompt of {len(part)} tokens at position {pos}")
        self.prompt_tokens_evaluated += len(part)
        return self._logits(len(part) - 1)

    def _step(self, running: dict[int, Job], done: dict[int, Response]) -> None:
        """One token for every running job: pick it, finish the job or queue the token for the next decode."""
        queued: list[Job] = []
        jobs = list(running.values())
        picks = self._picks(jobs)
        for job, (token, logprob) in zip(jobs, picks, strict=True):
            slot = job.slot
            if self._advance(job, token, logprob):
                queued.append(job)
            else:
                done[job.index] = self._response(job)
                job.logits = job.prompt_logits = None  # n_vocab floats each: do not hold them for the whole call
                # The slot keeps the job's preamble (a few-shot head other questions share), nothing after it.
                self._ctx.kv_cache_seq_rm(slot, job.shared, -1)
                self._held[slot] = job.tokens[:job.shared]
                del running[slot]
        if not queued:
            return
        b = self._batch.batch
        by_slot = {job.slot: job for job in queued}
        dummies: list[tuple[int, int]] = []
        # Row i is slot i's: a running job's last token, or a dummy token after what the slot holds (its
        # cell is removed after the decode). Every row asks for logits, so the output product has as many
        # rows as the others.
        for i in range(self.rows):
            job = by_slot.get(i)
            if job is not None:
                token, pos = job.out[-1], job.pos
            else:
                token, pos = self._dummy, len(self._held.get(i, ()))
                dummies.append((i, pos))
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0], b.logits[i] = token, pos, 1, i, True
        b.n_tokens = self.rows
        self.widest = max(self.widest, len(queued))
        self._decode(f"{len(queued)} sequences (and {len(dummies)} dummy rows)")
        for slot, pos in dummies:
            self._ctx.kv_cache_seq_rm(slot, pos, -1)
        for job in queued:
            job.logits = self._logits(job.slot)
            job.pos += 1

    def _picks(self, jobs: list[Job]) -> list[tuple[int, float]]:
        """Each job's next token from its own generator. A sampled pick is a softmax over the whole vocabulary
        (262k for Gemma: milliseconds of NumPy, which releases the GIL), so several run on the pool's threads
        while llama.cpp is idle; each job draws only from its own generator, so the order does not matter."""
        def one(job: Job) -> tuple[int, float]:
            assert job.logits is not None and job.rng is not None
            return self._pick(job.logits, job.request.temperature, job.rng, job.request.logprobs)
        if sum(j.request.temperature > 0 for j in jobs) < 2:
            return [one(j) for j in jobs]
        return list(self._pool.map(one, jobs))

    def _advance(self, job: Job, token: int, logprob: float) -> bool:
        """Take the job's next token; False when the job is finished (end token, stop string, max_tokens)."""
        req = job.request
        if self._is_end(token):
            job.finish = "stop"
            return False
        job.out.append(token)
        if job.first_token_s is None:
            job.first_token_s = time.perf_counter() - job.start
        if req.logprobs:
            job.logprobs.append(logprob)
        job.text = self._detokenize(job.out)
        hit = first_stop(job.text, req.stop)
        if hit is not None:
            job.text, job.finish = job.text[:hit], "stop"
            return False
        return len(job.out) < req.max_tokens

    def _response(self, job: Job) -> Response:
        end = time.perf_counter()
        return Response(
            text=job.text, prompt_tokens=len(job.tokens), completion_tokens=len(job.out),
            timings=Timings(total_s=end - job.start, prompt_eval_s=job.prompt_s,
                            generation_s=end - job.start - job.prompt_s, first_token_s=job.first_token_s),
            finish_reason=job.finish, token_logprobs=tuple(job.logprobs) if job.request.logprobs else None,
            served_by="device")

    def _decode(self, what: str) -> None:
        rc = llama_cpp.llama_decode(self._ctx.ctx, self._batch.batch)
        if rc != 0:
            raise MeasurementError(f"llama.cpp refused a batched decode of {what} (llama_decode returned {rc}: "
                                   f"{'no free KV cells' if rc == 1 else 'error'}) with parallel {self.parallel} "
                                   f"and n_ctx {self.n_ctx}; no answer was shortened")

    def _logits(self, i: int) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, i)
        arr = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,))
        return arr.astype(np.float64, copy=True)


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the first stop string starts in `text`, or None."""
    hits = [i for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None
