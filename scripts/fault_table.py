"""Try every fault and bad input of docs/FAULTS.md from the command line and write its table.

    PYTHONPATH=src python scripts/fault_table.py [--out docs/FAULTS.md] [--work /tmp/faults]

Each case runs ``simsiam ...`` on real files and records the exit code and the line the user sees
(the last line on stderr, or on stdout when stderr is empty): most in a forked child of this
script that calls the command line's ``main(argv)`` (see :func:`simsiam`), the signal and
``kill -9`` cases as ``python -m simsiam`` processes that get real signals. Cases that check more than a line (a checkpoint still loadable, a
resumed run bitwise equal to an uninterrupted one) add what they checked. A full disk and a
read-only disk are real small tmpfs mounts; they need root and are reported as skipped otherwise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

PY = sys.executable
TINY = ["--preset", "digits", "--quiet", "data.eval_split=", "model.width=4", "model.proj_hidden=32",
        "model.dim=32", "data.train_limit=256"]
LONGER = ["--preset", "digits", "--quiet", "data.eval_split=", "model.width=4", "model.proj_hidden=32",
          "model.dim=32", "data.train_limit=1024", "run.log_every=1", "run.deterministic=true", "--epochs", "2"]


@dataclass
class Row:
    fault: str
    command: str
    code: object
    seen: str
    checked: str = ""


def simsiam(*argv: str, preexec: Optional[Callable] = None) -> subprocess.CompletedProcess:
    """``simsiam ARGV`` in a forked child of this script: the command's own argument parsing, error
    boundary and exit code, without an interpreter start-up (and torch import) per case, which on a
    busy 2-core machine took most of a minute. The child inherits nothing the command reads but the
    environment; ``preexec`` runs in it first (a resource limit)."""
    from simsiam.cli import main

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        pid = os.fork()
        if pid == 0:  # the child: the command, then exit with its code
            code = 1
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                if preexec is not None:
                    preexec()
                code = main(list(argv))
            except SystemExit as exc:  # argparse's exits
                code = exc.code if isinstance(exc.code, int) else 2
            except BaseException:
                traceback.print_exc()  # a raw traceback: recorded as such
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, code, out.read(), err.read())


def last_line(proc) -> str:
    """The error line when there is one (a few messages go on with indented detail lines, e.g. the
    places a dataset was searched), else the last line printed."""
    errors = [line for line in (proc.stderr or "").splitlines() if line.startswith("simsiam") and "error" in line]
    if errors:
        return errors[-1].strip()
    for stream in (proc.stderr, proc.stdout):
        lines = [line for line in (stream or "").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return ""


def short(argv: list[str], work: Path) -> str:
    """The command as shown in the table: the tiny-model settings abbreviated, paths relative."""
    text = " ".join(argv)
    text = text.replace(" ".join(TINY), "<tiny digits>").replace(" ".join(LONGER), "<digits, 16 steps>")
    return "simsiam " + text.replace(str(work) + "/", "")


class Table:
    def __init__(self, work: Path):
        self.work, self.rows = work, []

    def cli(self, fault: str, *argv: str, checked: Callable[[], str] = lambda: "", **kw) -> None:
        proc = simsiam(*argv, **kw)
        self.rows.append(Row(fault, short(list(argv), self.work), proc.returncode, last_line(proc), checked()))
        print(f"[{len(self.rows)}] {fault}: {proc.returncode} {last_line(proc)[:140]}", flush=True)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"[{len(self.rows)}] {row.fault}: {row.code} {row.seen[:140]}", flush=True)


def loadable(path: Path) -> str:
    from simsiam.artifacts.checkpoint import load

    try:
        c = load(path)
    except Exception as err:
        return f"checkpoint NOT loadable: {err}"
    return f"checkpoint loadable (epoch {c['epoch']}, step {c['step']})"


def same_weights(a: Path, b: Path) -> str:
    import torch

    from simsiam.artifacts.checkpoint import load

    x, y = load(a), load(b)
    same = x["step"] == y["step"] and all(torch.equal(x["model"][k], y["model"][k]) for k in x["model"])
    return ("weights bitwise equal to the uninterrupted run's" if same else
            "weights DIFFER from the uninterrupted run's") + f" (step {y['step']})"


def signal_run(table: Table, fault: str, run: Path, signals: list[int], after_step: int, extra=()) -> None:
    """Start a run, send ``signals`` once its log shows step ``after_step``, record what it printed."""
    argv = [a for a in LONGER if a != "--quiet"] + ["--out-dir", str(run), *extra]  # quiet prints no step line
    proc = subprocess.Popen([PY, "-m", "simsiam", "pretrain", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if f" step {after_step} " in line:
            for sig in signals:
                proc.send_signal(sig)
                time.sleep(0.05)
            break
    out, err = proc.communicate(timeout=600)
    fake = subprocess.CompletedProcess([], proc.returncode, out, err)
    table.add(Row(fault, short(["pretrain", *argv], table.work) + f"; kill -{'/'.join(signal.Signals(s).name[3:] for s in signals)}",
                  proc.returncode, last_line(fake), loadable(run) if (run / "checkpoint.pt").exists() else
                  "no checkpoint.pt"))


def make_inputs(work: Path) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    p = {}
    (work / "tab.yaml").write_text("optim:\n\tbase_lr: 0.1\n")
    (work / "list.yaml").write_text("- optim\n- model\n")
    (work / "unclosed.yaml").write_text("optim: {base_lr: 0.1\n")
    (work / "badvalue.yaml").write_text("optim:\n  base_lr: fast\n")
    (work / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (work / "afile").write_text("x")
    (work / "empty").mkdir()
    bad = work / "unreadable"
    bad.mkdir()
    for i in range(16):
        (bad / f"x{i}.png").write_text("not an image")
    mixed = work / "mixed"
    mixed.mkdir()
    rng = np.random.default_rng(0)
    for i in range(14):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(mixed / f"ok{i}.png")
    for i in range(2):
        (mixed / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    sixteen = work / "sixteen"
    sixteen.mkdir()
    for i in range(8):
        Image.fromarray((rng.integers(0, 4096, (16, 16)) * 16).astype(np.uint16)).save(sixteen / f"g{i}.png")
    rgb = work / "rgbfolder"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (rgb / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(rgb / split / cls / f"{i}.png")
    (work / "text.pt").write_text("this is not a checkpoint\n" * 10)
    (work / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.ones(3)}, work / "foreign.pt")

    class Payload:
        def __reduce__(self):
            return (print, ("PAYLOAD RAN",))

    torch.save({"model": {}, "config": {}, "x": Payload()}, work / "pickled.pt")
    p["rgb"] = rgb
    return p


def run_cases(work: Path) -> list[Row]:
    t = Table(work)
    inputs = make_inputs(work)
    base = work / "base"
    t.cli("a normal tiny run (the reference for the cases below)", "pretrain", *TINY, "--epochs", "2",
          "--out-dir", str(base))
    ckpt = base / "checkpoint.pt"
    data = ckpt.read_bytes()
    (work / "truncated.pt").write_bytes(data[: len(data) // 2])
    out = str(work / "new")

    # --- config values and syntax
    for fault, args in [
        ("NaN learning rate", ["optim.base_lr=nan"]),
        ("negative learning rate", ["optim.base_lr=-0.25"]),
        ("infinite weight decay", ["optim.weight_decay=inf"]),
        ("negative momentum", ["optim.momentum=-1"]),
        ("zero epochs", ["optim.epochs=0"]),
        ("zero batch size", ["optim.batch_size=0"]),
        ("batch larger than the dataset", ["optim.batch_size=100000"]),
        ("negative width", ["model.width=-4"]),
        ("misspelt key", ["optim.lr=0.1"]),
        ("a word where a number goes", ["optim.base_lr=abc"]),
        ("override with a YAML syntax error", ["model.width=[1"]),
        ("override without '='", ["optim.base_lr"]),
        ("unknown dataset", ["data.dataset=nope"]),
        ("unknown method", ["method=nope"]),
        ("unknown augmentation recipe", ["aug.recipe=nope"]),
        ("unknown pipeline", ["data.pipeline=fast"]),
        ("a section-5 field without its method", ["hypothesis.kstep=2"]),
        ("negative checkpoint interval", ["run.checkpoint_every_steps=-1"]),
        ("zero kNN temperature", ["monitor.knn_t=0"]),
        ("zero log interval", ["run.log_every=0"]),
        ("invalid device name", ["--device", "gpu"]),
        ("a GPU on a machine without one", ["--device", "cuda"]),
        ("a GPU index that does not exist", ["--device", "cuda:3"]),
        ("YAML file indented with a tab", ["--config", str(work / "tab.yaml")]),
        ("YAML file that is a list", ["--config", str(work / "list.yaml")]),
        ("YAML file with an unclosed brace", ["--config", str(work / "unclosed.yaml")]),
        ("YAML value of the wrong type", ["--config", str(work / "badvalue.yaml")]),
        ("binary file as YAML", ["--config", str(work / "binary.yaml")]),
        ("YAML file that does not exist", ["--config", str(work / "missing.yaml")]),
    ]:
        t.cli(fault, "pretrain", *TINY, "--out-dir", out, *args)
    t.cli("unknown preset", "pretrain", "--preset", "nope", "--out-dir", out)

    # --- data
    t.cli("--data-dir that does not exist (fmnist, with a system copy installed)", "pretrain", "--preset", "fmnist",
          "--data-dir", str(work / "nowhere"), "--out-dir", out)
    t.cli("--data-dir that is a file", "pretrain", *TINY, "data.dataset=folder", "--data-dir", str(work / "afile"),
          "--out-dir", out)
    t.cli("empty image folder", "pretrain", *TINY, "data.dataset=folder", "--data-dir", str(work / "empty"),
          "--out-dir", out)
    folder = ["data.dataset=folder", "optim.batch_size=4", "data.num_workers=0", "--epochs", "1"]
    t.cli("folder whose every image is unreadable", "pretrain", *TINY, *folder, "--data-dir", str(work / "unreadable"),
          "--out-dir", str(work / "unreadable_run"))
    t.cli("folder with 2 unreadable of 16 images (trains; the skipped are reported)", "pretrain", *TINY, *folder,
          "--data-dir", str(work / "mixed"), "--out-dir", str(work / "mixed_run"),
          checked=lambda: _grep(work / "mixed_run" / "metrics.jsonl", "skipped_images"))
    t.cli("16-bit grayscale PNGs (scaled to 8 bits, not clipped)", "pretrain", *TINY, *folder,
          "--data-dir", str(work / "sixteen"), "--out-dir", str(work / "sixteen_run"), checked=lambda: _white(work))
    t.cli("imagefolder without a train/ split", "pretrain", *TINY, "data.dataset=imagefolder",
          "--data-dir", str(work / "empty"), "--out-dir", out)

    # --- output directory
    t.cli("--out-dir under /proc", "pretrain", *TINY, "--out-dir", "/proc/simsiam/run")
    t.cli("--out-dir below a file", "pretrain", *TINY, "--out-dir", str(work / "afile" / "run"))
    t.cli("--out-dir under /sys (not permitted)", "pretrain", *TINY, "--out-dir", "/sys/simsiam-run")
    t.cli("--out-dir that holds a run, without --resume", "pretrain", *TINY, "--out-dir", str(base))
    _disk_cases(t, work, len(data))
    _file_size_limit(t, work)

    # --- resume
    t.cli("--resume a directory without a checkpoint", "pretrain", "--resume", str(work / "empty"))
    t.cli("--resume with settings a run cannot change", "pretrain", "--resume", str(base), "optim.base_lr=0.1",
          "model.width=8")
    t.cli("--resume with fewer epochs than done", "pretrain", "--resume", str(base), "--epochs", "1")
    t.cli("--resume with changeable settings (epochs, log interval: applied)", "pretrain", "--resume", str(base),
          "--epochs", "3", "run.log_every=1", checked=lambda: loadable(ckpt))
    t.cli("--resume auto on a run of another config", "pretrain", *TINY, "--epochs", "3", "--out-dir", str(base),
          "--resume", "auto", "model.dim=64")
    t.cli("--resume auto on a finished run", "pretrain", *TINY, "--epochs", "3", "--out-dir", str(base),
          "--resume", "auto")
    t.cli("--resume auto where there is no run yet (starts it)", "pretrain", *TINY, "--epochs", "1", "--out-dir",
          str(work / "auto_new"), "--resume", "auto")
    for i in range(3):
        (base / f".checkpoint.pt.stale{i}.tmp").write_bytes(b"x" * 100000)
    t.cli("stale .checkpoint.pt.*.tmp files from killed writers", "pretrain", "--resume", str(base), "--epochs", "4",
          checked=lambda: f"{len(list(base.glob('.checkpoint.pt.*.tmp')))} temporary files left")

    # --- checkpoint files
    for fault, path in [("plain text file as checkpoint", work / "text.pt"),
                        ("truncated checkpoint", work / "truncated.pt"),
                        ("checkpoint holding a pickled object", work / "pickled.pt"),
                        ("a torch file that is not a simsiam checkpoint", work / "foreign.pt"),
                        ("empty checkpoint file", work / "empty.pt"),
                        ("directory without checkpoint.pt", work / "empty")]:
        t.cli(fault, "knn", str(path))
    t.cli("embed with a pickled-object checkpoint", "embed", str(work / "pickled.pt"), "--data", str(work / "mixed"),
          "--out", str(work / "embed"))
    t.cli("kNN k larger than the bank", "knn", str(base), "--k", "100000")
    t.cli("kNN k = 0", "knn", str(base), "--k", "0")
    t.cli("kNN on RGB images with a grayscale checkpoint", "knn", str(base), "--dataset", "imagefolder",
          "--data-dir", str(inputs["rgb"]))

    # --- signals
    straight = work / "straight"
    t.cli("uninterrupted run for the SIGTERM comparison", "pretrain", *LONGER, "--out-dir", str(straight))
    stopped = work / "stopped"
    signal_run(t, "SIGTERM mid-epoch", stopped, [signal.SIGTERM], after_step=5)
    t.cli("resume after SIGTERM", "pretrain", "--resume", str(stopped),
          checked=lambda: same_weights(straight, stopped))
    signal_run(t, "SIGINT (Ctrl-C) mid-epoch", work / "sigint", [signal.SIGINT], after_step=3)
    signal_run(t, "SIGUSR1 (SLURM's --signal=USR1@...)", work / "sigusr1", [signal.SIGUSR1], after_step=9)
    signal_run(t, "two SIGTERMs in a row (exit at once)", work / "twice", [signal.SIGTERM, signal.SIGTERM],
               after_step=2)
    _kill9_during_writes(t, work)
    _import_cases(t, work)
    _cache_names_and_interrupt_cases(t, work)  # issue 25: the image cache, file names, embed, Ctrl-C
    _issue25_cases(t, work, len(data))  # issue 25: run lock, NaN weights, full disk, elastic restart
    _shard_cases(t, work)  # issue 26: WebDataset shards
    _whole_photo_cases(t, work)  # issue 26 item 3: the cache of whole photos
    _shard_batch_cases(t, work)  # issue 26 item 5: shards on the batched pipeline (needs _shard_cases' folders)
    _compile_cases(t, work)  # issue 29 item 3: run.compile=auto
    _encoded_cases(t, work)  # issue 26 item 4: the encoded pipeline (a folder's bytes in one store)
    _shard_decode_cases(t, work)  # issue 26: shards decoded in batches in the main process (needs _shard_cases')
    return t.rows


def _import_cases(t: Table, work: Path) -> None:
    """`simsiam import` of bad files: another architecture, a cut file, unexpected keys, a lightly
    checkpoint without its projector (the files built here in the formats' layouts)."""
    import torch
    import torchvision

    trunk = torchvision.models.resnet18().state_dict()
    heads = {"encoder.fc.0.weight": torch.randn(512, 512), "encoder.fc.6.weight": torch.randn(64, 512)}
    official = {"epoch": 100, "arch": "resnet18",
                "state_dict": {f"module.encoder.{k}": v for k, v in trunk.items() if not k.startswith("fc.")}}
    official["state_dict"].update({f"module.{k}": v for k, v in heads.items()})
    torch.save(official, work / "official.pth.tar")
    data = (work / "official.pth.tar").read_bytes()
    (work / "official_cut.pth.tar").write_bytes(data[: len(data) // 2])
    extra = {**official, "state_dict": {**official["state_dict"], "module.queue": torch.zeros(8, 4)}}
    torch.save(extra, work / "official_extra.pth.tar")
    vit = {"epoch": 100, "arch": "vit_small", "state_dict": {
        "module.encoder.cls_token": torch.zeros(1, 1, 8), "module.encoder.pos_embed": torch.zeros(1, 5, 8),
        "module.encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16)}}
    torch.save(vit, work / "vit.pth.tar")
    lightly = {"state_dict": {f"backbone.{k}": v for k, v in trunk.items() if not k.startswith("fc.")}}
    torch.save(lightly, work / "lightly_no_projector.ckpt")
    out = str(work / "imported")
    for fault, name, fmt in [("import: a ViT checkpoint where a ResNet is expected", "vit.pth.tar", "official"),
                             ("import: a truncated checkpoint", "official_cut.pth.tar", "official"),
                             ("import: a state dict with unexpected keys", "official_extra.pth.tar", "official"),
                             ("import: a lightly checkpoint without its projector", "lightly_no_projector.ckpt",
                              "lightly"),
                             ("import: a checkpoint holding a pickled object", "pickled.pt", "official")]:
        t.cli(fault, "import", str(work / name), "--from", fmt, "--out", out)


def _grep(path: Path, word: str) -> str:
    return f"{word} recorded in metrics.jsonl" if path.exists() and word in path.read_text() else f"no {word}"


def _white(work: Path) -> str:
    import numpy as np

    from simsiam.data.files import _decode

    x = np.asarray(_decode(str(work / "sixteen" / "g0.png"), "L"))
    return f"pixels at 255 after decoding one of them: {(x == 255).mean():.1%} (values {x.min()}..{x.max()})"


def _disk_cases(t: Table, work: Path, checkpoint_bytes: int) -> None:
    """A disk that fills during the second checkpoint, and a read-only one: small tmpfs mounts."""
    full, ro = work / "full", work / "readonly"
    full.mkdir()
    ro.mkdir()
    size = int(checkpoint_bytes * 1.5) + 64 * 1024  # the first checkpoint fits, a second beside it does not
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(full)], capture_output=True)
    if ok.returncode != 0:
        t.add(Row("full disk during a checkpoint write", "(needs root for a tmpfs)", "skipped", "", ""))
        return
    try:
        t.cli("full disk during the second epoch's checkpoint", "pretrain", *TINY, "--epochs", "2", "--out-dir",
              str(full / "run"), "run.epoch_checkpoint_minutes=0", checked=lambda: loadable(full / "run" / "checkpoint.pt") + "; " +
              f"{len(list((full / 'run').glob('.checkpoint.pt.*')))} temporary files left")
    finally:
        subprocess.run(["umount", str(full)])
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)]).returncode == 0:
        try:
            t.cli("read-only disk as --out-dir", "pretrain", *TINY, "--out-dir", str(ro / "run"))
        finally:
            subprocess.run(["umount", str(ro)])


