"""Ctrl-C outside training: a real SIGINT, sent as a terminal sends it (to the whole process group), to
``python -m simsiam`` while it decodes a folder into the image cache or embeds a folder. Either
stops at once with one line and the shell's code for SIGINT (130), no traceback, and nothing partial
left behind. (Ctrl-C during training is train/stop.py's, tested in test_preemption.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_checkpoints import make_checkpoint_file
from PIL import Image

SLOW_IMAGES = 400  # each a 1200 x 1200 JPEG: tens of milliseconds to decode, seconds for the folder


@pytest.fixture(scope="module")
def slow_folder(tmp_path_factory) -> Path:
    """A folder that takes many seconds to decode: one large photo, hard-linked under many names."""
    root = tmp_path_factory.mktemp("slow") / "photos"
    root.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "original.jpg", quality=90)
    for i in range(SLOW_IMAGES - 1):
        os.link(root / "original.jpg", root / f"copy{i:03d}.jpg")
    return root


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Command:
    """``python -m simsiam ARGV`` in a process group of its own, its output collected as it comes."""

    def __init__(self, *argv: str, env: dict):
        # SIGINT at its default, as under a terminal: a shell that starts the suite in the background
        # (`make test &`, a CI runner) leaves it ignored, and a Python started so ignores Ctrl-C.
        self.proc = subprocess.Popen([sys.executable, "-m", "simsiam", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True, env=env,
                                     preexec_fn=_default_sigint)
        self.out, self.err = bytearray(), bytearray()
        self._readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: bytearray) -> None:
        while chunk := os.read(stream.fileno(), 4096):  # tqdm's bar writes no newline: read what comes
            into += chunk

    def wait_for(self, text: str, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while text.encode() not in self.out + self.err:
            assert self.proc.poll() is None, f"ended before {text!r}: {bytes(self.err).decode()[-2000:]}"
            assert time.monotonic() < end, f"no {text!r} in {timeout} s"
            time.sleep(0.05)

    def ctrl_c(self, times: int = 1) -> None:
        for _ in range(times):
            os.killpg(self.proc.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the whole group
            time.sleep(0.1)

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=120)
        for reader in self._readers:
            reader.join(timeout=10)
        return code, bytes(self.err).decode(errors="replace")


def _env(tmp_path: Path) -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "SIMSIAM_CACHE_DIR": str(tmp_path / "cache")}


def _last_line(stderr: str) -> str:
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()][-1]


def test_ctrl_c_during_the_cache_decode_stops_it_at_once_and_leaves_no_cache(tmp_path, slow_folder):
    cache = tmp_path / "images"
    cmd = Command("pretrain", "--preset", "digits", "--quiet", "data.eval_split=", "model.width=4",
                  "model.proj_hidden=32", "model.dim=32", "data.dataset=folder", f"data.cache_dir={cache}",
                  "--data-dir", str(slow_folder), "--out-dir", str(tmp_path / "run"), env=_env(tmp_path))
    cmd.wait_for(f"decoding {SLOW_IMAGES} images")
    time.sleep(0.3)
    cmd.ctrl_c()
    code, err = cmd.finish()
    # Before: the run's handler only set a flag, the whole folder was decoded, the run stopped after a step (75).
    assert code == 130, err[-3000:]
    assert _last_line(err) == (f"simsiam pretrain: interrupted while decoding {SLOW_IMAGES} images of folder into "
                               "the image cache; nothing was cached (the next run decodes again)")
    assert "Traceback" not in err
    assert list(cache.iterdir()) == []  # neither images, index nor temporary
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_embed_stops_it_with_one_line_and_leaves_the_folder_as_it_was(tmp_path, slow_folder, presses):
    checkpoint, _, _ = make_checkpoint_file(tmp_path / "checkpoint.pt")
    out = tmp_path / "embedding"
    out.mkdir()
    (out / "index.csv").write_text("an earlier embedding\n")
    cmd = Command("embed", str(checkpoint), "--data", str(slow_folder), "--out", str(out), "--batch-size", "16",
                  "--workers", "2", env=_env(tmp_path))
    cmd.wait_for("embedding:")
    time.sleep(0.5)
    cmd.ctrl_c(presses)  # a second press while the first is handled used to print a DataLoader destructor's traceback
    code, err = cmd.finish()
    assert code in ((130,) if presses == 1 else (130, -signal.SIGINT)), err[-3000:]
    assert _last_line(err) == (f"simsiam embed: interrupted; {out} was left as it was (the outputs are written "
                               "together, at the end)")
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["index.csv"]
    assert (out / "index.csv").read_text() == "an earlier embedding\n"
