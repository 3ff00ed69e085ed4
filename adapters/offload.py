"""Offload adapter: a router over a device adapter and a server adapter (the seed's step 4).

Simple prompts are answered on the device, complex ones are sent to the edge server. Policies:
- `never` / `always`: device-only and server-only baselines for the comparison;
- `oracle`: the dataset's complexity label (WebQSP hop count, the embedded set's single/two-hop),
  carried by the request's tag; untagged requests (e.g. hallucination passages) stay on the device;
- `heuristic`: decided from the prompt alone (see `looks_complex`);
- `cascade`: the device answers first with log-probabilities; when its mean token log-probability is
  below `cascade_threshold`, the question goes to the server and the device's answer is discarded.

The network profile turns each offloaded request's byte counts into added latency:
  rtt + bytes_up * 8 / uplink + bytes_down * 8 / downlink, plus the expected cost of loss: each lost
  round trip is retried after one RTT, so the expected extra is rtt * loss / (1 - loss).
It is deterministic (no random loss), so two runs of a gate agree; the loopback server adds its own
real latency on top. When the server cannot be reached, the device answers and the fallback is counted:
never a crash, never a silent pass.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from edgeready.adapters.base import Adapter, AdapterStats
from edgeready.records import GenerationRequest, Response, Timings

Policy = Literal["never", "always", "oracle", "heuristic", "cascade"]

# Words that introduce a nested description: "the country whose capital is...", "the city where...".
_BRIDGES = re.compile(r"\b(whose|which|that|where|who|whom)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Network:
    rtt_ms: float = 40.0
    uplink_mbps: float = 10.0
    downlink_mbps: float = 50.0
    loss: float = 0.0

    def delay_s(self, bytes_up: int, bytes_down: int) -> float:
        rtt = self.rtt_ms / 1000
        transfer = bytes_up * 8 / (self.uplink_mbps * 1e6) + bytes_down * 8 / (self.downlink_mbps * 1e6)
        return rtt + transfer + rtt * self.loss / (1 - self.loss)


def looks_complex(question: str) -> bool:
    """The heuristic policy's features, from the question text alone: a relative clause that
    describes an unnamed bridge entity ("whose", "that", "where" after the first word), or a long
    question (more than 12 words). Both mark the multi-hop questions of WebQSP and the embedded set."""
    words = question.split()
    if not words:
        return False
    # A question word in first place ("Which continent...") asks; later it describes a bridge.
    bridges = [m for m in _BRIDGES.finditer(question) if m.start() >= len(words[0])]
    return bool(bridges) or len(words) > 12


def _question_of(req: GenerationRequest) -> str:
    """The last question of a few-shot prompt, or the last user message of a chat request."""
    if req.messages:
        return req.messages[-1][1]
    tail = req.prompt.rsplit("Question:", 1)[-1]
    return tail.split("\n", 1)[0].strip()


@dataclass
class OffloadCounters:
    device: int = 0
    server: int = 0
    fallbacks: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    fallback_errors: list[str] = field(default_factory=list)


class OffloadAdapter:
    def __init__(
        self, device: Adapter, server: Adapter | None, *, policy: Policy, network: Network,
        cascade_threshold: float = -1.0, name: str = "offload", server_error: str | None = None,
    ):
        self.name = name
        self.device = device
        self.server = server
        self.policy = policy
        self.network = network
        self.cascade_threshold = cascade_threshold
        self.counters = OffloadCounters()
        # Why there is no server (it failed to start): every offloaded request falls back with it.
        self.server_error = server_error

    def route(self, req: GenerationRequest) -> Literal["device", "server"]:
        if self.policy == "never":
            return "device"
        if self.policy == "always":
            return "server"
        if self.policy == "oracle":
            return "server" if req.tag == "complex" else "device"
        if self.policy == "heuristic":
            return "server" if looks_complex(_question_of(req)) else "device"
        return "device"  # cascade starts on the device

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        return [self._one(r) for r in requests]

    def _one(self, req: GenerationRequest) -> Response:
        route = self.route(req)
        device_first: Response | None = None
        if self.policy == "cascade":
            device_first = self.device.generate([replace(req, logprobs=True)])[0]
            confident = (device_first.mean_logprob or 0.0) >= self.cascade_threshold
            if confident or not device_first.completion_tokens:
                return self._on_device(device_first, req, reason="confident")
            route = "server"
        if route == "device":
            return self._on_device(self.device.generate([req])[0], req, reason=self.policy)
        return self._on_server(req, device_first)

    def _on_device(self, resp: Response, req: GenerationRequest, reason: str) -> Response:
        self.counters.device += 1
        meta = {**resp.meta, "route": "device", "route_reason": reason}
        if not req.logprobs:
            resp = replace(resp, token_logprobs=None)
        return replace(resp, served_by="device", meta=meta)

    def _on_server(self, req: GenerationRequest, device_first: Response | None) -> Response:
        started = time.perf_counter()
        try:
            if self.server is None:
                raise ConnectionError(self.server_error or "no server configured")
            resp = self.server.generate([req])[0]
        except Exception as exc:  # unreachable server, timeouts, retries exhausted, a reply it could not use
            return self._fallback(req, device_first, exc, time.perf_counter() - started)
        self.counters.server += 1
        up = int(resp.meta.get("bytes_sent", 0))
        down = int(resp.meta.get("bytes_received", 0))
        self.counters.bytes_sent += up
        self.counters.bytes_received += down
        net_s = self.network.delay_s(up, down)
        local_s = device_first.timings.total_s if device_first else 0.0
        timings = Timings(total_s=resp.timings.total_s + net_s + local_s,
                          prompt_eval_s=resp.timings.prompt_eval_s, generation_s=resp.timings.generation_s)
        return replace(resp, timings=timings, served_by="server",
                       meta={**resp.meta, "route": "server", "network_s": net_s, "device_first_s": local_s})

    def _fallback(self, req: GenerationRequest, device_first: Response | None, exc: Exception,
                  failed_s: float) -> Response:
        """The device answers a request the server did not. Its latency is what the user waited: the failed
        server attempts (their wall time and the link's round trip) and then the device's answer, so a dead or
        hanging server can never make the offload path look faster."""
        self.counters.fallbacks += 1
        self.counters.fallback_errors.append(f"{type(exc).__name__}: {exc}"[:300])
        local = device_first or self.device.generate([req])[0]
        self.counters.device += 1
        waited = failed_s + (self.network.delay_s(0, 0) if self.server is not None else 0.0)
        timings = replace(local.timings, total_s=local.timings.total_s + waited)
        return replace(local, served_by="device", timings=timings,
                       meta={**local.meta, "route": "server", "fallback": True, "fallback_error": type(exc).__name__,
                             "failed_server_s": round(waited, 6)})

    def describe(self) -> dict[str, object]:
        return {
            "adapter": "offload",
            "policy": self.policy,
            "cascade_threshold": self.cascade_threshold if self.policy == "cascade" else None,
            "network": self.network.__dict__,
            "device": self.device.describe(),
            "server": self.server.describe() if self.server is not None else None,
            "server_error": self.server_error,
        }

    def stats(self) -> AdapterStats:
        c = self.counters
        return AdapterStats(served_by_device=c.device, served_by_server=c.server, fallbacks=c.fallbacks,
                            fallback_errors=tuple(c.fallback_errors), bytes_sent=c.bytes_sent,
                            bytes_received=c.bytes_received)

    def close(self) -> None:
        self.device.close()
        if self.server is not None:
            self.server.close()
