"""The server adapter against a real llama_cpp.server on SmolLM2, and retries against a fake server.

The fake HTTP server exists only to inject failures (503, 429, 400, a missing usage block) that a real
server will not produce on demand; everything about generation is checked on the real one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from edgeready.adapters.base import Adapter
from edgeready.adapters.openai_server import OpenAIServerAdapter, ServerRequestError
from edgeready.records import GenerationRequest
from edgeready.server_process import LlamaCppServer, ServerStartError, free_port
from tests.fake_server import COMPLETION_BODY, FakeServer, fake_adapter

ALIAS = "smollm2-test"
KEY = "sk-edgeready-test-0123456789abcdef"


def _server_processes(port: int) -> list[psutil.Process]:
    """llama_cpp.server processes listening on `port` (other people's servers on this machine excluded)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "llama_cpp.server" in cmd and str(port) in cmd:
            found.append(proc)
    return found


# -- the real server ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_server(smollm_path: Path) -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(smollm_path, n_ctx=512, threads=1, n_batch=64, model_alias=ALIAS, startup_timeout_s=60)
    try:
        yield server
    finally:
        pid, port = server.pid, server.port
        server.stop()
        if pid is not None and port is not None:
            assert not psutil.pid_exists(pid), f"llama_cpp.server pid {pid} survived stop()"
            assert not _server_processes(port)


@pytest.fixture
def server(llama_server: LlamaCppServer) -> LlamaCppServer:
    # Restarted if a test (test_stop_leaves_no_process) stopped it, so test order does not matter.
    return llama_server.start()


@pytest.fixture
def adapter(server: LlamaCppServer) -> Iterator[OpenAIServerAdapter]:
    with OpenAIServerAdapter(server.base_url, ALIAS, concurrency=2, timeout_s=60, max_retries=1) as a:
        yield a


PROMPT = GenerationRequest(prompt="The capital of France is", max_tokens=6, stop=("\n",))
CHAT = GenerationRequest(prompt="", messages=(("user", "What is the capital of France?"),), max_tokens=6)


def test_it_is_an_adapter_and_describes_the_server(adapter: OpenAIServerAdapter, server: LlamaCppServer):
    assert isinstance(adapter, Adapter)
    info = adapter.describe()
    assert info["base_url"] == server.base_url and info["model"] == ALIAS
    assert info["server_models"] == [ALIAS]
    assert info["concurrency"] == 2 and info["max_retries"] == 1 and info["auth"] == "none"


def test_completions_return_text_and_usage(adapter: OpenAIServerAdapter):
    r = adapter.generate([PROMPT])[0]
    assert r.text.strip() and "\n" not in r.text
    assert r.served_by == "server" and r.meta["endpoint"] == "/completions"
    assert r.prompt_tokens > 0 and 1 <= r.completion_tokens <= 6
    assert r.finish_reason in ("stop", "length") and r.timings.total_s > 0
    assert "usage_missing" not in r.meta
    assert r.meta["bytes_sent"] > 50 and r.meta["bytes_received"] > 50 and r.meta["attempts"] == 1


def test_chat_returns_text_and_usage(adapter: OpenAIServerAdapter):
    r = adapter.generate([CHAT])[0]
    assert r.text.strip() and r.meta["endpoint"] == "/chat/completions"
    # The server applied the chat template: far more prompt tokens than the question alone.
    assert r.prompt_tokens > 15 and 1 <= r.completion_tokens <= 6


def test_greedy_is_deterministic(adapter: OpenAIServerAdapter):
    first = adapter.generate([PROMPT, CHAT])
    second = adapter.generate([PROMPT, CHAT])
    assert [r.text for r in first] == [r.text for r in second]
    assert [r.completion_tokens for r in first] == [r.completion_tokens for r in second]


def test_order_is_preserved_with_concurrency_2(adapter: OpenAIServerAdapter, server: LlamaCppServer):
    prompts = [
        GenerationRequest(prompt=p, max_tokens=4)
        for p in ("The capital of Italy is", "1, 2, 3, 4,", "Roses are red, violets are", "The opposite of hot is")
    ]
    with OpenAIServerAdapter(server.base_url, ALIAS, concurrency=1) as one_by_one:
        expected = [(r.text, r.prompt_tokens) for r in one_by_one.generate(prompts)]
    got = [(r.text, r.prompt_tokens) for r in adapter.generate(prompts)]
    assert got == expected
    assert len(set(expected)) == len(expected)  # distinct answers, so a swap would show


def test_logprobs_parsed_from_both_apis(adapter: OpenAIServerAdapter):
    plain, chat = adapter.generate(
        [
            GenerationRequest(prompt=PROMPT.prompt, max_tokens=5, logprobs=True),
            GenerationRequest(prompt="", messages=CHAT.messages, max_tokens=5, logprobs=True),
        ]
    )
    for r in (plain, chat):
        assert r.token_logprobs is not None and len(r.token_logprobs) == r.completion_tokens
        assert all(lp <= 0 for lp in r.token_logprobs)
    assert adapter.generate([PROMPT])[0].token_logprobs is None  # not asked, not returned


def test_counters_add_up_bytes(adapter: OpenAIServerAdapter):
    responses = adapter.generate([PROMPT, CHAT])
    c = adapter.counters
    assert c.requests == 2 and c.attempts == 2 and c.retries == 0 and c.errors == {}
    assert c.bytes_sent == sum(r.meta["bytes_sent"] for r in responses)
    assert c.bytes_received == sum(r.meta["bytes_received"] for r in responses)


def test_server_peak_memory_is_readable(server: LlamaCppServer):
    peak = server.peak_rss_bytes()
    assert 20 * 2**20 < peak < 4 * 2**30  # a Python process holding a 135M-parameter model


def test_startup_failure_reports_the_log_tail(tmp_path: Path):
    not_a_model = tmp_path / "broken.gguf"
    not_a_model.write_bytes(b"not a gguf file")
    with pytest.raises(ServerStartError, match=r"exited with code .*log"):
        LlamaCppServer(not_a_model, n_ctx=128, threads=1, startup_timeout_s=30).start()


def test_stop_leaves_no_process(server: LlamaCppServer):
    pid, port = server.pid, server.port
    assert pid is not None and port is not None and _server_processes(port)
    server.stop()
    assert not server.running and server.pid is None
    assert not psutil.pid_exists(pid)
    assert not _server_processes(port)
    server.stop()  # idempotent


# -- the fake server (failure injection only) -----------------------------------------------------
def test_retry_on_fake_server_503_twice_then_success(fake: FakeServer):
    fake.script = [(503, {}, {"error": {"message": "loading"}})] * 2
    with fake_adapter(fake) as a:
        r = a.generate([PROMPT])[0]
        assert r.text == " Paris" and r.prompt_tokens == 5 and r.meta["attempts"] == 3
        assert len(fake.seen) == 3 and a.counters.retries == 2 and a.counters.errors == {"http_503": 2}
        # The bytes of every attempt are counted: three bodies sent.
        assert r.meta["bytes_sent"] == sum(len(body) for _, _, body in fake.seen)


def test_retry_on_fake_server_is_bounded(fake: FakeServer):
    fake.script = [(500, {}, {"error": {"message": "boom"}})] * 10
    with fake_adapter(fake, max_retries=2) as a, pytest.raises(ServerRequestError) as info:
        a.generate([PROMPT])
    assert len(fake.seen) == 3 and info.value.attempts == 3 and info.value.status == 500
    assert "HTTP 500" in str(info.value) and "boom" in str(info.value)


def test_retry_on_fake_server_429_respects_retry_after(fake: FakeServer):
    fake.script = [(429, {"Retry-After": "1"}, {"error": {"message": "slow down"}})]
    with fake_adapter(fake) as a:
        start = time.perf_counter()
        assert a.generate([PROMPT])[0].text == " Paris"
        assert time.perf_counter() - start >= 0.95  # backoff alone would have waited at most 0.01 s
    assert len(fake.seen) == 2


def test_retry_on_fake_server_retry_after_is_capped(fake: FakeServer):
    fake.script = [(429, {"Retry-After": "3600"}, b"")]
    with fake_adapter(fake, retry_after_max_s=0.1) as a:
        start = time.perf_counter()
        assert a.generate([PROMPT])[0].text == " Paris"
        assert time.perf_counter() - start < 2


def test_retry_on_fake_server_400_is_not_retried(fake: FakeServer):
    fake.script = [(400, {}, {"error": {"message": "max_tokens is too large"}})]
    with fake_adapter(fake) as a, pytest.raises(ServerRequestError, match=r"HTTP 400.*max_tokens is too large"):
        a.generate([PROMPT])
    assert len(fake.seen) == 1 and a.counters.retries == 0


def test_retry_on_fake_server_missing_usage_is_marked(fake: FakeServer):
    fake.script = [(200, {}, {"choices": [{"message": {"role": "assistant", "content": "Paris"}}]})]
    with fake_adapter(fake) as a:
        r = a.generate([CHAT])[0]
    assert r.text == "Paris" and r.prompt_tokens == 0 and r.completion_tokens == 0
    assert r.meta["usage_missing"] is True and r.finish_reason == "unknown"


def test_retry_on_fake_server_routes_and_maps_requests(fake: FakeServer):
    req = GenerationRequest(prompt="Q: x\nA:", max_tokens=7, temperature=0.5, seed=3, stop=("\n",), logprobs=True)
    chat = GenerationRequest(prompt="", messages=(("system", "Be brief."), ("user", "Hi")), logprobs=True)
    with fake_adapter(fake) as a:
        a.generate([req, chat])
    with fake_adapter(fake, api="chat") as a:
        a.generate([GenerationRequest(prompt="Hello")])
    (p1, _, b1), (p2, _, b2), (p3, _, b3) = [(p, h, json.loads(b)) for p, h, b in fake.seen]
    assert p1 == "/v1/completions" and p2 == "/v1/chat/completions" and p3 == "/v1/chat/completions"
    assert b1 == {
        "model": "fake-model", "prompt": "Q: x\nA:", "max_tokens": 7, "temperature": 0.5, "seed": 3,
        "stop": ["\n"], "logprobs": 1, "stream": False,
    }  # fmt: skip
    assert b2["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert b2["logprobs"] is True and b2["top_logprobs"] == 1 and "stop" not in b2
    assert b3["messages"] == [{"role": "user", "content": "Hello"}]
    with fake_adapter(fake, api="completions") as a, pytest.raises(ValueError, match="only messages"):
        a.generate([chat])
    both = GenerationRequest(prompt="Q: y\nA:", messages=(("user", "y"),))
    with fake_adapter(fake, api="completions") as a:
        a.generate([both])
    assert json.loads(fake.seen[-1][2])["prompt"] == "Q: y\nA:"


def test_retry_on_fake_server_chat_logprobs_format(fake: FakeServer):
    content = [{"token": "Pa", "logprob": -0.5}, {"token": "ris", "logprob": -0.25}]
    body = {"choices": [{"message": {"content": "Paris"}, "logprobs": {"content": content}, "finish_reason": "stop"}]}
    fake.script = [(200, {}, body)]
    with fake_adapter(fake) as a:
        r = a.generate([GenerationRequest(prompt="", messages=(("user", "?"),), logprobs=True)])[0]
    assert r.token_logprobs == (-0.5, -0.25) and r.mean_logprob == pytest.approx(-0.375)


def test_retry_on_fake_server_api_key_is_sent_and_never_leaked(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setenv("EDGEREADY_TEST_API_KEY", KEY)
    # A server that echoes the key back in its errors (some gateways do) must not leak it either.
    fake.script = [
        (200, {}, COMPLETION_BODY),
        (503, {}, {"error": {"message": f"overloaded for {KEY}"}}),
        (401, {}, {"error": {"message": f"invalid key {KEY}"}}),
    ]
    caplog.set_level(logging.DEBUG)
    with fake_adapter(fake, api_key_env="EDGEREADY_TEST_API_KEY") as a:
        a.generate([PROMPT])
        assert fake.seen[0][1]["Authorization"] == f"Bearer {KEY}"
        with pytest.raises(ServerRequestError) as info:
            a.generate([PROMPT])
        texts = [str(info.value), repr(info.value), repr(a), str(a.describe()), str(vars(a)), caplog.text]
    assert info.value.status == 401 and "invalid key ***" in str(info.value)
    assert a.describe()["auth"] == "bearer from $EDGEREADY_TEST_API_KEY"
    for text in texts:
        assert KEY not in text


def test_retry_on_fake_server_missing_key_env_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("EDGEREADY_TEST_API_KEY", raising=False)
    with pytest.raises(ValueError, match="EDGEREADY_TEST_API_KEY"):
        OpenAIServerAdapter("http://127.0.0.1:9/v1", "m", api_key_env="EDGEREADY_TEST_API_KEY")


def test_connection_refused_raises_after_max_retries():
    port = free_port()  # nothing listens there
    with OpenAIServerAdapter(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff_base_s=0.01) as a:
        with pytest.raises(ServerRequestError, match=r"after 3 attempt\(s\) \(max_retries=2\): connect") as info:
            a.generate([PROMPT])
        assert info.value.attempts == 3 and info.value.kind == "connect"
        assert a.counters.errors == {"connect": 3} and a.counters.retries == 2
        assert a.describe()["server_models"] is None and "server_models_error" in a.describe()


# -- streamed replies (the phone's server: edgeready/phone.py) --------------------------------------------------
def _sse(events: list[object], gap_s: float, *, done: bool = True):
    """An action writing server-sent events, one every gap_s seconds (chunked, as a streaming server does)."""

    def act(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        lines = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + ([b"data: [DONE]\n\n"] if done else [])
        for i, line in enumerate(lines):
            if i:
                time.sleep(gap_s)
            handler.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")

    return act


def test_a_streamed_reply_is_timed_from_its_events(fake):
    """Without usage or timings in the stream (llama-cpp-python's server), the content events are the tokens and
    their pace gives the generation time; the first one's arrival is the time to first token."""
    pieces = [" Pa", "ris", ",", " France"]
    fake.script.append(_sse([{"choices": [{"text": p, "finish_reason": None}]} for p in pieces]
                            + [{"choices": [{"text": "", "finish_reason": "stop"}]}], 0.1))
    with fake_adapter(fake, stream=True) as adapter:
        r = adapter.generate([GenerationRequest(prompt="Capital of France?", max_tokens=8)])[0]
    assert json.loads(fake.seen[-1][2])["stream"] is True
    assert r.text == " Paris, France" and r.finish_reason == "stop" and r.completion_tokens == 4
    assert r.prompt_tokens == 0 and "no usage" in r.meta["completion_tokens_from"]
    t = r.timings
    assert t.first_token_s is not None and t.first_token_s < 0.1 < t.total_s
    # 4 events 0.1 s apart: 0.1 s per token, 4 tokens.
    assert t.generation_s == pytest.approx(0.4, abs=0.06) and t.prompt_eval_s == pytest.approx(0.0, abs=0.06)
    assert r.meta["timings_from"].startswith("arrival")


def test_a_streamed_chat_reply_prefers_the_servers_usage_and_timings(fake):
    events = [{"choices": [{"delta": {"content": w}, "finish_reason": None}]} for w in ("Hel", "lo")]
    events.append({"choices": [{"delta": {}, "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 12, "completion_tokens": 2},
                   "timings": {"prompt_ms": 30.0, "predicted_ms": 50.0}})
    fake.script.append(_sse(events, 0.05))
    with fake_adapter(fake, stream=True, api="chat") as adapter:
        r = adapter.generate([GenerationRequest(prompt="", messages=(("user", "Hi"),), max_tokens=2)])[0]
    assert (r.text, r.prompt_tokens, r.completion_tokens, r.finish_reason) == ("Hello", 12, 2, "length")
    assert r.timings.prompt_eval_s == 0.03 and r.timings.generation_s == 0.05 and r.timings.first_token_s
    assert r.meta["timings_from"] == "the server's timings"


@pytest.mark.parametrize(("body", "done"), [
    ([], True), (["not an object"], True), ([{"choices": ["x"]}], True),
    ([{"error": {"message": "no free slot"}}], True),
    ([{"choices": [{"text": " Par", "finish_reason": None}]}], False),  # cut off: no [DONE], no finish_reason
])
def test_a_malformed_stream_is_a_bad_response(fake, body, done):
    fake.script.append(_sse(body, 0.0, done=done))
    with fake_adapter(fake, stream=True, max_retries=0) as adapter, pytest.raises(ServerRequestError) as err:
        adapter.generate([GenerationRequest(prompt="x", max_tokens=2)])
    assert err.value.kind == "bad_response" and "stream" in str(err.value)
