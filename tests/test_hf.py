"""Hugging Face checkpoints as candidates (format: hf) and step 2, compile, with its check.

The round trip needs no download: a checkpoint is built from the packaged SmolLM2 GGUF (transformers reads GGUF
files of the llama architecture), judged by the device gates, compiled back to GGUF at Q8_0 and Q4_K_M with
llama.cpp's own converter (`make converter`), and each compiled file is compared with the checkpoint's own
next-token distributions by the conformance gate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeready.candidates import load_candidate, materialize, resolve_candidate, sha256_file
from edgeready.errors import ConfigError
from edgeready.hf import checkpoint_digest, checkpoint_from_gguf, checkpoint_summary
from edgeready.records import GenerationRequest
from tests.conftest import ROOT, run_gate

FIXTURES = ROOT / "tests" / "fixtures" / "targets"
MANIFEST = """name: smollm2-135m-hf
format: hf
strategy: base
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
prompt_style: chat
checkpoint: {{path: {path}}}
description: SmolLM2-135M-Instruct as a float32 checkpoint, built from the packaged Q4_1 GGUF
"""


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    gguf = materialize(resolve_candidate("smollm2-135m-q4", ROOT / "candidates"), ROOT / ".cache")
    return checkpoint_from_gguf(gguf.path, tmp_path_factory.mktemp("hf") / "smollm2-135m-hf", gguf.sha256)


def test_a_checkpoint_built_from_a_gguf_says_where_it_came_from(checkpoint):
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "edgeready-provenance.json"} <= names
    prov = json.loads((checkpoint / "edgeready-provenance.json").read_text())
    assert prov["gguf_sha256"] == resolve_candidate("smollm2-135m-q4", ROOT / "candidates").artifact.sha256
    summary = checkpoint_summary(checkpoint)
    # 135M parameters in float32 (the tied output matrix stored once), KV cache at float32.
    assert 480 < summary.weights_mb < 560 and summary.tensor_types == {"F32": summary.tensor_count}
    assert summary.kv_value_bytes == 4 and summary.kv_cache_bytes(1024) == 30 * 3 * 128 * 1024 * 4


def test_a_checkpoint_folder_missing_a_part_is_refused_by_name(tmp_path, checkpoint):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for missing, keep in (("config.json", ["model.safetensors", "tokenizer.json"]),
                          ("weights", ["config.json", "tokenizer.json"]),
                          ("a tokenizer", ["config.json", "model.safetensors"])):
        for f in folder.iterdir():
            f.unlink()
        for name in keep:
            (folder / name).symlink_to(checkpoint / name)
        with pytest.raises(ConfigError, match=rf"checkpoint {re.escape(str(folder))}: no {missing}"):
            checkpoint_digest(folder, sha256_file)
    (folder / "tokenizer.json").symlink_to(checkpoint / "tokenizer.json")
    (folder / "config.json").unlink()
    (folder / "config.json").write_text('{"hidden_size": 4}')
    with pytest.raises(ConfigError, match=r"config\.json has no model_type"):
        checkpoint_digest(folder, sha256_file)


def test_the_digest_covers_every_byte_and_a_pinned_digest_is_checked(tmp_path, checkpoint):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in checkpoint.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    digest = checkpoint_digest(copy, sha256_file)
    assert digest == checkpoint_digest(checkpoint, sha256_file)
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    assert checkpoint_digest(copy, sha256_file) != digest
    manifest = tmp_path / "c.yaml"
    manifest.write_text(MANIFEST.format(path=copy).replace("checkpoint: {", f"checkpoint: {{sha256: {digest}, "))
    with pytest.raises(ConfigError, match=rf"digest of checkpoint {re.escape(str(copy))} is .*expects {digest}"):
        materialize(load_candidate(manifest), tmp_path / "cache")
    manifest.write_text(MANIFEST.format(path=copy).replace("format: hf", "format: gguf"))
    with pytest.raises(ConfigError, match="format 'gguf' needs an 'artifact' block"):
        load_candidate(manifest)


def test_the_transformers_adapter_keeps_the_device_contract(checkpoint):
    from edgeready.adapters.transformers_device import TransformersDevice

    dev = TransformersDevice(checkpoint, threads=2, n_ctx=512, prompt_style="few-shot")
    try:
        context = "The capital of France is"
        greedy = GenerationRequest(prompt=context, max_tokens=3, logprobs=True)
        a, b = dev.generate([greedy, greedy])
        assert a.text == b.text and a.completion_tokens == 3
        assert a.timings.first_token_s is not None and a.timings.prompt_eval_s > 0
        # The same logits read by the decoder that picked the tokens and by the scorer.
        [scored] = dev.loglikelihood([(context, a.text)])
        assert scored.greedy and scored.tokens == 3
        assert scored.logprob == pytest.approx(sum(a.token_logprobs), abs=1e-3)
        stopped = dev.generate([GenerationRequest(prompt=context, max_tokens=12, stop=(".",))])[0]
        assert "." not in stopped.text and stopped.finish_reason == "stop"
        sampled = [GenerationRequest(prompt="Paris is", max_tokens=12, temperature=1.0, seed=s) for s in (1, 1, 2)]
        one, again, other = dev.generate(sampled)
        assert one.text == again.text != other.text  # reproducible per seed
        with pytest.raises(ValueError, match="exceeds n_ctx 512"):
            dev.generate([GenerationRequest(prompt="word " * 600, max_tokens=4)])
    finally:
        dev.close()


def _compile(manifest: Path, out: Path, *quants: str) -> subprocess.CompletedProcess[str]:
    args = [a for q in quants for a in ("--quant", q)]
    return subprocess.run([sys.executable, "-m", "edgeready.compile", "--hf", str(manifest), *args, "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ.copy())


def test_compile_refuses_what_it_cannot_make(tmp_path, checkpoint):
    manifest = tmp_path / "smollm2-135m-hf.yaml"
    manifest.write_text(MANIFEST.format(path=checkpoint))
    proc = _compile(manifest, tmp_path / "out", "Q9_X")
    assert proc.returncode == 2 and "--quant Q9_X: not a type llama_model_quantize makes" in proc.stderr
    proc = _compile(ROOT / "candidates" / "gemma3-270m-q4km.yaml", tmp_path / "out", "Q8_0")
    assert proc.returncode == 2 and "is gguf, not a checkpoint (format: hf)" in proc.stderr
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in checkpoint.iterdir():
        (odd / f.name).symlink_to(f)
    (odd / "config.json").unlink()
    config = json.loads((checkpoint / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchForCausalLM"]}))
    proc = _compile(odd, tmp_path / "out", "Q8_0")
    assert proc.returncode == 2 and f"checkpoint {odd}: llama.cpp's converter failed" in proc.stderr, proc.stderr
    assert "NoSuchForCausalLM" in proc.stderr


@pytest.mark.e2e
def test_round_trip_checkpoint_gates_compile_and_conformance(tmp_path, checkpoint):
    manifest = tmp_path / "smollm2-135m-hf.yaml"
    manifest.write_text(MANIFEST.format(path=checkpoint))
    out = tmp_path / "compiled"
    proc = _compile(manifest, out, "Q8_0", "Q4_K_M")
    assert proc.returncode == 0, proc.stderr[-3000:]
    compiled = [out / "smollm2-135m-hf-q80.yaml", out / "smollm2-135m-hf-q4km.yaml"]
    assert proc.stdout.split() == [str(p) for p in compiled]
    prov = json.loads((out / "smollm2-135m-hf-q4km.provenance.json").read_text())
    assert prov["checkpoint_digest"] == checkpoint_digest(checkpoint, sha256_file)
    assert prov["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "convert_hf_to_gguf" in prov["converter"]
    reports = tmp_path / "reports"
    proc = run_gate("-m", "device", "--target", str(FIXTURES / "e2e-hf.yaml"), "--candidate", str(manifest),
                    *[a for c in compiled for a in ("--candidate", str(c))], "--reports", str(reports), timeout=1200)
    doc = json.loads((reports / "verdict.json").read_text())
    by = {v["candidate"]: v["gates"] for v in doc["verdicts"]}
    assert set(by) == {"smollm2-135m-hf", "smollm2-135m-hf-q80", "smollm2-135m-hf-q4km"}, proc.stdout[-3000:]
    for name, gates in by.items():
        assert all(g["status"] in ("pass", "fail") for g in gates.values()), (name, proc.stdout[-3000:])
    hf = by["smollm2-135m-hf"]
    assert hf["accuracy"]["measurement"]["provenance"]["adapter"]["adapter"] == "transformers-device"
    assert "safetensors" in hf["memory"]["measurement"]["details"]["weights_meter"]
    assert "conformance" not in hf  # the checkpoint is the base, derived from nothing here
    q8, q4 = (by[f"smollm2-135m-hf-{s}"]["conformance"] for s in ("q80", "q4km"))
    for conf in (q8, q4):
        structural = conf["measurement"]["details"]["structural"]
        assert {c["name"] for c in structural} >= {"architecture", "vocabulary", "tokenizer", "special_tokens"}
        assert all(c["passed"] for c in structural), structural
        assert "checkpoint's float32 logits" in conf["measurement"]["meter"]
    # Fewer bits, further from the checkpoint: and Q8_0 is close to it.
    assert q8["value"] < q4["value"] < 0.3 and q8["value"] < 0.02
    assert q8["measurement"]["details"]["same_top_pct"] > q4["measurement"]["details"]["same_top_pct"] > 80
