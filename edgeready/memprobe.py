"""Peak resident memory of loading a model and answering prompts, measured in a fresh process.

Run as `python -m edgeready.memprobe --model M.gguf --threads T --n-ctx N --prompts P.json`; prints
one JSON object. A fresh process is the only honest way: the parent already holds other models,
datasets and pytest, and resident memory is never returned to the OS reliably.

The peak is the kernel's high-water mark of the process's address space (VmHWM in
/proc/self/status), so a spike between two samples cannot be missed. Not getrusage's ru_maxrss:
Linux carries that across exec, so a child spawned from a pytest process holding a model would
inherit the parent's peak (seen here: 849 MB reported for a 400 MB process). It includes the
Python interpreter and llama.cpp's code; the baseline
(before the model is loaded) is reported too, so the model's share is visible. Model weights are
memory-mapped: the pages touched while answering count as resident, as they do on a phone.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import psutil

MB = 1024 * 1024


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _peak() -> int:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    # Elsewhere (macOS) ru_maxrss is the best there is; it is in bytes there.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


METER = "VmHWM (kernel high-water mark of resident memory) of a fresh process"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, help="a GGUF file, or a checkpoint folder (format: hf); omit for a device "
                    "that holds no model (server-only offload)")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--n-ctx", type=int, required=True)
    ap.add_argument("--n-batch", type=int, required=True)
    ap.add_argument("--parallel", type=int, default=1, help="sequences decoded together (profile.parallel)")
    ap.add_argument("--prompt-style", choices=("few-shot", "chat"), default="few-shot")
    ap.add_argument("--prompts", type=Path, required=True, help="JSON list of GenerationRequest dicts")
    args = ap.parse_args(argv)

    from edgeready.adapters.llama_cpp_device import LlamaCppDevice
    from edgeready.records import GenerationRequest

    requests = [
        GenerationRequest(**{**r, "stop": tuple(r["stop"]), "messages": tuple(map(tuple, r["messages"]))})
        for r in json.loads(args.prompts.read_text())
    ]
    baseline_rss, baseline_peak = _rss(), _peak()
    t0 = time.perf_counter()
    if args.model is None:
        requests, responses = [], []
        after_load_rss = after_answer_rss = _rss()
    else:
        if args.model.is_dir():  # a Hugging Face checkpoint (format: hf), run by transformers
            from edgeready.adapters.transformers_device import TransformersDevice

            device = TransformersDevice(args.model, threads=args.threads, n_ctx=args.n_ctx,
                                        prompt_style=args.prompt_style)
        else:
            device = LlamaCppDevice(args.model, threads=args.threads, n_ctx=args.n_ctx, n_batch=args.n_batch,
                                    prompt_style=args.prompt_style, parallel=args.parallel)
        after_load_rss = _rss()
        responses = device.generate(requests)
        after_answer_rss = _rss()
        device.close()
    wall = time.perf_counter() - t0
    json.dump(
        {
            "baseline_rss_bytes": baseline_rss,
            "baseline_peak_bytes": baseline_peak,
            "after_load_rss_bytes": after_load_rss,
            "after_answers_rss_bytes": after_answer_rss,
            # VmHWM is refreshed lazily by the kernel; never report less than a reading taken directly.
            "peak_rss_bytes": max(_peak(), after_load_rss, after_answer_rss),
            "prompts": len(requests),
            "completion_tokens": sum(r.completion_tokens for r in responses),
            "wall_s": wall,
            "meter": METER if Path("/proc/self/status").is_file() else "ru_maxrss of a fresh process",
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
