"""What the machine was doing: CPU per core, process-tree CPU and RSS, from /proc.

A benchmark on a shared machine is only worth its label. Each measurement
records how much CPU went to processes that are neither the server nor the
load client ("other load"), so a table says whether its figures were taken on
a quiet machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_busy() -> float:
    """Seconds of non-idle CPU summed over every core since boot."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICK


def core_idle() -> dict[str, float]:
    """Idle seconds per core (``cpu0``, ``cpu1``…) since boot."""
    result = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                result[parts[0]] = (int(parts[4]) + int(parts[5])) / TICK
    return result


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (gunicorn and granian fork workers)."""
    found = [pid]
    i = 0
    while i < len(found):
        try:
            tasks = os.listdir(f"/proc/{found[i]}/task")
        except OSError:
            tasks = []
        for tid in tasks:
            try:
                with open(f"/proc/{found[i]}/task/{tid}/children") as f:
                    found.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        i += 1
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its descendants."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Window:
    """CPU accounting over one measurement: who used the machine meanwhile."""

    busy: float
    mine: float
    wall: float

    @classmethod
    def start(cls, mine: float, wall: float) -> Window:
        return cls(cpu_busy(), mine, wall)

    def other_load(self, mine: float, wall: float) -> float:
        """CPU used by everything else, as a share of one core (0.25 = 25 %)."""
        elapsed = wall - self.wall
        if elapsed <= 0:
            return 0.0
        other = (cpu_busy() - self.busy) - (mine - self.mine)
        return max(0.0, other / elapsed)