def _file_size_limit(t: Table, work: Path) -> None:
    """A file-size limit (``ulimit -f``) hit while the checkpoint is written."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, 200 * 1024))

    t.cli("file-size limit (ulimit -f 200) hit by the checkpoint", "pretrain", *TINY, "--epochs", "1", "--out-dir",
          str(work / "fsize"), preexec=limit)


def _kill9_during_writes(t: Table, work: Path, tries: int = 6) -> None:
    """kill -9 at random moments of a run that checkpoints after every step."""
    import random

    rng = random.Random(0)
    run = work / "kill9"
    good = existed = 0
    argv = [*LONGER, "--out-dir", str(run), "run.checkpoint_every_steps=1"]
    for i in range(tries):
        proc = subprocess.Popen([PY, "-m", "simsiam", "pretrain", *argv] + (["--resume", "auto"]),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in proc.stdout:
            if " step " in line:
                break
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.wait()
        if (run / "checkpoint.pt").exists():
            existed += 1
            good += "loadable (" in loadable(run / "checkpoint.pt")
    leftovers = len(list(run.glob(".checkpoint.pt.*.tmp")))
    proc = subprocess.run([PY, "-m", "simsiam", "pretrain", *argv, "--resume", "auto"], capture_output=True, text=True)
    t.add(Row(f"kill -9 at random moments of a run checkpointing every step ({tries} times), then --resume auto",
              short(["pretrain", *argv, "--resume", "auto"], work), proc.returncode, last_line(proc),
              f"{good}/{existed} kills after the first checkpoint left a loadable one; {leftovers} temporary files before the restart, "
              f"{len(list(run.glob('.checkpoint.pt.*.tmp')))} after; " + same_weights(work / "straight", run)))


# --- issue 25: the decoded-image cache's integrity, file names that are not UTF-8, embed all or
# nothing, Ctrl-C outside training

def _cache_names_and_interrupt_cases(t: Table, work: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = work / "bmps"  # BMP: another picture of the same size is a file of the same byte size
    folder.mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i:02d}.bmp")
    cache = work / "image_cache"
    argv = [*TINY, "data.dataset=folder", "optim.batch_size=4", "data.num_workers=0", "--epochs", "1",
            "--data-dir", str(folder), f"data.cache_dir={cache}"]
    simsiam("pretrain", *argv, "--out-dir", str(work / "cache_first"))  # builds the cache

    def replace_an_image(images: Path) -> None:
        target, before = folder / "03.bmp", (folder / "03.bmp").stat()
        Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(target)
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))

    def zero_pixels(images: Path) -> None:
        before = images.stat()
        with open(images, "r+b") as fh:
            fh.seek(128)
            fh.write(bytes(before.st_size - 128))
        os.utime(images, ns=(before.st_atime_ns, before.st_mtime_ns))

    def truncate(images: Path) -> None:
        os.truncate(images, images.stat().st_size // 2)

    def random_bytes(images: Path) -> None:
        images.write_bytes(rng.integers(0, 256, images.stat().st_size, dtype=np.uint8).tobytes())

    def truncate_index(images: Path) -> None:
        index = images.with_suffix(".json")
        index.write_bytes(index.read_bytes()[:50])

    for n, (fault, damage) in enumerate([
        ("decoded-image cache: a source image replaced by another of the same byte size and modification time",
         replace_an_image),
        ("decoded-image cache: its pixels zeroed in place (same size and time)", zero_pixels),
        ("decoded-image cache: its images file truncated", truncate),
        ("decoded-image cache: its images file overwritten with random bytes", random_bytes),
        ("decoded-image cache: its index (JSON) truncated", truncate_index),
    ]):
        damage(next(cache.glob("*.npy")))
        run = [*argv, "--out-dir", str(work / f"cache_damage{n}")]
        proc = simsiam("pretrain", *run)
        said = [line for line in (proc.stdout + proc.stderr).splitlines() if "decoded-image cache" in line]
        t.add(Row(fault, short(["pretrain", *run], work), proc.returncode, said[-1] if said else last_line(proc),
                  _trained(proc) + "; cache folder: " + _cache_files(cache)))

    odd = work / "oddnames"
    odd.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(odd / f"{i}.png")
    with open(os.path.join(os.fsencode(odd), b"bad\xff\xfename.png"), "wb") as fh:
        Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(fh, format="PNG")
    with open(os.path.join(os.fsencode(odd), b"broken\xe9.png"), "wb") as fh:
        fh.write(b"not an image")
    t.cli("a file name that is not UTF-8 (bad\\xff\\xfename.png) in a folder run (and an unreadable one)",
          "pretrain", *TINY, "data.dataset=folder", "optim.batch_size=4", "--epochs", "1", "--data-dir", str(odd),
          f"data.cache_dir={cache}", "--out-dir", str(work / "oddnames_run"),
          checked=lambda: f"run finished: {(work / 'oddnames_run' / 'checkpoint.pt').is_file()}")
    embedded = work / "oddnames_embed"
    t.cli("embed of a folder holding file names that are not UTF-8", "embed", str(work / "base"), "--data", str(odd),
          "--out", str(embedded), "--quiet", checked=lambda: _odd_bytes(embedded))

    # One large photo under 400 names: seconds to decode. A PNG: a JPEG is decoded at a reduced scale
    # (data/decode.py), too fast for a Ctrl-C to land during it.
    slow = work / "slow_photos"
    slow.mkdir()
    Image.fromarray(rng.integers(0, 256, (1200, 1200, 3), dtype=np.uint8)).save(slow / "photo.png")
    for i in range(399):
        os.link(slow / "photo.png", slow / f"copy{i:03d}.png")
    slow_cache = work / "slow_cache"
    run = [*TINY, "data.dataset=folder", "--data-dir", str(slow), f"data.cache_dir={slow_cache}",
           "--out-dir", str(work / "slow_run")]
    proc = _ctrl_c_when(["pretrain", *run], "decoding ")
    t.add(Row("Ctrl-C (SIGINT to the process group) during the decode of a folder into the image cache",
              short(["pretrain", *run], work) + "; Ctrl-C", proc.returncode, last_line(proc),
              "cache folder: " + _cache_files(slow_cache) + ("; a traceback" if "Traceback" in proc.stderr else "")))
    out = work / "embed_interrupted"
    out.mkdir()
    (out / "index.csv").write_text("an earlier embedding\n")
    run = ["embed", str(work / "base"), "--data", str(slow), "--out", str(out), "--workers", "2", "--batch-size", "16"]
    proc = _ctrl_c_when(run, "embedding:", presses=2)
    code = proc.returncode
    if code == -signal.SIGINT:  # the second press landed while the interpreter shut down, with SIGINT's default action
        code = f"{code} (ended by the second SIGINT; a shell shows 130)"
    t.add(Row("Ctrl-C twice during embed (a DataLoader with workers)", short(run, work) + "; Ctrl-C, Ctrl-C",
              code, last_line(proc),
              f"files in --out: {sorted(p.name for p in out.iterdir())}, index.csv "
              f"{'as it was' if (out / 'index.csv').read_text() == 'an earlier embedding' + chr(10) else 'CHANGED'}"
              + ("; a traceback" if "Traceback" in proc.stderr or "Exception ignored" in proc.stderr else "")))
    proc = _ctrl_c_when(["presets"], "", delay=0.3)  # 0.3 s in: torch (seconds to import) is loading
    t.add(Row("Ctrl-C while a command is still starting (torch loading)", "simsiam presets; Ctrl-C 0.3 s in",
              proc.returncode, last_line(proc), "a traceback" if "Traceback" in proc.stderr else "no traceback"))


def _trained(proc) -> str:
    done = [line for line in proc.stdout.splitlines() if line.startswith("done:")]
    return f"then trained ({done[-1][:48]}...)" if done else "did NOT train"


# --- issue 26 item 3: the decoded-image cache of whole photos (aspect kept up to 4:3)

def _whole_photo_cases(t: Table, work: Path) -> None:
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    folder = work / "photos_4x3"
    folder.mkdir()
    for i in range(16):  # 4:3, 3:4 and 16:9 photos
        shape = [(12, 16, 3), (16, 12, 3), (9, 16, 3)][i % 3]
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i:02d}.png")
    cache = work / "whole_cache"
    argv = [*TINY, "data.dataset=folder", "optim.batch_size=4", "data.num_workers=0", "--epochs", "1",
            "--data-dir", str(folder), f"data.cache_dir={cache}"]
    simsiam("pretrain", *argv, "--out-dir", str(work / "whole_first"))  # builds the cache
    index_path = next(cache.glob("*.json"))
    index = json.loads(index_path.read_text())
    index["sizes"] = index["sizes"][:-1]
    index_path.write_text(json.dumps(index))
    run = [*argv, "--out-dir", str(work / "whole_damaged")]
    proc = simsiam("pretrain", *run)
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "decoded-image cache" in line]
    t.add(Row("decoded-image cache of whole photos: its index's sizes one short of its images",
              short(["pretrain", *run], work), proc.returncode, said[-1] if said else last_line(proc),
              _trained(proc) + "; cache folder: " + _cache_files(cache)))


def _cache_files(cache: Path) -> str:
    names = [p.name for p in cache.iterdir()]
    temporaries = sum(n.endswith(".tmp") for n in names)
    return (f"{sum(n.endswith('.npy') for n in names)} images file(s), {sum(n.endswith('.json') for n in names)} "
            f"index(es), {temporaries} temporary file(s)")


def _odd_bytes(embedded: Path) -> str:
    index = (embedded / "index.csv").read_bytes() if (embedded / "index.csv").exists() else b""
    listed = (embedded / "unreadable.txt").read_bytes() if (embedded / "unreadable.txt").exists() else b""
    return (("index.csv holds the name's own bytes" if b"bad\xff\xfename.png" in index else "name NOT in index.csv")
            + ("; unreadable.txt lists the broken one" if b"broken\xe9.png" in listed else ""))


def _ctrl_c_when(argv: list[str], text: str, presses: int = 1, delay: float = 0.5) -> subprocess.CompletedProcess:
    """``python -m simsiam ARGV`` in a process group of its own; once ``text`` shows in its output, a
    terminal's Ctrl-C (SIGINT to the group), ``presses`` times 0.1 s apart."""
    import threading

    # SIGINT at its default, as under a terminal: a shell starts background jobs (this script run
    # with `&`) with SIGINT ignored, and a Python started so never turns it into KeyboardInterrupt.
    proc = subprocess.Popen([PY, "-m", "simsiam", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = {"out": bytearray(), "err": bytearray()}

    def read(stream, into):
        while chunk := os.read(stream.fileno(), 4096):  # a progress bar writes no newline
            into += chunk

    readers = [threading.Thread(target=read, args=(proc.stdout, seen["out"]), daemon=True),
               threading.Thread(target=read, args=(proc.stderr, seen["err"]), daemon=True)]
    for r in readers:
        r.start()
    end = time.monotonic() + 300
    while text.encode() not in seen["out"] + seen["err"] and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(delay)
    for _ in range(presses):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.1)
    proc.wait(timeout=300)
    for r in readers:
        r.join(timeout=10)
    err = bytes(seen["err"]).decode(errors="replace").replace("\r", "\n")
    return subprocess.CompletedProcess(argv, proc.returncode, bytes(seen["out"]).decode(errors="replace"), err)


# ------------------------------------------------------------------ issue 25: run lock, NaN weights, full disk
def _issue25_cases(t: Table, work: Path, checkpoint_bytes: int) -> None:
    """Two processes in one run directory, checkpoints with non-finite weights, a full disk while the
    report is written. Needs ``base`` and ``straight`` (above)."""
    from simsiam.artifacts.run_lock import DirectoryLock

    _busy_run_dir(t, work)
    base = work / "base"
    folder = work / "ft_busy"
    with DirectoryLock(folder, "fine-tune"):  # held by this script's process
        t.cli("finetune into a folder another process is fine-tuning into", "finetune", str(base), "--out", str(folder),
              "--label-seeds", "0", "--contenders", "knn")

    damaged = _nan_checkpoint(base, work / "nan_run")
    ckpt, images = str(damaged / "checkpoint.pt"), str(work / "mixed")
    for command, argv in [("knn", ["knn", ckpt]), ("embed", ["embed", ckpt, "--data", images, "--out", str(work / "e")]),
                          ("similar", ["similar", ckpt, "--data", images, "--out", str(work / "s")]),
                          ("export", ["export", ckpt, "--format", "onnx", "--out", str(work / "x.onnx")]),
                          ("linear", ["linear", ckpt]), ("finetune", ["finetune", ckpt, "--out", str(work / "f")]),
                          ("predict", ["predict", ckpt, "--data", images, "--out", str(work / "p")]),
                          ("--resume", ["pretrain", "--resume", str(damaged)])]:
        t.cli(f"{command} of a checkpoint whose weights are NaN", *argv)
    run = work / "overflow"
    t.cli("weights that overflow to inf in training (optim.base_lr=1e38; checked before the loss is)", "pretrain",
          *LONGER, "--out-dir", str(run), "optim.base_lr=1e38", "run.checkpoint_every_steps=1", "run.log_every=1000",
          checked=lambda: loadable(run / "checkpoint.pt"))
    _report_disk_full(t, work, checkpoint_bytes)
    _elastic_restart(t, work)


def _busy_run_dir(t: Table, work: Path) -> None:
    """A run stopped (SIGSTOP) after step 3 still holds its directory: a second start, --resume and
    --resume auto there are refused; once it is killed (-9), --resume auto takes the directory over."""
    run = work / "busy"
    argv = [*LONGER, "--out-dir", str(run), "run.checkpoint_every_steps=1"]
    proc = subprocess.Popen([PY, "-m", "simsiam", "pretrain", *[a for a in argv if a != "--quiet"]],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if " step 3 " in line:
                proc.send_signal(signal.SIGSTOP)
                break
        before = (run / "metrics.jsonl").read_bytes()
        t.cli("pretrain started again in a run directory that is still training", "pretrain", *argv)
        t.cli("--resume of a run that is still training", "pretrain", "--resume", str(run))
        t.cli("--resume auto of a run that is still training", "pretrain", *argv, "--resume", "auto",
              checked=lambda: "metrics.jsonl " + ("unchanged" if (run / "metrics.jsonl").read_bytes() == before
                                                  else "CHANGED") + " by the refused commands")
    finally:
        proc.kill()
        proc.wait()
    t.cli("--resume auto after the run holding the directory was killed (kill -9: its lock went with it)", "pretrain",
          *argv, "--resume", "auto", checked=lambda: same_weights(work / "straight", run))


def _nan_checkpoint(base: Path, run: Path) -> Path:
    import torch

    run.mkdir()
    ckpt = torch.load(base / "checkpoint.pt", weights_only=True)
    for v in ckpt["model"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))
    torch.save(ckpt, run / "checkpoint.pt")
    return run


def _report_disk_full(t: Table, work: Path, checkpoint_bytes: int) -> None:
    """A tmpfs with room for a 1-epoch run's checkpoint and records but not for its curves.png; then
    made larger, and the same command with --resume auto."""
    full = work / "full_report"
    full.mkdir()
    page = 4096
    size = -(-checkpoint_bytes // page) * page + 6 * page  # the checkpoint, config, records, lock; ~40 KB short
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(full)], capture_output=True)
    if ok.returncode != 0:
        t.add(Row("full disk while the report is written", "(needs root for a tmpfs)", "skipped", "", ""))
        return
    run = full / "run"
    argv = [*TINY, "--epochs", "1", "--out-dir", str(run)]
    try:
        t.cli("full disk while the run's end writes curves.png and report.md", "pretrain", *argv,
              checked=lambda: loadable(run / "checkpoint.pt") + "; " + ", ".join(
                  f"{n} {'present' if (run / n).exists() else 'missing'}" for n in ("curves.png", "report.md")))
        subprocess.run(["mount", "-o", f"remount,size={size + 64 * page}", str(full)], check=True)
        t.cli("--resume auto of that finished run once there is space (its end outputs written again)", "pretrain",
              *argv, "--resume", "auto", checked=lambda: ", ".join(
                  f"{n} {'present' if (run / n).exists() else 'missing'}" for n in ("curves.png", "report.md")))
    finally:
        subprocess.run(["umount", str(full)])


