"""torchrun's elastic restart after a worker is killed: the FIRST restart joins (a rendezvous store
prefix per attempt, parallel/distributed.py) and the resumed run ends bitwise equal to an
uninterrupted one. Real torchrun processes (gloo, 2 workers): about a minute on a busy 2-core machine."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simsiam.artifacts import checkpoint as ckpt_io

TORCHRUN = Path(sys.executable).parent / "torchrun"
# 4 epochs x 8 steps of 2 x 32 images; under torchrun the ranks agree on a checkpoint every 10 steps
# (train/stop.py), so with checkpoint_every_steps=2 the first one is written after step 20.
ARGS = ["--preset", "digits", "data.eval_split=", "model.width=4", "model.proj_hidden=32", "model.dim=32",
        "data.train_limit=512", "optim.batch_size=64", "run.deterministic=true", "--epochs", "4", "--device", "cpu",
        "run.log_every=1", "run.checkpoint_every_steps=2", "--resume", "auto"]


# `simsiam`, with rank 1 of a restarted attempt starting 3 s after rank 0, as a busy or slower node
# would: rank 0 then reaches the rendezvous first, which is when a stale address of rank 1 from the
# crashed attempt was read (without the late start the failure came and went with the timing).
LATE_START = """
import os, sys, time
if os.environ["TORCHELASTIC_RESTART_COUNT"] != "0" and os.environ["LOCAL_RANK"] == "1":
    time.sleep(3)
from simsiam.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(run: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    script = run.parent / "late_start.py"
    script.write_text(LATE_START)
    return subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc-per-node=2", "--max-restarts=1", str(script),
                             "pretrain", *ARGS, "--out-dir", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def _finish(proc: subprocess.Popen, output: str = "") -> str:
    """Everything ``proc`` printed; a run that hangs (a restart stuck in the rendezvous, as it was
    without the fix) is killed with its workers, and fails the test."""
    try:
        return output + proc.communicate(timeout=240)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("torchrun did not end within 240 s (a restart hanging in init_process_group?)") from None


def _worker(parent: int, local_rank: int) -> int:
    """The pid of torchrun's worker of ``local_rank``."""
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            if f"LOCAL_RANK={local_rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except (OSError, ValueError):  # a process that ended meanwhile
            continue
    raise AssertionError(f"no worker of local rank {local_rank} under {parent}")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")
def test_first_restart_after_a_killed_worker_resumes_and_ends_bitwise_equal(tmp_path):
    straight = _torchrun(tmp_path / "straight")
    out = _finish(straight)
    assert straight.returncode == 0, out[-3000:]

    killed = _torchrun(tmp_path / "killed")
    lines = []
    for line in killed.stdout:
        lines.append(line)
        if " step 22 " in line:  # after the checkpoint of step 20
            os.kill(_worker(killed.pid, 1), signal.SIGKILL)
            break
    out = _finish(killed, "".join(lines))
    assert killed.returncode == 0, out[-3000:]
    assert "resuming " in out and "(step 20)" in out, out[-3000:]  # the first restart resumed the checkpoint
    assert "connectFullMesh failed" not in out

    a, b = ckpt_io.load(tmp_path / "straight"), ckpt_io.load(tmp_path / "killed")
    assert a["step"] == b["step"] == 32
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
