"""The phone itself: an Android device over adb, running the candidate in an on-device server.

`PhoneServer.start()` takes a target's `profile.phone` (edgeready/schema.py `Phone`) through these steps, each
named in any error with the device:

1. connect: the serial (given, this worker's of `profile.adb_serials`, or the only device attached) must be in
   `adb devices` as "device";
2. state: the screen and the foreground app, when the target constrains them (`dumpsys power`, `dumpsys
   activity`);
3. clean: a server a previous run left (its pid file in the working folder: a run whose phone dropped could
   not stop it) is killed, and that run's port forward removed;
4. push: the GGUF goes to `<workdir>/<sha256>.gguf`, skipped when a file there already has that sha256 (the
   phone's `sha256sum`); a new push goes to a `.part` file first, checked for free space before and for its
   sha256 after, so a cut push never passes for a model;
5. start: the target's server command (llama.cpp's `llama-server` built for Android by default; MLC's or
   another OpenAI-compatible server) in the working folder, with `nohup`, its pid written beside it;
6. forward: `adb forward tcp:0 tcp:<port>` gives a host port; the run's requests go through it to the server
   (edgeready/adapters/openai_server.py, streamed so the first token is timed);
7. ready: GET /v1/models answers, while the process is alive (else its log tail is the error).

`stop()` kills the server, removes its pid file and the forward, also after a failed step, and says what it
could not do (a phone that dropped off the bus keeps its server until the next run's step 3). Nothing outside
the working folder is written; no root is needed (the shell user owns /data/local/tmp).

While the server runs, `peak_rss_bytes()` reads its VmHWM from /proc/<pid>/status and `temperatures()` reads
the battery's (`dumpsys battery`, tenths of a degree) and every thermal zone's (/sys/class/thermal, millidegrees).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgeready.adapters.base import AdapterWrapper
from edgeready.energy.android import parse_devices
from edgeready.errors import PhoneError, ServerError
from edgeready.records import GenerationRequest, Response
from edgeready.schema import Phone

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# adb's own round trip is tens of ms; a shell step that takes longer than this is a phone that stopped answering.
SHELL_TIMEOUT_S = 30.0
# USB 2 moves about 30 MB/s: a few hundred MB in well under a minute, a few GB in a few minutes.
PUSH_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Done:
    rc: int
    out: str
    err: str


def run_adb(argv: list[str], timeout_s: float) -> Done:
    """One adb command (the real binary, or a stand-in for one); never raises for a non-zero exit."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return Done(127, "", f"{argv[0]}: not found (install Android platform-tools, or set profile.phone.adb)")
    except subprocess.TimeoutExpired:
        return Done(124, "", f"no answer within {timeout_s:g} s")
    return Done(proc.returncode, proc.stdout, proc.stderr)


