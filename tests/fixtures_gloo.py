"""Two CPU processes joined in a gloo group, as torchrun would start them, for the DDP tests.

The two processes are started once per test process and kept (a pool): a new interpreter imports
torch and the package again, which on a busy 2-core machine costs more than the small runs the
tests give it. Each task joins a new process group on a new port (:func:`join`) and leaves it
(``dist.cleanup()``), so that tasks do not see each other's group. A task that fails takes the
pool down with it (its partner may be waiting in a collective); the next task starts a new one.
"""
from __future__ import annotations

import atexit
import os
import queue
import socket
import traceback

import torch
import torch.multiprocessing as mp

from simsiam.parallel import distributed as dist

WORLD = 2
TASK_TIMEOUT_S = 600  # a task that hangs (a collective one rank never reaches) fails instead of waiting for ever


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(rank: int, port: int) -> None:
    """What torchrun does for a worker: the rendezvous variables, one thread per process."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init("cpu")


def spawn(worker, *args) -> None:
    """Run ``worker(rank, port, *args)`` in the WORLD processes; an exception in any fails the test."""
    global _pool
    if _pool is None:
        _pool = _Pool()
    port = free_port()
    for tasks in _pool.tasks:
        tasks.put((worker, (port, *args)))
    failures = []
    try:
        for _ in range(WORLD):
            rank, error = _pool.results.get(timeout=TASK_TIMEOUT_S)
            if error:
                failures.append(f"rank {rank}:\n{error}")
                break  # the other rank may be waiting in a collective for this one
    except queue.Empty:
        failures.append(f"no answer within {TASK_TIMEOUT_S} s")
    if failures:
        _pool.close()
        _pool = None
        raise AssertionError("\n".join(failures))


class _Pool:
    def __init__(self):
        ctx = mp.get_context("spawn")
        self.tasks = [ctx.Queue() for _ in range(WORLD)]
        self.results = ctx.Queue()
        self.processes = [ctx.Process(target=_serve, args=(rank, self.tasks[rank], self.results), daemon=True)
                          for rank in range(WORLD)]
        for p in self.processes:
            p.start()

    def close(self) -> None:
        for p in self.processes:
            p.terminate()
            p.join()


def _serve(rank: int, tasks, results) -> None:
    while True:
        worker, args = tasks.get()
        try:
            worker(rank, *args)
            results.put((rank, ""))
        except BaseException:  # noqa: BLE001 -- reported to the test, which fails with it
            results.put((rank, traceback.format_exc()))
            return


_pool: _Pool | None = None


@atexit.register
def _close_pool() -> None:
    if _pool is not None:
        _pool.close()
