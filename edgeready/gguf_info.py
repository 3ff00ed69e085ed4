"""What a GGUF file says about its memory needs, read with the `gguf` package (no model load).

Weights footprint = the sum of the tensor table's byte sizes (what llama.cpp maps into memory), so
it excludes the header and tokenizer metadata that the file also holds. The KV cache for a context
of n tokens is computed from the attention hyper-parameters, f16 keys and values (llama.cpp's
default cache type).
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFEndian, GGUFReader, GGUFValueType

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
    # How the KV cache stores a value (llama.cpp: f16; transformers on CPU: the model's float32) and how the
    # weights were counted: a Hugging Face checkpoint is summarized in the same shape (edgeready/hf.py).
    kv_value_bytes: int = _F16_BYTES
    weights_meter: str = "sum of GGUF tensor sizes (gguf package)"

    @property
    def weights_mb(self) -> float:
        return self.weights_bytes / MB

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Full-attention upper bound: every layer caches n_ctx positions of K and V."""
        per_token = self.block_count * self.head_count_kv * (self.key_length + self.value_length)
        return per_token * n_ctx * self.kv_value_bytes


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


class _TensorTableReader(GGUFReader):
    """GGUFReader reduced to what the tensor table's extent needs.

    The full reader builds two numpy views per element of every metadata array (15 s for Gemma's 262k-token
    vocabulary on this VM) and maps every tensor, which fails with a bare reshape error on a truncated
    file. This one steps over array elements by their lengths and records where each tensor ends instead
    of mapping it. It overrides two private methods of gguf 0.19 (pinned in pyproject.toml)."""

    ends: list[tuple[int, str]]

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
        if raw_type != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        return self._array_size(orig_offs), [], [], [GGUFValueType.ARRAY]

    def _array_size(self, start: int) -> int:
        """Bytes taken by the array at `start`: element type, count, then the elements."""
        order = "<" if self.endianess == GGUFEndian.LITTLE else ">"
        etype, count = struct.unpack_from(order + "IQ", self.data, start)
        offs, end = start + 12, len(self.data)
        if etype == GGUFValueType.STRING:
            if count * 8 > end - offs:  # a corrupt count must not loop for minutes
                raise ValueError(f"array of {count} strings at byte {start} runs past the end of the file")
            for _ in range(count):
                (length,) = struct.unpack_from(order + "Q", self.data, offs)
                offs += 8 + length
        elif etype == GGUFValueType.ARRAY:
            if count * 12 > end - offs:
                raise ValueError(f"array of {count} arrays at byte {start} runs past the end of the file")
            for _ in range(count):
                offs += self._array_size(offs)
        else:
            offs += count * np.dtype(self.gguf_scalar_to_np[GGUFValueType(etype)]).itemsize
        if offs > end:
            raise ValueError(f"array at byte {start} runs past the end of the file")
        return offs - start

    def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
        self.ends = []
        for info in fields:
            _, name, _, dims, raw_type, offset = info.parts
            block, type_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_type[0]))]
            n_bytes = math.prod(int(d) for d in dims) * type_bytes // block
            self.ends.append((start_offs + int(offset[0]) + n_bytes, bytes(name).decode("utf-8", "replace")))


def check_complete(path: Path) -> int:
    """The size `path` must have by its tensor table (offset of its last tensor + that tensor's bytes).

    Raises ConfigError when the file is shorter (a cut download or copy) or its header cannot be read."""
    size = path.stat().st_size
    try:
        reader = _TensorTableReader(path)
        ends, data_offset = reader.ends, int(reader.data_offset)
        del reader  # the memory map closes with it
    except Exception as exc:  # the gguf package raises ValueError/IndexError/KeyError/etc. on bad files
        raise ConfigError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    expected = max((end for end, _ in ends), default=data_offset)
    if size < expected:
        first_cut = min((end, name) for end, name in ends if end > size)[1]
        raise ConfigError(
            f"{path}: truncated: its tensor table says the file has {expected} bytes, it has {size} "
            f"({expected - size} missing, from tensor {first_cut} on); copy or download it again"
        )
    return expected


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
