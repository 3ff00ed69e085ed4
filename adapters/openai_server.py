"""Server adapter: any OpenAI-compatible HTTP endpoint (llama.cpp server, vLLM, Ollama, MLC serve).

- Few-shot prompts go to /completions, requests that carry `messages` to /chat/completions (the server
  applies the model's chat template), decided per request unless `api` forces one.
- One httpx.Client for the adapter's life: keep-alive connections, pool sized to `concurrency`, so a
  latency measurement does not include a TCP handshake per request.
- Up to `concurrency` requests in flight (a thread pool); responses come back in request order.
- Bounded retries with full-jitter exponential backoff on failures before the server took the request
  (connect and send errors) and on 429 and 5xx (honouring Retry-After, capped). Other 4xx are the
  caller's fault and raise at once. A connection cut after the request was sent is never retried: the
  server may be generating it already, and a retry would run the same generation twice.
- Limits against a hostile or broken server: a reply still arriving `timeout_s` after its POST began is cut
  off (`deadline`: httpx's timeouts are per read, so a server dripping a byte at a time never trips them;
  one that falls silent mid-reply trips the per-read timeout, so an attempt ends within 2 x timeout_s at
  worst); a body longer than `max_response_bytes` is cut off while streaming, never held whole
  (`too_large`); a reply of the wrong shape is a `bad_response` naming the URL and the field, never a bare
  KeyError or AttributeError.
- The API key is read from an environment variable at construction, sent as a Bearer token, and kept
  out of describe(), repr, log records and error messages (it is redacted from server messages too).
- Each response's meta records the bytes sent and received (request and response bodies), which the
  offload adapter adds up as the network cost of sending a query away from the device.
- `stream=True` (the phone's server, edgeready/phone.py) asks for server-sent events and times them as they
  arrive: the first token's time, and the generation rate from the pace of the content events, where the
  server reports no `timings` of its own (llama.cpp's llama-server does; llama-cpp-python's does not). Without
  `usage` in the stream, the content events are counted as the completion's tokens (llama.cpp servers send
  one token per event) and the prompt's tokens are unknown (0), which the response's meta says.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from edgeready.adapters.base import AdapterStats
from edgeready.errors import ServerError
from edgeready.records import GenerationRequest, Response, Timings

log = logging.getLogger(__name__)

Api = Literal["auto", "completions", "chat"]

# Retrying a bad request cannot succeed; retrying overload (429) or a server fault (5xx) can.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRIES_LIMIT = 10
# Longest error text kept from a server's reply: enough for its message, not a whole HTML page.
MAX_ERROR_CHARS = 500
# Body bytes read from an error reply (4xx/5xx): its message is in the first few hundred.
MAX_ERROR_BODY_BYTES = 64 * 1024
# A completion of a few thousand tokens is tens of kilobytes; 8 MiB leaves room for logprobs.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 2**20
# Failures before the server took the request: retrying cannot run a generation twice. A read error,
# a cut connection or a read timeout come after, and are final.
RETRY_TRANSPORT_KINDS = frozenset({"connect", "timeout_connect", "timeout_pool", "write", "timeout_write"})
AFTER_SEND_KINDS = frozenset({"disconnected", "timeout_read"})


class ServerRequestError(ServerError):
    """A request that failed for good. `kind` is the error class counted in `counters.errors`."""

    def __init__(self, message: str, *, kind: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.attempts = attempts


class _Retry(Exception):
    """Internal: this attempt failed in a way another attempt may fix (raised only when one is left)."""

    def __init__(self, reason: str, retry_after: str | None = None, wire_bytes: int = 0):
        super().__init__(reason)
        self.reason, self.retry_after, self.wire_bytes = reason, retry_after, wire_bytes


class _Cut(Exception):
    """Internal: a body read stopped on purpose. `kind` is 'too_large' or 'deadline'."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


class _BadShape(ValueError):
    """Internal: valid JSON that is not a completion; the message says which field is wrong."""


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    wire_bytes: int  # as received, before any decompression
    # Streaming: (bytes read so far, time.perf_counter()) after each chunk, to time the events of the body.
    marks: tuple[tuple[int, float], ...] = ()


