"""Conformance: is a derived GGUF still a drop-in for its base (same architecture, tokenizer, specials)?

A quantized or pruned variant must tokenize exactly like its base, or every downstream comparison
(KL divergence, accuracy on the same prompts) compares different token streams. The checks read
the GGUF header only, never load a model.

Reading the header: the layout and constants come from the `gguf` package (magic, value types,
block sizes). `gguf.GGUFReader` itself took 12-13 s on Gemma's 262k-token vocabulary here (it builds
two numpy views per token string), too slow for a first-tier gate run on every variant, so
`read_header` walks the same format with `struct` and digests big arrays instead of splitting them
(~0.2 s). `tests/test_ladder_kld.py` cross-checks its fields against `GGUFReader`.

Beyond the comparison with the base, the candidate's own metadata is audited before anything renders it:
special token ids must lie inside its vocabulary, and its chat template must pass the static audit of
edgeready.template_audit (no dunder access, no unbounded loops, no oversize template).

A file that is not a complete GGUF (bad magic, a header that runs past the end, tensor data cut
short) raises `ConfigError` naming the file and what is wrong: a truncated download must fail the
gate loudly, not load half a model.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from edgeready.candidates import sha256_file
from edgeready.config_errors import ConfigError
from edgeready.template_audit import audit_chat_template, audit_token_ids, errors

# Arrays longer than this are kept as a digest (count + sha256 of their bytes), not decoded.
_SMALL_ARRAY = 64
# Sanity bounds: a corrupt count must not make the reader loop for minutes.
_MAX_COUNT = 1 << 32

_SCALAR = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}

TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.scores",
)
SPECIAL_TOKENS = ("bos", "eos", "unknown", "padding", "eot", "eom", "sep", "cls", "mask")
CHAT_TEMPLATE = "tokenizer.chat_template"


@dataclass(frozen=True)
class ArrayDigest:
    """A large GGUF array, identified by element type, length and the sha256 of its encoded bytes."""

    element_type: str
    count: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.count} x {self.element_type} (sha256 {self.sha256[:12]})"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int  # from the start of the tensor data section
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    file_bytes: int
    version: int
    kv: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int

    @property
    def architecture(self) -> str:
        return str(self.kv.get("general.architecture", "unknown"))

    def arch_value(self, suffix: str) -> Any:
        return self.kv.get(f"{self.architecture}.{suffix}")

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weights_bytes / self.n_parameters if self.n_parameters else 0.0


@dataclass(frozen=True)
class ConformanceCheck:
    name: str
    passed: bool
    detail: str


class _Cursor:
    """Bounds-checked little/big-endian reads over a memory map; every overrun names the field."""

    def __init__(self, path: Path, buf: mmap.mmap | bytes, endian: str = "<") -> None:
        self.path, self.buf, self.pos, self.endian = path, buf, 0, endian

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ConfigError(
                f"{self.path}: truncated or corrupt GGUF: {what} needs bytes {self.pos}..{self.pos + n} "
                f"but the file has {len(self.buf)} bytes"
            )

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(self.endian + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def count(self, what: str) -> int:
        n = self.scalar("Q", what)
        if n > _MAX_COUNT:
            raise ConfigError(f"{self.path}: corrupt GGUF: {what} is {n}, not a plausible count")
        return n

    def string(self, what: str) -> str:
        n = self.count(f"length of {what}")
        self.need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path}: corrupt GGUF: {what} is not UTF-8") from None

    def value_type(self, what: str) -> GGUFValueType:
        raw = self.scalar("I", what)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise ConfigError(f"{self.path}: corrupt GGUF: {what} has unknown value type {raw}") from None

    def value(self, vtype: GGUFValueType, key: str) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string(f"value of {key}")
        if vtype == GGUFValueType.ARRAY:
            return self.array(key)
        return self.scalar(_SCALAR[vtype], f"value of {key}")

    def array(self, key: str) -> Any:
        etype = self.value_type(f"element type of {key}")
        n = self.count(f"length of {key}")
        start = self.pos
        if etype == GGUFValueType.STRING:
            if n <= _SMALL_ARRAY:
                return [self.string(f"{key}[{i}]") for i in range(n)]
            for i in range(n):  # walk the length prefixes; the bytes themselves are only hashed
                length = self.count(f"length of {key}[{i}]")
                self.need(length, f"{key}[{i}]")
                self.pos += length
        elif etype == GGUFValueType.ARRAY:
            items = [self.array(f"{key}[{i}]") for i in range(n)]
            return items if n <= _SMALL_ARRAY else ArrayDigest("array", n, _sha(repr(items).encode()))
        else:
            fmt = _SCALAR[etype]
            size = struct.calcsize(fmt) * n
            self.need(size, f"{key} ({n} x {etype.name})")
            if n <= _SMALL_ARRAY:
                values = list(struct.unpack_from(f"{self.endian}{n}{fmt}", self.buf, self.pos))
                self.pos += size
                return values
            self.pos += size
        return ArrayDigest(etype.name, n, _sha(self.buf[start : self.pos]))


def _sha(data: bytes | mmap.mmap) -> str:
    return hashlib.sha256(data).hexdigest()


def read_header(path: Path) -> GGUFHeader:
    """The GGUF key/value metadata and tensor table of `path`, with every tensor's extent checked
    against the file size (a truncated file fails here, not at model load)."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    size = path.stat().st_size
    if size < 24:
        raise ConfigError(f"{path}: not a GGUF file: only {size} bytes (a GGUF header needs at least 24)")
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _parse(path, buf, size)


