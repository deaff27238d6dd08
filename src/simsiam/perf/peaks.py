"""What this machine's cores can do at best: FLOP/s of a large matmul and of a dense 3x3 convolution.

Two probes, because one library is not the machine. On the AMD EPYC of this project torch's
matmul goes to MKL, which takes a slow generic path on AMD CPUs (about 1/3 of the AVX-512 rate),
while convolutions go to oneDNN, which uses AVX-512 fully: against the matmul alone a model's
convolutions can run above "peak". The conv probe -- 256 channels, 16x16 maps, the shape of a
ResNet's deeper stages -- is what oneDNN (or cuDNN) reaches on a compute-bound convolution; the
higher of the two is the peak a training step is measured against.

Each probe is the median of ``repeats`` timed calls after two untimed ones, with the current
thread count; the caller takes them before and after its own timing and keeps the higher.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[], object], flops: float, device: torch.device, repeats: int) -> float:
    for _ in range(2):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times)


def matmul_flops(device: torch.device, n: int, dtype: torch.dtype = torch.float32, repeats: int = 8) -> float:
    """FLOP/s of an ``n`` x ``n`` by ``n`` x ``n`` matmul (2 n^3 FLOPs)."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=gen).to(dtype)
    b = torch.randn(n, n, device=device, generator=gen).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    return _rate(lambda: torch.mm(a, b, out=c), 2 * n**3, device, repeats)


def conv_flops(device: torch.device, batch: int, dtype: torch.dtype = torch.float32, repeats: int = 8) -> float:
    """FLOP/s of a 3x3, 256 -> 256 channel convolution on 16x16 maps (channels_last, as oneDNN prefers)."""
    channels, side = 256, 16
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, channels, side, side, device=device, generator=gen).to(dtype)
    w = torch.randn(channels, channels, 3, 3, device=device, generator=gen).to(dtype)
    x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * channels * channels * 9 * side * side
    with torch.no_grad():
        return _rate(lambda: F.conv2d(x, w, padding=1), flops, device, repeats)


def measure_peaks(device: torch.device, dtypes: tuple[torch.dtype, ...], matmul_size: int = 0) -> dict[str, float]:
    """``{"matmul_fp32": FLOP/s, "conv_fp32": FLOP/s, ...}`` for each dtype.

    ``matmul_size`` 0: 2048 on CPU (the issue's sgemm), 8192 on a GPU (2048 cannot fill one). The
    conv probe's batch scales with it (32 at 2048), so a small size keeps a quick run quick.
    """
    n = matmul_size or (8192 if device.type == "cuda" else 2048)
    batch = max(1, n // 64)
    peaks = {}
    for dtype in dtypes:
        name = dtype_name(dtype)
        peaks[f"matmul_{name}"] = matmul_flops(device, n, dtype)
        peaks[f"conv_{name}"] = conv_flops(device, batch, dtype)
    return peaks


def best_peak(peaks: dict[str, float], dtype: torch.dtype) -> tuple[str, float]:
    """The fastest probe of ``dtype``: (its name, FLOP/s)."""
    name = dtype_name(dtype)
    return max(((k, v) for k, v in peaks.items() if k.endswith("_" + name)), key=lambda kv: kv[1])


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