class _Secret:
    """Holds the key for redaction only; prints as a placeholder wherever it ends up."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def redact(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "<redacted>"


@dataclass
class ServerCounters:
    """Totals over the adapter's life, all attempts included (a retried request is sent twice)."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            return {
                "requests": self.requests,
                "attempts": self.attempts,
                "retries": self.retries,
                "errors": dict(self.errors),
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
            }


class OpenAIServerAdapter:
    """The server adapter. `base_url` includes the API prefix, e.g. http://127.0.0.1:8000/v1."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: Api = "auto",
        api_key_env: str | None = None,
        concurrency: int = 1,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        retry_after_max_s: float = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        name: str = "",
        stream: bool = False,
    ):
        if api not in ("auto", "completions", "chat"):
            raise ValueError(f"api must be 'auto', 'completions' or 'chat', not {api!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency}")
        if not 0 <= max_retries <= MAX_RETRIES_LIMIT:
            raise ValueError(f"max_retries must be between 0 and {MAX_RETRIES_LIMIT}, not {max_retries}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1, not {max_response_bytes}")
        self.name = name or model
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api: Api = api
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.max_response_bytes = max_response_bytes
        self.stream = stream
        self.counters = ServerCounters()
        self._rng = random.Random()
        self._models: list[str] | None = None
        self._models_error: str | None = None

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = ""
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise ValueError(f"environment variable {api_key_env} (the server's API key) is unset or empty")
            headers["Authorization"] = f"Bearer {key}"
        self._secret = _Secret(key)
        # The key lives only in the client's default headers, which httpx prints as [secure].
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="edgeready-server")

    # -- protocol -----------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        if self.concurrency == 1 or len(requests) <= 1:
            return [self._one(r) for r in requests]
        futures: list[Future[Response]] = [self._pool.submit(self._one, r) for r in requests]
        try:
            return [f.result() for f in futures]
        except BaseException:
            # One request failed for good: do not keep the server busy with the rest of the batch.
            for f in futures:
                f.cancel()
            raise

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = {
            "adapter": "openai-server",
            "name": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "api": self.api,
            "server_models": self.server_models(),
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "max_response_bytes": self.max_response_bytes,
            "stream": self.stream,
            "auth": f"bearer from ${self.api_key_env}" if self.api_key_env else "none",
            "counters": self.counters.as_dict(),
        }
        if self._models_error:
            info["server_models_error"] = self._models_error
        return info

    def stats(self) -> AdapterStats:
        return AdapterStats(bytes_sent=self.counters.bytes_sent, bytes_received=self.counters.bytes_received)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> OpenAIServerAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"OpenAIServerAdapter(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r}, "
            f"api={self.api!r}, concurrency={self.concurrency}, max_retries={self.max_retries})"
        )

    # -- server metadata ----------------------------------------------------------------------
    def server_models(self) -> list[str] | None:
        """The model ids the server lists at /models (asked once, then cached); None if it does not say."""
        if self._models is None and self._models_error is None:
            try:
                self._models = self._list_models()
            except (httpx.HTTPError, ValueError, RecursionError, _Cut) as exc:
                # Optional for provenance only: some gateways do not serve /models.
                self._models_error = self._secret.redact(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]
        return self._models

    def _list_models(self) -> list[str]:
        timeout = min(self.timeout_s, 10.0)
        with self._client.stream("GET", f"{self.base_url}/models", timeout=timeout) as reply:
            reply.raise_for_status()
            body = _read_capped(reply, self.max_response_bytes, time.perf_counter() + timeout)
        entries = _get(json.loads(body), "data", list, "reply")
        return [str(_get(m, "id", object, f"data[{i}]")) for i, m in enumerate(entries)]

    # -- one request --------------------------------------------------------------------------
    def endpoint(self, request: GenerationRequest) -> Literal["completions", "chat"]:
        if self.api == "auto":
            return "chat" if request.messages else "completions"
        if self.api == "completions" and not request.prompt:
            # The completions API takes raw text, and only the server knows the model's chat template.
            raise ValueError("a request with only messages cannot be sent with api='completions'")
        # Requests may carry both forms (few-shot text and chat turns): a forced api picks its own.
        return self.api

    def payload(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The URL path and JSON body for one request (public so that tests can check the mapping)."""
        api = self.endpoint(request)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if request.stop:
            body["stop"] = list(request.stop)
        if api == "chat":
            messages = request.messages or (("user", request.prompt),)
            body["messages"] = [{"role": role, "content": content} for role, content in messages]
            if request.logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = 1
            return "/chat/completions", body
        body["prompt"] = request.prompt
        if request.logprobs:
            body["logprobs"] = 1
        return "/completions", body

    def _one(self, request: GenerationRequest) -> Response:
        path, body = self.payload(request)
        url = f"{self.base_url}{path}"
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.counters.add(requests=1)
        sent = received = 0
        start = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            attempt_start = time.perf_counter()
            self.counters.add(attempts=1, bytes_sent=len(content))
            sent += len(content)
            try:
                reply = self._post(url, content, attempt)
            except _Retry as retry:
                received += retry.wire_bytes
                self._sleep_before_retry(attempt, retry.retry_after, retry.reason, url)
                continue
            received += reply.wire_bytes
            end = time.perf_counter()
            meta: dict[str, object] = {
                "attempts": attempt + 1,
                "attempt_s": end - attempt_start,
                "bytes_sent": sent,
                "bytes_received": received,
                "endpoint": path,
            }
            return self._parse(reply, url, request, attempt=attempt, total_s=end - start, meta=meta,
                               sent_at=attempt_start)
        raise AssertionError("unreachable: the last attempt either returns or raises")

    def _post(self, url: str, content: bytes, attempt: int) -> _Reply:
        """One attempt. Returns a 2xx-3xx reply; raises _Retry when another attempt may succeed, else
        ServerRequestError."""
        deadline = time.perf_counter() + self.timeout_s
        marks: list[tuple[int, float]] = []
        try:
            with self._client.stream("POST", url, content=content) as resp:
                try:
                    ok = resp.status_code < 400
                    limit = self.max_response_bytes if ok else min(self.max_response_bytes, MAX_ERROR_BODY_BYTES)
                    # An error reply longer than its message is cut short, not failed: its status says enough.
                    body = _read_capped(resp, limit, deadline, truncate=not ok,
                                        marks=marks if self.stream and ok else None)
                finally:
                    # Wire bytes (before any decompression), as a metered link would count them.
                    wire = resp.num_bytes_downloaded
                    self.counters.add(bytes_received=wire)
        except _Cut as cut:
            where = f" (timeout_s={self.timeout_s})" if cut.kind == "deadline" else ""
            raise self._failure(url, attempt, cut.kind, f"{cut}{where}") from None
        except httpx.TransportError as exc:
            raise self._transport_failure(exc, url, attempt) from exc
        except httpx.DecodingError as exc:  # a body that its Content-Encoding does not decode
            raise self._failure(url, attempt, "bad_response", f"{type(exc).__name__}: {exc}") from exc
        reply = _Reply(resp.status_code, resp.headers, body, wire, tuple(marks))
        if reply.status >= 400:
            raise self._http_failure(reply, url, attempt)
        return reply

    def _failure(self, url: str, attempt: int, kind: str, detail: str, **kw: Any) -> ServerRequestError:
        """The final error of a request: counted under `kind`, the key redacted from what the server said."""
        self.counters.error(kind)
        return ServerRequestError(
            f"POST {url} failed after {attempt + 1} attempt(s) (max_retries={self.max_retries}): "
            f"{kind}: {self._secret.redact(detail)}",
            kind=kind,
            attempts=attempt + 1,
            **kw,
        )

    def _transport_failure(self, exc: httpx.TransportError, url: str, attempt: int) -> Exception:
        kind = _transport_kind(exc)
        detail = f"{type(exc).__name__}: {exc}"
        if kind in RETRY_TRANSPORT_KINDS and attempt < self.max_retries:
            self.counters.error(kind)
            return _Retry(f"{kind}: {self._secret.redact(detail)}")
        if kind in AFTER_SEND_KINDS:
            detail += " (the server had the request, so it is not sent again: it would be generated twice)"
        return self._failure(url, attempt, kind, detail)

    def _http_failure(self, reply: _Reply, url: str, attempt: int) -> Exception:
        kind = f"http_{reply.status}"
        self.counters.error(kind)
        if reply.status in RETRY_STATUSES and attempt < self.max_retries:
            return _Retry(f"HTTP {reply.status}", reply.headers.get("Retry-After"), reply.wire_bytes)
        return ServerRequestError(
            f"POST {url} failed with HTTP {reply.status} after {attempt + 1} attempt(s) "
            f"(max_retries={self.max_retries}): {self._server_message(reply.body)}",
            kind=kind,
            status=reply.status,
            attempts=attempt + 1,
        )

    def _sleep_before_retry(self, attempt: int, retry_after: str | None, reason: str, url: str) -> None:
        delay = _retry_after_s(retry_after)
        if delay is not None:
            delay = min(delay, self.retry_after_max_s)
        else:
            # Full jitter: clients that failed together do not come back together.
            delay = self._rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))
        self.counters.add(retries=1)
        log.warning("POST %s: %s; retry %d/%d in %.2f s", url, reason, attempt + 1, self.max_retries, delay)
        time.sleep(delay)

    def _server_message(self, body: bytes) -> str:
        text = body.decode("utf-8", "replace")
        try:
            data = json.loads(text)
            error = data.get("error", data) if isinstance(data, dict) else data
            if isinstance(error, dict):
                text = str(error.get("message") or error.get("detail") or error)
            elif isinstance(error, str):
                text = error
        except (ValueError, RecursionError):
            pass
        text = self._secret.redact(text.strip())
        return text[:MAX_ERROR_CHARS] + ("..." if len(text) > MAX_ERROR_CHARS else "") or "(empty body)"

    def _parse(
        self,
        reply: _Reply,
        url: str,
        request: GenerationRequest,
        *,
        attempt: int,
        total_s: float,
        meta: dict[str, object],
        sent_at: float | None = None,
    ) -> Response:
        stream = None
        try:
            if self.stream:
                stream = _Stream.parse(reply.body, reply.marks, chat=self.endpoint(request) == "chat")
                data: object = stream.merged()
            else:
                data = _get_json(reply.body)
            choice = _first_choice(data)
            text = _choice_text(choice)
            usage = _get(data, "usage", dict, "reply", required=False) or {}
            prompt_tokens = _count(usage, "prompt_tokens")
            completion_tokens = _count(usage, "completion_tokens")
            logprobs = _token_logprobs(choice.get("logprobs")) if request.logprobs else None
            finish_reason = _get(choice, "finish_reason", str, "choices[0]", required=False)
            # llama.cpp's own server reports its split; other servers do not.
            server_timings = _get(data, "timings", dict, "reply", required=False) or {}
        except _BadShape as exc:
            raise self._failure(
                url, attempt, "bad_response", f"HTTP {reply.status} but {exc}: {self._server_message(reply.body)}",
                status=reply.status,
            ) from None
        if prompt_tokens is None or completion_tokens is None:
            meta["usage_missing"] = True
        if request.logprobs and logprobs is None:
            meta["logprobs_missing"] = True
        prompt_ms, predicted_ms = server_timings.get("prompt_ms"), server_timings.get("predicted_ms")
        timings = Timings(
            total_s=total_s,
            prompt_eval_s=prompt_ms / 1000 if isinstance(prompt_ms, int | float) else None,
            generation_s=predicted_ms / 1000 if isinstance(predicted_ms, int | float) else None,
        )
        if stream is not None and sent_at is not None:
            timings = stream.timings(timings, sent_at, meta, completion_tokens)
            if completion_tokens is None and stream.content_events:
                completion_tokens = stream.content_events
                meta["completion_tokens_from"] = "content events of the stream (no usage in it)"
        return Response(
            text=text,
            prompt_tokens=prompt_tokens or 0,
            completion_tokens=completion_tokens or 0,
            timings=timings,
            finish_reason=finish_reason or "unknown",
            token_logprobs=logprobs,
            served_by="server",
            meta=meta,
        )