def _parse(path: Path, buf: mmap.mmap, size: int) -> GGUFHeader:
    magic = struct.unpack_from("<I", buf, 0)[0]
    if magic != GGUF_MAGIC:
        raise ConfigError(f"{path}: not a GGUF file: magic {bytes(buf[:4])!r}, expected b'GGUF'")
    version = struct.unpack_from("<I", buf, 4)[0]
    endian = "<"
    if version & 0xFFFF == 0:  # written on a big-endian host: every field is byte-swapped
        endian, version = ">", struct.unpack_from(">I", buf, 4)[0]
    if version not in (2, 3):
        raise ConfigError(f"{path}: unsupported GGUF version {version} (this reader knows 2 and 3)")
    cur = _Cursor(path, buf, endian)
    cur.pos = 8
    n_tensors = cur.count("tensor count")
    n_kv = cur.count("key/value count")
    kv: dict[str, Any] = {}
    for i in range(n_kv):
        key = cur.string(f"key #{i}")
        kv[key] = cur.value(cur.value_type(f"type of {key}"), key)
    raw_tensors = []
    for i in range(n_tensors):
        name = cur.string(f"name of tensor #{i}")
        n_dims = cur.scalar("I", f"dimension count of {name}")
        if not 1 <= n_dims <= 4:
            raise ConfigError(f"{path}: corrupt GGUF: tensor {name} has {n_dims} dimensions")
        shape = tuple(cur.count(f"shape of {name}") for _ in range(n_dims))
        raw_type = cur.scalar("I", f"type of {name}")
        offset = cur.scalar("Q", f"offset of {name}")
        raw_tensors.append((name, shape, raw_type, offset))
    alignment = int(kv.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
    data_offset = -(-cur.pos // alignment) * alignment
    tensors = tuple(_tensor(path, size, data_offset, *t) for t in raw_tensors)
    return GGUFHeader(path, size, version, kv, tensors, data_offset)


def _tensor(path: Path, size: int, data_offset: int, name: str, shape: tuple[int, ...], raw_type: int,
            offset: int) -> TensorInfo:
    try:
        qtype = GGMLQuantizationType(raw_type)
        block, type_bytes = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise ConfigError(f"{path}: corrupt GGUF: tensor {name} has unknown type {raw_type}") from None
    n_elements = 1
    for d in shape:
        n_elements *= d
    if shape[0] % block:
        raise ConfigError(f"{path}: corrupt GGUF: tensor {name} rows of {shape[0]} are not a multiple of "
                          f"{qtype.name}'s block size {block}")
    n_bytes = n_elements // block * type_bytes
    end = data_offset + offset + n_bytes
    if end > size:
        raise ConfigError(
            f"{path}: truncated GGUF: tensor {name} ({qtype.name} {list(shape)}) ends at byte {end} "
            f"but the file has {size} bytes"
        )
    return TensorInfo(name, shape, qtype.name, offset, n_elements, n_bytes)


def file_type_name(value: Any) -> str:
    """llama.cpp's name of a `general.file_type` value (Q4_K_M for 15), or 'unrecorded'."""
    if value is None:
        return "unrecorded"
    from gguf import LlamaFileType

    try:
        return f"{LlamaFileType(int(value)).name.removeprefix('MOSTLY_')} ({int(value)})"
    except ValueError:
        return f"unknown ({value})"


def _special_ids(h: GGUFHeader) -> dict[str, int]:
    return {s: int(h.kv[k]) for s in SPECIAL_TOKENS if (k := f"tokenizer.ggml.{s}_token_id") in h.kv}


def _show(value: Any) -> str:
    return "absent" if value is None else str(value)


def vocab_size(h: GGUFHeader) -> int | None:
    """Tokens in the vocabulary (len of tokenizer.ggml.tokens), None when the file has none."""
    tokens = h.kv.get("tokenizer.ggml.tokens")
    if isinstance(tokens, ArrayDigest):
        return tokens.count
    return len(tokens) if isinstance(tokens, list) else None


def _special_tokens_check(base: GGUFHeader, cand: GGUFHeader) -> ConformanceCheck:
    """The candidate's special token ids: the base's, and inside its own vocabulary (an id past the end makes
    llama.cpp fall back to a default token, or read past the embedding table when it does not check)."""
    b_ids, c_ids = _special_ids(base), _special_ids(cand)
    outside = audit_token_ids(c_ids, vocab_size(cand))
    detail = f"base {b_ids}, candidate {c_ids}"
    if outside:  # first: the gate shows the first 80 characters
        detail = "; ".join(f.message for f in outside) + f"; {detail}"
    return ConformanceCheck("special_tokens", b_ids == c_ids and not outside, detail)


def template_checks(h: GGUFHeader) -> list[ConformanceCheck]:
    """The static audit (edgeready.template_audit) of each chat template the file carries (the default one and
    named ones, tokenizer.chat_template.<name>): fails on an error finding, and names it first. None when the
    file has no template (a base model), so the checks of such files stay what they were."""
    checks = []
    for key, template in h.kv.items():
        if not (key == CHAT_TEMPLATE or key.startswith(CHAT_TEMPLATE + ".")) or not isinstance(template, str):
            continue
        findings = audit_chat_template(template)
        refused = errors(findings)
        shown = refused or findings
        detail = "; ".join(map(str, shown)) if shown else f"static audit clean ({len(template):,} characters)"
        name = "chat_template" + key.removeprefix(CHAT_TEMPLATE)
        checks.append(ConformanceCheck(name, not refused, detail))
    return checks


def check_conformance(base_path: Path, cand_path: Path, manifest_sha: str | None) -> list[ConformanceCheck]:
    """Header checks of `cand_path` against `base_path`; sha256 against the manifest when given; the candidate's
    special token ids against its vocabulary, and the static audit of its chat template when it has one.

    Raises ConfigError when either file is not a complete GGUF."""
    base, cand = read_header(base_path), read_header(cand_path)
    checks = [
        ConformanceCheck(
            "architecture", base.architecture == cand.architecture,
            f"base {base.architecture}, candidate {cand.architecture}",
        ),
        # Informational: a different file type is the point of a quantization ladder. It fails only
        # when the candidate does not record one (then nothing says what was shipped).
        ConformanceCheck(
            "file_type", "general.file_type" in cand.kv,
            f"base {file_type_name(base.kv.get('general.file_type'))}, "
            f"candidate {file_type_name(cand.kv.get('general.file_type'))}",
        ),
    ]
    diffs = [k.removeprefix("tokenizer.ggml.") for k in TOKENIZER_KEYS if base.kv.get(k) != cand.kv.get(k)]
    parts = ", ".join(
        f"{k.removeprefix('tokenizer.ggml.')}={_show(cand.kv.get(k))}" for k in TOKENIZER_KEYS[:2]
    )
    detail = f"{parts}, {vocab_size(cand) or 0} tokens"
    if diffs:
        detail = "differs in " + ", ".join(diffs) + "; " + " vs ".join(
            f"{who}: " + ", ".join(f"{d}={_show(h.kv.get('tokenizer.ggml.' + d))}" for d in diffs)
            for who, h in (("base", base), ("candidate", cand))
        )
    checks.append(ConformanceCheck("tokenizer", not diffs, detail))
    checks.append(_special_tokens_check(base, cand))
    b_ctx, c_ctx = base.arch_value("context_length"), cand.arch_value("context_length")
    checks.append(ConformanceCheck(
        "context_length", b_ctx is not None and b_ctx == c_ctx, f"base {_show(b_ctx)}, candidate {_show(c_ctx)}"
    ))
    checks += template_checks(cand)
    if manifest_sha is not None:
        actual = sha256_file(cand_path)
        checks.append(ConformanceCheck(
            "sha256", actual == manifest_sha.lower(), f"file {actual}, manifest {manifest_sha.lower()}"
        ))
    return checks


def check_against_checkpoint(folder: Path, cand_path: Path, manifest_sha: str | None,
                             text: str) -> list[ConformanceCheck]:
    """A GGUF compiled from a Hugging Face checkpoint, against the checkpoint: the architecture its config names,
    its vocabulary size and context length, the very token ids of `text` (the KL divergence compares positions
    of the checkpoint's tokens), its special tokens' ids and chat template audit, and the manifest's sha256."""
    import llama_cpp
    from transformers import AutoTokenizer

    from edgeready.hf import check_checkpoint

    config, cand = check_checkpoint(folder), read_header(cand_path)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ours = tokenizer(text, add_special_tokens=True)["input_ids"]
    vocab_only = llama_cpp.Llama(model_path=str(cand_path), vocab_only=True, verbose=False)
    try:
        theirs = vocab_only.tokenize(text.encode("utf-8"), add_bos=bool(vocab_only._model.add_bos_token()),
                                     special=False)
    finally:
        vocab_only.close()
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    same_ids = ours == theirs
    c_ctx = cand.arch_value("context_length")
    specials = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id}
    c_ids = {k: v for k, v in _special_ids(cand).items() if k in specials}
    checks = [
        ConformanceCheck("architecture", cand.architecture == config["model_type"],
                         f"checkpoint {config['model_type']}, candidate {cand.architecture}"),
        ConformanceCheck("vocabulary", vocab_size(cand) == config.get("vocab_size"),
                         f"checkpoint {config.get('vocab_size')}, candidate {vocab_size(cand)}"),
        ConformanceCheck("tokenizer", same_ids, f"{len(ours)} tokens of the text, identical" if same_ids else
                         f"token ids differ from position {first} (checkpoint {len(ours)}, candidate {len(theirs)})"),
        ConformanceCheck("special_tokens", all(c_ids.get(k) == v for k, v in specials.items() if v is not None),
                         f"checkpoint {specials}, candidate {c_ids}"),
        ConformanceCheck("context_length", c_ctx == config.get("max_position_embeddings"),
                         f"checkpoint {config.get('max_position_embeddings')}, candidate {_show(c_ctx)}"),
        *template_checks(cand),
    ]
    if manifest_sha is not None:
        actual = sha256_file(cand_path)
        checks.append(ConformanceCheck("sha256", actual == manifest_sha.lower(),
                                       f"file {actual}, manifest {manifest_sha.lower()}"))
    return checks


def failures(checks: list[ConformanceCheck]) -> list[ConformanceCheck]:
    return [c for c in checks if not c.passed]
