"""The device adapter on the real packaged models: determinism, stops, log-probabilities, chat."""

import dataclasses
import math

import pytest

from edgeready.adapters.base import Adapter
from edgeready.adapters.llama_cpp_device import LlamaCppDevice
from edgeready.datasets.countries import load_countries_qa
from edgeready.datasets.sampling import stratified_sample
from edgeready.prompts import qa_request
from edgeready.records import GenerationRequest


@pytest.fixture(scope="module")
def gemma(gemma_path):
    device = LlamaCppDevice(gemma_path, threads=2, n_ctx=1024, name="gemma")
    yield device
    device.close()


@pytest.fixture(scope="module")
def questions():
    return [qa_request(it, 12) for it in stratified_sample(load_countries_qa(), 6, 1)]


def test_it_is_an_adapter(gemma):
    assert isinstance(gemma, Adapter)
    info = gemma.describe()
    assert info["threads"] == 2 and info["n_ctx"] == 1024 and "llama_cpp_python" in info


def test_greedy_answers_do_not_depend_on_request_order(gemma, gemma_path, questions):
    forward = [r.text for r in gemma.generate(questions)]
    backward = [r.text for r in gemma.generate(list(reversed(questions)))][::-1]
    fresh = LlamaCppDevice(gemma_path, threads=1, n_ctx=1024)
    try:
        alone = [fresh.generate([q])[0].text for q in questions[::2]]
    finally:
        fresh.close()
    assert forward == backward
    assert alone == forward[::2]
    assert gemma.prompt_tokens_reused > 0  # the few-shot preamble was reused, not re-evaluated


def test_stop_sequence_and_token_counts(gemma, questions):
    r = gemma.generate([questions[0]])[0]
    assert "\n" not in r.text
    assert r.prompt_tokens > 50 and 1 <= r.completion_tokens <= 12
    assert r.timings.total_s >= r.timings.prompt_eval_s > 0


def test_max_tokens_bounds_generation(gemma):
    r = gemma.generate([GenerationRequest(prompt="Once upon a time", max_tokens=5)])[0]
    assert r.completion_tokens == 5 and r.finish_reason == "length"


def test_logprobs_one_per_token_and_valid(gemma):
    r = gemma.generate([GenerationRequest(prompt="The capital of France is", max_tokens=6, logprobs=True)])[0]
    assert r.token_logprobs is not None and len(r.token_logprobs) == r.completion_tokens
    assert all(lp <= 0 and math.isfinite(lp) for lp in r.token_logprobs)
    plain = gemma.generate([GenerationRequest(prompt="The capital of France is", max_tokens=6)])[0]
    assert plain.text == r.text and plain.token_logprobs is None


def test_seeded_sampling_repeats_and_seeds_differ(gemma):
    def sample(seed):
        req = GenerationRequest(prompt="This is a passage from Wikipedia about Peru:", max_tokens=24,
                                temperature=1.0, seed=seed)
        return gemma.generate([req])[0].text

    a, b, c = sample(1), sample(1), sample(2)
    assert a == b
    assert a != c


def test_prompt_longer_than_context_is_an_error(gemma):
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        gemma.generate([GenerationRequest(prompt="word " * 2000, max_tokens=4)])


def test_instruct_model_uses_its_chat_template(smollm_path):
    device = LlamaCppDevice(smollm_path, threads=2, n_ctx=1024, prompt_style="chat")
    try:
        item = stratified_sample(load_countries_qa(), 1, 0)[0]
        req = qa_request(item, 24)
        rendered = device.render_chat(req.messages)
        assert "<|im_start|>user" in rendered and rendered.rstrip().endswith("<|im_start|>assistant")
        r = device.generate([req])[0]
        assert r.text.strip() and r.completion_tokens >= 1
    finally:
        device.close()


def test_shared_preamble_is_evaluated_once(gemma_path, questions):
    device = LlamaCppDevice(gemma_path, threads=1, n_ctx=1024)
    try:
        device.generate(questions[:1])
        before = device.prompt_tokens_evaluated
        texts = [r.text for r in device.generate(questions[1:])]
        per_question = (device.prompt_tokens_evaluated - before) / len(questions[1:])
        bare = [r.text for r in device.generate([dataclasses.replace(q, shared_prefix="") for q in questions[1:]])]
    finally:
        device.close()
    # Only each question's own tokens are decoded again (the preamble is about 90 tokens).
    assert per_question < 25
    assert texts == bare
