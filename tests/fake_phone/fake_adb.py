"""A FAKE adb for tests: no phone is attached to these machines, so this stands for one.

It maps adb's commands onto this host, under a folder that plays the phone's file system (`--root`):
- `devices` lists the serials in the state file (a dropped phone is gone from it);
- `shell SCRIPT` runs SCRIPT with the host's sh, with /data/local/tmp and /sys/class rewritten under the root,
  and the root's system/bin first on PATH (recorded `dumpsys` outputs, a `df` that can report a full disk);
  /proc is the host's, so the on-device server's VmHWM is a real kernel reading;
- `push` copies under the root (failing as adb does when the fake disk is full);
- `forward tcp:0 tcp:P` starts a TCP relay from a free host port to port P (the phone's server listens on the
  host), which can drop the phone after a set number of requests, as a pulled cable does;
- the battery's current follows the CPU time of the processes whose pid files lie in the fake working folders
  (a phone's fuel gauge sees the SoC working), and its charge counter falls with it.
Only what edgeready's phone code and the fuel-gauge meter use is implemented.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

IDLE_UA = 150_000  # a phone with its screen off, idling
UA_PER_BUSY_CORE = 350_000  # about 1.35 W per busy core at 3.87 V


def load(root: Path) -> dict:
    return json.loads((root / "state.json").read_text())


def update(root: Path, change) -> dict:
    with open(root / "state.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load(root)
        change(state)
        (root / "state.json").write_text(json.dumps(state))
        return state


def rewrite(root: Path, text: str) -> str:
    for prefix in ("/data/local/tmp", "/sys/class/"):
        text = text.replace(prefix, f"{root}{prefix}")
    return text


def not_found(serial: str) -> int:
    print(f"error: device '{serial}' not found", file=sys.stderr)
    return 1


def refresh_gauge(root: Path) -> None:
    """current_now and charge_counter from the CPU time of the fake phone's server processes since last time."""
    cpu = 0.0
    for pidfile in (root / "data").rglob("server.pid"):
        try:
            stat = Path(f"/proc/{int(pidfile.read_text().strip())}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    battery = root / "sys/class/power_supply/battery"
    now = time.monotonic()

    def change(state: dict) -> None:
        gauge = state.setdefault("gauge", {"cpu": cpu, "t": now, "charge_uah": 3_500_000.0})
        dt = max(now - gauge["t"], 1e-3)
        busy = max(0.0, cpu - gauge["cpu"]) / dt if cpu >= gauge["cpu"] else 0.0
        current = IDLE_UA + UA_PER_BUSY_CORE * busy
        gauge["charge_uah"] -= current * dt / 3600
        gauge.update(cpu=cpu, t=now)
        (battery / "current_now").write_text(f"{-round(current)}\n")
        (battery / "charge_counter").write_text(f"{round(gauge['charge_uah'])}\n")

    update(root, change)


def shell(root: Path, script: str) -> int:
    if "power_supply" in script:
        refresh_gauge(root)
    env = {**os.environ, "PATH": f"{root}/system/bin:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run(["sh", "-c", rewrite(root, script)], cwd=root, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True)
    sys.stdout.buffer.write(proc.stdout)
    sys.stderr.buffer.write(proc.stderr)
    return proc.returncode


def push(root: Path, state: dict, local: str, remote: str) -> int:
    target = Path(rewrite(root, remote))
    size = Path(local).stat().st_size
    if state.get("free_kb") is not None and size // 1024 > state["free_kb"]:
        print(f"adb: error: failed to copy '{local}' to '{remote}': remote couldn't create file: No space left on "
              "device", file=sys.stderr)
        return 1
    if not target.parent.is_dir():
        print(f"adb: error: failed to copy '{local}' to '{remote}': remote secure_mkdirs() failed", file=sys.stderr)
        return 1
    shutil.copyfile(local, target)
    print(f"{local}: 1 file pushed, 0 skipped. 300.0 MB/s ({size} bytes in 0.001s)")
    return 0


def forward(root: Path, serial: str, args: list[str]) -> int:
    if args == ["--list"]:
        for f in load(root).get("forwards", []):
            print(f"{f['serial']} {f['local']} {f['remote']}")
        return 0
    if args[0] == "--remove":
        gone = [f for f in load(root).get("forwards", []) if f["local"] == args[1]]
        if not gone:
            print(f"adb: error: listener '{args[1]}' not found", file=sys.stderr)
            return 1
        for f in gone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(f["pid"], signal.SIGTERM)
        update(root, lambda s: s.__setitem__("forwards", [f for f in s["forwards"] if f["local"] != args[1]]))
        return 0
    device_port = int(args[1].removeprefix("tcp:"))
    ready = root / f"relay-{time.time_ns()}.port"
    proc = subprocess.Popen([sys.executable, __file__, "--root", str(root), "relay", serial, str(device_port),
                             str(ready)], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if ready.exists() and ready.read_text():
            break
        time.sleep(0.05)
    port = int(ready.read_text())
    ready.unlink()
    entry = {"serial": serial, "local": f"tcp:{port}", "remote": f"tcp:{device_port}", "pid": proc.pid}
    update(root, lambda s: s.setdefault("forwards", []).append(entry))
    print(port)
    return 0


class Relay:
    """host port -> device port, as adb's forward. Drops the phone (removes it from `adb devices`, closes every
    connection) after the state's `drop_after_posts` requests, or when a test removes the phone from the state."""

    def __init__(self, root: Path, serial: str, device_port: int):
        self.root, self.serial, self.device_port = root, serial, device_port
        self.posts = 0
        self.conns: list[socket.socket] = []

    def drop(self) -> None:
        update(self.root, lambda s: s["serials"].pop(self.serial, None))
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        os._exit(0)

    def count(self, data: bytes) -> None:
        self.posts += data.count(b"POST ")
        limit = load(self.root).get("drop_after_posts")
        if limit is not None and self.posts > limit:
            self.drop()

    def pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if upstream:
                    self.count(data)
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def watch(self) -> None:
        while True:
            if self.serial not in load(self.root)["serials"]:
                self.drop()
            time.sleep(0.3)

    def serve(self, ready: Path) -> None:
        server = socket.create_server(("127.0.0.1", 0))
        ready.write_text(str(server.getsockname()[1]))
        threading.Thread(target=self.watch, daemon=True).start()
        while True:
            client, _ = server.accept()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.device_port))
            except OSError:
                client.close()
                continue
            self.conns += [client, upstream]
            threading.Thread(target=self.pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, False), daemon=True).start()


