"""A fake OpenAI-compatible HTTP server on loopback, for failures a real server will not produce on demand.

Each POST (or GET) is answered by the next entry of `script`; once the script is spent, by a canned
completion. An entry is either (status, headers, body) or a callable that gets the request handler and
writes whatever it likes to `handler.wfile`, raw: a slow drip, a cut connection, a body without end.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMPLETION_BODY = {
    "choices": [{"text": " Paris", "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1},
}

Action = Callable[[BaseHTTPRequestHandler], None]
Entry = tuple[int, dict[str, str], object] | Action


class FakeServer:
    """Answers from a script of (status, headers, body) or actions; then a canned completion."""

    def __init__(self) -> None:
        self.script: list[Entry] = []
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        # Set on close: actions that write for a long time (drips, endless bodies) stop on it.
        self.stopped = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.seen.append((self.path, dict(self.headers), body))
                entry = fake.script.pop(0) if fake.script else (200, {}, COMPLETION_BODY)
                if callable(entry):
                    with contextlib.suppress(OSError):  # the client gave up, as it should
                        entry(self)
                    self.close_connection = True
                    return
                status, headers, payload = entry
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.do_POST()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def fake_adapter(server: FakeServer, **kw: object) -> Any:
    """The server adapter on the fake server, with fast retries (tests override any option)."""
    from edgeready.adapters.openai_server import OpenAIServerAdapter

    options: dict[str, object] = {"max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0}
    return OpenAIServerAdapter(server.base_url, "fake-model", **{**options, **kw})  # type: ignore[arg-type]
