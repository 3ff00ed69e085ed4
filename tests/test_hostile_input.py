"""Hostile and careless input (issue 19): each test here failed before its fix.

- YAML: a duplicated key is an error naming both lines (it was resolved silently to the later value),
  bytes that are not UTF-8 are an error naming the byte offset (they were an INTERNALERROR), hostile tags
  stay rejected.
- The server adapter against a misbehaving server on loopback: a reply dripped a byte at a time hits a
  deadline for the whole request, a huge reply is cut off while streaming, wrong-shaped JSON is the
  adapter's own error, and a connection cut after the server took the request is not sent again.
- The model digest memo is not fooled by a file replaced with its mtime restored.
- A truncated GGUF is named as truncated, with the size it should have.
- The llama.cpp wheel is built once under a lock, and an interrupted install never deletes another
  clone's stamp.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from edgeready.adapters.openai_server import DEFAULT_MAX_RESPONSE_BYTES, ServerRequestError
from edgeready.candidates import Endpoint, _cached_sha256, candidate_from_gguf, materialize
from edgeready.config_errors import ConfigError, read_yaml
from edgeready.gguf_info import check_complete
from edgeready.records import GenerationRequest
from edgeready.targets import load_target
from tests.conftest import ROOT, run_gate
from tests.fake_server import COMPLETION_BODY, FakeServer, fake_adapter

PROMPT = GenerationRequest(prompt="The capital of France is", max_tokens=6, stop=("\n",))
DEFAULT_TARGET = (ROOT / "thresholds" / "device" / "default.yaml").read_text()


def _target(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "device" / "t.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _line_of(text: str, needle: str, nth: int = 0) -> int:
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][nth]


# -- YAML -----------------------------------------------------------------------------------------
def test_duplicated_threshold_is_an_error_naming_both_lines(tmp_path: Path):
    # The case: a lenient minimum further down the same block used to win silently.
    text = DEFAULT_TARGET.replace("    max_tokens: 16\n", "    max_tokens: 16\n    min_accuracy: 0.01\n", 1)
    path = _target(tmp_path, text)
    first, second = _line_of(text, "min_accuracy:"), _line_of(text, "min_accuracy:", 1)
    assert first < second
    with pytest.raises(ConfigError) as info:
        load_target(path)
    assert str(info.value) == f"{path}:{second}: gates.accuracy.min_accuracy: duplicate key (first at line {first})"


def test_duplicate_keys_are_found_at_every_depth_and_all_reported(tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text("a: 1\nitems:\n  - {x: 1, y: 2, x: 3}\nb: {c: 1}\na: 2\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert str(info.value).splitlines() == [
        f"{path}:3: items.0.x: duplicate key (first at line 3)",
        f"{path}:5: a: duplicate key (first at line 1)",
    ]


def test_distinct_keys_anchors_and_merges_still_load(tmp_path: Path):
    # Same key in different mappings, `1` and "1" (an int and a string), a merge key and a shared alias.
    path = tmp_path / "t.yaml"
    path.write_text('base: &b {x: 1}\none: {<<: *b, y: 2}\ntwo: {<<: *b, x: 3}\nk: {1: a, "1": b}\nref: *b\n')
    data, _ = read_yaml(path)
    assert data["one"] == {"x": 1, "y": 2} and data["two"] == {"x": 3} and data["k"] == {1: "a", "1": "b"}


def test_hostile_tag_is_rejected_and_not_run(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "t.yaml"
    path.write_text(f'name: x\nrun: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match=r"t\.yaml:2: invalid YAML: .*python/object/apply:os\.system"):
        read_yaml(path)
    assert not marker.exists()


def test_non_utf8_target_names_the_byte_offset(tmp_path: Path):
    text = DEFAULT_TARGET.encode()
    offset = text.index(b"Generic 2-core")
    path = _target(tmp_path, text[:offset] + b"\xe9" + text[offset + 1 :])  # Latin-1 é
    line = text[:offset].count(b"\n") + 1
    with pytest.raises(ConfigError) as info:
        load_target(path)
    assert str(info.value).startswith(f"{path}:{line}: not UTF-8 text: byte 0xe9 at byte offset {offset} ")


def test_non_utf8_target_stops_the_run_with_exit_4_not_an_internal_error(tmp_path: Path):
    path = _target(tmp_path, b"name: caf\xe9\n")
    proc = run_gate("-m", "device", "--target", str(path), "--reports", str(tmp_path / "r"), timeout=120)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    assert f"{path}:1: not UTF-8 text: byte 0xe9 at byte offset 9" in proc.stdout + proc.stderr


# -- the server adapter against a misbehaving server ----------------------------------------------
def _headers(handler: BaseHTTPRequestHandler, length: int | None) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    if length is None:
        handler.send_header("Transfer-Encoding", "chunked")
    else:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()
    handler.wfile.flush()


def _drip(fake: FakeServer, every_s: float):
    def action(handler: BaseHTTPRequestHandler) -> None:
        data = json.dumps(COMPLETION_BODY).encode()
        _headers(handler, len(data))
        for byte in data:
            if fake.stopped.wait(every_s):
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()

    return action


def test_a_dripping_server_hits_the_deadline_of_the_whole_request(fake: FakeServer):
    # Each byte comes well within the per-read timeout, so only a deadline for the whole reply stops it
    # (the whole body would take 0.4 s x ~110 bytes = 44 s).
    fake.script = [_drip(fake, 0.4)]
    start = time.perf_counter()
    with fake_adapter(fake, timeout_s=1.5) as a, pytest.raises(ServerRequestError) as info:
        a.generate([PROMPT])
    elapsed = time.perf_counter() - start
    assert info.value.kind == "deadline" and f"{fake.base_url}/completions" in str(info.value)
    assert "timeout_s=1.5" in str(info.value)
    assert elapsed < 1.5 + 0.4 + 1.0, f"{elapsed:.1f} s"
    assert len(fake.seen) == 1 and a.counters.errors == {"deadline": 1}  # the server has it: not sent again


def _huge(fake: FakeServer, size: int, *, declared: bool):
    """A valid completion whose text is `size` bytes, sent in 64 KiB pieces, chunked unless `declared`."""

    def action(handler: BaseHTTPRequestHandler) -> None:
        head, tail = b'{"choices": [{"text": "', b'", "finish_reason": "stop"}]}'
        _headers(handler, len(head) + size + len(tail) if declared else None)
        piece = b"x" * 65536
        parts = [head, *([piece] * (size // len(piece))), tail]
        for part in parts:
            if fake.stopped.is_set():
                return
            handler.wfile.write(part if declared else b"%x\r\n%s\r\n" % (len(part), part))
        if not declared:
            handler.wfile.write(b"0\r\n\r\n")

    return action


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_huge_reply_is_cut_off_while_streaming(fake: FakeServer, declared: bool):
    limit = 256 * 1024
    fake.script = [_huge(fake, 64 * 2**20, declared=declared)]
    with fake_adapter(fake, max_response_bytes=limit) as a, pytest.raises(ServerRequestError) as info:
        a.generate([PROMPT])
    message = str(info.value)
    assert info.value.kind == "too_large" and f"{fake.base_url}/completions" in message
    assert f"max_response_bytes={limit}" in message
    # Never read whole: at most the limit and the pieces in flight, not 64 MiB.
    assert a.counters.bytes_received < limit + 4 * 2**20
    assert len(fake.seen) == 1 and a.counters.errors == {"too_large": 1}


def test_max_response_bytes_is_an_endpoint_setting_with_a_sane_default(fake: FakeServer):
    assert DEFAULT_MAX_RESPONSE_BYTES == 8 * 2**20
    assert Endpoint(base_url="http://h/v1", model="m").max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES
    assert Endpoint(base_url="http://h/v1", model="m", max_response_bytes=4096).max_response_bytes == 4096
    with fake_adapter(fake) as a:
        assert a.max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES
        assert a.describe()["max_response_bytes"] == DEFAULT_MAX_RESPONSE_BYTES
        assert a.generate([PROMPT])[0].text == " Paris"  # an ordinary reply is well within it


@pytest.mark.parametrize(
    ("body", "wrong"),
    [
        ({"choices": [1]}, "choices[0] is a number, not an object"),
        ({"choices": []}, "reply.choices is empty"),
        ([], "reply is a list, not an object"),
        ({"choices": [{"text": 5}]}, "choices[0].text is a number, not a string"),
        ({"choices": "Paris"}, "reply.choices is a string, not a list"),
        ({"error": "overloaded"}, "reply.choices is missing"),
        ({"choices": [{"message": "Paris"}]}, "choices[0].message is a string, not an object"),
        ({"choices": [{"message": {"content": ["Paris"]}}]}, "choices[0].message.content is a list"),
        ({"choices": [{"text": "x", "finish_reason": 1}]}, "choices[0].finish_reason is a number"),
        ({"choices": [{"text": "x"}], "usage": [5, 1]}, "reply.usage is a list, not an object"),
        ({"choices": [{"text": "x"}], "usage": {"prompt_tokens": "five"}}, "usage.prompt_tokens is 'five'"),
        ({"choices": [{"text": "x"}], "usage": {"completion_tokens": -1}}, "usage.completion_tokens is -1"),
        ({"choices": [{"text": "x"}], "timings": 3}, "reply.timings is a number, not an object"),
        (b"<html>502 Bad Gateway</html>", "the reply is not JSON"),
        (b"[" * 100_000, "the reply is not JSON (RecursionError)"),
    ],
)
def test_wrong_shaped_json_is_the_adapters_own_error(fake: FakeServer, body: object, wrong: str):
    fake.script = [(200, {}, body)]
    with fake_adapter(fake) as a, pytest.raises(ServerRequestError) as info:
        a.generate([PROMPT])
    assert info.value.kind == "bad_response" and info.value.status == 200
    assert f"POST {fake.base_url}/completions" in str(info.value) and wrong in str(info.value)
    assert a.counters.errors == {"bad_response": 1} and len(fake.seen) == 1


def test_wrong_shaped_logprobs_and_models_list_are_clear(fake: FakeServer):
    fake.script = [
        (200, {}, {"choices": [{"text": "x", "logprobs": {"token_logprobs": ["high"]}}]}),
        (200, {}, {"data": [1, 2]}),  # GET /models
    ]
    with fake_adapter(fake) as a:
        with pytest.raises(ServerRequestError, match=r"bad_response: .*logprobs holds values that are not numbers"):
            a.generate([GenerationRequest(prompt="Q", logprobs=True)])
        assert a.server_models() is None
        assert "data[0] is a number, not an object" in str(a.describe()["server_models_error"])


def _close_after_request(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.flush()  # the request was read in full; no reply at all


def _close_mid_body(handler: BaseHTTPRequestHandler) -> None:
    data = json.dumps(COMPLETION_BODY).encode()
    _headers(handler, len(data))
    handler.wfile.write(data[:10])


def _reset_after_headers(handler: BaseHTTPRequestHandler) -> None:
    _headers(handler, 100)
    # SO_LINGER 0: close with a RST, as a crashed server process does.
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()


@pytest.mark.parametrize("cut", [_close_after_request, _close_mid_body, _reset_after_headers],
                         ids=["before-headers", "mid-body", "reset-after-headers"])
def test_a_connection_cut_after_the_request_was_taken_is_not_sent_again(fake: FakeServer, cut):
    fake.script = [cut]
    with fake_adapter(fake) as a, pytest.raises(ServerRequestError) as info:
        a.generate([PROMPT])
    assert info.value.kind == "disconnected" and f"{fake.base_url}/completions" in str(info.value)
    assert "not sent again" in str(info.value)
    assert len(fake.seen) == 1, "the same generation was requested twice"
    assert a.counters.errors == {"disconnected": 1} and a.counters.retries == 0 and info.value.attempts == 1


def test_overload_before_the_request_was_taken_is_still_retried(fake: FakeServer):
    fake.script = [(503, {}, {"error": {"message": "loading"}}), (429, {"Retry-After": "0"}, b"")]
    with fake_adapter(fake) as a:
        assert a.generate([PROMPT])[0].text == " Paris"
    assert len(fake.seen) == 3 and a.counters.errors == {"http_503": 1, "http_429": 1}


# -- the model digest memo ------------------------------------------------------------------------
def _restore_mtime(path: Path, st: os.stat_result) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


@pytest.mark.parametrize("how", ["rewritten-in-place", "replaced-by-rename"])
def test_digest_memo_is_not_fooled_by_a_restored_mtime(tmp_path: Path, how: str):
    model, cache = tmp_path / "model.gguf", tmp_path / "cache"
    model.write_bytes(b"A" * 4096)
    st = model.stat()
    assert _cached_sha256(model, cache) == hashlib.sha256(b"A" * 4096).hexdigest()
    time.sleep(0.05)  # past the file system's timestamp granularity, so the change time differs
    if how == "rewritten-in-place":
        with model.open("r+b") as fh:
            fh.write(b"B" * 4096)
    else:
        other = tmp_path / "other.gguf"
        other.write_bytes(b"B" * 4096)
        other.replace(model)
    _restore_mtime(model, st)
    assert _cached_sha256(model, cache) == hashlib.sha256(b"B" * 4096).hexdigest()


def test_digest_memo_still_answers_an_unchanged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model, cache = tmp_path / "model.gguf", tmp_path / "cache"
    model.write_bytes(b"A" * 4096)
    first = _cached_sha256(model, cache)
    monkeypatch.setattr("edgeready.candidates.sha256_file", lambda p: pytest.fail("re-hashed an unchanged file"))
    assert _cached_sha256(model, cache) == first


# -- a truncated GGUF -----------------------------------------------------------------------------
def test_truncated_gguf_is_named_with_the_size_it_should_have(smollm_path: Path, tmp_path: Path):
    full = smollm_path.stat().st_size
    cut = tmp_path / "smollm-cut.gguf"
    with smollm_path.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(full // 2))
    with pytest.raises(ConfigError) as info:
        materialize(candidate_from_gguf(cut), tmp_path / ".cache")
    message = str(info.value)
    assert message.startswith(f"{cut.resolve()}: truncated: ")
    assert f"says the file has {full} bytes, it has {full // 2}" in message


def test_complete_gguf_size_matches_the_tensor_table(smollm_path: Path, tmp_path: Path):
    from edgeready.conformance import read_header  # the independent header reader of the conformance gate

    header = read_header(smollm_path)
    expected = header.data_offset + max(t.offset + t.n_bytes for t in header.tensors)
    assert check_complete(smollm_path) == expected == smollm_path.stat().st_size
    cut = tmp_path / "header-only.gguf"
    with smollm_path.open("rb") as src:
        cut.write_bytes(src.read(100_000))  # inside the vocabulary
    with pytest.raises(ConfigError, match=r"header-only\.gguf: not a readable GGUF file"):
        check_complete(cut)


# -- the wheelhouse build -------------------------------------------------------------------------
BUILD = ROOT / ".ci" / "build-wheel.sh"


def _build(wheelhouse: Path, command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["bash", str(BUILD), str(wheelhouse), command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_concurrent_installs_build_the_wheel_once(tmp_path: Path):
    wheelhouse, runs = tmp_path / "wheelhouse", tmp_path / "runs"
    command = f'echo run >> {runs}; sleep 1; echo wheel > "$BUILD_DIR/fake-1.0-py3-none-any.whl"'
    first = _build(wheelhouse, command)
    time.sleep(0.2)
    second = _build(wheelhouse, command)
    outputs = [p.communicate(timeout=30) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert runs.read_text() == "run\n", "the build ran twice"
    assert "waiting for another install's build" in outputs[1][1] and "already built" in outputs[1][1]
    assert (wheelhouse / "fake-1.0-py3-none-any.whl").read_text() == "wheel\n"
    assert (wheelhouse / ".built").is_file()
    assert not list(wheelhouse.glob(".build.*")) and not list(wheelhouse.glob(".built.tmp*"))


def test_a_failed_build_leaves_no_stamp_and_no_partial_wheel(tmp_path: Path):
    wheelhouse = tmp_path / "wheelhouse"
    proc = _build(wheelhouse, 'echo partial > "$BUILD_DIR/fake-1.0-py3-none-any.whl"; exit 3')
    proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert sorted(p.name for p in wheelhouse.iterdir()) == [".lock"]


def test_an_interrupted_build_keeps_an_existing_stamp(tmp_path: Path):
    wheelhouse = tmp_path / "wheelhouse"
    proc = subprocess.Popen(["bash", str(BUILD), str(wheelhouse), "sleep 30"], start_new_session=True)
    time.sleep(0.5)  # building: no stamp yet, so this build runs
    (wheelhouse / ".built").write_text("built by another clone\n")  # an install that took no lock finishes
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert (wheelhouse / ".built").read_text() == "built by another clone\n"
    assert not list(wheelhouse.glob(".build.*"))


def test_make_interrupted_while_waiting_keeps_the_other_clones_stamp(tmp_path: Path):
    """make deletes a target it was remaking when interrupted if the file changed meanwhile: without
    .PRECIOUS, a clone interrupted while waiting for the lock deleted the stamp the other clone wrote."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    stamp = wheelhouse / ".built"
    with (wheelhouse / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other clone is building
        make = subprocess.Popen(
            ["make", "-C", str(ROOT), f"WHEELHOUSE={wheelhouse}", "LLAMA_WHEEL_BUILD=exit 7", str(stamp)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            waiting = _wait_for_line(make, "waiting for another install's build", timeout=20)
            assert waiting, "make did not wait for the lock"
            stamp.write_text("built by another clone\n")
            os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the waiting clone
            make.wait(timeout=30)
        finally:
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
    assert make.returncode != 0
    assert stamp.is_file() and stamp.read_text() == "built by another clone\n"


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> bool:
    found = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if needle in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    return found.wait(timeout)


def test_makefile_runs_the_locked_build_and_keeps_its_stamp(tmp_path: Path):
    text = (ROOT / "Makefile").read_text()
    assert ".PRECIOUS: $(WHEELHOUSE)/.built" in text
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), f"WHEELHOUSE={tmp_path}", "install"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f'bash .ci/build-wheel.sh "{tmp_path}"' in proc.stdout and '-w "$BUILD_DIR"' in proc.stdout
    assert shutil.which("flock"), "flock (util-linux) is needed by .ci/build-wheel.sh"