def main(argv: list[str]) -> int:
    root = Path(argv[2])  # argv: fake_adb.py --root ROOT ...
    args = argv[3:]
    if args and args[0] == "relay":
        Relay(root, args[1], int(args[2])).serve(Path(args[3]))
        return 0
    state = load(root)
    serial = None
    if args[:1] == ["-s"]:
        serial, args = args[1], args[2:]
    if args == ["devices"]:
        print("List of devices attached")
        for s, st in state["serials"].items():
            print(f"{s}\t{st}")
        print()
        return 0
    if args[:2] == ["forward", "--list"]:
        return forward(root, "", ["--list"])
    if serial is None:
        ready = [s for s, st in state["serials"].items() if st == "device"]
        if len(ready) != 1:
            print("adb: error: more than one device/emulator" if ready else "adb: error: no devices/emulators "
                  "found", file=sys.stderr)
            return 1
        serial = ready[0]
    if state["serials"].get(serial) != "device":
        return not_found(serial)
    cmd, rest = args[0], args[1:]
    if cmd == "shell":
        return shell(root, " ".join(rest))
    if cmd == "push":
        return push(root, state, rest[0], rest[1])
    if cmd == "forward":
        return forward(root, serial, rest)
    print(f"fake adb: {cmd} is not implemented", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
