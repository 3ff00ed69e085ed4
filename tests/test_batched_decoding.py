"""Batched multi-sequence decoding (profile `parallel`, adapters/llama_cpp_batch.py) on the real packaged model.

What must hold: batched greedy answers are the single-stream ones (checked here on a sample; on all 854
embedded questions by bench/bench_batched.py, docs/PERFORMANCE.md); sampled answers are reproducible per seed;
a request that does not fit one slot is a configuration error naming the largest `parallel` that fits; a
decode llama.cpp refuses is a measurement error, never a shorter answer; the store keys batched answers apart.
"""

from __future__ import annotations

import pytest

from edgeready.adapters.cached import runtime_key
from edgeready.adapters.llama_cpp_device import LlamaCppDevice
from edgeready.datasets.countries import load_countries_qa
from edgeready.datasets.sampling import stratified_sample
from edgeready.errors import ConfigError, MeasurementError
from edgeready.prompts import qa_request
from edgeready.records import GenerationRequest
from edgeready.schema import Pair, Profile
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def questions():
    return [qa_request(it, 16) for it in stratified_sample(load_countries_qa(), 24, 3)]


@pytest.fixture(scope="module")
def single(gemma_path):
    device = LlamaCppDevice(gemma_path, threads=2, n_ctx=2048)
    yield device
    device.close()


def _samples(concept: str, n: int) -> list[GenerationRequest]:
    """The hallucination gate's shape: one greedy passage and n samples of one prompt, each its own seed."""
    return [GenerationRequest(prompt=f"{concept} is", max_tokens=24, temperature=1.0 if i else 0.0, seed=i)
            for i in range(n + 1)]


@pytest.mark.parametrize("parallel", [2, 8])
def test_batched_greedy_answers_are_the_single_stream_ones_here(gemma_path, single, questions, parallel):
    """On these 24 questions batched greedy answers are single stream's (on all 854, 2-3 differ:
    docs/PERFORMANCE.md); a changed kernel, slot or copy would change many."""
    want = [r.text for r in single.generate(questions)]
    batched = LlamaCppDevice(gemma_path, threads=2, n_ctx=2048, parallel=parallel)
    try:
        # Two calls: the second starts from the preamble the first left in its slots.
        got = [r.text for r in batched.generate(questions[:10])] + [r.text for r in batched.generate(questions[10:])]
        assert batched.describe()["parallel"] == parallel
        stats = batched.stats()
    finally:
        batched.close()
    assert got == want
    assert stats.prompt_tokens_reused > stats.prompt_tokens_evaluated  # the few-shot preamble was shared


def test_a_batched_answer_depends_on_the_request_and_parallel_alone(gemma_path):
    """Every step decodes the same rows whatever runs (adapters/llama_cpp_batch.py, "Fixed rows"), so a request
    gives the same text in one call with others, in a call per concept, alone, or in another order. Sampled
    texts are the sharp probe: a draw from the vocabulary's long tail turns on the last bits of a logit."""
    reqs = _samples("Lisbon", 2) + _samples("Nairobi", 2) + _samples("Quito", 2)
    batched = LlamaCppDevice(gemma_path, threads=2, n_ctx=2048, parallel=4)
    try:
        together = [r.text for r in batched.generate(reqs)]
        per_concept = [r.text for k in range(0, len(reqs), 3) for r in batched.generate(reqs[k:k + 3])]
        alone = [batched.generate([r])[0].text for r in reqs]
        reversed_ = [r.text for r in batched.generate(reqs[::-1])][::-1]
    finally:
        batched.close()
    assert together == per_concept == alone == reversed_


def test_batched_samples_are_reproducible_per_seed(gemma_path):
    reqs = _samples("Nairobi", 4) + _samples("Quito", 4)
    batched = LlamaCppDevice(gemma_path, threads=2, n_ctx=2048, parallel=8)
    try:
        first = batched.generate(reqs)
        again = batched.generate(reqs)
    finally:
        batched.close()
    assert [r.text for r in first] == [r.text for r in again]
    samples = [r.text for r in first[1:5]]
    assert len(set(samples)) > 1  # different seeds draw different passages
    assert all(r.timings.first_token_s is not None and r.timings.first_token_s <= r.timings.total_s for r in first)
    assert first[0].completion_tokens > 0 and first[0].timings.prompt_eval_s > 0


def test_a_request_that_does_not_fit_one_slot_names_the_largest_parallel_that_fits(gemma_path, questions):
    batched = LlamaCppDevice(gemma_path, threads=2, n_ctx=512, parallel=8)  # 64 cells a slot
    try:
        with pytest.raises(ConfigError, match=r"profile.parallel 8: .* the largest parallel that fits is [1-4]\b"):
            batched.generate(questions[:2])
    finally:
        batched.close()