def _read_capped(resp: httpx.Response, limit: int, deadline: float, *, truncate: bool = False,
                 marks: list[tuple[int, float]] | None = None) -> bytes:
    """The (decoded) body, read as a stream: at most `limit` bytes are ever held, and the read stops at
    `deadline`. Raises _Cut, or returns the first `limit` bytes when `truncate`. `marks` gets (bytes so far,
    time) after each chunk."""
    declared = resp.headers.get("Content-Length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise _Cut("too_large", f"the reply's Content-Length {declared} exceeds max_response_bytes={limit}")
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_bytes():
        if size + len(chunk) > limit:
            if truncate:
                chunks.append(chunk[: limit - size])
                break
            raise _Cut("too_large", f"the reply exceeds max_response_bytes={limit} (cut off after {size} bytes)")
        chunks.append(chunk)
        size += len(chunk)
        if marks is not None:
            marks.append((size, time.perf_counter()))
        if time.perf_counter() > deadline:
            raise _Cut("deadline", f"the reply was still arriving at the request's deadline ({size} bytes read)")
    return b"".join(chunks)


@dataclass
class _Stream:
    """A reply of server-sent events (`data: {...}` lines, `data: [DONE]` at the end), each with the time its
    last byte arrived."""

    events: list[tuple[float, dict[str, Any]]]
    chat: bool
    complete: bool  # ended with `data: [DONE]`
    # From the events (__post_init__): the content pieces and when each arrived, the last finish_reason, and the
    # usage and timings blocks where the server sent them.
    pieces: list[str] = field(init=False)
    content_times: list[float] = field(init=False)
    finish: str | None = field(init=False)
    usage: Any = field(init=False)
    server_timings: Any = field(init=False)

    @classmethod
    def parse(cls, body: bytes, marks: tuple[tuple[int, float], ...], *, chat: bool) -> _Stream:
        import bisect

        sizes = [m[0] for m in marks]
        events: list[tuple[float, dict[str, Any]]] = []
        pos, done = 0, False
        for line in body.split(b"\n"):
            pos += len(line) + 1
            text = line.strip()
            if text.startswith(b"error:"):  # llama-server reports a failure mid-stream on an `error:` line
                raise _BadShape(f"the stream reported an error: {text[6:].strip()[:300].decode('utf-8', 'replace')}")
            if not text.startswith(b"data:"):
                continue  # comments, `event:` and `id:` lines, blank separators
            payload = text[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            event = _get_json(payload)
            if not isinstance(event, dict):
                raise _BadShape(f"a stream event is {_describe(event)}, not an object")
            if event.get("error") is not None:
                raise _BadShape(f"the stream reported an error: {str(event['error'])[:300]}")
            k = bisect.bisect_left(sizes, min(pos - 1, len(body)))
            events.append((marks[min(k, len(marks) - 1)][1] if marks else 0.0, event))
        if not events:
            raise _BadShape("the stream carried no data events")
        return cls(events, chat, done)

    def __post_init__(self) -> None:
        self.pieces, self.content_times, self.finish, self.usage, self.server_timings = [], [], None, None, None
        for t, event in self.events:
            self.usage = event.get("usage") or self.usage
            self.server_timings = event.get("timings") or self.server_timings
            choices = _get(event, "choices", list, "stream event", required=False) or []
            if not choices:
                continue
            choice = choices[0]
            if not isinstance(choice, dict):
                raise _BadShape(f"a stream event's choices[0] is {_describe(choice)}, not an object")
            if self.chat:
                delta = _get(choice, "delta", dict, "stream choices[0]", required=False) or {}
                piece = _get(delta, "content", str, "stream choices[0].delta", required=False)
            else:
                piece = _get(choice, "text", str, "stream choices[0]", required=False)
            if piece:
                self.pieces.append(piece)
                self.content_times.append(t)
            self.finish = choice.get("finish_reason") or self.finish
        if not self.complete and self.finish is None:
            # A stream cut off mid-answer would pass for a short answer.
            raise _BadShape("the stream ended without a finish_reason or `data: [DONE]` (cut off)")

    def merged(self) -> dict[str, Any]:
        """One reply of the non-streamed shape: the content joined, the last finish_reason, usage and timings."""
        text = "".join(self.pieces)
        choice_out: dict[str, Any] = {"finish_reason": self.finish}
        choice_out.update({"message": {"content": text}} if self.chat else {"text": text})
        return {"choices": [choice_out], "usage": self.usage, "timings": self.server_timings}

    @property
    def content_events(self) -> int:
        return len(self.content_times)

    def timings(self, server: Timings, sent_at: float, meta: dict[str, object], tokens: int | None) -> Timings:
        """The first token's time from the stream; the split from the server's own timings where it sent them,
        else from the pace of the stream: n tokens (usage's count, else the content events) arriving between the
        first and the last event at an even gap g = (last - first) / (n - 1) give generation n g and prompt
        TTFT - g (the first token's own decode taken out)."""
        times = self.content_times
        if not times:
            return server
        first = times[0] - sent_at
        if server.generation_s is not None and server.prompt_eval_s is not None:
            meta["timings_from"] = "the server's timings"
            return dataclasses.replace(server, first_token_s=first)
        meta["timings_from"] = "arrival of the stream's content events at the client"
        if len(times) < 2:
            return dataclasses.replace(server, first_token_s=first, prompt_eval_s=first)
        n = tokens if tokens and tokens >= len(times) else len(times)
        gap = (times[-1] - times[0]) / (n - 1)
        return dataclasses.replace(server, first_token_s=first, prompt_eval_s=max(first - gap, 0.0),
                                   generation_s=gap * n)


def _get(data: object, key: str, kind: type, where: str, *, required: bool = True) -> Any:
    """data[key], checked to be a `kind` (object: anything but null); a missing or null optional key is None."""
    if not isinstance(data, dict):
        raise _BadShape(f"{where} is {_describe(data)}, not an object")
    value = data.get(key)
    if value is None:
        if required:
            raise _BadShape(f"{where}.{key} is missing")
        return None
    if not isinstance(value, kind):
        raise _BadShape(f"{where}.{key} is {_describe(value)}, not {_describe(kind())}")
    return value


def _describe(value: object) -> str:
    """A JSON value's kind, for messages: 'a list', 'an object', 'a number'."""
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), "null" if value is None else f"a {type(value).__name__}")


