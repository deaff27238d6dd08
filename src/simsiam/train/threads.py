"""``run.threads``: how many intra-op threads a CPU step uses, chosen by timing the step itself.

Why not torch's default (one thread per core): on a 2-core machine with one other busy process, two
OpenMP threads spend their time waiting at barriers for the one that lost its core. The `small`
preset trained at 55-64 images/s with 2 threads beside another process and at 434-620 with one
(docs/PERFORMANCE.md). Laptops and shared boxes always have other processes, and they come and go.

``run.threads=0`` (auto), on a CPU device:

- the candidates are 1, 2, 4, ... up to the cores this process may use (its affinity mask and its
  cgroup's CPU quota, :func:`usable_cores`); with one core there is nothing to choose;
- :class:`ThreadTuner` times the training steps themselves -- no extra work, the steps train as
  usual -- a few at each candidate, in alternating rounds so that a change of load hits all alike,
  drops at once a candidate twice as slow as the best so far, and keeps the fastest; the batched
  pipeline's C kernel follows (it runs on torch's thread count);
- afterwards it watches the step time: when the median of the last steps moves by more than
  :data:`JUMP` from what the chosen count gave (another process arrived, or left), it probes again,
  less often each time a probe keeps the count.

``OMP_NUM_THREADS`` set in the environment is a choice already made (torchrun sets it for several
processes on one machine; the tests set it to 1): auto then keeps it. ``run.threads=N`` fixes N.
Thread counts change float rounding in reductions, never what is computed; a run that must repeat
bitwise (``run.deterministic``, or a resume equal to an uninterrupted run) needs a fixed count,
which auto under ``run.deterministic`` takes: the usable cores.
"""
from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Callable, Optional

import torch

PROBE_STEPS = 2  # timed steps per candidate in a round
PROBE_ROUNDS = 2
# A candidate whose step takes this many times the fastest median seen is out of the probe at once:
# beside a busy process, 2 threads on 2 cores take 5-10x as long as 1, and each such step is costly.
DROP_FACTOR = 2.0
WATCH_STEPS = 10  # steps whose median is compared with the chosen count's
JUMP = 0.3  # a relative change of that median which calls for a new probe
# Steps after a probe before the next may start; doubled after each probe that kept the count (up
# to MAX_STEPS_BETWEEN_PROBES), back to the minimum when one changed it. On a machine whose load
# comes and goes, each probe costs a step at the slow count: a `make demo` beside other jobs
# probed 26 times in 2,300 steps before the back-off.
MIN_STEPS_BETWEEN_PROBES = 50
MAX_STEPS_BETWEEN_PROBES = 1600


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or
    None without one. A container with 2 CPUs' quota on a 64-core host sees 64 cores otherwise."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask, bounded by its cgroup's quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def candidates(cores: int) -> list[int]:
    """1, 2, 4, ... and ``cores`` itself."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


def plan_threads(threads: int, device_type: str, deterministic: bool = False) -> tuple[Optional[list[int]], str]:
    """What ``run.threads`` means here: the candidates to probe (None: fixed, already set) and the
    words for the run's first line. Sets the fixed count."""
    if device_type != "cpu":
        return None, f"threads {torch.get_num_threads()} (run.threads applies to CPU steps)"
    if threads > 0:
        torch.set_num_threads(threads)
        return None, f"threads {threads} (run.threads={threads})"
    if os.environ.get("OMP_NUM_THREADS"):
        return None, f"threads {torch.get_num_threads()} (run.threads=auto keeps OMP_NUM_THREADS)"
    cores = usable_cores()
    if deterministic:  # a choice made by timing would not repeat
        torch.set_num_threads(cores)
        return None, f"threads {cores} (run.threads=auto with run.deterministic: the usable cores, no probe)"
    if cores == 1:
        torch.set_num_threads(1)
        return None, "threads 1 (run.threads=auto: one usable core)"
    counts = candidates(cores)
    torch.set_num_threads(cores)
    return counts, f"threads auto: probing {', '.join(map(str, counts))} on the first steps ({cores} usable cores)"


class ThreadTuner:
    """Chooses the thread count from the times of the steps (see the module's docstring).

    :meth:`after_step` takes the seconds of the iteration that just ended (its batch and its step,
    as the batched pipeline's kernel runs on the same threads), sets the count for the next one, and
    passes a line to ``say`` when it made a choice or starts probing again.
    """

    def __init__(self, counts: list[int], say: Callable[[str], None],
                 set_threads: Callable[[int], None] = torch.set_num_threads):
        self.counts, self.say, self.set_threads = counts, say, set_threads
        self.chosen, self.chosen_seconds = counts[-1], 0.0
        self.probes, self.since_probe = 0, 0
        self.between_probes = MIN_STEPS_BETWEEN_PROBES
        self.recent: list[float] = []
        self.why = ""  # what started the last probe
        self._start_probe()

    def _start_probe(self) -> None:
        self.schedule = [c for _ in range(PROBE_ROUNDS) for c in self.counts for _ in range(PROBE_STEPS)]
        self.times: dict[int, list[float]] = {c: [] for c in self.counts}
        self.probes += 1
        self.set_threads(self.schedule[0])

    @property
    def probing(self) -> bool:
        return bool(self.schedule)

    def after_step(self, seconds: float) -> None:
        if self.schedule:
            count = self.schedule.pop(0)
            self.times[count].append(seconds)
            fastest = min((statistics.median(t) for c, t in self.times.items() if t and c != count), default=None)
            if fastest is not None and seconds > DROP_FACTOR * fastest:
                self.schedule = [c for c in self.schedule if c != count]
            if self.schedule:
                self.set_threads(self.schedule[0])
            else:
                self._choose()
            return
        self.since_probe += 1
        self.recent = (self.recent + [seconds])[-WATCH_STEPS:]
        if len(self.recent) == WATCH_STEPS and self.since_probe >= self.between_probes:
            now = statistics.median(self.recent)
            if abs(now - self.chosen_seconds) > JUMP * self.chosen_seconds:
                self.why = f"the step time moved from {self.chosen_seconds * 1e3:.0f} to {now * 1e3:.0f} ms"
                self._start_probe()

    def _choose(self) -> None:
        """The fastest count; said when it is the first choice or a change (a probe that confirms
        the count stays silent: on a machine whose load comes and goes it may run every minute)."""
        medians = {c: statistics.median(t) for c, t in self.times.items() if t}
        before, self.chosen = self.chosen, min(medians, key=lambda c: (medians[c], c))
        self.chosen_seconds = medians[self.chosen]
        self.since_probe, self.recent = 0, []
        self.set_threads(self.chosen)
        if self.probes > 1:
            self.between_probes = (MIN_STEPS_BETWEEN_PROBES if self.chosen != before
                                   else min(2 * self.between_probes, MAX_STEPS_BETWEEN_PROBES))
        if self.probes == 1 or self.chosen != before:
            timings = ", ".join(f"{c}: {medians[c] * 1e3:.0f} ms" for c in self.counts if c in medians)
            why = f"; {self.why}" if self.probes > 1 else ""
            self.say(f"threads {self.chosen} (run.threads=auto; median step with {timings}{why})")