def test_a_refused_decode_is_a_measurement_error_never_a_short_answer(gemma_path, single, questions,
                                                                         monkeypatch):
    """llama.cpp's refusal (no free KV cells) injected at its return code: this test fakes llama_decode's answer
    only, the decoder around it is the real one."""
    import llama_cpp

    import edgeready.adapters.llama_cpp_batch as batch

    real_decode = llama_cpp.llama_decode
    batched = LlamaCppDevice(gemma_path, threads=2, n_ctx=2048, parallel=4)
    try:
        monkeypatch.setattr(batch.llama_cpp, "llama_decode", lambda ctx, b: 1)
        with pytest.raises(MeasurementError, match="no free KV cells"):
            batched.generate(questions[:4])
        monkeypatch.setattr(batch.llama_cpp, "llama_decode", real_decode)
        # The failed call left nothing behind: the next one answers as a fresh adapter would.
        assert [r.text for r in batched.generate(questions[:4])] == [
            r.text for r in single.generate(questions[:4])]
    finally:
        batched.close()


def test_the_store_keys_batched_answers_apart_and_single_stream_keys_are_unchanged():
    one = runtime_key(n_ctx=2048, n_batch=64, prompt_style="few-shot")
    assert runtime_key(n_ctx=2048, n_batch=64, prompt_style="few-shot", parallel=1) == one
    assert "parallel" not in one["settings"]
    eight = runtime_key(n_ctx=2048, n_batch=64, prompt_style="few-shot", parallel=8)
    assert eight["settings"]["parallel"] == 8 and eight["decoder_source"] != one["decoder_source"]


def test_profile_parallel_is_validated():
    base = {"device": "d", "ram_mb": 1024, "app_memory_budget_mb": 512, "threads": 2, "n_ctx": 1024}
    assert Profile(**base).parallel == 1
    with pytest.raises(ValueError, match="parallel"):
        Profile(**base, parallel=0)


def test_a_gate_run_through_the_store_reaches_the_decoder_several_requests_at_a_time(tmp_path, questions):
    """The gates call the store-wrapped adapter (AdapterPool.cached): were it to pass one request per call,
    a batched adapter would decode one sequence at a time and `parallel` would buy nothing."""
    from edgeready.candidates import resolve_candidate
    from edgeready.pool import AdapterPool
    from edgeready.targets import load_target

    target = load_target(ROOT / "tests/fixtures/targets/e2e-speed-parallel.yaml")
    pair = Pair(resolve_candidate("gemma3-270m-q4km", ROOT / "candidates"), target)
    pool = AdapterPool(tmp_path, ROOT / "candidates")  # a fresh store: every request is a miss
    try:
        answers = pool.cached(pair).generate(questions[:12])
        live = pool.live(pair)
        assert live.describe()["parallel"] == target.profile.parallel == 4
        assert live._batcher.widest == 4  # type: ignore[attr-defined]
        assert all(a.text for a in answers)
    finally:
        pool.close()


def test_the_accuracy_gate_decodes_with_its_own_parallel_setting(tmp_path):
    """`gates.accuracy.parallel` (default: the profile's) picks the adapter the questions go to, and it may not
    exceed the profile's, which the memory gate measures at. No model loads: the store's adapter defers it."""
    from edgeready.candidates import resolve_candidate
    from edgeready.gates import gate_named
    from edgeready.run import Run
    from edgeready.targets import load_target

    text = (ROOT / "tests/fixtures/targets/e2e-speed-parallel.yaml").read_text()
    path = tmp_path / "device" / "t.yaml"
    path.parent.mkdir()
    cand = resolve_candidate("gemma3-270m-q4km", ROOT / "candidates")
    seen = {}
    for setting in (None, 1, 4):
        extra = "" if setting is None else f"\n    parallel: {setting}"
        path.write_text(text.replace("min_accuracy: 0.10", f"min_accuracy: 0.10{extra}"))
        target = load_target(path)
        run = Run.create([cand], [target], reports_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                         candidates_dir=ROOT / "candidates")
        try:
            inputs = gate_named("accuracy").gather(run, Pair(cand, target), target.gates.accuracy)
            seen[setting] = inputs.adapter.describe()["parallel"]
        finally:
            run.close()
    assert seen == {None: 4, 1: 1, 4: 4}
    path.write_text(text.replace("min_accuracy: 0.10", "min_accuracy: 0.10\n    parallel: 8"))
    with pytest.raises(ConfigError, match=r"gates\.accuracy\.parallel 8 exceeds profile\.parallel 4"):
        load_target(path)
