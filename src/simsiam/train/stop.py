"""Stopping a run gracefully: on SIGTERM, SIGINT or SIGUSR1, finish the step, checkpoint, exit.

Schedulers (SLURM, Kubernetes, most clusters) send SIGTERM some time before they kill a job;
SIGUSR1 is what ``#SBATCH --signal=USR1@120`` sends; SIGINT is Ctrl-C. The first of them only sets
a flag: the training loop looks at it after each step, writes a mid-epoch checkpoint and returns
(the command then exits with :data:`EXIT_STOPPED`). A second signal raises :class:`Interrupted` at
once -- for a user who does not want to wait for the step to finish (the atomic writer still
removes its temporary file, and the previous checkpoint is untouched).

Under torchrun a signal may reach one rank only, or reach the ranks at different steps. A rank
that stopped alone would leave the others waiting in DDP's next all-reduce forever, so the ranks
agree: every :data:`POLL_EVERY` steps they all-reduce a tiny flag tensor (max over ranks) and all
stop at that same step. One collective of two numbers every few steps costs next to nothing next
to the step's gradient all-reduce. In one process the flag is read every step, at no cost.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import torch

from ..parallel import distributed as dist

EXIT_STOPPED = 75  # EX_TEMPFAIL ("try again later"): stopped on request, checkpointed, resumable
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
POLL_EVERY = 10  # steps between the ranks' agreement under torchrun


class Interrupted(KeyboardInterrupt):
    """A second stop signal: leave now, without finishing the step or writing a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for "killed by this signal"


class StopRequest:
    """The signal handlers, installed for the ``with`` block; :attr:`reason` is set by the first signal.

    Handlers can only be installed from the main thread; elsewhere (a thread running ``pretrain``)
    the run is simply not signal-aware and :meth:`request` is the only way to stop it.
    """

    def __init__(self, announce=None):
        self.reason = ""  # "" until a stop is requested; then e.g. "SIGTERM"
        self._announce = announce or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._previous: dict = {}
        self._pid = os.getpid()

    def __enter__(self) -> "StopRequest":
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def request(self, reason: str) -> None:
        """Ask the run to stop after the current step (what a signal does; tests call it directly)."""
        if not self.reason:
            self.reason = reason

    def _on_signal(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker (Ctrl-C reaches the whole process group): the main process decides
        name = signal.Signals(signum).name
        if self.reason:
            raise Interrupted(signum)
        self.request(name)
        self._announce(f"{name} received: stopping after this step and writing a checkpoint "
                       "(send it again to exit at once, without one)")


class Poll:
    """What the loop should do after a step: go on, checkpoint, or checkpoint and stop. The ranks'
    answers are agreed on (see the module's docstring), so they all checkpoint and stop together."""

    def __init__(self, stop: StopRequest, every_steps: int = 0, every_minutes: float = 0.0,
                 epoch_minutes: float = 0.0):
        self.stop, self.every_steps, self.every_minutes = stop, every_steps, every_minutes
        self.epoch_minutes = epoch_minutes  # run.epoch_checkpoint_minutes
        self._last_save, self._last_save_step = time.monotonic(), None

    def after_step(self, step: int) -> tuple[bool, bool]:
        """``(checkpoint, stop)`` after optimiser step ``step`` (counted from the run's start)."""
        if self._last_save_step is None:  # before the poll below skips steps: the count starts at the first
            self._last_save_step = step - 1  # the run's (or the resumed run's) start
        if dist.is_enabled() and step % POLL_EVERY:
            return False, False  # the ranks agree at multiples of POLL_EVERY only
        save_due = (self.every_steps > 0 and step - self._last_save_step >= self.every_steps) or (
            self.every_minutes > 0 and time.monotonic() - self._last_save >= 60 * self.every_minutes)
        flags = self._agree([bool(self.stop.reason), save_due])
        stop, save = flags[0], flags[1]
        if dist.is_enabled() and stop and not self.stop.reason:
            self.stop.request("a stop signal on another rank")
        return save or stop, stop

    def at_epoch_end(self, last: bool) -> tuple[bool, bool]:
        """``(checkpoint, stop)`` at an epoch's end (every rank gets the same answers). A checkpoint
        when the run ends here (``last``), on a stop, or once the last one is ``epoch_minutes`` old:
        a folder of a few hundred images has one-step epochs, and a checkpoint each would be written
        every second. What a crash can lose is bounded by the same minutes."""
        due = last or time.monotonic() - self._last_save >= 60 * self.epoch_minutes
        stop, save = self._agree([bool(self.stop.reason), due])
        if stop and not self.stop.reason:
            self.stop.request("a stop signal on another rank")
        return save or stop, stop

    def saved(self, step: int) -> None:
        """A checkpoint (of any kind) was written after ``step``: the periodic intervals restart."""
        self._last_save, self._last_save_step = time.monotonic(), step

    @staticmethod
    def _agree(flags: list[bool]) -> list[bool]:
        if not dist.is_enabled():
            return flags
        t = torch.tensor([float(f) for f in flags], device=dist.collective_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]


def resume_line(run_dir, reason: str, position: str, torchrun: bool) -> str:
    """The one line a stopped run prints: why, where, and the command that continues it."""
    launcher = "torchrun <same options> -m simsiam" if torchrun else "simsiam"
    return (f"stopped by {reason} {position}; checkpoint written. Resume with: "
            f"{launcher} pretrain --resume {run_dir}")

