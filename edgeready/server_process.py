"""Run llama-cpp-python's OpenAI-compatible server as a child process, for the server target's gates.

The server runs in its own process (and process group) so that its memory is measured apart from
pytest's, and so that stop() can end it and anything it spawned. It listens on 127.0.0.1 only: the
gates measure a model, not a network, and nothing else on the machine should reach it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil

from edgeready.errors import ServerStartError

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port the kernel says is free now (bind to port 0). Another process may take it before the server
    binds; start() retries once with a new port when that happens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def peak_rss_bytes(pid: int) -> int:
    """Peak resident memory of a running process: the kernel's high-water mark (VmHWM), so a spike between
    two samples is not missed. Where /proc is missing (macOS) it falls back to psutil's current RSS, which
    is a lower bound of the peak only."""
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return int(psutil.Process(pid).memory_info().rss)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LlamaCppServer:
    """`python -m llama_cpp.server` on one GGUF model. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 2048,
        threads: int = 2,
        n_batch: int = 64,
        n_ubatch: int | None = None,
        model_alias: str | None = None,
        startup_timeout_s: float = 120.0,
        log_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
    ):
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.threads = threads
        self.n_batch = n_batch
        self.n_ubatch = n_ubatch or n_batch
        self.model_alias = model_alias or self.model_path.stem
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        self.python = python
        # A caller's log_dir is kept; our own temp dir is removed at stop().
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        if self.log_dir is None:
            raise RuntimeError("the server is not started")
        return self.log_dir / "llama-server.log"

    def command(self, port: int) -> list[str]:
        return [
            self.python, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model_alias,
            "--host", HOST,
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.threads),
            # The server's default for batch threads is every core; the target's thread budget is the limit.
            "--n_threads_batch", str(self.threads),
            "--n_batch", str(self.n_batch),
            "--n_ubatch", str(self.n_ubatch),
            # The server defaults to mlock, which pins every weight page: resident memory would then differ
            # from the device adapter's (mmap, pages touched on demand) and from a phone's.
            "--use_mlock", "False",
            *self.extra_args,
        ]  # fmt: skip

    def describe(self) -> dict[str, object]:
        return {
            "runtime": "llama_cpp.server (llama-cpp-python)",
            "model_path": str(self.model_path),
            "model_alias": self.model_alias,
            "n_ctx": self.n_ctx,
            "threads": self.threads,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "base_url": self.base_url if self.port else None,
            "pid": self.pid,
        }

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> LlamaCppServer:
        if self.running:
            return self
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="edgeready-llama-server-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            try:
                self._spawn(free_port())
                self._wait_ready()
                return self
            except ServerStartError as exc:
                self.stop(_keep_log=True)
                # The one race free_port() cannot rule out; anything else is not fixed by trying again.
                if attempt == 0 and "address already in use" in str(exc).lower():
                    continue
                self._cleanup_log_dir()
                raise
        raise AssertionError("unreachable")

    def _spawn(self, port: int) -> None:
        self.port = port
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            # start_new_session: its own process group, so stop() reaches any child it spawns.
            self._proc = subprocess.Popen(
                self.command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"{self.base_url}/models"
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise ServerStartError(
                        f"llama_cpp.server exited with code {code} before answering {url}; "
                        f"the end of its log:\n{log_tail(self.log_path)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"llama_cpp.server did not answer {url} within {self.startup_timeout_s:.0f} s; "
                        f"the end of its log:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.2)

    def stop(self, timeout_s: float = 10.0, *, _keep_log: bool = False) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL. Returns the exit code (None if never started)."""
        proc, self._proc = self._proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                children = _children(proc.pid)
                pgid = proc.pid  # a session leader: its pid is its process group's id
                _signal_group(pgid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    _signal_group(pgid, signal.SIGKILL)
                    proc.wait(timeout=timeout_s)
                # Children that outlived the leader (none expected), by their own pids: once the leader
                # is reaped its pid, and so the group id, may belong to someone else.
                for child in children:
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            code = proc.returncode
        if not _keep_log:
            self._cleanup_log_dir()
        return code

    def _cleanup_log_dir(self) -> None:
        if self._own_log_dir and self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None

    def peak_rss_bytes(self) -> int:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("the server is not running; its peak memory must be read before stop()")
        return peak_rss_bytes(self._proc.pid)

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"LlamaCppServer(model={self.model_path.name!r}, alias={self.model_alias!r}, pid={self.pid}, "
            f"port={self.port})"
        )


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
