"""KL divergence of a candidate's next-token distributions from its base's, on a fixed text.

The measurement follows llama.cpp's `llama-perplexity --kl-divergence`:
- the text is tokenized once (with the base's tokenizer) and cut into windows of `n_ctx` tokens,
  the first token of each window replaced by BOS when the model adds one;
- each window is decoded from an empty KV cache, and only positions `n_ctx // 2 .. n_ctx - 2` are
  scored (so every scored token has at least half a window of context), each predicting the next;
- per scored token: KLD(base || candidate) over the whole vocabulary, whether both models' top
  token agree ("same top p"), and each model's negative log-likelihood of the actual next token.
Reported: mean KLD with its standard error, median, 90/95/99th percentiles and maximum, same-top
agreement % with its standard error, both perplexities and mean ln(PPL(cand)/PPL(base)).

The two models never share memory: the base runs first and its distributions are stored; then the
candidate runs alone. The base's log-probabilities are stored as llama.cpp stores them (it keeps the
whole vocabulary, not only the top tokens): per token, 16-bit codes spanning the 16 nats below the
top log-prob (step 16/65535 = 2.4e-4 nats), plus the row's scale and offset; tokens more than 16
nats below the top (p < 1.1e-7 relative to it) are not stored and, as in llama.cpp, only base
log-probs above -16 enter the sum. Approximation error: rounding moves each stored log-prob by at
most 1.2e-4 nats (zero-mean), and the terms left out below -16 bias the sum slightly low. Measured
against an exact float64 KLD over 510 tokens of the shipped text (n_ctx 512): base vs itself, mean
-6e-7 and at most 5e-5 per token; Q8_0, -7e-6 (-0.1% of its mean 0.0065), at most 4e-4 per token;
Q2_K, -1.6e-4 (-0.04% of 0.44), at most 1.4e-3 per token. So differences below ~1e-4 nats between
candidates are not resolved; the smallest step in the ladder (Q8_0 to Q6_K, 0.003) is 30x that.
Both models' top tokens and NLLs come from their exact float logits.

Storage: 2 bytes x vocabulary per scored token (512 KiB for Gemma's 262k vocabulary; ~520 MiB for
the shipped text at n_ctx 512), in a memory-mapped file: in `cache_dir` when given (reused across
candidates and runs), else in a temporary directory removed afterwards.

Logits are requested only for scored positions and read `chunk` tokens at a time, so llama.cpp's
output buffer stays at `chunk` x vocabulary floats (64 MiB for Gemma) instead of the n_ctx x vocab
that `logits_all=True` would allocate. Base and candidate decode in the same batch shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

# llama.cpp's CPU backend synchronizes its threads through OpenMP, whose default is to spin while
# waiting. On a 2-core machine shared with another model run, a spinning thread holds the core its
# partner needs: measured here, decoding with threads=2 took 23 s instead of 2.9 s. Passive waiting
# removes that. libgomp reads this once, when llama.cpp's library loads, so it only takes effect when
# this module is imported before llama_cpp (as `python -m edgeready.kld` does); setdefault keeps a
# caller's own choice. OMP_PASSIVE says whether this process's llama.cpp threads wait passively (so
# threads=2 is safe on a shared machine): set before llama_cpp loaded here, or inherited at start.
_OMP_INHERITED = os.environ.get("OMP_WAIT_POLICY", "")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
OMP_PASSIVE = (_OMP_INHERITED if "llama_cpp" in sys.modules else os.environ["OMP_WAIT_POLICY"]).lower() == "passive"

DATA_DIR = Path(__file__).resolve().parent / "data"
KLD_TEXT = DATA_DIR / "kld_text.txt"
LOGP_FLOOR = -16.0  # llama.cpp: base log-probs at or below this are left out of the KLD sum
_CODES = 65535.0
_ROWS = 16  # rows of vocabulary-wide arrays processed at once: bounds numpy temporaries to ~16 MiB each


def default_text() -> str:
    """The shipped evaluation text: chapters 1-2 of Jane Austen's *Pride and Prejudice* (1813, public
    domain; transcribed for this project, so it may differ from the Project Gutenberg edition in
    small details). About 1,650 words, 2,125 Gemma 3 tokens."""
    return KLD_TEXT.read_text(encoding="utf-8")


@dataclass(frozen=True)
class BaseReference:
    """The base model's stored next-token distributions for every scored position."""

    base_path: Path
    n_ctx: int
    chunk: int
    windows: np.ndarray  # (n_windows, n_ctx) int32: the tokens each window decodes
    targets: np.ndarray  # (n_scored,) int32: the actual next token
    codes: np.ndarray  # (n_scored, n_vocab) uint16, memory-mapped
    scale: np.ndarray  # (n_scored,) float32
    offset: np.ndarray  # (n_scored,) float32: log-prob of code 0
    nll: np.ndarray  # (n_scored,) float64: exact base NLL of the target
    top: np.ndarray  # (n_scored,) int32: exact base argmax

    @property
    def first(self) -> int:
        return self.n_ctx // 2

    @property
    def n_vocab(self) -> int:
        return int(self.codes.shape[1])

    @property
    def n_scored(self) -> int:
        return int(self.targets.shape[0])

    def log_probs(self, rows: slice) -> np.ndarray:
        return self.codes[rows].astype(np.float32) * self.scale[rows, None] + self.offset[rows, None]


