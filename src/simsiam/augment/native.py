"""The batched augmentation's CPU kernel (``native_augment.c``): built on first use, called through ctypes.

Why a C kernel: on CPU, ``BatchAugment``'s torch ops each walk the whole batch through memory
(a colour view of 128 images at 64 px is 6 MB; the crop, jitter and grayscale take about a
hundred such passes), so the pipeline took about a sixth of the ``tinyimagenet`` preset's time on
2 cores. The kernel makes each image's view while the image sits in the core's cache. Its
results are the torch ops' to float rounding (tests/test_native_augment.py); the random
parameters are still drawn by ``BatchAugment.sample_params``, so a run's views are the same draws
either way.

The shared library is compiled with the machine's C compiler (``$CC``, else ``cc``/``gcc``/``clang``;
``-O3 -march=native -fopenmp``, then without ``-march=native``, then without OpenMP) into
``$SIMSIAM_CACHE_DIR/native`` (else ``~/.cache/simsiam/native``), named by a hash of the source,
the compiler, the flags and the CPU, and written atomically: one compile per machine, about a
second. Where no compiler works, ``data.augment_kernel=auto`` keeps the torch ops and says why.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import torch

from ..paths import cache_root

SOURCE = Path(__file__).with_name("native_augment.c")
# Tried in turn: OpenMP shares the images between torch's threads; without it (Apple's clang) the
# kernel runs on one thread, still several times faster than the torch ops.
FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"], ["-O3", "-march=native"], ["-O3"])
COMMON_FLAGS = ["-std=c99", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math"]

_ARGTYPES = (
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
    ctypes.c_void_p, ctypes.c_int,
)


class NativeUnavailable(RuntimeError):
    """The kernel could not be built or loaded here; the message says why."""


def library_dir() -> Path:
    return cache_root() / "native"


def _compiler() -> Optional[str]:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: a library built for one CPU may not run on another that
    shares the cache directory (a home directory on a network disk)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _library_name(source: bytes, compiler: str, flags: list[str]) -> str:
    parts = [source, compiler.encode(), " ".join(flags + COMMON_FLAGS).encode(), _cpu_signature().encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return f"native_augment-{key}.so"


def _build(compiler: str, out_dir: Path) -> Path:
    source = SOURCE.read_bytes()
    targets = [out_dir / _library_name(source, compiler, flags) for flags in FLAG_SETS]
    # A library built earlier with any of the flag sets is used as it is: a flag set that failed
    # once (no OpenMP) is not tried again by every later process.
    for target in targets:
        if target.exists():
            return target
    out_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags, target in zip(FLAG_SETS, targets):
        # Compiled beside the target and renamed into place: two runs building at once each write
        # their own file, and a reader never sees half a library.
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=out_dir)
        os.close(fd)
        try:
            done = subprocess.run([compiler, *flags, *COMMON_FLAGS, str(SOURCE), "-o", tmp, "-lm"],
                                  capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, target)
                return target
            errors.append(f"{' '.join(flags)}: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
        except (OSError, subprocess.SubprocessError) as err:
            errors.append(f"{' '.join(flags)}: {err}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise NativeUnavailable(f"{compiler} could not build {SOURCE.name} ({'; '.join(errors)})")


@functools.lru_cache(maxsize=None)
def _load():
    """(function, None) once built and loaded, else (None, why)."""
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (set CC, or install gcc or clang)"
    try:
        lib = ctypes.CDLL(str(_build(compiler, library_dir())))
    except (NativeUnavailable, OSError) as err:
        return None, str(err)
    fn = lib.simsiam_augment
    fn.argtypes, fn.restype = _ARGTYPES, ctypes.c_int
    return fn, None


def unavailable_reason() -> Optional[str]:
    """None where the kernel is usable, else one line saying why not (building it if needed)."""
    return _load()[1]


def augment(images: torch.Tensor, params: dict[str, torch.Tensor], size: int, jitter_ops: tuple[int, ...],
            use_grayscale: bool, mean: Optional[tuple[float, ...]], std: Optional[tuple[float, ...]]) -> torch.Tensor:
    """``BatchAugment.apply``'s crop, flip, colour jitter and grayscale (and the normalisation when
    ``mean`` is given) of a CPU uint8 batch -> float32 (B, C, size, size)."""
    fn, why = _load()
    if fn is None:
        raise NativeUnavailable(why)
    images = images.contiguous()
    n, channels, height, width = images.shape
    out = torch.empty(n, channels, size, size, dtype=torch.float32)
    # Each image's jitter op at each position, -1 where it has none: not jittered, or an op that
    # is off (a zero strength, or saturation and hue on one channel).
    order = params["order"]
    enabled = torch.zeros(4, dtype=torch.bool)
    enabled[list(jitter_ops)] = True
    ops = torch.where(enabled[order] & params["jitter"].view(-1, 1), order, -1).to(torch.int8).contiguous()
    factors = torch.stack([params["brightness"], params["contrast"], params["saturation"], params["hue"]], 1)
    factors = factors.to(torch.float32).contiguous()
    boxes = params["crop_box"].to(torch.float32).contiguous()
    flip = params["flip"].to(torch.uint8)
    if "transposed" in params:  # bit 1: stored transposed, its box in stored coordinates (batched.stored_coordinates)
        flip = flip | params["transposed"].to(torch.uint8) << 1
    flip = flip.contiguous()
    gray = (params["grayscale"] if use_grayscale else torch.zeros(n, dtype=torch.bool)).to(torch.uint8).contiguous()
    mean_t = torch.tensor(mean, dtype=torch.float32) if mean is not None else None
    std_t = torch.tensor(std, dtype=torch.float32) if std is not None else None
    status = fn(images.data_ptr(), out.data_ptr(), n, channels, height, width, size, boxes.data_ptr(),
                flip.data_ptr(), ops.data_ptr(), factors.data_ptr(), gray.data_ptr(),
                mean_t.data_ptr() if mean_t is not None else None, std_t.data_ptr() if std_t is not None else None,
                torch.get_num_threads())
    if status != 0:
        raise MemoryError("the native augmentation could not allocate its scratch memory")
    return out
