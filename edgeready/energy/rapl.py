"""Intel/AMD RAPL energy counters through the Linux powercap sysfs interface.

Which zones are summed, and why:
- `intel-rapl:N` whose name starts with "package": the whole CPU socket (cores, caches, uncore,
  integrated GPU).
- `intel-rapl:N:M` whose name is "dram": memory, which is NOT inside the package domain.
- `core` (PP0) and `uncore` (PP1, client iGPU) subzones are skipped: they are parts of the package
  domain, so adding them would count the same joules twice.
- `psys` (platform, client parts) is skipped: it covers package and more, so it overlaps too.
- `intel-rapl-mmio:*` is skipped: the same package counter exposed a second way.

Counter details: `energy_uj` is in microjoules (1 uJ nominal unit) but the hardware increments it
in energy-status units of 2^-16 J ~= 15.3 uJ on most parts, and refreshes it about every 1 ms. So a
window's uncertainty is about one unit plus one update interval of energy (P x 1 ms) per domain;
that is what `resolution_j` reports. The counter wraps at `max_energy_range_uj` (tens to hundreds
of kJ: roughly 10-45 minutes at ~100 W); each `read()` folds in one wrap, so call `read()` at least
once per wrap period on very long windows.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeready.energy.reading import EnergyReading

DEFAULT_ROOT = Path("/sys/class/powercap")
# MSR_RAPL_POWER_UNIT energy-status unit on Sandy Bridge and later (and AMD Zen): 1/2^16 J.
DEFAULT_ENERGY_UNIT_J = 2.0**-16
DEFAULT_UPDATE_S = 0.001

_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class RaplDomain:
    """One counter that is summed: `label` like "package-0" or "package-0/dram"."""

    label: str
    path: Path
    max_range_uj: int


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def discover_domains(root: Path) -> tuple[list[RaplDomain], list[str]]:
    """Zones to sum under `root`, and a note per skipped zone (kept in the reading's detail)."""
    zones: dict[str, Path] = {}
    # Flat symlinks (/sys/class/powercap/intel-rapl:0:0) and nested subzone dirs are both accepted,
    # deduplicated by zone id, so a copied tree works in either layout.
    for path in sorted(root.glob("intel-rapl:*")) + sorted(root.glob("intel-rapl:*/intel-rapl:*")):
        if _ZONE.match(path.name) and path.name not in zones:
            zones[path.name] = path
    domains: list[RaplDomain] = []
    skipped: list[str] = []
    packages: dict[str, str] = {}
    for zone_id, path in sorted(zones.items()):
        m = _ZONE.match(zone_id)
        assert m is not None
        name = (path / "name").read_text().strip() if (path / "name").exists() else "?"
        if m.group(2) is None:
            if not name.startswith("package"):
                skipped.append(f"{zone_id} ({name}): platform zone overlaps the package domain")
                continue
            packages[m.group(1)] = name
            label = name
        else:
            if name != "dram":
                skipped.append(f"{zone_id} ({name}): part of the package domain, would double count")
                continue
            label = f"{packages.get(m.group(1), 'package-' + m.group(1))}/dram"
        max_range = _read_int(path / "max_energy_range_uj")
        domains.append(RaplDomain(label=label, path=path / "energy_uj", max_range_uj=max_range))
    return domains, skipped


def wrap_delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Counter delta, assuming at most one wrap at `max_range_uj` between the two reads."""
    return end - start if end >= start else end + max_range_uj - start


class RaplMeter:
    """Package + DRAM energy of every CPU socket. `root` is a constructor argument so tests can point
    it at a recorded sysfs tree."""

    name = "rapl"
    method: Literal["measured"] = "measured"

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        *,
        energy_unit_j: float = DEFAULT_ENERGY_UNIT_J,
        update_s: float = DEFAULT_UPDATE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(root)
        self.energy_unit_j = energy_unit_j
        self.update_s = update_s
        self._clock = clock
        self._domains: list[RaplDomain] = []
        self._skipped: list[str] = []
        self._last: list[int] = []
        self._acc_uj: list[int] = []
        self._wraps = 0
        self._t0 = 0.0

    def available(self) -> tuple[bool, str]:
        if not any(self.root.glob("intel-rapl:*")):
            return False, f"no {self.root}/intel-rapl* on this machine (no RAPL driver, VM or non-x86)"
        try:
            domains, _ = discover_domains(self.root)
        except (OSError, ValueError) as exc:
            return False, f"RAPL zones under {self.root} unreadable: {exc}"
        if not domains:
            return False, f"no package zone under {self.root}"
        for d in domains:
            if not os.access(d.path, os.R_OK):
                # Root-only since the PLATYPUS side-channel fix (CVE-2020-8694).
                return False, f"{d.path} not readable (root-only since CVE-2020-8694; run as root or chmod)"
        return True, ""

    def start(self) -> None:
        self._domains, self._skipped = discover_domains(self.root)
        if not self._domains:
            raise RuntimeError(f"no RAPL package zone under {self.root}")
        self._t0 = self._clock()
        self._last = [_read_int(d.path) for d in self._domains]
        self._acc_uj = [0] * len(self._domains)
        self._wraps = 0

    def read(self) -> EnergyReading:
        now = [_read_int(d.path) for d in self._domains]
        seconds = self._clock() - self._t0
        for i, (d, before, after) in enumerate(zip(self._domains, self._last, now, strict=True)):
            if after < before:
                self._wraps += 1
            self._acc_uj[i] += wrap_delta_uj(before, after, d.max_range_uj)
        self._last = now
        domains = {d.label: uj * 1e-6 for d, uj in zip(self._domains, self._acc_uj, strict=True)}
        joules = sum(domains.values())
        watts = joules / seconds if seconds > 0 else 0.0
        resolution = len(self._domains) * self.energy_unit_j + watts * self.update_s
        return EnergyReading(
            joules=joules,
            seconds=seconds,
            meter="rapl",
            method="measured",
            resolution_j=resolution,
            domains=domains,
            detail={
                "root": str(self.root),
                "zones": [str(d.path.parent.name) for d in self._domains],
                "skipped": list(self._skipped),
                "wraps": self._wraps,
                "counter_unit_j": 1e-6,
                "energy_unit_j": self.energy_unit_j,
                "update_s": self.update_s,
                "scope": "CPU package(s) + DRAM only; not the board, disks, fans or PSU losses",
            },
        )

    def stop(self) -> EnergyReading:
        return self.read()