@dataclass(frozen=True)
class KLDResult:
    base: str
    candidate: str
    n_tokens: int
    n_ctx: int
    kld_mean: float
    kld_stderr: float
    kld_median: float
    kld_p90: float
    kld_p95: float
    kld_p99: float
    kld_max: float
    same_top_pct: float
    same_top_stderr: float
    ppl_base: float
    ppl_candidate: float
    ln_ppl_ratio: float
    ln_ppl_ratio_stderr: float
    seconds: float
    per_token: np.ndarray = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("per_token")
        return out


def _open_model(path: Path, *, n_ctx: int, chunk: int, threads: int):  # -> llama_cpp.Llama
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=chunk, n_ubatch=chunk,
        n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False,
    )


def _windows(llama, text: str, n_ctx: int) -> np.ndarray:
    add_bos = bool(llama._model.add_bos_token())
    tokens = llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    return _cut(tokens, n_ctx, llama.token_bos() if add_bos else None)


def _cut(tokens: list[int], n_ctx: int, bos: int | None) -> np.ndarray:
    """Whole windows of n_ctx tokens, each starting with `bos` when the model adds one (as llama-perplexity: each
    window starts like a fresh prompt)."""
    n_windows = len(tokens) // n_ctx
    if n_windows < 1:
        raise ValueError(f"the text has {len(tokens)} tokens, fewer than one window of n_ctx={n_ctx}")
    windows = np.asarray(tokens[: n_windows * n_ctx], dtype=np.int32).reshape(n_windows, n_ctx).copy()
    if bos is not None:
        windows[:, 0] = bos
    return windows


def _scored_logits(llama, windows: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first scored row index, logits of the scored positions in this batch) in order.

    The arrays are views of llama.cpp's output buffer, valid until the next decode."""
    n_ctx = windows.shape[1]
    first, last = n_ctx // 2, n_ctx - 2
    n_vocab = llama.n_vocab()
    ctx, lbatch = llama._ctx, llama._batch
    batch = lbatch.batch
    row = 0
    for window in windows:
        ctx.kv_cache_clear()
        for start in range(0, n_ctx, chunk):
            part = window[start : start + chunk]
            batch.n_tokens = len(part)
            n_out = 0
            for k, token in enumerate(part.tolist()):
                pos = start + k
                batch.token[k] = token
                batch.pos[k] = pos
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = 0
                batch.logits[k] = first <= pos <= last
                n_out += first <= pos <= last
            ctx.decode(lbatch)
            if n_out:
                flat = np.ctypeslib.as_array(ctx.get_logits(), shape=(n_out * n_vocab,))
                yield row, flat.reshape(n_out, n_vocab)
                row += n_out