def _elastic_restart(t: Table, work: Path) -> None:
    """torchrun --max-restarts=1 (2 gloo workers), one worker killed (-9) after the checkpoint of step
    20: the first restart must join, resume and end as the uninterrupted run does."""
    torchrun = Path(PY).parent / "torchrun"
    if not torchrun.exists():
        t.add(Row("kill -9 of one torchrun worker (--max-restarts=1)", "(torchrun not installed)", "skipped", "", ""))
        return
    argv = ["--preset", "digits", "data.eval_split=", "model.width=4", "model.proj_hidden=32", "model.dim=32",
            "data.train_limit=512", "optim.batch_size=64", "run.deterministic=true", "--epochs", "4", "--device",
            "cpu", "run.log_every=1", "run.checkpoint_every_steps=2", "--resume", "auto"]

    # simsiam's entry point, rank 1 of a restart 3 s late (a slower node): the timing that made a restarted
    # rank read its peer's address from the crashed attempt.
    late = work / "late_start.py"
    late.write_text("import os, sys, time\n"
                    "if os.environ['TORCHELASTIC_RESTART_COUNT'] != '0' and os.environ['LOCAL_RANK'] == '1':\n"
                    "    time.sleep(3)\n"
                    "from simsiam.cli import main\n"
                    "sys.exit(main(sys.argv[1:]))\n")

    def start(run: Path) -> subprocess.Popen:
        return subprocess.Popen([str(torchrun), "--standalone", "--nproc-per-node=2", "--max-restarts=1", str(late),
                                 "pretrain", *argv, "--out-dir", str(run)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    straight = start(work / "ddp_straight")
    straight.communicate(timeout=600)
    proc = start(work / "ddp_killed")
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if " step 22 " in line:
            os.kill(_child_with(proc.pid, "LOCAL_RANK=1"), signal.SIGKILL)
            break
    lines += proc.communicate(timeout=600)[0].splitlines(keepends=True)
    seen = [line.strip() for line in lines if line.startswith(("done:", "resuming")) or "connectFullMesh" in line]
    t.add(Row("kill -9 of one of 2 torchrun workers after step 22 (--max-restarts=1, --resume auto; checkpoint at "
              "step 20; the restarted rank 1 starts 3 s late)", "torchrun --standalone --nproc-per-node=2 "
              "--max-restarts=1 -m simsiam pretrain "
              "<digits, 32 steps of 2 x 32> run.checkpoint_every_steps=2 --resume auto --out-dir ddp_killed; kill -9 "
              "<rank 1>", proc.returncode, " / ".join(seen[-2:]),
              same_weights(work / "ddp_straight", work / "ddp_killed")))


def _child_with(parent: int, env_entry: str) -> int:
    """The pid of the child of ``parent`` whose environment holds ``env_entry`` (a torchrun worker)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent \
                    and env_entry.encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except (OSError, ValueError):
            continue
    raise RuntimeError(f"no child of {parent} with {env_entry}")


def _shard_cases(t: Table, work: Path) -> None:
    """WebDataset shards (simsiam pack, data.dataset=shards): a block of its own, last."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    photos = work / "shard_photos"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (photos / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / cls / f"{i}.jpg")
    shards = work / "shards"
    shard_tiny = ["--preset", "digits", "--quiet", "data.eval_split=", "model.width=4", "model.proj_hidden=32",
                  "model.dim=32", "data.dataset=shards", "data.image_size=8", "optim.batch_size=4",
                  "data.num_workers=0", "--epochs", "1"]
    t.cli("simsiam pack of a folder that does not exist", "pack", str(work / "nowhere"), "--out", str(shards))
    t.cli("simsiam pack of a folder of 24 JPEGs in 2 classes", "pack", str(photos), "--out", str(shards),
          "--per-shard", "6", "--quiet", checked=lambda: f"{len(list(shards.glob('shard-*.tar')))} shards")
    t.cli("simsiam pack into a folder that already holds shards", "pack", str(photos), "--out", str(shards))

    def no_webdataset():
        sys.modules["webdataset"] = None  # the import fails as when the extra is not installed

    t.cli("simsiam pack without the webdataset package", "pack", str(photos), "--out", str(work / "shards2"),
          preexec=no_webdataset)
    t.cli("data.dataset=shards on a folder without shards.json", "pretrain", *shard_tiny, "--data-dir",
          str(work / "empty"), "--out-dir", str(work / "new"))
    t.cli("data.dataset=shards with the kNN monitor on", "pretrain", *shard_tiny, "data.eval_split=test",
          "--data-dir", str(shards), "--out-dir", str(work / "new"))
    broken = work / "broken_shards"
    shutil.copytree(shards, broken)
    with tarfile.open(broken / "shard-000000.tar") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = sorted({name.split(".")[0] for name, _ in members})
    with tarfile.open(broken / "shard-000000.tar", "w") as tar:
        for name, data in members:
            key, kind = name.split(".", 1)
            if (key, kind) == (keys[0], "jpg"):
                data = data[: len(data) // 2]  # a truncated JPEG
            if (key, kind) == (keys[1], "cls"):
                continue  # a sample without its label
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (broken / "shard-000001.tar").write_text("this is not a tar file\n")
    t.cli("shards with a truncated JPEG, a sample without .cls and a file that is not a tar (trains; skips "
          "counted)", "pretrain", *shard_tiny, "--data-dir", str(broken), "--out-dir", str(work / "shards_run"),
          checked=lambda: _grep(work / "shards_run" / "metrics.jsonl", "skipped_images"))


def _shard_batch_cases(t: Table, work: Path) -> None:
    """Shards on the batched pipeline (the default, which the rows of ``_shard_cases`` now take) and on
    the per-image one: a block of its own, after ``_shard_cases``, whose folders it reuses."""
    shard_tiny = ["--preset", "digits", "--quiet", "data.eval_split=", "model.width=4", "model.proj_hidden=32",
                  "model.dim=32", "data.dataset=shards", "data.image_size=8", "optim.batch_size=4",
                  "data.num_workers=0", "--epochs", "1"]
    t.cli("shards with a truncated JPEG, a sample without .cls and a file that is not a tar, "
          "data.pipeline=per_image (trains; skips counted)", "pretrain", *shard_tiny, "data.pipeline=per_image",
          "--data-dir", str(work / "broken_shards"), "--out-dir", str(work / "shards_per_image_run"),
          checked=lambda: _grep(work / "shards_per_image_run" / "metrics.jsonl", "skipped_images"))
    unreadable = work / "unreadable_shards"
    shutil.copytree(work / "shards", unreadable)
    for shard in unreadable.glob("shard-*.tar"):
        shard.write_text("this is not a tar file\n")
    t.cli("shards of which no image can be read (every shard not a tar)", "pretrain", *shard_tiny, "--data-dir",
          str(unreadable), "--out-dir", str(work / "unreadable_shards_run"))


def _compile_cases(t: Table, work: Path) -> None:
    """run.compile=auto, true and false (issue 29): a block of its own, last."""
    import torch

    compiled_out = work / "compile_new"
    t.cli("run.compile with a word it does not take", "pretrain", *TINY, "--out-dir", str(compiled_out),
          "run.compile=sometimes")

    def no_cxx() -> None:  # inductor finds no C++ compiler; a fresh cache, so that nothing cached spares it one
        import torch._inductor.config as inductor_config  # read $CXX when imported, in this script already

        inductor_config.cpp.cxx = (None, "/nonexistent/g++")
        os.environ["SIMSIAM_CACHE_DIR"] = str(work / "compile_cache")
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)

    argv = ["pretrain", *TINY, "--epochs", "1", "--out-dir", str(work / "compile_no_cxx"), "run.compile=true"]
    proc = simsiam(*argv, preexec=no_cxx)
    warned = [line for line in proc.stderr.splitlines() if "torch.compile failed" in line]  # torch logs after it
    t.add(Row("run.compile=true where inductor cannot build its C++ (no compiler): trains eagerly",
              short(argv, t.work), proc.returncode, warned[-1] if warned else last_line(proc),
              _grep(work / "compile_no_cxx" / "metrics.jsonl", '"kind": "epoch"')))
    old = work / "compile_old_bool"
    proc = simsiam("pretrain", *TINY, "--epochs", "1", "--out-dir", str(old))
    if proc.returncode == 0:  # its checkpoint rewritten as versions before run.compile=auto wrote it
        saved = torch.load(old / "checkpoint.pt", map_location="cpu", weights_only=True)
        saved["config"]["run"]["compile"] = False
        torch.save(saved, old / "checkpoint.pt")
    argv = ["pretrain", "--resume", str(old), "--epochs", "2"]
    proc = simsiam(*argv)
    said = [line for line in proc.stdout.splitlines() if line.startswith("compile:")]
    t.add(Row("resume of a run whose checkpoint holds run.compile as a bool (false), run.compile left at auto",
              short(argv, t.work), proc.returncode, last_line(proc), " / ".join(said) or "no compile line"))


def _encoded_cases(t: Table, work: Path) -> None:
    """The encoded pipeline (data.pipeline=encoded, or auto over data.cache_max_gb): a block of its own, last."""
    import numpy as np
    from PIL import Image

    folder = work / "encoded_photos"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(14):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"{i:02d}.jpg")
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / "png.png")
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    (folder / "truncated.jpg").write_bytes((folder / "00.jpg").read_bytes()[:200])
    (folder / "not_an_image.webp").write_text("not a WebP file\n")
    store = work / "encoded_store"
    argv = [*TINY, "data.dataset=folder", "data.image_size=16", "optim.batch_size=18", "--epochs", "1",
            "--data-dir", str(folder), f"data.cache_dir={store}"]
    t.cli("data.pipeline=encoded on an in-memory dataset", "pretrain", *TINY, "data.pipeline=encoded",
          "--out-dir", str(work / "new"))
    t.cli("folder over data.cache_max_gb (encoded pipeline) with a truncated JPEG, a file that is no WebP, a PNG "
          "and a CMYK JPEG (trains; skips counted)", "pretrain", *argv, "data.cache_max_gb=0",
          "--out-dir", str(work / "encoded_run"),
          checked=lambda: _grep(work / "encoded_run" / "metrics.jsonl", "skipped_images"))
    data = next(store.glob("*.bin"))
    with open(data, "r+b") as fh:  # one byte of the first image's bytes flipped, the size unchanged
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    t.cli("encoded-image store with a damaged byte (same size)", "pretrain", *argv, "data.pipeline=encoded",
          "--out-dir", str(work / "encoded_damaged"),
          checked=lambda: _grep(work / "encoded_damaged" / "metrics.jsonl", "skipped_images"))
    with open(data, "r+b") as fh:
        fh.truncate(1000)
    run = [*argv, "data.pipeline=encoded", "--out-dir", str(work / "encoded_truncated")]
    proc = simsiam("pretrain", *run)
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "encoded-image store" in line]
    t.add(Row("encoded-image store truncated", short(["pretrain", *run], work), proc.returncode,
              said[-1] if said else last_line(proc), _trained(proc)))


