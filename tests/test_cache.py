"""The generation store and the caching adapter: round trip, key sensitivity, concurrent writers,
resuming after a killed run, and one pass of the real device adapter on the packaged Gemma."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import pytest

from edgeready.adapters.base import Adapter
from edgeready.adapters.cached import CachedAdapter, device_runtime
from edgeready.cache import (
    CacheError,
    GenerationStore,
    canonical_json,
    generation_key,
    request_fields,
    response_to_json,
    store_path,
)
from edgeready.records import GenerationRequest, Response, Timings

ROOT = Path(__file__).resolve().parents[1]
SHA = "ab" * 32
RUNTIME = {
    "runtime": "llama.cpp via llama-cpp-python",
    "version": "0.3.36",
    "system_info": "CPU : AVX2 = 1 | FMA = 1 | ",
    "settings": {"n_ctx": 1024, "n_batch": 64, "prompt_style": "few-shot"},
    "numpy": "2.3.5",
}


class SlowFakeAdapter:
    """Echoes each prompt after `delay` seconds. A stand-in for nothing under test: it only gives the
    cache something to wrap, and is slow so a run can be killed half-way."""

    def __init__(self, delay: float = 0.0, name: str = "slow-fake"):
        self.name = name
        self.delay = delay
        self.calls: list[list[str]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        self.calls.append([r.prompt for r in requests])
        out = []
        for r in requests:
            time.sleep(self.delay)
            out.append(Response(text=_expected_text(r), prompt_tokens=len(r.prompt), completion_tokens=2,
                                timings=Timings(total_s=self.delay), meta={"fake": True}))
        return out

    def describe(self) -> dict[str, object]:
        return {"adapter": "slow-fake", "delay": self.delay}

    def close(self) -> None:
        pass


def _expected_text(r: GenerationRequest) -> str:
    return f"echo:{r.prompt}|{r.seed}"


def _requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=f"question {i}", max_tokens=8, stop=("\n",)) for i in range(n)]


def _key(request: GenerationRequest, sha: str = SHA, runtime: dict | None = None) -> str:
    return generation_key(request, model_sha256=sha, runtime=RUNTIME if runtime is None else runtime)


# -- store ----------------------------------------------------------------------------------------
def test_round_trip_keeps_every_field(tmp_path):
    path = store_path(tmp_path)
    assert path.name == "generations.sqlite"
    req = GenerationRequest(prompt="p", logprobs=True)
    resp = Response(text="Paris\u00e9", prompt_tokens=7, completion_tokens=3,
                    timings=Timings(total_s=0.5, prompt_eval_s=0.1, generation_s=0.4), finish_reason="length",
                    token_logprobs=(-0.1, -2.5, -1e-9), served_by="device", meta={"route": "device", "n": [1, 2]})
    with GenerationStore(path) as store:
        assert store.put(_key(req), resp, req) is True
        assert store.put(_key(req), resp, req) is False  # INSERT OR IGNORE
    with GenerationStore(path) as store:
        got = store.get_many([_key(req), "missing"])
        assert got == {_key(req): resp}
        assert store.stats()["rows"] == 1
        assert store.clear() == 1 and store.get_many([_key(req)]) == {}


def test_key_changes_with_every_generation_field_model_and_build():
    base = GenerationRequest(prompt="Q", max_tokens=8, temperature=0.0, seed=0, stop=("\n",), logprobs=False,
                             messages=(("user", "Q"),))
    variants = {
        "prompt": dataclasses.replace(base, prompt="Q2"),
        "max_tokens": dataclasses.replace(base, max_tokens=9),
        "temperature": dataclasses.replace(base, temperature=0.7),
        "seed": dataclasses.replace(base, seed=1),
        "stop": dataclasses.replace(base, stop=("\n", ".")),
        "logprobs": dataclasses.replace(base, logprobs=True),
        "messages": dataclasses.replace(base, messages=(("system", "S"), ("user", "Q"))),
        # The preamble hint changes how the prompt is batched, and llama.cpp's numerics with it.
        "shared_prefix": dataclasses.replace(base, shared_prefix="Q"),
    }
    # Every field but tag is covered: a new GenerationRequest field must be added here.
    assert set(variants) == set(request_fields(base))
    keys = {_key(base)} | {_key(v) for v in variants.values()}
    assert len(keys) == len(variants) + 1
    assert _key(dataclasses.replace(base, tag="complex")) == _key(base)  # a label, not a generation setting
    assert _key(dataclasses.replace(base, temperature=0)) == _key(base)  # 0 and 0.0 are one setting
    assert _key(base, sha="cd" * 32) != _key(base)
    for field, value in [("system_info", "CPU : AVX512 = 1 | "), ("version", "0.3.37"), ("numpy", "2.4.0"),
                         ("settings", {"n_ctx": 1024, "n_batch": 32, "prompt_style": "few-shot"}),
                         ("settings", {"n_ctx": 1024, "n_batch": 64, "prompt_style": "chat"})]:
        assert _key(base, runtime={**RUNTIME, field: value}) != _key(base), field


def test_key_is_stable_across_releases():
    # If this changes, old stores hold rows no new key can reach: bump KEY_VERSION on purpose.
    req = GenerationRequest(prompt="stable")
    assert canonical_json(request_fields(req)) == (
        '{"logprobs":false,"max_tokens":32,"messages":[],"prompt":"stable","seed":0,"shared_prefix":"","stop":[],'
        '"temperature":0.0}'
    )
    pinned = {"runtime": "r", "version": "1", "system_info": "CPU : AVX2 = 1 | ", "settings": {"n_ctx": 512}}
    assert _key(req, runtime=pinned) == "888edfa0077e251bdaa7ae18d4dbcba8179dca096a416bd53a264b14f767cb7c"


def _writer(path: str, worker: int, start: multiprocessing.synchronize.Barrier, errors) -> None:
    try:
        store = GenerationStore(Path(path))
        start.wait()
        for i in range(worker * 50, worker * 50 + 200):
            req = GenerationRequest(prompt=f"k{i}")
            store.put(_key(req), Response(text=f"v{i}", prompt_tokens=1, completion_tokens=1,
                                          timings=Timings(total_s=0.0)), req)
        store.close()
    except BaseException:
        errors.put(traceback.format_exc())
        raise


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "gen.sqlite"
    start, errors = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), w, start, errors)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert errors.empty(), errors.get()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    reqs = [GenerationRequest(prompt=f"k{i}") for i in range(350)]  # workers wrote 0-199, 50-249, ... 150-349
    got = GenerationStore(path).get_many(_key(r) for r in reqs)
    assert len(got) == 350
    assert all(got[_key(r)].text == f"v{i}" for i, r in enumerate(reqs))


def test_reopens_its_connection_in_a_forked_child(tmp_path):
    store = GenerationStore(tmp_path / "gen.sqlite")
    req = GenerationRequest(prompt="parent")
    store.put(_key(req), Response(text="p", prompt_tokens=1, completion_tokens=1, timings=Timings(0.0)), req)
    # The child inherits `store` holding the parent's open connection, which SQLite forbids using there.
    proc = multiprocessing.get_context("fork").Process(target=_child_put, args=(store,))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0, "the child wrote through the parent's connection or failed"
    req2 = GenerationRequest(prompt="parent again")
    store.put(_key(req2), Response(text="p2", prompt_tokens=1, completion_tokens=1, timings=Timings(0.0)), req2)
    assert store.stats()["rows"] == 3


def _child_put(store: GenerationStore) -> None:
    inherited = store._conn
    req = GenerationRequest(prompt="child")
    store.put(_key(req), Response(text="c", prompt_tokens=1, completion_tokens=1, timings=Timings(0.0)), req)
    sys.exit(0 if store._conn is not None and store._conn is not inherited else 1)


def test_corrupt_file_gives_an_error_naming_it(tmp_path):
    path = tmp_path / "generations.sqlite"
    path.write_bytes(b"this is not an sqlite database at all" * 200)
    with pytest.raises(CacheError, match=r"generations\.sqlite is not a usable SQLite database"):
        GenerationStore(path).get_many(["k"])


def test_foreign_schema_is_refused(tmp_path):
    path = tmp_path / "generations.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(CacheError, match="schema 99"):
        GenerationStore(path).stats()


# -- adapter --------------------------------------------------------------------------------------
def test_generates_only_misses_in_order_and_tags_them(tmp_path):
    store = GenerationStore(tmp_path / "gen.sqlite")
    inner = SlowFakeAdapter()
    cached = CachedAdapter(inner, store, model_sha256=SHA, runtime=RUNTIME)
    assert isinstance(cached, Adapter)
    a, b, c = _requests(3)
    cached.generate([b])
    inner.calls.clear()
    out = cached.generate([a, b, a, c])
    assert inner.calls == [[a.prompt], [c.prompt]]  # one request per call, committed in between
    assert [r.text for r in out] == [_expected_text(r) for r in (a, b, a, c)]
    assert [r.meta["cache"] for r in out] == ["miss", "hit", "hit", "miss"]
    assert all(r.meta["fake"] for r in out)
    assert (cached.hits, cached.misses) == (2, 3)
    info = cached.describe()
    assert info["adapter"] == "slow-fake" and info["cache"]["hits"] == 2 and info["cache"]["misses"] == 3
    assert "cache" not in store.get_many([cached.key(a)])[cached.key(a)].meta


def test_a_failure_keeps_the_responses_finished_before_it(tmp_path):
    class FailsOnThird(SlowFakeAdapter):
        def generate(self, requests):
            if len(self.calls) == 2:
                raise RuntimeError("device lost")
            return super().generate(requests)

    store = GenerationStore(tmp_path / "gen.sqlite")
    reqs = _requests(5)
    with pytest.raises(RuntimeError, match="device lost"):
        CachedAdapter(FailsOnThird(), store, model_sha256=SHA, runtime=RUNTIME).generate(reqs)
    assert store.stats()["rows"] == 2


def test_resume_after_sigkill_with_fake_adapter(tmp_path):
    db, n = tmp_path / "gen.sqlite", 12
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, str(db), str(n)], cwd=ROOT, env=env)
    store = GenerationStore(db)
    try:
        deadline = time.monotonic() + 60
        while (not db.exists() or store.stats()["rows"] < 3) and time.monotonic() < deadline:
            assert proc.poll() is None, "the generating run ended before it was killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    done = store.stats()["rows"]
    assert 3 <= done < n

    inner = SlowFakeAdapter()
    out = CachedAdapter(inner, store, model_sha256=SHA, runtime=RUNTIME).generate(_requests(n))
    reqs = _requests(n)
    assert [p for call in inner.calls for p in call] == [r.prompt for r in reqs[done:]]
    assert [r.meta["cache"] for r in out] == ["hit"] * done + ["miss"] * (n - done)
    assert [r.text for r in out] == [_expected_text(r) for r in reqs]


def test_real_device_second_pass_is_all_hits(tmp_path, gemma_path):
    from edgeready.adapters.llama_cpp_device import LlamaCppDevice
    from edgeready.candidates import sha256_file

    reqs = [
        GenerationRequest(prompt="The capital of France is", max_tokens=6),
        GenerationRequest(prompt="Water boils at", max_tokens=6, logprobs=True),
        GenerationRequest(prompt="Once upon a time", max_tokens=6, temperature=0.8, seed=3),
    ]
    # One thread: with OpenMP, threads = cores on a shared 2-core host spins for seconds per token.
    device = LlamaCppDevice(gemma_path, threads=1, n_ctx=256)
    try:
        sha, runtime = sha256_file(gemma_path), device_runtime(device)
        first = CachedAdapter(device, GenerationStore(tmp_path / "gen.sqlite"), model_sha256=sha, runtime=runtime)
        one = first.generate(reqs)
        evaluated = device.prompt_tokens_evaluated
        second = CachedAdapter(device, GenerationStore(tmp_path / "gen.sqlite"), model_sha256=sha, runtime=runtime)
        two = second.generate(reqs)
    finally:
        device.close()
    assert (first.misses, second.hits, second.misses) == (3, 3, 0)
    assert device.prompt_tokens_evaluated == evaluated  # the model was not asked again
    assert [r.text for r in two] == [r.text for r in one]
    assert two[1].token_logprobs == one[1].token_logprobs and two[1].token_logprobs
    assert all(r.meta["cache"] == "hit" and r.served_by == "device" for r in two)


if __name__ == "__main__":
    # The run that test_resume_after_sigkill_with_fake_adapter kills: generate slowly into the store.
    _db, _n = Path(sys.argv[1]), int(sys.argv[2])
    CachedAdapter(SlowFakeAdapter(delay=0.15), GenerationStore(_db), model_sha256=SHA, runtime=RUNTIME).generate(
        _requests(_n)
    )


def test_older_schema_is_emptied_not_refused(tmp_path):
    path = tmp_path / "g.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE generations (key TEXT PRIMARY KEY, response TEXT NOT NULL, request TEXT NOT NULL,"
                     " created REAL NOT NULL) WITHOUT ROWID")
        conn.execute("INSERT INTO generations VALUES ('old', '{}', '{}', 0)")
        conn.execute("PRAGMA user_version = 1")
    store = GenerationStore(path)
    assert store.get_many(["old"]) == {} and store.stats()["rows"] == 0
    store.close()


def test_schema_2_store_keeps_its_generations_and_gains_the_scores_table(tmp_path):
    path = tmp_path / "g.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE generations (key TEXT PRIMARY KEY, response TEXT NOT NULL, request TEXT NOT NULL,"
                     " created REAL NOT NULL) WITHOUT ROWID")
        kept = Response(text="kept", prompt_tokens=1, completion_tokens=1, timings=Timings(total_s=0.1))
        row = response_to_json(kept)
        conn.execute("INSERT INTO generations VALUES ('k2', ?, '{}', 0)", (row,))
        conn.execute("PRAGMA user_version = 2")
    store = GenerationStore(path)
    assert store.get_many(["k2"])["k2"].text == "kept"
    assert store.put_scores("s", [0.25, 1.0]) and not store.put_scores("s", [0.5])  # stored once
    assert store.get_scores("s") == [0.25, 1.0] and store.get_scores("missing") is None
    assert store.stats()["score_rows"] == 1
    store.close()


def test_sentence_scores_are_stored_and_keyed_by_scorer_and_inputs(tmp_path):
    from edgeready.selfcheck.cached import CachedScorer, scorer_identity
    from edgeready.selfcheck.ngram import NgramScorer

    store = GenerationStore(tmp_path / "g.sqlite")
    inner = NgramScorer()
    cached = CachedScorer(inner, store, scorer_identity(inner, {}))
    sents, evidence = ["Paris is the capital of France."], ["Paris is in France.", "Lyon is a city."]
    first = cached.score(sents, evidence)
    again = CachedScorer(inner, store, scorer_identity(inner, {})).score(sents, evidence)
    assert again == first == inner.score(sents, evidence) and cached.misses == 1
    other = CachedScorer(inner, store, scorer_identity(inner, {"n": 2}))
    assert other.key(sents, evidence) != cached.key(sents, evidence)
    assert cached.key(sents, evidence[:1]) != cached.key(sents, evidence)
    assert cached.key(["Lyon."], evidence) != cached.key(sents, evidence)
    store.close()