class _Checkpoint:
    """A Hugging Face checkpoint as the base (step 2's check: the compiled GGUF against its own checkpoint). Its
    tokenizer cuts the windows, and each window is one float32 forward pass; the scored positions are the same
    as llama.cpp's."""

    def __init__(self, folder: Path, threads: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()

    def n_vocab(self) -> int:
        return int(self.model.config.vocab_size)

    def windows(self, text: str, n_ctx: int) -> np.ndarray:
        tokens = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return _cut(tokens, n_ctx, bos if bos is not None and tokens[0] == bos else None)

    def scored(self, windows: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        first, last = windows.shape[1] // 2, windows.shape[1] - 2
        for i, window in enumerate(windows):
            with self._torch.inference_mode():
                logits = self.model(self._torch.tensor([window.tolist()])).logits[0, first : last + 1]
            yield i * (last + 1 - first), logits.float().numpy()

    def close(self) -> None:
        self.model = None


class _Gguf:
    """A GGUF base, decoded by llama.cpp in the candidate's batch shapes."""

    def __init__(self, path: Path, n_ctx: int, chunk: int, threads: int):
        self.llama = _open_model(path, n_ctx=n_ctx, chunk=chunk, threads=threads)

    def n_vocab(self) -> int:
        return int(self.llama.n_vocab())

    def windows(self, text: str, n_ctx: int) -> np.ndarray:
        return _windows(self.llama, text, n_ctx)

    def scored(self, windows: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        return _scored_logits(self.llama, windows, chunk)

    def close(self) -> None:
        self.llama.close()


def _log_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise log-softmax in float32 (sums in float64) and the argmax of each row."""
    top = logits.argmax(axis=1)
    shifted = logits - logits[np.arange(len(top)), top][:, None]
    lse = np.log(np.exp(shifted).sum(axis=1, dtype=np.float64)).astype(np.float32)
    shifted -= lse[:, None]
    return shifted, top


def _reference_key(base_path: Path, text: str, n_ctx: int, chunk: int) -> str:
    files = sorted(f for f in base_path.rglob("*") if f.is_file()) if base_path.is_dir() else [base_path]
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    runtime = metadata.version("transformers" if base_path.is_dir() else "llama-cpp-python")
    ident = json.dumps([stats, hashlib.sha256(text.encode()).hexdigest(), n_ctx, chunk, runtime, "v1"])
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _load_reference(base_path: Path, n_ctx: int, chunk: int, folder: Path) -> BaseReference | None:
    meta = folder / "meta.npz"
    codes = folder / "codes.npy"
    if not (meta.is_file() and codes.is_file()):
        return None
    m = np.load(meta)
    return BaseReference(
        base_path, n_ctx, chunk, m["windows"], m["targets"], np.load(codes, mmap_mode="r"),
        m["scale"], m["offset"], m["nll"], m["top"],
    )


def build_reference(
    base_path: Path, text: str, folder: Path, *, n_ctx: int = 512, threads: int = 2, chunk: int = 64
) -> BaseReference:
    """Run the base over `text` and store its distributions in `folder` (reused when already there). The base is
    a GGUF file (llama.cpp) or a Hugging Face checkpoint folder (transformers, float32)."""
    cached = _load_reference(base_path, n_ctx, chunk, folder)
    if cached is not None:
        return cached
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    base = _Checkpoint(base_path, threads) if base_path.is_dir() else _Gguf(base_path, n_ctx, chunk, threads)
    try:
        windows = base.windows(text, n_ctx)
        first = n_ctx // 2
        targets = windows[:, first + 1 :].reshape(-1).astype(np.int32)
        n = len(targets)
        codes = np.lib.format.open_memmap(tmp / "codes.npy", mode="w+", dtype=np.uint16,
                                          shape=(n, base.n_vocab()))
        scale = np.zeros(n, np.float32)
        offset = np.zeros(n, np.float32)
        nll = np.zeros(n, np.float64)
        top = np.zeros(n, np.int32)
        for row, logits in base.scored(windows, chunk):
            for r0 in range(0, len(logits), _ROWS):
                rows = slice(row + r0, row + min(r0 + _ROWS, len(logits)))
                logp, best = _log_softmax(logits[r0 : r0 + _ROWS])
                idx = np.arange(len(best))
                nll[rows] = -logp[idx, targets[rows]]
                top[rows] = best
                # llama.cpp's encoding: 16-bit codes over [max(min log-prob, top - 16), top].
                hi = logp[idx, best]
                lo = np.maximum(logp.min(axis=1), hi + LOGP_FLOOR)
                step = (hi - lo) / _CODES
                step[step == 0] = 1.0
                q = np.rint((logp - lo[:, None]) / step[:, None])
                codes[rows] = np.clip(q, 0, _CODES).astype(np.uint16)
                scale[rows], offset[rows] = step, lo
        codes.flush()
        del codes
        np.savez(tmp / "meta.npz", windows=windows, targets=targets, scale=scale, offset=offset, nll=nll, top=top)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        base.close()
    with contextlib.suppress(OSError):  # a concurrent run may have won the race: use its copy
        tmp.rename(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    ref = _load_reference(base_path, n_ctx, chunk, folder)
    assert ref is not None
    return ref


def compare(ref: BaseReference, cand_path: Path, *, threads: int = 2) -> KLDResult:
    """Run the candidate over the reference's windows and compare with the stored base.

    The windows hold the base's tokens: the candidate must share its tokenizer (check_conformance)."""
    start = time.perf_counter()
    llama = _open_model(cand_path, n_ctx=ref.n_ctx, chunk=ref.chunk, threads=threads)
    try:
        if llama.n_vocab() != ref.n_vocab:
            raise ValueError(f"{cand_path}: vocabulary of {llama.n_vocab()} tokens, base has {ref.n_vocab}")
        kld = np.zeros(ref.n_scored, np.float64)
        nll = np.zeros(ref.n_scored, np.float64)
        same = np.zeros(ref.n_scored, bool)
        for row, logits in _scored_logits(llama, ref.windows, ref.chunk):
            for r0 in range(0, len(logits), _ROWS):
                rows = slice(row + r0, row + min(r0 + _ROWS, len(logits)))
                logq, best = _log_softmax(logits[r0 : r0 + _ROWS])
                idx = np.arange(len(best))
                nll[rows] = -logq[idx, ref.targets[rows]]
                same[rows] = best == ref.top[rows]
                logp = ref.log_probs(rows)
                p = np.exp(logp)
                p[logp <= LOGP_FLOOR] = 0.0
                logp -= logq
                kld[rows] = np.einsum("ij,ij->i", p, logp, dtype=np.float64)
    finally:
        llama.close()
    return _summarize(ref, cand_path, kld, nll, same, time.perf_counter() - start)


def _stderr(values: np.ndarray) -> float:
    n = len(values)
    return float(np.std(values) / math.sqrt(n - 1)) if n > 1 else float("nan")


def _summarize(ref: BaseReference, cand_path: Path, kld: np.ndarray, nll: np.ndarray, same: np.ndarray,
               seconds: float) -> KLDResult:
    n = len(kld)
    agree = float(same.mean())
    ratio = nll - ref.nll
    p90, p95, p99 = np.percentile(kld, [90, 95, 99])
    return KLDResult(
        base=str(ref.base_path), candidate=str(cand_path), n_tokens=n, n_ctx=ref.n_ctx,
        kld_mean=float(kld.mean()), kld_stderr=_stderr(kld), kld_median=float(np.median(kld)),
        kld_p90=float(p90), kld_p95=float(p95), kld_p99=float(p99), kld_max=float(kld.max()),
        same_top_pct=100 * agree,
        same_top_stderr=100 * math.sqrt(agree * (1 - agree) / (n - 1)) if n > 1 else float("nan"),
        ppl_base=math.exp(float(ref.nll.mean())), ppl_candidate=math.exp(float(nll.mean())),
        ln_ppl_ratio=float(ratio.mean()), ln_ppl_ratio_stderr=_stderr(ratio),
        seconds=seconds, per_token=kld,
    )


@contextlib.contextmanager
def _reference_folder(base_path: Path, text: str, n_ctx: int, chunk: int, cache_dir: Path | None) -> Iterator[Path]:
    key = _reference_key(base_path, text, n_ctx, chunk)
    if cache_dir is not None:
        yield cache_dir / "kld" / key
        return
    with tempfile.TemporaryDirectory(prefix="edgeready-kld-") as tmp:
        yield Path(tmp) / key


def kl_divergence_many(
    base_path: Path,
    cand_paths: Sequence[Path],
    text: str | None = None,
    *,
    n_ctx: int = 512,
    threads: int = 2,
    chunk: int = 64,
    cache_dir: Path | None = None,
) -> list[KLDResult]:
    """`kl_divergence` for several candidates against one base run (the base is decoded once)."""
    text = default_text() if text is None else text
    with _reference_folder(base_path, text, n_ctx, chunk, cache_dir) as folder:
        ref = build_reference(base_path, text, folder, n_ctx=n_ctx, threads=threads, chunk=chunk)
        return [compare(ref, Path(c), threads=threads) for c in cand_paths]


def kl_divergence(
    base_path: Path,
    cand_path: Path,
    text: str | None = None,
    *,
    n_ctx: int = 512,
    threads: int = 2,
    chunk: int = 64,
    cache_dir: Path | None = None,
) -> KLDResult:
    """KLD(base || candidate) over `text` (default: the shipped `default_text()`), llama.cpp style.

    `chunk`: tokens per llama_decode call, the same for both models. `cache_dir`: keep the base's
    stored distributions there for reuse; by default they live in a temporary directory."""
    return kl_divergence_many(
        base_path, [cand_path], text, n_ctx=n_ctx, threads=threads, chunk=chunk, cache_dir=cache_dir
    )[0]


def kld_row(name: str, r: KLDResult, size_bytes: int | None = None) -> str:
    size = f"{size_bytes / (1024 * 1024):.1f} | " if size_bytes is not None else ""
    return (
        f"| {name} | {size}{r.kld_mean:.5f} ± {r.kld_stderr:.5f} | {r.kld_median:.5f} | {r.kld_p99:.4f} | "
        f"{r.kld_max:.3f} | {r.same_top_pct:.2f} ± {r.same_top_stderr:.2f} | {r.ppl_candidate:.3f} |"
    )


def kld_table(results: Sequence[KLDResult], names: Sequence[str] | None = None,
              sizes: Sequence[int] | None = None) -> str:
    """A Markdown table, one row per result (names default to the candidate file stems)."""
    names = list(names) if names is not None else [Path(r.candidate).stem for r in results]
    size_col = ["size MiB"] if sizes is not None else []
    heads = ["candidate", *size_col, "KLD mean ± se", "median", "p99", "max", "same top %", "PPL"]
    lines = ["| " + " | ".join(heads) + " |", "|---|" + "---:|" * (len(heads) - 1)]
    for i, (name, r) in enumerate(zip(names, results, strict=True)):
        lines.append(kld_row(name, r, sizes[i] if sizes is not None else None))
    if results:
        r0 = results[0]
        lines.append("")
        lines.append(f"Base PPL {r0.ppl_base:.3f}; {r0.n_tokens} scored tokens, n_ctx {r0.n_ctx}.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from edgeready.candidates import materialize, resolve_candidate
    from edgeready.ladder import search_order

    parser = argparse.ArgumentParser(prog="python -m edgeready.kld", description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="gemma3-270m-q4km")
    parser.add_argument("--candidates", type=Path, default=Path("candidates"))
    parser.add_argument("--ladder", type=Path, default=Path("candidates/generated"), help="manifests to compare")
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--self", action="store_true", help="also compare the base with itself (noise floor)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = parser.parse_args(argv)
    base = resolve_candidate(args.base, args.candidates)
    base_path, _ = materialize(base, args.cache)
    manifests = search_order(sorted(args.ladder.glob("*.yaml")))
    paths = [base_path] if args.self else []
    names = [f"{base.name} (self)"] if args.self else []
    sizes = [base_path.stat().st_size] if args.self else []
    for m in manifests:
        cand = resolve_candidate(str(m), args.candidates)
        path, _ = materialize(cand, args.cache)
        paths.append(path)
        names.append(cand.name)
        sizes.append(path.stat().st_size)
    start = time.perf_counter()
    results = kl_divergence_many(base_path, paths, n_ctx=args.n_ctx, threads=args.threads, cache_dir=args.cache)
    print(kld_table(results, names, sizes))
    print(f"\n{time.perf_counter() - start:.1f} s; seconds per candidate: "
          + ", ".join(f"{n} {r.seconds:.1f}" for n, r in zip(names, results, strict=True)))
    if args.json:
        args.json.write_text(json.dumps([{"name": n, **r.as_dict()} for n, r in zip(names, results, strict=True)],
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
