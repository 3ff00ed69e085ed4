"""What a GGUF file says about its memory needs, read with the `gguf` package (no model load).

Weights footprint = the sum of the tensor table's byte sizes (what llama.cpp maps into memory), so
it excludes the header and tokenizer metadata that the file also holds. The KV cache for a context
of n tokens is computed from the attention hyper-parameters, f16 keys and values (llama.cpp's
default cache type).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGUFReader

from edgeready.config_errors import ConfigError

MB = 1024 * 1024
_F16_BYTES = 2


@dataclass(frozen=True)
class GGUFSummary:
    path: str
    file_bytes: int
    weights_bytes: int
    tensor_count: int
    architecture: str
    file_type: int | None
    block_count: int
    n_embd: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    context_length: int
    sliding_window: int | None
    tensor_types: dict[str, int] = field(default_factory=dict)

    @property
    def weights_mb(self) -> float:
        return self.weights_bytes / MB

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Full-attention upper bound: every layer caches n_ctx positions of K and V."""
        per_token = self.block_count * self.head_count_kv * (self.key_length + self.value_length)
        return per_token * n_ctx * _F16_BYTES


def _field(reader: GGUFReader, key: str, default: object = None) -> object:
    f = reader.get_field(key)
    return default if f is None else f.contents()


def read_gguf(path: Path) -> GGUFSummary:
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # the gguf package raises ValueError/struct.error/etc. on bad files
        raise ConfigError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    arch = str(_field(reader, "general.architecture", "unknown"))
    n_embd = int(_field(reader, f"{arch}.embedding_length", 0))
    heads = int(_field(reader, f"{arch}.attention.head_count", 1))
    heads_kv = int(_field(reader, f"{arch}.attention.head_count_kv", heads))
    head_dim = n_embd // heads if heads else 0
    types = Counter(t.tensor_type.name for t in reader.tensors)
    sw = _field(reader, f"{arch}.attention.sliding_window")
    return GGUFSummary(
        path=str(path),
        file_bytes=path.stat().st_size,
        weights_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        tensor_count=len(reader.tensors),
        architecture=arch,
        file_type=_int_or_none(_field(reader, "general.file_type")),
        block_count=int(_field(reader, f"{arch}.block_count", 0)),
        n_embd=n_embd,
        head_count=heads,
        head_count_kv=heads_kv,
        key_length=int(_field(reader, f"{arch}.attention.key_length", head_dim)),
        value_length=int(_field(reader, f"{arch}.attention.value_length", head_dim)),
        context_length=int(_field(reader, f"{arch}.context_length", 0)),
        sliding_window=_int_or_none(sw),
        tensor_types=dict(sorted(types.items())),
    )


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
