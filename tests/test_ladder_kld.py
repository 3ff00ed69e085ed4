"""The compression ladder, GGUF conformance and KL divergence, on the packaged Gemma 3 270M.

One small ladder (Q8_0, Q4_0, Q2_K, Q2_K with a Q4_0 embedding, 2 blocks pruned) is built once into
a temporary directory; KLD (base, itself, Q8_0, Q4_0, Q2_K) runs on the first ~2,000 characters of
the shipped text at n_ctx 128 (3 windows, 189 scored tokens) so the whole module stays under a
minute. Two threads only when llama.cpp's OpenMP threads wait passively in this process: on a
shared 2-core machine spinning threads make threads=2 several times slower than 1 (see
edgeready/kld.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgeready.candidates import load_candidate, materialize, resolve_candidate, sha256_file
from edgeready.config_errors import ConfigError
from edgeready.conformance import ArrayDigest, check_conformance, failures, read_header
from edgeready.kld import OMP_PASSIVE, default_text, kl_divergence, kl_divergence_many, kld_table
from edgeready.ladder import build_ladder, build_ladder_entries, format_table, main, plan_ladder, search_order
from tests.conftest import ROOT

CACHE = ROOT / ".cache"
KLD_TEXT = default_text()[:2000]
KLD_CTX = 128
THREADS = 2 if OMP_PASSIVE else 1
NAMES = {
    "gemma3-270m-q80": "Q8_0",
    "gemma3-270m-q40": "Q4_0",
    "gemma3-270m-q2k": "Q2_K",
    "gemma3-270m-q2k-embq40": "Q2_K",
    "gemma3-270m-q4km-prune2": "Q4_K_M",
}


@pytest.fixture(scope="module")
def base():
    return resolve_candidate("gemma3-270m-q4km", ROOT / "candidates")


@pytest.fixture(scope="module")
def ladder(base, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ladder")
    manifests = build_ladder(base, out, CACHE, quants=("Q8_0", "Q4_0", "Q2_K"), prune=(2,))
    manifests += build_ladder(base, out, CACHE, quants=("Q2_K",), embedding_type="q4_0", prune=())
    return {load_candidate(m).name: m for m in manifests}


def _gguf(manifest: Path) -> Path:
    cand = load_candidate(manifest)
    return manifest.parent / str(cand.artifact.path)


@pytest.fixture(scope="module")
def kld(ladder, gemma_path, tmp_path_factory) -> dict[str, object]:
    """Five model runs: the base once, then itself, Q4_0 and Q2_K against its stored distributions,
    then Q8_0 through the single-candidate API, which must reuse them."""
    cache = tmp_path_factory.mktemp("kld-cache")
    names = ["self", "gemma3-270m-q40", "gemma3-270m-q2k"]
    paths = [gemma_path] + [_gguf(ladder[n]) for n in names[1:]]
    results = dict(zip(names, kl_divergence_many(gemma_path, paths, KLD_TEXT, n_ctx=KLD_CTX, threads=THREADS,
                                                 cache_dir=cache), strict=True))
    stored = sorted((cache / "kld").iterdir())
    results["gemma3-270m-q80"] = kl_divergence(gemma_path, _gguf(ladder["gemma3-270m-q80"]), KLD_TEXT,
                                               n_ctx=KLD_CTX, threads=THREADS, cache_dir=cache)
    return {"cache": cache, "stored": stored, **results}


# -- ladder ----------------------------------------------------------------------------------------


def test_manifests_validate_with_relative_paths_and_matching_sha(ladder, base):
    assert set(ladder) == set(NAMES)
    for name, manifest in ladder.items():
        cand = load_candidate(manifest)
        assert cand.quantization == NAMES[name]
        assert cand.strategy == ("pruning" if "prune" in name else "quantization")
        assert cand.base_model == base.base_model and cand.prompt_style == "few-shot"
        assert cand.artifact.path == f"{name}.gguf"  # relative to the manifest
        assert cand.artifact.sha256 == sha256_file(manifest.parent / cand.artifact.path)
        path, digest = materialize(cand, CACHE)
        assert path == manifest.parent / f"{name}.gguf" and digest == cand.artifact.sha256
        assert "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818" in cand.description
        # Resolvable by name from the generated directory, like any candidate.
        assert resolve_candidate(name, manifest.parent).name == name


def test_sizes_and_bits_decrease_down_the_ladder(ladder, gemma_path):
    order = ["gemma3-270m-q80", "gemma3-270m-q40", "gemma3-270m-q2k", "gemma3-270m-q2k-embq40"]
    headers = [read_header(_gguf(ladder[n])) for n in order]
    sizes = [h.file_bytes for h in headers]
    bits = [h.bits_per_weight for h in headers]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert bits == sorted(bits, reverse=True)
    # The embedding dominates: retyping it (Q8_0 -> Q4_0) saves far more than the Q4_0 -> Q2_K step.
    assert sizes[2] - sizes[3] > 3 * (sizes[1] - sizes[2])
    assert sizes[0] > gemma_path.stat().st_size > sizes[1]
    # Search order: size ascending.
    ordered = [load_candidate(m).name for m in search_order(list(ladder.values()))]
    assert ordered[0] == "gemma3-270m-q2k-embq40" and ordered[-1] == "gemma3-270m-q80"


def test_pruned_variant_drops_blocks_and_keeps_the_rest_byte_identical(ladder, gemma_path):
    pruned = read_header(_gguf(ladder["gemma3-270m-q4km-prune2"]))
    base = read_header(gemma_path)
    assert base.arch_value("block_count") == 18 and pruned.arch_value("block_count") == 16
    assert len(pruned.tensors) == len(base.tensors) - 2 * 13  # 13 tensors per Gemma 3 block
    assert pruned.kv["general.file_type"] == base.kv["general.file_type"]
    # Blocks 15 and 16 are gone: the old block 17 is the new block 15, bytes unchanged.
    old = {t.name: t for t in base.tensors}
    new = {t.name: t for t in pruned.tensors}
    with gemma_path.open("rb") as fb, pruned.path.open("rb") as fp:
        for suffix in ("ffn_down.weight", "attn_q.weight"):
            a, b = old[f"blk.17.{suffix}"], new[f"blk.15.{suffix}"]
            fb.seek(base.data_offset + a.offset)
            fp.seek(pruned.data_offset + b.offset)
            assert fb.read(a.n_bytes) == fp.read(b.n_bytes)


def test_existing_variants_are_reused_and_damaged_ones_rebuilt(ladder, base):
    out = ladder["gemma3-270m-q40"].parent
    entries = build_ladder_entries(base, out, CACHE, quants=("Q8_0", "Q4_0", "Q2_K"), prune=(2,))
    assert all(e.reused for e in entries)
    assert "reused" in format_table(entries)
    damaged = out / "gemma3-270m-q40.gguf"
    with damaged.open("r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))
    again = build_ladder_entries(base, out, CACHE, quants=("Q4_0",), prune=())
    assert not again[0].reused
    assert sha256_file(damaged) == load_candidate(ladder["gemma3-270m-q40"]).artifact.sha256


def test_cli_prints_the_table(ladder, capsys):
    out = ladder["gemma3-270m-q80"].parent
    assert main(["--out", str(out), "--quants", "Q8_0", "--prune", "", "--cache", str(CACHE),
                 "--candidates", str(ROOT / "candidates")]) == 0
    printed = capsys.readouterr().out
    assert "gemma3-270m-q80" in printed and "size MiB" in printed and "reused" in printed


def test_incompatible_embedding_type_is_refused_before_llama_cpp_aborts(base, gemma_path):
    # Gemma's embedding rows hold 640 values; K-quant blocks hold 256 (llama.cpp asserts and aborts).
    with pytest.raises(ConfigError, match=r"rows of 640 .* Q2_K's block of 256.*q4_0"):
        plan_ladder(base, read_header(gemma_path), embedding_type="q2_k")
    with pytest.raises(ConfigError, match="unknown quantization"):
        plan_ladder(base, read_header(gemma_path), quants=("Q9_9",))


# -- conformance -----------------------------------------------------------------------------------


def test_variants_conform_to_their_base(ladder, gemma_path):
    for name, manifest in ladder.items():
        sha = load_candidate(manifest).artifact.sha256
        checks = check_conformance(gemma_path, _gguf(manifest), sha)
        assert [c.name for c in checks] == [
            "architecture", "file_type", "tokenizer", "special_tokens", "context_length", "sha256"
        ]
        assert not failures(checks), (name, failures(checks))
        file_type = next(c for c in checks if c.name == "file_type")
        assert "base Q4_K_M (15)" in file_type.detail


def test_other_model_fails_architecture_and_tokenizer(gemma_path, smollm_path):
    checks = {c.name: c for c in check_conformance(gemma_path, smollm_path, None)}
    assert "sha256" not in checks
    assert not checks["architecture"].passed and "candidate llama" in checks["architecture"].detail
    assert not checks["tokenizer"].passed
    assert "model" in checks["tokenizer"].detail and "tokens" in checks["tokenizer"].detail
    assert not checks["special_tokens"].passed and not checks["context_length"].passed
    assert checks["file_type"].passed and "Q4_1 (3)" in checks["file_type"].detail


def test_sha256_mismatch_fails(ladder, gemma_path):
    checks = {c.name: c for c in check_conformance(gemma_path, _gguf(ladder["gemma3-270m-q80"]), "0" * 64)}
    assert not checks["sha256"].passed and "manifest " + "0" * 64 in checks["sha256"].detail


def test_truncated_or_corrupt_gguf_is_a_clear_error(ladder, gemma_path, tmp_path):
    src = _gguf(ladder["gemma3-270m-q2k-embq40"])
    header = read_header(src)
    with src.open("rb") as fh:
        head = fh.read(header.data_offset + 4096)
    cut_data = tmp_path / "cut-data.gguf"
    cut_data.write_bytes(head)
    with pytest.raises(ConfigError, match=r"cut-data\.gguf: truncated GGUF: tensor \S+ .* ends at byte \d+ "
                                          r"but the file has \d+ bytes"):
        check_conformance(gemma_path, cut_data, None)
    cut_header = tmp_path / "cut-header.gguf"
    cut_header.write_bytes(head[:100_000])  # inside the 262k-token vocabulary
    with pytest.raises(ConfigError, match=r"cut-header\.gguf: truncated or corrupt GGUF: (length of )?tokenizer\.ggml"):
        check_conformance(gemma_path, cut_header, None)
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("hello, this is not a model file at all")
    with pytest.raises(ConfigError, match=r"text\.gguf: not a GGUF file: magic b'hell'"):
        check_conformance(not_gguf, gemma_path, None)
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(head[:16] + b"\xff" * 8 + head[24:])  # key/value count = 2**64 - 1
    with pytest.raises(ConfigError, match=r"corrupt\.gguf: corrupt GGUF: key/value count .* not a plausible"):
        read_header(corrupt)


def test_header_reader_agrees_with_gguf_reader(smollm_path):
    """The fast header walk reads what the gguf package's own GGUFReader reads."""
    from gguf import GGUFReader

    ours = read_header(smollm_path)
    ref = GGUFReader(smollm_path)
    assert [(t.name, list(t.shape), t.type_name, t.n_bytes) for t in ours.tensors] == [
        (t.name, [int(d) for d in t.shape], t.tensor_type.name, int(t.n_bytes)) for t in ref.tensors
    ]
    assert ours.data_offset == ref.data_offset
    fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert set(fields) == set(ours.kv)
    for key, f in fields.items():
        mine = ours.kv[key]
        if isinstance(mine, ArrayDigest):
            assert mine.count == len(f.data), key
        elif isinstance(mine, float):
            assert math.isclose(mine, float(f.contents()), rel_tol=1e-6), key
        else:
            assert mine == f.contents(), key


