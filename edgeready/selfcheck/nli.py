"""SelfCheckGPT-NLI: how often do the sampled passages contradict a sentence?

For every (sample, sentence) pair an MNLI classifier reads premise = sample, hypothesis = sentence. As in
SelfCheckGPT, the softmax is taken over the entailment and contradiction logits ONLY (neutral is dropped),
and the sentence's score is P(contradiction) averaged over the N samples.

The label indices come from the model config by name (case-insensitive), never from an assumed order:
MNLI checkpoints disagree on it. Premises are truncated ('only_first') to the model's maximum length so the
sentence under test is never cut. Models load lazily and offline only (local directory or hub cache).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeready.errors import ScorerUnavailable
from edgeready.selfcheck.base import check_inputs, force_offline, set_torch_threads

DEFAULT_MODEL = "potsawee/deberta-v3-large-mnli"
_INSTALL_HINT = "pip install transformers==5.23.0 torch==2.13.0"
# Tokenizers without a configured limit report a huge sentinel model_max_length; cap at something sane.
_FALLBACK_MAX_LENGTH = 512


def label_indices(
    id2label: Mapping[Any, str] | None,
    label2id: Mapping[str, Any] | None = None,
    override: Mapping[str, int] | None = None,
) -> tuple[int, int]:
    """(entailment index, contradiction index) found by label name, case-insensitively.

    `override` (the scorer's `labels=` option) is an explicit {"entailment": i, "contradiction": j} for
    checkpoints whose config only says LABEL_0/LABEL_1: the order then comes from its model card, stated
    by the user, still never assumed here. Raises ScorerUnavailable when either label is absent."""
    names: dict[str, int] = {}
    for label, idx in (override or {}).items():
        names[str(label).strip().lower()] = int(idx)
    for idx, label in (id2label or {}).items():
        names.setdefault(str(label).strip().lower(), int(idx))
    for label, idx in (label2id or {}).items():
        names.setdefault(str(label).strip().lower(), int(idx))
    missing = [want for want in ("entailment", "contradiction") if want not in names]
    if missing:
        raise ScorerUnavailable(
            f"NLI model config has no {' / '.join(missing)} label (id2label: {dict(id2label or {})}); use an "
            "MNLI classifier whose config names its labels, or state the order from its model card with "
            "labels={'entailment': i, 'contradiction': j} (SelfCheckGPT reads "
            f"{DEFAULT_MODEL}'s two logits as [entailment, contradiction])"
        )
    return names["entailment"], names["contradiction"]


class NLIScorer:
    """P(contradiction | sample, sentence) over entailment vs contradiction, averaged over samples."""

    name = "nli"

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        batch_size: int = 8,
        max_length: int | None = None,
        device: str = "cpu",
        threads: int | None = None,
        labels: Mapping[str, int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id = str(model)
        self.batch_size = batch_size
        self.device = device
        self.threads = threads
        self.label_override = dict(labels) if labels else None
        self._max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None
        self._labels: tuple[int, int] | None = None

    @property
    def max_length(self) -> int:
        self.load()
        assert self._max_length is not None
        return self._max_length

    def source(self) -> tuple[str, bool]:
        """Where the model is read from, and whether that is a local directory (else a hub id that must be
        in the local Hugging Face cache)."""
        source = self.model_id
        looks_like_path = Path(source).is_absolute() or source.startswith((".", "~")) or Path(source).exists()
        return (str(Path(source).expanduser()), True) if looks_like_path else (source, False)

    def preflight(self) -> None:
        """What load() needs, checked without importing torch: the packages and the model's files."""
        force_offline()  # before huggingface_hub is imported: it reads HF_HUB_OFFLINE once
        for module in ("torch", "transformers"):
            if importlib.util.find_spec(module) is None:
                raise ScorerUnavailable(f"NLI scorer needs transformers and torch: {_INSTALL_HINT}")
        where = self.snapshot_dir()
        if where is None or not where.is_dir():
            what = (f"NLI model directory {self.model_id} does not exist" if self.source()[1]
                    else f"NLI model {self.model_id!r} is not in the local Hugging Face cache")
            raise ScorerUnavailable(f"{what}; {self._fix_hint()}")

    def snapshot_dir(self) -> Path | None:
        """The local directory the model loads from: the given directory, or the hub cache's snapshot."""
        source, local = self.source()
        if local:
            return Path(source)
        force_offline()
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, "config.json")
        return Path(found).parent if isinstance(found, str) else None

    def load(self) -> NLIScorer:
        """Load tokenizer and classifier once; ScorerUnavailable names the model and the fix."""
        if self._model is not None:
            return self
        self.preflight()  # forces offline mode too
        try:
            import torch  # noqa: F401  (transformers needs it for the PyTorch model classes)
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:
            raise ScorerUnavailable(f"NLI scorer needs transformers and torch: {_INSTALL_HINT}") from exc
        set_torch_threads(self.threads)
        source, _ = self.source()
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(source, local_files_only=True)
        except Exception as exc:  # OSError, ValueError, ...: all mean "not loadable here"
            raise ScorerUnavailable(
                f"cannot load NLI model {self.model_id!r} offline ({type(exc).__name__}: {exc}); "
                f"{self._fix_hint()}"
            ) from exc

        self._labels = label_indices(model.config.id2label, model.config.label2id, self.label_override)
        n_logits = int(model.config.num_labels)
        if not all(0 <= i < n_logits for i in self._labels):
            raise ScorerUnavailable(f"NLI label indices {self._labels} out of range for {n_logits} logits")
        if self._max_length is None:
            limits = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
            sane = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
            self._max_length = min(sane) if sane else _FALLBACK_MAX_LENGTH
        model.eval()
        self._model = model.to(self.device)
        self._tokenizer = tokenizer
        return self

    def _fix_hint(self) -> str:
        return (
            f"on a machine with network run `huggingface-cli download {DEFAULT_MODEL} --local-dir <dir>` "
            "(`hf download` in newer huggingface_hub; or any MNLI classifier), copy <dir> here and point "
            "the target's `model:` at it"
        )

    def contradiction_probs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[float]:
        """P(contradiction) per (premise, hypothesis) pair, softmax over [entailment, contradiction]."""
        import torch

        self.load()
        assert self._labels is not None
        ent, con = self._labels
        out: list[float] = []
        with torch.inference_mode():
            for i in range(0, len(premises), self.batch_size):
                batch = self._encode(premises[i : i + self.batch_size], hypotheses[i : i + self.batch_size])
                logits = self._model(**batch).logits.float()
                two = torch.softmax(logits[:, [ent, con]], dim=-1)
                out.extend(two[:, 1].tolist())
        return out

    def _encode(self, premises: Sequence[str], hypotheses: Sequence[str]) -> Any:
        tok = self._tokenizer
        try:
            enc = tok(
                list(premises),
                list(hypotheses),
                truncation="only_first",
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
        except Exception:
            # Some hypothesis alone exceeds max_length, so cutting its premise cannot suffice. Encode pair
            # by pair so only that pair is cut 'longest_first' (the others, and so the scores, stay the
            # same whatever the batch size), then pad the batch together.
            rows = [self._encode_one(p, h) for p, h in zip(premises, hypotheses, strict=True)]
            enc = tok.pad(rows, padding=True, return_tensors="pt")
        return enc.to(self.device)

    def _encode_one(self, premise: str, hypothesis: str) -> Any:
        try:
            return self._tokenizer(premise, hypothesis, truncation="only_first", max_length=self.max_length)
        except Exception:
            return self._tokenizer(
                premise, hypothesis, truncation="longest_first", max_length=self.max_length
            )

    def score(self, sentences: Sequence[str], evidence: Sequence[str]) -> list[float]:
        check_inputs(sentences, evidence)
        if not sentences:
            return []
        # Sentence-major pairs, so pairs i*N .. i*N+N-1 belong to sentence i.
        n = len(evidence)
        premises = [p for _ in sentences for p in evidence]
        hypotheses = [s for s in sentences for _ in evidence]
        probs = self.contradiction_probs(premises, hypotheses)
        return [min(1.0, max(0.0, sum(probs[i * n : (i + 1) * n]) / n)) for i in range(len(sentences))]
