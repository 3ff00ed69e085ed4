"""Hugging Face checkpoints as candidates (`format: hf`): what a checkpoint folder must hold, its digest (the
generation store's key, as a GGUF's sha256 is), its footprint in the shape the memory gate reads, and a checkpoint
built from a GGUF file (transformers dequantizes it; the round trip starts from the packaged models, no download).

A checkpoint folder holds `config.json`, its weights (`*.safetensors`, or `pytorch_model*.bin`) and a tokenizer
(`tokenizer.json`, or `tokenizer.model` for sentencepiece): anything less is a ConfigError naming the folder and
what is missing, raised before a model loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from edgeready.config_errors import ConfigError
from edgeready.gguf_info import GGUFSummary

_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER = ("tokenizer.json", "tokenizer.model")
PROVENANCE = "edgeready-provenance.json"


def weight_files(folder: Path) -> list[Path]:
    return sorted(f for pattern in _WEIGHTS for f in folder.glob(pattern))


def check_checkpoint(folder: Path) -> dict:
    """The folder's config.json, after checking that weights and a tokenizer are there too."""
    if not folder.is_dir():
        raise ConfigError(f"checkpoint {folder}: not a folder")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not weight_files(folder):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any((folder / name).is_file() for name in _TOKENIZER):
        missing.append("a tokenizer (tokenizer.json or tokenizer.model)")
    if missing:
        raise ConfigError(f"checkpoint {folder}: no {', no '.join(missing)}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"checkpoint {folder}: config.json is not JSON ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ConfigError(f"checkpoint {folder}: config.json has no model_type")
    return config


def checkpoint_digest(folder: Path, file_digest: Callable[[Path], str]) -> str:
    """sha256 over every file's relative path and sha256 (`file_digest`, e.g. the candidates' cached one), in path
    order: any byte of any file changes it."""
    check_checkpoint(folder)
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(folder).as_posix()}\0{file_digest(f)}\n".encode())
    return digest.hexdigest()


def checkpoint_summary(folder: Path) -> GGUFSummary:
    """The checkpoint's footprint as the memory gate reads a GGUF's: weights = the tensors' bytes (safetensors
    headers), the KV cache from the attention shape, float32 values (transformers on CPU)."""
    from safetensors import safe_open

    config = check_checkpoint(folder)
    weights, count, types = 0, 0, {}
    for f in weight_files(folder):
        if f.suffix != ".safetensors":
            weights += f.stat().st_size
            continue
        with safe_open(str(f), framework="numpy") as st:
            for name in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                sl = st.get_slice(name)
                dtype = str(sl.get_dtype())
                n = 1
                for dim in sl.get_shape():
                    n *= dim
                weights += n * _DTYPE_BYTES.get(dtype, 4)
                count += 1
                types[dtype] = types.get(dtype, 0) + 1
    heads = int(config.get("num_attention_heads", 1))
    n_embd = int(config.get("hidden_size", 0))
    head_dim = int(config.get("head_dim") or (n_embd // heads if heads else 0))
    return GGUFSummary(
        path=str(folder), file_bytes=sum(f.stat().st_size for f in weight_files(folder)), weights_bytes=weights,
        tensor_count=count, architecture=str(config["model_type"]), file_type=None,
        block_count=int(config.get("num_hidden_layers", 0)), n_embd=n_embd, head_count=heads,
        head_count_kv=int(config.get("num_key_value_heads", heads)), key_length=head_dim, value_length=head_dim,
        context_length=int(config.get("max_position_embeddings", 0)), sliding_window=config.get("sliding_window"),
        tensor_types=dict(sorted(types.items())), kv_value_bytes=4,
        weights_meter="sum of the checkpoint's tensor sizes (safetensors headers)")


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def checkpoint_from_gguf(gguf: Path, out: Path, source_sha256: str) -> Path:
    """A float32 Hugging Face checkpoint of a GGUF model, as transformers reads GGUF files (dequantized, its
    supported architectures only), with a provenance file naming the source and its sha256."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"{gguf}: transformers cannot read it as a checkpoint ({exc})") from None
    # A model loaded from GGUF carries a gguf quantization config and refuses save_pretrained: copy its
    # (already dequantized) weights into a plain model of the same config.
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / PROVENANCE).write_text(json.dumps({
        "built_from": str(gguf), "gguf_sha256": source_sha256, "how": "transformers GGUF loader (dequantized to "
        "float32), weights copied into a plain model and saved", "transformers": transformers.__version__,
        "torch": torch.__version__}, indent=2), encoding="utf-8")
    return out
