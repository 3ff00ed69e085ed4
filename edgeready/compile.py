"""Step 2, compile: a Hugging Face checkpoint to a quantized GGUF candidate, with what it was made from.

    python -m edgeready.compile --hf NAME|MANIFEST|DIR --quant Q4_K_M [--quant Q8_0 ...] [--out candidates/generated]
    make compile HF=DIR QUANT=Q4_K_M

1. The checkpoint is checked (config.json, weights, tokenizer: edgeready/hf.py) and digested.
2. llama.cpp's own converter, `convert_hf_to_gguf.py`, writes an F16 GGUF. It is taken from the llama-cpp-python
   sdist of the very version the suite runs (vendor/llama.cpp, with its `conversion` package and gguf-py 0.19.0,
   the pinned `gguf`): a converter of another llama.cpp could write metadata this runtime reads differently.
   `make converter` unpacks it once per machine; an architecture it does not support is a ConfigError with its
   message.
3. llama.cpp's `llama_model_quantize` (as the ladder uses it) makes each requested type.
4. A manifest per GGUF (`format: gguf`, `base:` the checkpoint's manifest, its sha256) and a provenance file
   (`<name>.provenance.json`: the checkpoint's digest, the converter's version, the commands). A checkpoint
   given as a folder gets a `format: hf` manifest of its own, so the conformance gate can compare the compiled
   model with it (next-token KL divergence and top-token agreement against the checkpoint's own logits)
   before any expensive gate runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from edgeready.candidates import Candidate, Checkpoint, candidate_from_checkpoint, resolve_candidate, sha256_file
from edgeready.config_errors import ConfigError
from edgeready.hf import checkpoint_digest
from edgeready.ladder import FTYPES, VariantSpec, _run_quantize, slug

ROOT = Path(__file__).resolve().parents[1]
LLAMA_VERSION = "0.3.36"
DEFAULT_CONVERTER = Path.home() / ".cache" / "edgeready" / f"llama.cpp-convert-{LLAMA_VERSION}"


def converter_dir(given: str | None) -> Path:
    folder = Path(given or os.environ.get("EDGEREADY_CONVERTER") or DEFAULT_CONVERTER).expanduser()
    if not (folder / "convert_hf_to_gguf.py").is_file() or not (folder / "gguf-py").is_dir():
        raise ConfigError(f"llama.cpp's converter is not in {folder}: run `make converter` (it unpacks "
                          f"convert_hf_to_gguf.py from the llama-cpp-python {LLAMA_VERSION} sdist)")
    return folder


def hf_candidate(ref: str, out: Path) -> tuple[Candidate, str]:
    """The checkpoint's candidate and how a compiled manifest in `out` names it (`base:`)."""
    path = Path(ref)
    if path.is_dir():
        cand = candidate_from_checkpoint(path)
        manifest = out / f"{cand.name}.yaml"
        data = cand.model_dump(mode="json", exclude_none=True)
        data["checkpoint"] = Checkpoint(path=str(path.resolve()), sha256=checkpoint_digest(path, sha256_file)
                                        ).model_dump(exclude_none=True)
        out.mkdir(parents=True, exist_ok=True)
        manifest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return cand, manifest.name
    cand = resolve_candidate(ref, ROOT / "candidates")
    if cand.format != "hf" or cand.checkpoint is None:
        raise ConfigError(f"--hf {ref}: candidate {cand.name} is {cand.format}, not a checkpoint (format: hf)")
    return cand, str(cand.source.resolve()) if cand.source else cand.name


def convert(folder: Path, converter: Path, dst: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(converter / "gguf-py"),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(converter / "convert_hf_to_gguf.py"), str(folder), "--outfile",
                           str(dst), "--outtype", "f16"], cwd=converter, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not dst.is_file():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ConfigError(f"checkpoint {folder}: llama.cpp's converter failed (exit {proc.returncode}): {tail}")


def compile_checkpoint(ref: str, quants: list[str], out: Path, converter: Path, threads: int = 2) -> list[Path]:
    """Convert once, quantize to each type; the manifests written, in the order asked."""
    bad = [q for q in quants if q not in (*FTYPES, "F16")]
    if bad:
        raise ConfigError(f"--quant {', '.join(bad)}: not a type llama_model_quantize makes ({', '.join(FTYPES)}, F16)")
    cand, base_ref = hf_candidate(ref, out)
    assert cand.checkpoint is not None
    folder = Path(cand.checkpoint.path)
    if not folder.is_absolute() and cand.source is not None:
        folder = (cand.source.parent / folder).resolve()
    digest = checkpoint_digest(folder, sha256_file)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="edgeready-compile-") as tmp:
        f16 = Path(tmp) / "f16.gguf"
        started = time.perf_counter()
        convert(folder, converter, f16)
        converted_s = time.perf_counter() - started
        for quant in quants:
            name = f"{cand.name}-{slug(quant)}"
            gguf = out / f"{name}.gguf"
            started = time.perf_counter()
            if quant == "F16":
                gguf.write_bytes(f16.read_bytes())
            else:
                _run_quantize(f16, gguf, VariantSpec(name, "quantization", quant), threads)
            sha = sha256_file(gguf)
            manifest = out / f"{name}.yaml"
            data = Candidate(
                name=name, format="gguf", strategy="quantization", base_model=cand.base_model, quantization=quant,
                prompt_style=cand.prompt_style, base=base_ref,
                artifact={"path": gguf.name, "sha256": sha},  # type: ignore[arg-type]
                description=f"{cand.name} compiled to {quant}: llama.cpp's convert_hf_to_gguf.py (llama-cpp-python "
                            f"{LLAMA_VERSION} sdist) to F16, then llama_model_quantize",
            ).model_dump(mode="json", exclude_none=True, exclude={"artifact": {"files"}})
            manifest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            (out / f"{name}.provenance.json").write_text(json.dumps({
                "base_model": cand.base_model, "checkpoint": str(folder), "checkpoint_digest": digest,
                "converter": f"llama.cpp convert_hf_to_gguf.py from llama-cpp-python {LLAMA_VERSION} (sdist)",
                "outtype": "f16", "quantization": quant, "sha256": sha, "convert_s": round(converted_s, 2),
                "quantize_s": round(time.perf_counter() - started, 2)}, indent=2), encoding="utf-8")
            written.append(manifest)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", required=True, help="checkpoint folder, or a format: hf candidate (name or manifest)")
    ap.add_argument("--quant", action="append", required=True, help="Q8_0, Q4_K_M, ... or F16 (repeatable)")
    ap.add_argument("--out", default="candidates/generated", help="where the GGUFs and manifests go")
    ap.add_argument("--converter", default=None, help=f"llama.cpp's converter folder (default {DEFAULT_CONVERTER})")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        written = compile_checkpoint(args.hf, args.quant, Path(args.out), converter_dir(args.converter), args.threads)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for manifest in written:
        print(manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
