"""How many cores other processes used while the bench measured.

The load average cannot say it: the bench itself raises the load by its threads and DataLoader
workers, so "the load rose" was true of every quiet run. Instead this takes the whole machine's
busy CPU time (``/proc/stat``) and subtracts that of this process and its children
(``/proc/<pid>/stat``), over the measurement's wall time. Linux only; elsewhere :func:`busy_cores`
returns None and the bench falls back to the load average.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BUSY_BY_OTHERS = 0.5  # cores: more than this used by other processes makes a ratio untrustworthy


def _machine_busy_ticks() -> Optional[int]:
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)


def _tree_ticks(root: int) -> Optional[int]:
    """CPU ticks (user + system) of ``root`` and its living descendants (its threads included)."""
    stats: dict[int, tuple[int, int]] = {}  # pid -> (parent, ticks)
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                after_name = fh.read().rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
        except (OSError, IndexError):
            continue  # gone meanwhile
        stats[pid] = (int(after_name[1]), int(after_name[11]) + int(after_name[12]))
    if root not in stats:
        return None
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


@dataclass
class _Sample:
    wall: float
    machine: Optional[int]
    ours: Optional[int]


def sample() -> _Sample:
    return _Sample(time.monotonic(), _machine_busy_ticks(), _tree_ticks(os.getpid()))


def busy_cores(before: _Sample, after: _Sample) -> Optional[float]:
    """Cores' worth of CPU time other processes used between the two samples (None where unknown).
    A worker of ours that exited in between counts as another process: an overestimate, never
    an underestimate."""
    if None in (before.machine, after.machine, before.ours, after.ours) or after.wall <= before.wall:
        return None
    others = (after.machine - before.machine) - (after.ours - before.ours)
    return max(0.0, others / _TICKS / (after.wall - before.wall))
