"""Suite overhead: the suite's device adapter vs raw llama-cpp-python on the same prompts.

    .venv/bin/python bench/bench_overhead.py [--n 60] [--repeats 3] [--block 10] [--json FILE]

Both sides load the same GGUF in this one process with the same llama.cpp settings (n_ctx 2048,
n_batch = n_ubatch = 64, logits_all=False, ONE thread each) and answer the same few-shot prompts
(edgeready.prompts.qa_request) greedily, 16 tokens at most, stopping at the newline:

- suite: `LlamaCppDevice.generate(requests)` (adapters/llama_cpp_device.py);
- raw:   `Llama.create_completion(prompt, max_tokens=16, temperature=0, stop=["\\n"])`.

Why one thread: the host has 2 cores shared with other jobs; two threads per side would fight those
jobs for both cores and add scheduling noise larger than the difference being measured.

Drift (other jobs starting and stopping, CPU frequency) is cancelled by interleaving: the questions are
cut into blocks, and each block is answered by both sides back to back, the side that goes first
alternating (ABBA...; the order rotates when the diagnostic side below is added). The ratio suite/raw
is taken per block pair and the median reported, with the total-time ratio beside it. Model loads are
timed apart and excluded (the question is the per-question overhead of the suite's decoding loop).
Texts and generated-token counts of both sides are compared.

Where the time goes is measured, not guessed: llama.cpp's own perf counters give each side's decode
time (the rest is Python: tokenizing, sampling, stop checks), and the prompt tokens each side actually
re-evaluates are counted. `--extra-chunk 16` adds the suite's adapter with a 16-token prompt chunk as a
diagnostic side (the adapter reuses a cached prefix in whole chunks only, so the chunk bounds how much
of the shared few-shot preamble is evaluated again for every question).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
from bench_common import Stopwatch, emit, gemma_path, machine, median, questions

from edgeready.adapters.llama_cpp_device import LlamaCppDevice
from edgeready.prompts import qa_request
from edgeready.records import GenerationRequest

GOAL = 1.05
N_CTX = 2048
N_BATCH = 64
MAX_TOKENS = 16


def decode_s(llama: Any) -> float:
    """Seconds llama.cpp has spent decoding (prompt batches + single tokens) in this context, from its own
    perf counters: wall time minus this is the Python around the model (tokenizing, sampling, stops)."""
    import llama_cpp

    perf = llama_cpp.llama_perf_context(llama._ctx.ctx)
    return (perf.t_p_eval_ms + perf.t_eval_ms) / 1000.0


class RawSide:
    """Plain llama-cpp-python as its README shows it, plus bookkeeping of reused prompt tokens."""

    def __init__(self, model_path: str, threads: int):
        import llama_cpp

        with Stopwatch() as sw:
            self.llama = llama_cpp.Llama(
                model_path=model_path, n_ctx=N_CTX, n_batch=N_BATCH, n_ubatch=N_BATCH, n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False,
            )
        self.load_s = sw.s
        self.prompt_tokens_evaluated = 0

    def answer(self, req: GenerationRequest) -> tuple[str, int]:
        llama = self.llama
        tokens = llama.tokenize(req.prompt.encode("utf-8"), add_bos=True, special=True)
        # What Llama.generate() will re-evaluate: it keeps the longest common prefix with the KV cache
        # (one token less when the whole prompt matches). Counted here to explain the timings.
        cached = llama._input_ids[: llama.n_tokens]
        common = 0
        for a, b in zip(cached.tolist(), tokens, strict=False):
            if a != b:
                break
            common += 1
        reuse = common - 1 if common == len(tokens) else common
        self.prompt_tokens_evaluated += len(tokens) - max(reuse, 0)
        out: Any = llama.create_completion(req.prompt, max_tokens=req.max_tokens, temperature=0,
                                           stop=list(req.stop))
        return out["choices"][0]["text"], int(out["usage"]["completion_tokens"])

    def answer_block(self, block: list[GenerationRequest]) -> list[tuple[str, int]]:
        return [self.answer(r) for r in block]

    def close(self) -> None:
        self.llama.close()


class SuiteSide:
    """The suite's device adapter, as the accuracy gate drives it (one generate() call per batch)."""

    def __init__(self, model_path: Any, threads: int, chunk: int):
        with Stopwatch() as sw:
            self.device = LlamaCppDevice(model_path, threads=threads, n_ctx=N_CTX, n_batch=chunk,
                                         prompt_style="few-shot")
        self.load_s = sw.s
        self.llama = self.device._llama

    @property
    def prompt_tokens_evaluated(self) -> int:
        return self.device.prompt_tokens_evaluated

    def answer_block(self, block: list[GenerationRequest]) -> list[tuple[str, int]]:
        return [(r.text, r.completion_tokens) for r in self.device.generate(block)]

    def close(self) -> None:
        self.device.close()


