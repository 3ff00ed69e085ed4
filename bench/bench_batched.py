"""Batched multi-sequence decoding (profile `parallel`): throughput against raw llama-cpp-python, and agreement.

    .venv/bin/python bench/bench_batched.py [--agreement 854] [--concepts 6] [--questions 120] [--json FILE]

In one process, one side at a time (never two model jobs at once), on the packaged Gemma 3 270M Q4_K_M with
2 threads:

1. Agreement: greedy answers of the accuracy gate's requests (max_tokens 16) on --agreement embedded
   questions, single-stream vs batched (parallel 4 and 16) in one call, and batched in one call vs in rounds
   of 10 as the gate sends them: how many differ.
2. SelfCheck sampling: the hallucination gate's requests (per concept a greedy passage and N samples at
   temperature 1, 80 tokens) for --concepts concepts, N = 4 and 8, all in one call as the gate sends a round;
   generated tokens/s of raw llama-cpp-python single stream (`create_completion`, its own sampler over the
   whole vocabulary: top_k 0, top_p 1, min_p 0) and of the suite's adapter at parallel 1, 2, 4, 8, 16.
3. Accuracy: the gate's requests for --questions questions, in rounds of 10 as the gate sends them; seconds
   per question and generated tokens/s, raw single stream vs the adapter at parallel 1, 2, 4, 8, 16.

Ratios are against raw single stream measured in the same run (the host is shared: absolute rates swing).
Goals (issue 16): SelfCheck sampling >= 1.8x raw single stream, accuracy >= 1.5x.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench_common import emit, gemma_path, machine, questions

PARALLEL = (1, 2, 4, 8, 16)
AGREEMENT = (4, 16)  # parallel settings whose greedy answers are compared with single stream
THREADS, N_CTX = 2, 4096  # 4096 cells: 256 per sequence at parallel 16 (a SelfCheck request needs about 90)
GOAL_SELFCHECK, GOAL_ACCURACY = 1.8, 1.5


def _device(parallel: int):
    from edgeready.adapters.llama_cpp_device import LlamaCppDevice

    return LlamaCppDevice(gemma_path(), threads=THREADS, n_ctx=N_CTX, parallel=parallel)


def _timed(adapter, reqs) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = adapter.generate(reqs)
    return time.perf_counter() - t0, out


def agreement(n: int) -> dict[str, Any]:
    """Greedy answers on n embedded questions: batched in one call vs single stream, and batched in one call vs
    in the gate's rounds of 10 (the same, by construction: a request's answer depends on it and B alone)."""
    from edgeready.prompts import qa_request

    reqs = [qa_request(it, 16) for it in questions(n)]
    one = _device(1)
    single = [r.text for r in one.generate(reqs)]
    one.close()
    out: dict[str, Any] = {"questions": len(reqs)}
    for parallel in AGREEMENT:
        dev = _device(parallel)
        texts = [r.text for r in dev.generate(reqs)]
        rounds = [r.text for i in range(0, len(reqs), 10) for r in dev.generate(reqs[i:i + 10])]
        dev.close()
        differ = [i for i, (a, b) in enumerate(zip(single, texts, strict=True)) if a != b]
        out[f"parallel_{parallel}_differ"] = len(differ)
        out[f"parallel_{parallel}_rounds_of_10_differ"] = sum(a != b for a, b in zip(texts, rounds, strict=True))
        out[f"parallel_{parallel}_examples"] = [{"question": reqs[i].prompt.rsplit("Question:", 1)[-1].strip(),
                                                 "single": single[i], "batched": texts[i]} for i in differ[:5]]
        print(f"agreement: parallel {parallel}: {len(differ)} of {len(reqs)} greedy answers differ from single "
              f"stream; {out[f'parallel_{parallel}_rounds_of_10_differ']} between one call and rounds of 10",
              flush=True)
    return out


def _raw_rate(reqs) -> dict[str, float]:
    """Raw llama-cpp-python, one request after another, its own sampler over the whole vocabulary."""
    import llama_cpp

    llama = llama_cpp.Llama(model_path=str(gemma_path()), n_ctx=N_CTX, n_batch=64, n_ubatch=64, n_threads=THREADS,
                            n_threads_batch=THREADS, logits_all=False, verbose=False)
    t0, tokens = time.perf_counter(), 0
    for r in reqs:
        out = llama.create_completion(r.prompt, max_tokens=r.max_tokens, temperature=r.temperature, seed=r.seed,
                                      top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, stop=list(r.stop) or None)
        tokens += out["usage"]["completion_tokens"]
    wall = time.perf_counter() - t0
    llama.close()
    return {"tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 2)}


def _curve(rounds: list[list], raw: dict[str, float]) -> dict[str, Any]:
    rows = {}
    for parallel in PARALLEL:
        dev = _device(parallel)
        dev.generate(rounds[0][:1])  # untimed warm-up (first decode allocates buffers)
        wall, tokens = 0.0, 0
        for reqs in rounds:
            dt, out = _timed(dev, reqs)
            wall += dt
            tokens += sum(r.completion_tokens for r in out)
        dev.close()
        rate = tokens / wall
        rows[parallel] = {"tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(rate, 2),
                          "vs_raw": round(rate / raw["tokens_per_s"], 3)}
        print(f"  parallel {parallel:2d}: {tokens} tokens in {wall:.1f} s, {rate:.1f} tokens/s, "
              f"{rate / raw['tokens_per_s']:.2f}x raw", flush=True)
    return rows


def selfcheck(concepts: int, samples: int) -> dict[str, Any]:
    from edgeready.datasets.countries import embedded_concepts
    from edgeready.gates.hallucination import HallucinationConfig, request_for

    cfg = HallucinationConfig(concepts={"kind": "countries-kb"}, sample_size=max(2, concepts), samples=samples,
                              max_tokens=80, max_rate=0.6)
    names = embedded_concepts()[:concepts]
    reqs = [request_for(c, cfg, cfg.seed + i, 0.0 if i == 0 else 1.0) for c in names for i in range(samples + 1)]
    raw = _raw_rate(reqs)
    print(f"selfcheck N={samples}: raw llama-cpp-python {raw['tokens_per_s']} tokens/s", flush=True)
    rows = _curve([reqs], raw)
    best = max(rows, key=lambda p: rows[p]["tokens_per_s"])
    return {"samples": samples, "concepts": concepts, "raw": raw, "parallel": rows, "best_parallel": best,
            "best_vs_raw": rows[best]["vs_raw"]}


def accuracy(n: int) -> dict[str, Any]:
    from edgeready.prompts import qa_request

    reqs = [qa_request(it, 16) for it in questions(n)]
    raw = _raw_rate(reqs)
    print(f"accuracy: raw llama-cpp-python {raw['tokens_per_s']} tokens/s, {raw['wall_s'] / n:.3f} s/question",
          flush=True)
    rows = _curve([reqs[i:i + 10] for i in range(0, n, 10)], raw)
    for row in rows.values():
        row["s_per_question"] = round(row["wall_s"] / n, 4)
        row["questions_vs_raw"] = round(raw["wall_s"] / row["wall_s"], 3)
    best = max(rows, key=lambda p: rows[p]["questions_vs_raw"])
    return {"questions": n, "raw": raw, "parallel": rows, "best_parallel": best,
            "best_vs_raw": rows[best]["questions_vs_raw"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agreement", type=int, default=854, help="questions for the agreement check (0: skip)")
    ap.add_argument("--concepts", type=int, default=6)
    ap.add_argument("--questions", type=int, default=120)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "batched", "machine": machine(), "threads": THREADS, "n_ctx": N_CTX}
    result["selfcheck"] = [selfcheck(args.concepts, n) for n in (4, 8)]
    result["accuracy"] = accuracy(args.questions)
    if args.agreement:
        result["agreement"] = agreement(args.agreement)
    result["goals"] = {"selfcheck": GOAL_SELFCHECK, "accuracy": GOAL_ACCURACY,
                       "selfcheck_met": all(s["best_vs_raw"] >= GOAL_SELFCHECK for s in result["selfcheck"]),
                       "accuracy_met": result["accuracy"]["best_vs_raw"] >= GOAL_ACCURACY}
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
