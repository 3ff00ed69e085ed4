"""Where a gate's items come from, as a target names them: the specs of the `dataset:` and `concepts:` blocks
and the loaders that read them (embedded, or a file under --data-dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from edgeready.datasets.countries import embedded_concepts, kb_provenance, load_countries_qa
from edgeready.datasets.webqsp import load_webqsp
from edgeready.errors import ConfigError
from edgeready.records import QAItem
from edgeready.schema import SourceSpec


class DatasetSpec(SourceSpec):
    """Questions for the accuracy gate. `webqsp` reads Microsoft's original JSON."""

    kind: Literal["countries-kb", "webqsp"]
    _EXAMPLE = "webqsp/WebQSP.train.json"


class ConceptSpec(SourceSpec):
    """Who the model writes about: a file with one name per line (`wikibio` reads
    ../shared/data/wikibio/concepts.txt, the WikiBio people)."""

    kind: Literal["countries-kb", "wikibio"]
    _EXAMPLE = "wikibio/concepts.txt"


def resolve_data_path(spec_path: str, data_dir: Path | None) -> Path:
    path = Path(spec_path).expanduser()
    if not path.is_absolute():
        if data_dir is None:
            raise ConfigError(
                f"dataset path '{spec_path}' is relative but no data directory is set "
                "(pass --data-dir; ../shared/data is the default when it exists)"
            )
        path = data_dir / path
    if not path.is_file():
        raise ConfigError(f"dataset file not found: {path}")
    return path


def dataset_label(spec: SourceSpec) -> str:
    """How the report names a question source (`provenance.dataset`)."""
    return "countries-kb (embedded)" if spec.kind == "countries-kb" else spec.kind


def load_questions(spec: DatasetSpec, data_dir: Path | None) -> tuple[list[QAItem], dict[str, Any]]:
    """Every question of the source, with provenance for the report."""
    if spec.kind == "countries-kb":
        return load_countries_qa(), {"dataset": dataset_label(spec), **kb_provenance()}
    assert spec.path is not None  # the schema requires it for webqsp
    path = resolve_data_path(spec.path, data_dir)
    return load_webqsp(path), {"dataset": dataset_label(spec), "path": str(path)}


def load_concepts(spec: ConceptSpec, data_dir: Path | None) -> tuple[list[str], dict[str, Any]]:
    """Every concept of the source, with provenance for the report."""
    if spec.kind == "countries-kb":
        return embedded_concepts(), {"concepts": "countries-kb (embedded)", **kb_provenance()}
    assert spec.path is not None
    path = resolve_data_path(spec.path, data_dir)
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ConfigError(f"{path}: no concepts (one name per line expected)")
    return names, {"concepts": "file", "path": str(path)}
