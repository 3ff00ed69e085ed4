"""Server adapter: any OpenAI-compatible HTTP endpoint (llama.cpp server, vLLM, Ollama, MLC serve).

- Few-shot prompts go to /completions, requests that carry `messages` to /chat/completions (the server
  applies the model's chat template), decided per request unless `api` forces one.
- One httpx.Client for the adapter's life: keep-alive connections, pool sized to `concurrency`, so a
  latency measurement does not include a TCP handshake per request.
- Up to `concurrency` requests in flight (a thread pool); responses come back in request order.
- Bounded retries with full-jitter exponential backoff on connection failures, 429 and 5xx (honouring
  Retry-After, capped). Other 4xx are the caller's fault and raise at once.
- The API key is read from an environment variable at construction, sent as a Bearer token, and kept
  out of describe(), repr, log records and error messages (it is redacted from server messages too).
- Each response's meta records the bytes sent and received (request and response bodies), which the
  offload adapter adds up as the network cost of sending a query away from the device.
"""

from __future__ import annotations

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


class ServerRequestError(ServerError):
    """A request that failed for good. `kind` is the error class counted in `counters.errors`."""

    def __init__(self, message: str, *, kind: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.attempts = attempts


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
        name: str = "",
    ):
        if api not in ("auto", "completions", "chat"):
            raise ValueError(f"api must be 'auto', 'completions' or 'chat', not {api!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency}")
        if not 0 <= max_retries <= MAX_RETRIES_LIMIT:
            raise ValueError(f"max_retries must be between 0 and {MAX_RETRIES_LIMIT}, not {max_retries}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s}")
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
                reply = self._client.get(f"{self.base_url}/models", timeout=min(self.timeout_s, 10.0))
                reply.raise_for_status()
                self._models = [str(m.get("id")) for m in reply.json().get("data", [])]
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                # Optional for provenance only: some gateways do not serve /models.
                self._models_error = self._secret.redact(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]
        return self._models

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
            "stream": False,
        }
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
                reply = self._client.post(url, content=content)
            except httpx.TransportError as exc:
                kind = _transport_kind(exc)
                self.counters.error(kind)
                detail = self._secret.redact(f"{type(exc).__name__}: {exc}")
                # A read timeout means the server is still generating: a retry would queue a duplicate
                # behind it, so only failures before the request was taken are retried.
                if kind == "timeout_read" or attempt == self.max_retries:
                    raise ServerRequestError(
                        f"POST {url} failed after {attempt + 1} attempt(s) (max_retries={self.max_retries}): "
                        f"{kind}: {detail}",
                        kind=kind,
                        attempts=attempt + 1,
                    ) from exc
                self._sleep_before_retry(attempt, None, f"{kind}: {detail}", url)
                continue
            # Wire bytes (before any decompression), as a metered link would count them.
            got = reply.num_bytes_downloaded or len(reply.content)
            received += got
            self.counters.add(bytes_received=got)
            if reply.status_code >= 400:
                kind = f"http_{reply.status_code}"
                self.counters.error(kind)
                message = self._server_message(reply)
                if reply.status_code not in RETRY_STATUSES or attempt == self.max_retries:
                    raise ServerRequestError(
                        f"POST {url} failed with HTTP {reply.status_code} after {attempt + 1} attempt(s) "
                        f"(max_retries={self.max_retries}): {message}",
                        kind=kind,
                        status=reply.status_code,
                        attempts=attempt + 1,
                    )
                self._sleep_before_retry(attempt, reply.headers.get("Retry-After"), f"HTTP {reply.status_code}", url)
                continue
            end = time.perf_counter()
            return self._parse(
                reply,
                url,
                request,
                total_s=end - start,
                meta={
                    "attempts": attempt + 1,
                    "attempt_s": end - attempt_start,
                    "bytes_sent": sent,
                    "bytes_received": received,
                    "endpoint": path,
                },
            )
        raise AssertionError("unreachable: the last attempt either returns or raises")

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

    def _server_message(self, reply: httpx.Response) -> str:
        text = reply.text
        try:
            data = json.loads(text)
            error = data.get("error", data) if isinstance(data, dict) else data
            if isinstance(error, dict):
                text = str(error.get("message") or error.get("detail") or error)
            elif isinstance(error, str):
                text = error
        except ValueError:
            pass
        text = self._secret.redact(text.strip())
        return text[:MAX_ERROR_CHARS] + ("..." if len(text) > MAX_ERROR_CHARS else "") or "(empty body)"

    def _parse(
        self, reply: httpx.Response, url: str, request: GenerationRequest, *, total_s: float, meta: dict[str, object]
    ) -> Response:
        try:
            data = reply.json()
            choice = data["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self.counters.error("bad_response")
            raise ServerRequestError(
                f"POST {url}: HTTP {reply.status_code} but no choices in the reply: {self._server_message(reply)}",
                kind="bad_response",
                status=reply.status_code,
            ) from exc
        message = choice.get("message")
        text = (message.get("content") if isinstance(message, dict) else choice.get("text")) or ""

        usage = data.get("usage") or {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if prompt_tokens is None or completion_tokens is None:
            meta["usage_missing"] = True

        logprobs = None
        if request.logprobs:
            logprobs = _token_logprobs(choice.get("logprobs"))
            if logprobs is None:
                meta["logprobs_missing"] = True

        # llama.cpp's own server reports its split; other servers do not.
        server_timings = data.get("timings") or {}
        prompt_ms, predicted_ms = server_timings.get("prompt_ms"), server_timings.get("predicted_ms")
        return Response(
            text=text,
            prompt_tokens=int(prompt_tokens or 0),
            completion_tokens=int(completion_tokens or 0),
            timings=Timings(
                total_s=total_s,
                prompt_eval_s=prompt_ms / 1000 if isinstance(prompt_ms, int | float) else None,
                generation_s=predicted_ms / 1000 if isinstance(predicted_ms, int | float) else None,
            ),
            finish_reason=choice.get("finish_reason") or "unknown",
            token_logprobs=logprobs,
            served_by="server",
            meta=meta,
        )


def _token_logprobs(block: object) -> tuple[float, ...] | None:
    """Completions: {"token_logprobs": [...]}; chat: {"content": [{"logprob": ...}, ...]}."""
    if not isinstance(block, dict):
        return None
    if isinstance(block.get("token_logprobs"), list):
        values = block["token_logprobs"]
    elif isinstance(block.get("content"), list):
        values = [item.get("logprob") for item in block["content"] if isinstance(item, dict)]
    else:
        return None
    # The first token of an echoed prompt has no logprob (null); it is not a generated token.
    return tuple(float(v) for v in values if v is not None)


def _transport_kind(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "timeout_connect"
    if isinstance(exc, httpx.ReadTimeout):
        return "timeout_read"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
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
