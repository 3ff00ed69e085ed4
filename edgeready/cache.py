"""A persistent store of generations, so a re-run (or a run resumed after a crash) skips finished work.

Embedded SQLite (stdlib sqlite3), chosen because several pytest-xdist workers may write at once:
- WAL journal: readers never block the writer and one writer commits at a time; `busy_timeout` makes a
  writer wait for the lock instead of failing with "database is locked".
- `INSERT OR IGNORE` on the key: two workers that generate the same request store it once, and the
  second write is a no-op (both values are equal anyway, since the key fixes the output).
- Every `put` is its own transaction, so a run killed with SIGKILL keeps every response it finished.
  synchronous=NORMAL in WAL mode survives a killed process; only an OS crash or power loss may drop
  the last commits, which costs a re-generation, never a wrong answer.
- One connection per process, opened lazily and re-opened in a forked child (SQLite connections must
  not cross fork()); a lock serializes threads of one process on it.

The key is the sha256 of a canonical JSON (sorted keys, no whitespace) of:
- `schema`: KEY_VERSION, bumped whenever the key or the stored value changes meaning;
- `model_sha256`: the digest of the GGUF file (its weights, tokenizer and chat template);
- `runtime`: what the caller passes to describe the runtime, for llama.cpp its name, the
  llama-cpp-python version, `system_info` (the build flags: SIMD, BLAS, backends) and the adapter
  settings that change outputs (see `adapters.cached.device_runtime`);
- `request`: every GenerationRequest field except `tag` (prompt, messages, max_tokens, temperature,
  seed, stop, logprobs; a field added later joins the key automatically). `tag` only labels the item
  for routing and reports, so wrap leaf adapters, never a router that decides by tag.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgeready.errors import CacheError
from edgeready.records import GenerationRequest, Response, Timings

# Two versions: KEY_VERSION enters every key (bump it when keys or stored values change meaning: every old
# row becomes unreachable); SCHEMA_VERSION is the file's layout (bump it to add a table: rows are kept).
KEY_VERSION = 2  # 2: GenerationRequest.shared_prefix joined the key
SCHEMA_VERSION = 3  # 3: the scores table joined
# The first file schema written with each key version: a file older than that holds unreachable keys.
_FIRST_SCHEMA_OF_KEY = {2: 2}
STORE_FILENAME = "generations.sqlite"
# Request fields that do not change what a model generates.
_NOT_IN_KEY = frozenset({"tag"})
# Generous: a writer waits while others commit; commits are small, so this is never reached in practice.
BUSY_TIMEOUT_S = 60.0
# SQLite's default limit on bound parameters is 32766 since 3.32; stay far below for old builds.
_MAX_PARAMS = 500


def store_path(cache_dir: Path) -> Path:
    """Where the generation store lives under --cache-dir (default .cache/generations.sqlite)."""
    return cache_dir / STORE_FILENAME


def canonical_json(value: Any) -> str:
    # allow_nan=False: NaN has no canonical text, and a key must never silently differ.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def request_fields(request: GenerationRequest) -> dict[str, Any]:
    """The generation config as plain JSON values. A field whose default is a float is coerced to
    float, so temperature=0 and temperature=0.0 give one key."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(request):
        if f.name in _NOT_IN_KEY:
            continue
        value = getattr(request, f.name)
        if isinstance(f.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[f.name] = _plain(value)
    return out


def generation_key(request: GenerationRequest, *, model_sha256: str, runtime: Mapping[str, Any]) -> str:
    payload = {
        "schema": KEY_VERSION,
        "model_sha256": model_sha256,
        "runtime": _plain(dict(runtime)),
        "request": request_fields(request),
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def response_to_json(response: Response) -> str:
    # meta is free-form: anything JSON cannot hold is stored as its str(), the best a report can show.
    return json.dumps({
        "text": response.text,
        "prompt_tokens": response.prompt_tokens,
        "completion_tokens": response.completion_tokens,
        "timings": dataclasses.asdict(response.timings),
        "finish_reason": response.finish_reason,
        "token_logprobs": list(response.token_logprobs) if response.token_logprobs is not None else None,
        "served_by": response.served_by,
        "meta": response.meta,
    }, sort_keys=True, default=str)


def response_from_json(text: str) -> Response:
    d = json.loads(text)
    logprobs = d["token_logprobs"]
    return Response(
        text=d["text"],
        prompt_tokens=d["prompt_tokens"],
        completion_tokens=d["completion_tokens"],
        timings=Timings(**d["timings"]),
        finish_reason=d["finish_reason"],
        token_logprobs=tuple(logprobs) if logprobs is not None else None,
        served_by=d["served_by"],
        meta=d["meta"],
    )


class GenerationStore:
    """Key -> Response, persisted in one SQLite file shared by every process of a run."""

    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    # -- public -------------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, Response]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Response] = {}
        with self._guard() as conn:
            for start in range(0, len(wanted), _MAX_PARAMS):
                chunk = wanted[start : start + _MAX_PARAMS]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT key, response FROM generations WHERE key IN ({marks})", chunk)
                found.update((key, response_from_json(value)) for key, value in rows)
        return found

    def put(self, key: str, response: Response, request: GenerationRequest) -> bool:
        """Store one response in its own transaction; False when the key was already there."""
        row = (key, response_to_json(response), canonical_json(request_fields(request)), time.time())
        with self._guard() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO generations (key, response, request, created) VALUES (?, ?, ?, ?)", row
            )
            return cur.rowcount == 1

    def get_scores(self, key: str) -> list[float] | None:
        """Sentence scores stored under `key` (see edgeready.selfcheck.cached), or None."""
        with self._guard() as conn:
            row = conn.execute("SELECT scores FROM scores WHERE key = ?", (key,)).fetchone()
        return None if row is None else [float(v) for v in json.loads(row[0])]

    def put_scores(self, key: str, scores: list[float]) -> bool:
        """Store one passage's sentence scores in their own transaction; False when already there."""
        with self._guard() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO scores (key, scores, created) VALUES (?, ?, ?)",
                               (key, canonical_json([float(v) for v in scores]), time.time()))
            return cur.rowcount == 1

    def stats(self) -> dict[str, object]:
        with self._guard() as conn:
            rows = conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
            scores = conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return {"path": str(self.path), "rows": rows, "score_rows": scores, "bytes": size, "schema": SCHEMA_VERSION}

    def clear(self) -> int:
        """Delete every stored generation (and score); returns how many generations there were."""
        with self._guard() as conn:
            conn.execute("DELETE FROM scores")
            return conn.execute("DELETE FROM generations").rowcount

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn, self._pid = None, None

    def __enter__(self) -> GenerationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    def _guard(self) -> _Guarded:
        return _Guarded(self)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A connection inherited through fork() is abandoned, not closed: closing it here could
        # release the parent's file locks.
        self._conn = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, so each statement is its own transaction unless we BEGIN.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            self._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = NORMAL")
            self._retry_locked(lambda: self._ensure_schema(conn))
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first, so concurrent first opens create the table once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS generations ("
                    " key TEXT PRIMARY KEY, response TEXT NOT NULL, request TEXT NOT NULL, created REAL NOT NULL"
                    ") WITHOUT ROWID"
                )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS scores ("
                    " key TEXT PRIMARY KEY, scores TEXT NOT NULL, created REAL NOT NULL) WITHOUT ROWID"
                )
                if version < _FIRST_SCHEMA_OF_KEY[KEY_VERSION]:
                    # An older edgeready derived its keys differently: none of its rows can be reached
                    # again, so empty the table rather than stop the run.
                    conn.execute("DELETE FROM generations")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise CacheError(
                    f"generation cache {self.path} has schema {version}, this edgeready uses {SCHEMA_VERSION}: "
                    "delete the file (it only holds cached generations) or pass another --cache-dir"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _retry_locked(self, action: Any) -> Any:
        # Switching to WAL and the first schema write can meet SQLITE_BUSY that the busy handler
        # does not cover (a lock upgrade that would deadlock), so retry until the timeout.
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _error(self, exc: sqlite3.Error) -> CacheError:
        if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
            return CacheError(f"generation cache {self.path}: {exc}")
        return CacheError(
            f"generation cache {self.path} is not a usable SQLite database ({exc}); delete the file "
            "(it only holds cached generations) or pass another --cache-dir"
        )


class _Guarded:
    """`with store._guard() as conn`: the process's connection under the thread lock, with every
    SQLite error turned into a CacheError that names the file."""

    def __init__(self, store: GenerationStore):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        if self.store._pid is not None and self.store._pid != os.getpid():
            # A forked child: the lock may have been copied while another thread of the parent held it.
            self.store._lock = threading.Lock()
        self.store._lock.acquire()
        try:
            return self.store._connection()
        except sqlite3.Error as exc:
            self.store._lock.release()
            raise self.store._error(exc) from exc
        except BaseException:
            self.store._lock.release()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.store._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise self.store._error(exc) from exc


def _plain(value: Any) -> Any:
    """Tuples become lists, mappings plain dicts, recursively: the JSON form of a value."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
