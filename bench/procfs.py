"""What a process used, from /proc (Linux): resident memory and CPU time."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Memory:
    rss_mib: float  # resident now (VmRSS)
    peak_mib: float  # highest resident since the process started (VmHWM)


@dataclass(frozen=True)
class ProcessMemory:
    """What one service process used: at rest after start, and its peak over its benchmarks."""

    service: str  # identity | consent | profilesync | echo
    label: str
    rest_mib: float
    peak_mib: float


def read_memory(pid: int | str = "self") -> Memory:
    """VmRSS and VmHWM of `pid` (default: this process); zeros once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return Memory(0.0, 0.0)
    fields: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024  # kB -> MiB
    return Memory(fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0))


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of `pid` (all its threads) so far; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Live direct children of `pid` (PostgreSQL's backends, for one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


class CpuMeter:
    """Average cores each named process used over a window: where the time went.
    A name maps to one pid, or to a parent whose children count with it (PostgreSQL)."""

    def __init__(self, pids: dict[str, int | str], trees: dict[str, int] | None = None) -> None:
        self._pids = pids
        self._trees = trees or {}
        self._start: dict[str, float] = {}
        self._begin = 0.0

    def _now(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        for name, root in self._trees.items():
            used[name] = cpu_seconds(root) + sum(cpu_seconds(c) for c in children(root))
        return used

    def start(self) -> None:
        self._begin = time.monotonic()
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._begin
        end = self._now()
        # A backend that exited meanwhile takes its time with it: shares are lower bounds.
        return {name: max(0.0, end[name] - self._start.get(name, 0.0)) / wall for name in end}