def _shard_decode_cases(t: Table, work: Path) -> None:
    """Shards whose bytes the main process decodes in batches, as the encoded pipeline does: a block of
    its own, last, reusing ``_shard_cases``' folders."""
    shard_tiny = ["--preset", "digits", "--quiet", "data.eval_split=", "model.width=4", "model.proj_hidden=32",
                  "model.dim=32", "data.dataset=shards", "data.image_size=8", "optim.batch_size=4",
                  "data.num_workers=0", "--epochs", "1"]
    t.cli("data.pipeline=encoded on shards", "pretrain", *shard_tiny, "data.pipeline=encoded", "--data-dir",
          str(work / "shards"), "--out-dir", str(work / "new"))
    import io
    import tarfile

    truncated = work / "truncated_shards"
    shutil.copytree(work / "shards", truncated)
    with tarfile.open(truncated / "shard-000000.tar") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    cut = False
    with tarfile.open(truncated / "shard-000000.tar", "w") as tar:
        for name, data in members:
            if name.endswith(".jpg") and not cut:
                data, cut = data[: len(data) // 2], True  # the first JPEG, cut off halfway
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    t.cli("shards with one truncated JPEG, read by a worker and decoded in the main process's batch (trains; "
          "skip counted)", "pretrain", *shard_tiny, "data.num_workers=1", "--data-dir", str(truncated), "--out-dir",
          str(work / "shards_decode_run"), checked=lambda: _grep(work / "shards_decode_run" / "metrics.jsonl",
                                                                 "skipped_images"))


def write_table(rows: list[Row], out: Path, commit: str) -> None:
    def cell(s) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = [
        "# Faults and bad inputs",
        "",
        "Every row was tried by `scripts/fault_table.py` (re-run it to rebuild this file:",
        "`PYTHONPATH=src python scripts/fault_table.py`), at commit " + commit + ", on a CPU-only machine:",
        "the command line's `main(argv)` in a forked process per row (argument parsing, error boundary and exit",
        "code as from a shell), and `python -m simsiam` processes for the signal and `kill -9` rows.",
        "*What the user sees* is the last line the command printed (stderr, else stdout); *checked* is what the",
        "script verified beyond it. Exit codes: 0 done, 2 refused or failed with a message, 3 stopped on collapse,",
        "75 stopped by a signal with a checkpoint (resumable), 128+N killed by a second signal N.",
        "`<tiny digits>` abbreviates `--preset digits --quiet data.eval_split= model.width=4 model.proj_hidden=32",
        "model.dim=32 data.train_limit=256`.",
        "",
        "| # | fault or input | command | exit | what the user sees | checked |",
        "|---:|---|---|---:|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {cell(r.fault)} | `{cell(r.command)}` | {r.code} | {cell(r.seen)} | {cell(r.checked)} |")
    out.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/FAULTS.md")
    parser.add_argument("--work", default="/tmp/simsiam-faults")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = run_cases(work)
    write_table(rows, Path(args.out), commit)
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