def _get_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested brackets
        raise _BadShape(f"the reply is not JSON ({type(exc).__name__})") from None


def _first_choice(data: object) -> dict[str, Any]:
    choices = _get(data, "choices", list, "reply")
    if not choices:
        raise _BadShape("reply.choices is empty")
    if not isinstance(choices[0], dict):
        raise _BadShape(f"choices[0] is {_describe(choices[0])}, not an object")
    return choices[0]


def _choice_text(choice: dict[str, Any]) -> str:
    """Chat: choices[0].message.content; completions: choices[0].text. A null content (a refusal or a
    tool call) is an empty answer, as before."""
    if "message" in choice:
        message = _get(choice, "message", dict, "choices[0]")
        return _get(message, "content", str, "choices[0].message", required=False) or ""
    return _get(choice, "text", str, "choices[0]", required=False) or ""


def _count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())
        or value < 0
    ):
        raise _BadShape(f"usage.{key} is {value!r}, not a token count")
    return int(value)


def _token_logprobs(block: object) -> tuple[float, ...] | None:
    """Completions: {"token_logprobs": [...]}; chat: {"content": [{"logprob": ...}, ...]}."""
    if not isinstance(block, dict):
        return None
    if isinstance(block.get("token_logprobs"), list):
        values = block["token_logprobs"]
    elif isinstance(block.get("content"), list):
        values = [item.get("logprob") if isinstance(item, dict) else item for item in block["content"]]
    else:
        return None
    # The first token of an echoed prompt has no logprob (null); it is not a generated token.
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        raise _BadShape("choices[0].logprobs holds values that are not numbers")
    return tuple(float(v) for v in values if v is not None)


def _transport_kind(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "timeout_connect"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.PoolTimeout):
        return "timeout_pool"
    if isinstance(exc, httpx.WriteTimeout):
        return "timeout_write"
    if isinstance(exc, httpx.WriteError):
        # The body did not reach the server whole; with its Content-Length it cannot have been taken.
        return "write"
    if isinstance(exc, httpx.ReadTimeout):
        return "timeout_read"
    if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
        # Reset or closed after the request was sent: before the reply, or in the middle of it.
        return "disconnected"
    return "transport"


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