# -- KL divergence ---------------------------------------------------------------------------------


def test_kld_of_base_against_itself_is_zero(kld):
    r = kld["self"]
    assert r.n_tokens == 3 * (KLD_CTX // 2 - 1)
    # Only the 16-bit storage of the base's log-probs separates the two: ~1e-6 on average.
    assert abs(r.kld_mean) < 1e-5 and r.kld_max < 1e-3
    assert r.same_top_pct == 100.0
    assert r.ppl_candidate == pytest.approx(r.ppl_base, rel=1e-9)
    assert r.ln_ppl_ratio == pytest.approx(0.0, abs=1e-12)


def test_kld_rises_down_the_ladder(kld):
    names = ["gemma3-270m-q80", "gemma3-270m-q40", "gemma3-270m-q2k"]
    means = [kld[n].kld_mean for n in names]
    assert means == sorted(means) and means[0] > 1e-4
    assert [kld[n].kld_p99 for n in names] == sorted(kld[n].kld_p99 for n in names)
    assert kld["gemma3-270m-q80"].same_top_pct > kld["gemma3-270m-q2k"].same_top_pct
    assert kld["gemma3-270m-q80"].kld_mean < 0.05 < kld["gemma3-270m-q40"].kld_mean
    for n in names:
        r = kld[n]
        assert r.ppl_base == kld["self"].ppl_base
        assert r.kld_median <= r.kld_p90 <= r.kld_p95 <= r.kld_p99 <= r.kld_max
        assert 0 < r.kld_stderr < r.kld_mean and len(r.per_token) == r.n_tokens
    table = kld_table([kld[n] for n in names], names)
    assert table.count("\n| gemma3-270m-") == 3


def test_kld_reuses_the_stored_base_distributions(kld):
    # Same base, text and settings: the Q8_0 run read the stored distributions, no second copy.
    cache: Path = kld["cache"]
    assert len(kld["stored"]) == 1
    assert sorted((cache / "kld").iterdir()) == kld["stored"]
    assert sorted(p.name for p in kld["stored"][0].iterdir()) == ["codes.npy", "meta.npz"]
    assert kld["gemma3-270m-q80"].n_tokens == kld["self"].n_tokens