# -- what the phone prints ------------------------------------------------------------------------------------
def parse_vmhwm(status: str) -> int | None:
    """/proc/<pid>/status -> the peak resident set (VmHWM) in bytes; None when the line is missing."""
    m = re.search(r"^VmHWM:\s*(\d+)\s*kB", status, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def parse_battery_temperature(dumpsys: str) -> float | None:
    """`dumpsys battery` -> degrees Celsius (it prints tenths: "temperature: 312")."""
    m = re.search(r"^\s*temperature:\s*(-?\d+)\s*$", dumpsys, re.MULTILINE)
    return int(m.group(1)) / 10 if m else None


def parse_zones(text: str) -> dict[str, float]:
    """Lines "zone <type> <temp>" -> {type: degrees C}. Kernels report millidegrees (45300), a few whole degrees
    (45); unreadable zones are left out. Repeated types get a suffix (#2)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[0] != "zone" or not re.fullmatch(r"-?\d+", parts[2]):
            continue
        raw = int(parts[2])
        name, k = parts[1], 2
        while name in out:
            name, k = f"{parts[1]}#{k}", k + 1
        out[name] = raw / 1000 if abs(raw) >= 1000 else float(raw)
    return out


def parse_wakefulness(dumpsys_power: str) -> str | None:
    """`dumpsys power` -> "on" (Awake) or "off" (Asleep, Dozing, Dreaming); None when it does not say."""
    # Android 10 prints mWakefulness=, Android 12 and later mWakefulnessRaw= and getWakefulnessLocked()=.
    m = re.search(r"(?:mWakefulness|mWakefulnessRaw|getWakefulnessLocked\(\))=(\w+)", dumpsys_power)
    if not m:
        return None
    return "on" if m.group(1) == "Awake" else "off"


def parse_foreground(dumpsys_activity: str) -> str | None:
    """`dumpsys activity activities` -> the package of the resumed (foreground) activity."""
    m = re.search(r"(?:mResumedActivity|topResumedActivity)[:=].*?\s([\w.]+)/", dumpsys_activity)
    return m.group(1) if m else None


def descendants(root: int, stats: str) -> list[int]:
    """`root` and every process below it, from /proc/<pid>/stat lines ("pid (comm) state ppid ...")."""
    children: dict[int, list[int]] = {}
    for line in stats.splitlines():
        head, sep, rest = line.rpartition(")")
        fields = rest.split()
        pid = head.split(" (", 1)[0].strip()
        if sep and len(fields) >= 2 and pid.isdigit() and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(pid))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo.extend(children.get(p, []))
    return out


def parse_free_kb(df: str) -> int | None:
    """`df -k <dir>` -> available kilobytes (the 4th column of its last line)."""
    lines = [ln.split() for ln in df.strip().splitlines() if ln.strip()]
    if len(lines) < 2 or len(lines[-1]) < 4 or not lines[-1][3].isdigit():
        return None
    return int(lines[-1][3])


# -- adb -------------------------------------------------------------------------------------------------------
@dataclass
class Adb:
    """adb for one phone; every failure is a PhoneError naming the device and the step."""

    binary: str
    serial: str | None
    device: str  # the profile's name for it, for messages

    def fail(self, step: str, detail: str) -> PhoneError:
        who = f"phone {self.serial or '(no serial)'} ({self.device})"
        return PhoneError(f"{who}, step '{step}': {detail.strip()[:600]}")

    def _run(self, args: list[str], step: str, timeout_s: float = SHELL_TIMEOUT_S) -> Done:
        done = run_adb([self.binary, *args], timeout_s)
        if done.rc != 0 and re.search(r"device .*not found|device offline|no devices|unauthorized|error: closed",
                                      done.err + done.out):
            raise self.fail(step, f"the device is not connected (adb: {(done.err or done.out).strip()})")
        if done.rc in (124, 127) and not done.out:
            raise self.fail(step, done.err)
        return done

    def connect(self) -> str:
        done = self._run(["devices"], "connect")
        devices = parse_devices(done.out)
        ready = sorted(s for s, state in devices.items() if state == "device")
        if self.serial is not None:
            if devices.get(self.serial) != "device":
                seen = ", ".join(f"{s} ({st})" for s, st in devices.items()) or "none"
                raise self.fail("connect", f"not ready in `adb devices` (devices: {seen})")
        elif not ready:
            others = f" (listed but not usable: {devices})" if devices else ""
            raise self.fail("connect", f"no device attached{others}")
        elif len(ready) > 1:
            raise self.fail("connect", f"several devices attached ({', '.join(ready)}) and no serial: set "
                                       "profile.phone.serial or profile.adb_serials")
        else:
            self.serial = ready[0]
        return self.serial

    def shell(self, script: str, step: str, *, check: bool = True, timeout_s: float = SHELL_TIMEOUT_S) -> Done:
        done = self._run(["-s", self.serial or "", "shell", script], step, timeout_s)
        if check and done.rc != 0:
            raise self.fail(step, f"`{script[:200]}` exited {done.rc}: {done.err or done.out}")
        return done

    def push(self, local: Path, remote: str, step: str) -> None:
        done = self._run(["-s", self.serial or "", "push", str(local), remote], step, PUSH_TIMEOUT_S)
        if done.rc != 0:
            raise self.fail(step, f"adb push {local.name} -> {remote} failed: {done.err or done.out}")

    def forward(self, device_port: int, step: str) -> int:
        done = self._run(["-s", self.serial or "", "forward", "tcp:0", f"tcp:{device_port}"], step)
        port = done.out.strip()
        if done.rc != 0 or not port.isdigit():
            raise self.fail(step, f"adb forward tcp:0 tcp:{device_port} failed: {done.err or done.out}")
        return int(port)

    def forwards(self, step: str) -> list[tuple[str, str, str]]:
        done = self._run(["forward", "--list"], step)
        return [(p[0], p[1], p[2]) for p in (ln.split() for ln in done.out.splitlines()) if len(p) == 3]

    def remove_forward(self, local: str, step: str) -> None:
        done = self._run(["-s", self.serial or "", "forward", "--remove", local], step)
        if done.rc != 0:
            raise self.fail(step, f"adb forward --remove {local} failed: {done.err or done.out}")


# -- the on-device server --------------------------------------------------------------------------------------
@dataclass
class PhoneServer:
    """The candidate's server on the phone, from start() to stop(). `base_url` is the forwarded host URL."""

    spec: Phone
    model: Path
    sha256: str
    device: str
    settings: dict[str, int]  # threads, n_ctx, n_batch, parallel
    alias: str
    serial: str | None = None
    pid: int | None = None
    host_port: int | None = None
    pushed: bool | None = None  # False: the model was already on the phone
    steps: list[str] = field(default_factory=list)  # what the run did on the phone, in order
    _adb: Adb = field(init=False)

    def __post_init__(self) -> None:
        self._adb = Adb(self.spec.adb, self.serial or self.spec.serial, self.device)

    # -- where things are ---------------------------------------------------------------------------------
    @property
    def workdir(self) -> str:
        return self.spec.workdir.rstrip("/")

    @property
    def remote_model(self) -> str:
        return f"{self.workdir}/{self.sha256}.gguf"

    @property
    def base_url(self) -> str:
        if self.host_port is None:
            raise RuntimeError("the phone's server is not started")
        return f"http://{HOST}:{self.host_port}/v1"

    @property
    def where(self) -> str:
        return f"phone {self.serial} ({self.device})"

    def measured_on(self) -> dict[str, Any]:
        """What every figure measured through this server carries: it was measured on this phone."""
        return {"where": "phone", "serial": self.serial, "device": self.device}

    def describe(self) -> dict[str, Any]:
        return {"runtime": "on-device server over adb", "serial": self.serial, "device": self.device,
                "command": self.command(), "pid": self.pid, "host_port": self.host_port,
                "device_port": self.spec.port, "model_on_phone": self.remote_model, "pushed": self.pushed,
                "workdir": self.workdir, "steps": list(self.steps)}

    def _fill(self) -> dict[str, str]:
        return {"workdir": self.workdir, "model": self.remote_model, "port": str(self.spec.port),
                "alias": self.alias, **{k: str(v) for k, v in self.settings.items()}}

    def command(self) -> list[str]:
        return [a.format(**self._fill()) for a in self.spec.server]

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> PhoneServer:
        self.serial = self._adb.connect()
        try:
            self._check_state()
            self._adb.shell(f"mkdir -p {shlex.quote(self.workdir)}", "workdir")
            self._clean_leftovers()
            self._check_binary()
            self._push_model()
            self._launch()
            self.host_port = self._adb.forward(self.spec.port, "forward")
            self.steps.append(f"forward tcp:{self.host_port} -> phone tcp:{self.spec.port}")
            self._wait_ready()
        except BaseException:
            problems = self.stop()
            if problems:
                log.warning("%s: after a failed start: %s", self.where, "; ".join(problems))
            raise
        return self

    def stop(self) -> list[str]:
        """Stop the server and remove the forward; returns what could not be done (never raises)."""
        problems = []
        if self.host_port is not None:
            try:
                self._adb.remove_forward(f"tcp:{self.host_port}", "stop")
                self.host_port = None
            except PhoneError as exc:
                problems.append(str(exc))
        if self.pid is not None:
            try:
                self._kill(self.pid, "stop")
                self._adb.shell(f"rm -f {shlex.quote(self.workdir)}/server.pid", "stop")
                self.pid = None
            except PhoneError as exc:
                problems.append(f"{exc} (left running: the next run on this phone stops it)")
        return problems

    def _check_state(self) -> None:
        spec = self.spec
        if spec.on_battery:
            status = self._adb.shell("cat /sys/class/power_supply/battery/status", "state", check=False).out.strip()
            if status != "Discharging":
                raise self._adb.fail("state", f"the battery is {status or 'unreadable'!r}, not 'Discharging' "
                                              "(profile.phone.on_battery): unplug it and use adb over Wi-Fi")
        if spec.screen != "any":
            state = parse_wakefulness(self._adb.shell("dumpsys power", "state").out)
            if state is None:
                raise self._adb.fail("state", "`dumpsys power` does not say whether the screen is on "
                                              "(no mWakefulness): set profile.phone.screen: any")
            if state != spec.screen:
                raise self._adb.fail("state", f"the screen is {state}, the target needs it {spec.screen} "
                                              "(profile.phone.screen)")
        if spec.foreground is not None:
            top = parse_foreground(self._adb.shell("dumpsys activity activities", "state").out)
            if top is None:
                raise self._adb.fail("state", "`dumpsys activity activities` does not say which app is in the "
                                              "foreground (no mResumedActivity): remove profile.phone.foreground")
            if top not in spec.foreground:
                raise self._adb.fail("state", f"{top} is in the foreground; the target allows "
                                              f"{', '.join(spec.foreground) or 'none'} (profile.phone.foreground)")

    def _clean_leftovers(self) -> None:
        pidfile = f"{shlex.quote(self.workdir)}/server.pid"
        old = self._adb.shell(f"cat {pidfile} 2>/dev/null", "clean", check=False).out.strip()
        if old.isdigit():
            self._kill(int(old), "clean")
            self._adb.shell(f"rm -f {pidfile}", "clean")
            self.steps.append(f"stopped pid {old} that an earlier run left")
        for serial, local, remote in self._adb.forwards("clean"):
            if serial == self.serial and remote == f"tcp:{self.spec.port}":
                self._adb.remove_forward(local, "clean")
                self.steps.append(f"removed the forward {local} an earlier run left")

    def _kill(self, pid: int, step: str) -> None:
        """TERM, up to 5 s for it to exit, then KILL; only a process whose command line names the working folder
        (a pid file that outlived a reboot may name another process now)."""
        script = (f"grep -qF {shlex.quote(self.workdir)} /proc/{pid}/cmdline 2>/dev/null || exit 0; "
                  f"kill {pid} 2>/dev/null || exit 0; i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt 50 ]; "
                  f"do sleep 0.1; i=$((i+1)); done; kill -9 {pid} 2>/dev/null; exit 0")
        self._adb.shell(script, step, timeout_s=SHELL_TIMEOUT_S)

    def _check_binary(self) -> None:
        binary = self.command()[0]
        if self._adb.shell(f"test -x {shlex.quote(binary)}", "binary", check=False).rc != 0:
            raise self._adb.fail("binary", f"{binary} is missing or not executable on the phone: push the server "
                                           "build you ship there (README 'Running on a phone')")

    def _push_model(self) -> None:
        remote = self.remote_model
        # A phone hashes a few hundred MB/s: 30 s and a second per 100 MB.
        hash_s = SHELL_TIMEOUT_S + self.model.stat().st_size / 100e6
        have = self._adb.shell(f"sha256sum {shlex.quote(remote)} 2>/dev/null", "push", check=False,
                               timeout_s=hash_s).out.split()
        if have and have[0] == self.sha256:
            self.pushed = False
            self.steps.append(f"model already on the phone ({remote}, sha256 checked)")
            return
        size_kb = self.model.stat().st_size // 1024 + 1
        free = parse_free_kb(self._adb.shell(f"df -k {shlex.quote(self.workdir)}", "push").out)
        if free is not None and free < size_kb:
            raise self._adb.fail("push", f"{self.model.name} needs {size_kb // 1024} MB, {free // 1024} MB free "
                                         f"in {self.workdir}")
        part = f"{remote}.part"
        try:
            self._adb.push(self.model, part, "push")
            got = self._adb.shell(f"sha256sum {shlex.quote(part)}", "push", timeout_s=hash_s).out.split()
            if not got or got[0] != self.sha256:
                raise self._adb.fail("push", f"{part} has sha256 {got[0] if got else '?'} after the push, not "
                                             f"{self.sha256}")
            self._adb.shell(f"mv {shlex.quote(part)} {shlex.quote(remote)}", "push")
        except BaseException:
            with contextlib.suppress(PhoneError):  # the push's own error is the one to report
                self._adb.shell(f"rm -f {shlex.quote(part)}", "push", check=False)
            raise
        self.pushed = True
        self.steps.append(f"pushed {self.model.name} to {remote}")

    def _launch(self) -> None:
        w = shlex.quote(self.workdir)
        env = " ".join(f"{k}={shlex.quote(v.format(**self._fill()))}" for k, v in self.spec.env.items())
        argv = " ".join(shlex.quote(a) for a in self.command())
        # A simple command in the background, so that $! is the server's own pid (nohup and the binary exec in
        # place), not a subshell's.
        script = (f"cd {w} || exit 1; {env + ' ' if env else ''}nohup {argv} > {w}/server.log 2>&1 < /dev/null & "
                  f"echo $! > {w}/server.pid; cat {w}/server.pid")
        pid = self._adb.shell(script, "start").out.strip()
        if not pid.isdigit():
            raise self._adb.fail("start", f"the server's pid was not reported (got {pid!r})")
        self.pid = int(pid)
        self.steps.append(f"started {self.command()[0]} (pid {pid})")

    @staticmethod
    def _models(url: str) -> list[str] | None:
        """The model ids /v1/models lists, or None while nothing answers."""
        try:
            reply = httpx.get(url, timeout=5.0)
            if reply.status_code != 200:
                return None
            data = reply.json().get("data", [])
            return [str(m.get("id")) for m in data if isinstance(m, dict)]
        except (httpx.HTTPError, ValueError, AttributeError):
            return None

    def _log_tail(self) -> str:
        done = self._adb.shell(f"tail -n 15 {shlex.quote(self.workdir)}/server.log", "start", check=False)
        return done.out.strip() or "(empty log)"

    def _alive(self, step: str) -> bool:
        return self._adb.shell(f"kill -0 {self.pid}", step, check=False).rc == 0

    def _wait_ready(self) -> None:
        """Until /v1/models answers from our server: its process alive after the answer (another server on the
        port would answer while ours failed to bind), and our alias listed where the command sets one."""
        deadline = time.monotonic() + self.spec.startup_timeout_s
        url = f"{self.base_url}/models"
        polls = 0
        while True:
            listed = self._models(url)
            if listed is not None:
                if not self._alive("start"):
                    raise self._adb.fail("start", f"the server exited, yet {url} answers: another server holds "
                                                  f"port {self.spec.port} on the phone; its log ends:\n"
                                                  f"{self._log_tail()}")
                if "{alias}" in " ".join(self.spec.server) and self.alias not in listed:
                    raise self._adb.fail("start", f"{url} lists {listed}, not {self.alias}: another server holds "
                                                  f"port {self.spec.port} on the phone")
                return
            polls += 1
            if polls % 4 == 0 and not self._alive("start"):
                raise self._adb.fail("start", f"the server exited before answering; its log ends:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise self._adb.fail("start", f"no answer at {url} within {self.spec.startup_timeout_s:g} s; its "
                                              f"log ends:\n{self._log_tail()}")
            time.sleep(0.5)

    def request_failed(self, exc: Exception) -> PhoneError:
        """The error for a request that failed: the phone dropped, the server died, or the server failed it."""
        try:
            self._adb.connect()
        except PhoneError as gone:
            return self._adb.fail("generate", f"the phone dropped during the gate ({gone}); the request: {exc}")
        if self.pid is not None and self._adb.shell(f"kill -0 {self.pid}", "generate", check=False).rc != 0:
            return self._adb.fail("generate", f"the server exited during the gate; its log ends:\n{self._log_tail()}")
        return self._adb.fail("generate", str(exc))

    # -- readings ---------------------------------------------------------------------------------------
    def peak_rss_bytes(self) -> tuple[int, dict[int, int]]:
        """The sum of VmHWM over the server and its descendants (a launcher that forks the model's process must
        not pass for the model), and each process's."""
        if self.pid is None:
            raise self._adb.fail("memory", "the server is not running")
        stats = self._adb.shell("for f in /proc/[0-9]*/stat; do read -r l < $f && echo \"$l\"; done 2>/dev/null",
                                "memory", check=False).out
        tree = descendants(self.pid, stats)
        script = "; ".join(f"echo pid {p}; cat /proc/{p}/status 2>/dev/null" for p in tree)
        peaks: dict[int, int] = {}
        for block in self._adb.shell(script, "memory").out.split("pid ")[1:]:
            head, _, status = block.partition("\n")
            peak = parse_vmhwm(status)
            if peak is not None and head.strip().isdigit():
                peaks[int(head.strip())] = peak
        if self.pid not in peaks:
            raise self._adb.fail("memory", f"/proc/{self.pid}/status has no VmHWM line (has the server exited?)")
        return sum(peaks.values()), peaks

    def temperatures(self) -> dict[str, Any]:
        """Battery and thermal-zone temperatures now, in degrees C, with the hottest CPU zone."""
        script = ("dumpsys battery; for z in /sys/class/thermal/thermal_zone*; do "
                  "echo \"zone $(cat $z/type 2>/dev/null | tr -d ' ') $(cat $z/temp 2>/dev/null)\"; done")
        out = self._adb.shell(script, "heat").out
        zones = parse_zones(out)
        cpu = [t for name, t in zones.items() if "cpu" in name.lower()]
        return {"battery_c": parse_battery_temperature(out), "cpu_max_c": max(cpu) if cpu else None,
                "zones_c": zones, "at": time.time()}



class PhoneAdapter(AdapterWrapper):
    """The server adapter of a phone's server: a failed request becomes an error naming the phone, and says
    whether the phone is still attached (a cable pulled mid-gate, adb restarted) or its server failed."""

    def __init__(self, inner: Any, server: PhoneServer):
        super().__init__(inner)
        self.server = server

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        try:
            return list(self.inner.generate(requests))
        except ServerError as exc:
            raise self.server.request_failed(exc) from exc

    def describe(self) -> dict[str, object]:
        return {**self.inner.describe(), "phone": self.server.describe()}