def run(n: int, repeats: int, block: int, threads: int, extra_chunks: list[int]) -> dict[str, Any]:
    path = gemma_path()
    items = questions(n, 0)
    requests = [qa_request(it, MAX_TOKENS) for it in items]
    blocks = [requests[i : i + block] for i in range(0, len(requests), block)]

    raw = RawSide(str(path), threads)
    sides: dict[str, Any] = {"suite": SuiteSide(path, threads, N_BATCH), "raw": raw}
    # How many tokens all prompts share (instruction + few-shot examples + "Question:"), and how many of
    # them the suite's chunk-aligned reuse keeps.
    toks = [raw.llama.tokenize(r.prompt.encode("utf-8"), add_bos=True, special=True) for r in requests]
    shared = min(next((i for i, (a, b) in enumerate(zip(toks[0], t, strict=False)) if a != b), len(t))
                 for t in toks[1:]) if len(toks) > 1 else len(toks[0])
    # Diagnostic only (off by default): the suite's adapter with a smaller prompt chunk, which bounds how
    # much of a shared few-shot preamble is re-evaluated per question (its answers may differ: kernels
    # differ by batch shape, which is why n_batch is part of the generation-cache key).
    for chunk in extra_chunks:
        sides[f"suite_chunk{chunk}"] = SuiteSide(path, threads, chunk)
    names = list(sides)
    texts: dict[str, list[list[str]]] = {k: [[] for _ in range(repeats)] for k in names}
    tokens: dict[str, list[int]] = {k: [0] * repeats for k in names}
    times: dict[str, list[float]] = {k: [] for k in names}
    decode = dict.fromkeys(names, 0.0)
    turn = 0
    for rep in range(repeats):
        for blk in blocks:
            # Rotate who goes first (ABBA for two sides), so drift within a block pair cancels.
            order = names[turn % len(names):] + names[: turn % len(names)]
            if len(names) == 2 and turn % 2:
                order = names[::-1]
            turn += 1
            for name in order:
                side = sides[name]
                d0 = decode_s(side.llama)
                with Stopwatch() as sw:
                    answers = side.answer_block(blk)
                times[name].append(sw.s)
                decode[name] += decode_s(side.llama) - d0
                texts[name][rep] += [t for t, _ in answers]
                tokens[name][rep] += sum(k for _, k in answers)
    prompt_eval = {k: sides[k].prompt_tokens_evaluated for k in names}
    loads = {k: round(sides[k].load_s, 3) for k in names}
    for side in sides.values():
        side.close()

    per_q = len(items) * repeats
    ratios = [s / r for s, r in zip(times["suite"], times["raw"], strict=True)]
    mismatches = [
        {"question": items[i].question, "suite": texts["suite"][0][i], "raw": texts["raw"][0][i]}
        for i in range(len(items)) if texts["suite"][0][i].strip() != texts["raw"][0][i].strip()
    ]
    res: dict[str, Any] = {
        "benchmark": "overhead",
        "what": "suite device adapter vs raw llama-cpp-python, same prompts, greedy, 1 thread each",
        "n_questions": len(items),
        "repeats": repeats,
        "block": block,
        "threads": threads,
        "block_pairs": len(ratios),
        "median_ratio": round(median(ratios), 4),
        "ratio_iqr": [round(float(np.percentile(ratios, 25)), 4), round(float(np.percentile(ratios, 75)), 4)],
        "total_ratio": round(sum(times["suite"]) / sum(times["raw"]), 4),
        "s_per_question": {k: round(sum(times[k]) / per_q, 4) for k in names},
        "load_s_excluded": loads,
        "generated_tokens_per_pass": {k: tokens[k][0] for k in names},
        "prompt_tokens_evaluated_total": prompt_eval,
        "mean_prompt_tokens": round(sum(map(len, toks)) / len(toks), 1),
        "shared_prefix_tokens": shared,
        "shared_prefix_kept_by_suite_chunks": shared // N_BATCH * N_BATCH,
        # Where the difference comes from: llama.cpp decode time vs the Python around it, per question.
        "decode_s_per_question": {k: round(decode[k] / per_q, 4) for k in names},
        "outside_decode_s_per_question": {k: round((sum(times[k]) - decode[k]) / per_q, 4) for k in names},
        "text_mismatches": len(mismatches),
        "mismatch_examples": mismatches[:5],
        # Each side must also repeat itself across passes (the suite's chunk-aligned reuse is meant to make
        # answers independent of which question came before; raw llama-cpp-python reuses any common prefix).
        "passes_differing_from_first": {k: sum(texts[k][r] != texts[k][0] for r in range(repeats)) for k in names},
        "goal": f"suite/raw <= {GOAL}",
        "goal_met": median(ratios) <= GOAL,
    }
    for k in names[2:]:
        extra = [s / r for s, r in zip(times[k], times["raw"], strict=True)]
        res[f"{k}_median_ratio_diagnostic"] = round(median(extra), 4)
        res[f"{k}_text_mismatches_vs_raw"] = sum(
            a.strip() != b.strip() for a, b in zip(texts[k][0], texts["raw"][0], strict=True))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="questions (stratified sample, seed 0)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the questions")
    ap.add_argument("--block", type=int, default=10, help="questions per timed block")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra-chunk", type=int, action="append", default=[],
                    help="diagnostic: also time the suite adapter with this prompt chunk (repeatable)")
    ap.add_argument("--json", default=None, help="also write the result object here")
    args = ap.parse_args(argv)

    info = machine()
    print(f"# overhead: {args.n} questions x {args.repeats} passes, blocks of {args.block}, interleaved "
          f"(ABBA; rotating with a diagnostic side); "
          f"threads={args.threads} per side (2 shared cores: more threads would add oversubscription noise)")
    res = run(args.n, args.repeats, args.block, args.threads, args.extra_chunk)
    res["machine"] = info
    res["loadavg_end"] = machine()["loadavg_1_5_15"]
    print(f"s/question {res['s_per_question']} (model loads excluded: {res['load_s_excluded']})")
    print(f"median ratio suite/raw over {res['block_pairs']} block pairs: {res['median_ratio']:.3f} "
          f"(IQR {res['ratio_iqr'][0]:.3f}-{res['ratio_iqr'][1]:.3f}); total-time ratio {res['total_ratio']:.3f}; "
          f"goal <= {GOAL}: {'met' if res['goal_met'] else 'NOT met'}")
    print(f"generated tokens per pass: {res['generated_tokens_per_pass']}; prompt tokens evaluated (all passes): "
          f"{res['prompt_tokens_evaluated_total']}")
    print(f"prompts: {res['mean_prompt_tokens']} tokens on average, {res['shared_prefix_tokens']} shared by all; "
          f"the suite reuses {res['shared_prefix_kept_by_suite_chunks']} of them (whole {N_BATCH}-token chunks)")
    print(f"llama.cpp decode s/question {res['decode_s_per_question']}; outside decode (Python: tokenize, "
          f"sampling, stops) s/question {res['outside_decode_s_per_question']}")
    print(f"text mismatches suite vs raw: {res['text_mismatches']} of {res['n_questions']}; "
          f"passes differing from the first: {res['passes_differing_from_first']}")
    for key in (k for k in res if k.endswith("_median_ratio_diagnostic")):
        side = key.removesuffix("_median_ratio_diagnostic")
        print(f"diagnostic {side}: median ratio vs raw {res[key]:.3f}, "
              f"text mismatches vs raw {res[side + '_text_mismatches_vs_raw']}")
    for m in res["mismatch_examples"]:
        print(f"  {m['question']!r}: suite {m['suite']!r} / raw {m['raw']!r}")
    emit(res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
