"""A FAKE phone for tests (no phone is attached to these machines): a folder that plays its file system, an
`adb` that maps onto this host (tests/fake_phone/fake_adb.py) and a `llama-server` that runs llama-cpp-python's
server here (tests/fake_phone/fake_llama_server.py). Recorded outputs in tests/fake_phone/recorded/."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "recorded"
WORKDIR = "/data/local/tmp/edgeready"


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class FakePhone:
    """One or more fake phones behind one fake adb (`self.adb`). State lives in `root/state.json`."""

    def __init__(self, base: Path, serials: tuple[str, ...] = ("FAKE865A",), screen: str = "asleep"):
        self.root = base / "phone"
        self.root.mkdir(parents=True)
        (self.root / "state.json").write_text(json.dumps({"serials": dict.fromkeys(serials, "device"),
                                                          "forwards": []}))
        battery = self.root / "sys/class/power_supply/battery"
        battery.mkdir(parents=True)
        for name, value in (("status", "Discharging"), ("voltage_now", "3870000"), ("current_now", "-150000"),
                            ("charge_counter", "3500000")):
            (battery / name).write_text(value + "\n")
        for i, line in enumerate((RECORDED / "thermal_zones.txt").read_text().splitlines()):
            zone_type, temp = line.split()
            zone = self.root / f"sys/class/thermal/thermal_zone{i}"
            zone.mkdir(parents=True)
            (zone / "type").write_text(zone_type + "\n")
            (zone / "temp").write_text(temp + "\n")
        (self.root / "data/local/tmp").mkdir(parents=True)
        self.set_screen(screen)
        _executable(self.root / "system/bin/dumpsys", f"""#!/bin/sh
case "$1" in
  battery) cat {RECORDED}/dumpsys_battery.txt ;;
  power) cat {self.root}/screen.txt ;;
  activity) cat {RECORDED}/dumpsys_activity.txt ;;
  *) echo "Can't find service: $1" ;;
esac
""")
        # `df -k DIR`: the host's, unless a test filled the fake disk (state free_kb).
        _executable(self.root / "system/bin/df", f"""#!/bin/sh
free=$({sys.executable} -c "import json; print(json.load(open('{self.root}/state.json')).get('free_kb') or '')")
if [ -n "$free" ]; then
  echo "Filesystem     1K-blocks    Used Available Use% Mounted on"
  echo "/dev/block/dm-5 112000000 111000000 $free 99% /data"
else
  exec /bin/df "$@"
fi
""")
        self.adb = _executable(base / "bin" / "adb", f'#!/bin/sh\nexec {sys.executable} {HERE / "fake_adb.py"} '
                                                    f'--root {self.root} "$@"\n')

    # -- what a user puts on the phone -----------------------------------------------------------------
    def install_server(self, workdir: str = WORKDIR, *, broken: bool = False) -> Path:
        """The llama-server build in the working folder (`broken`: one that exits at once)."""
        body = ("echo 'error: CANNOT LINK EXECUTABLE: library \"libggml.so\" not found' >&2; exit 1" if broken
                else f'exec {sys.executable} {HERE / "fake_llama_server.py"} "$@"')
        return _executable(self.path(workdir) / "llama-server", f"#!/bin/sh\n{body}\n")

    def path(self, phone_path: str) -> Path:
        return self.root / phone_path.lstrip("/")

    # -- state ------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return json.loads((self.root / "state.json").read_text())

    def _set(self, **changes: object) -> None:
        s = self.state()
        s.update(changes)
        (self.root / "state.json").write_text(json.dumps(s))

    def set_screen(self, state: str) -> None:
        (self.root / "screen.txt").write_text((RECORDED / f"dumpsys_power_{state}.txt").read_text())

    def fill_disk(self, free_kb: int) -> None:
        self._set(free_kb=free_kb)

    def drop_after(self, posts: int | None) -> None:
        """Pull the cable after this many requests through a forward."""
        self._set(drop_after_posts=posts)

    def reconnect(self, serial: str = "FAKE865A") -> None:
        s = self.state()
        s["serials"][serial] = "device"
        s["drop_after_posts"] = None
        (self.root / "state.json").write_text(json.dumps(s))

    def forwards(self) -> list[dict]:
        return self.state().get("forwards", [])

    def server_pids(self) -> list[int]:
        return [int(p.read_text()) for p in self.root.rglob("server.pid") if p.read_text().strip().isdigit()]

    def running(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"

    def leftovers(self) -> list[str]:
        """Anything a clean phone would not have: a running server, a forward, a partial push."""
        out = [f"pid file {p}" for p in self.root.rglob("server.pid")]
        out += [f"forward {f['local']}" for f in self.forwards()]
        out += [f"partial {p.name}" for p in self.root.rglob("*.part")]
        return out

    def close(self) -> None:
        """Kill whatever the tests left on the host (servers of dropped runs, relays)."""
        pids = self.server_pids() + [f["pid"] for f in self.forwards()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
