"""GFLOP/s of one 3x3 convolution, forward and backward, by channel width, fp32 and bf16, NCHW and
channels_last: why a narrow network's step stays far from the machine's bf16 peak.

    PYTHONPATH=src python scripts/conv_by_width.py [--batch 256] [--threads 1]

The widths and map sizes are those of the CPU presets' ResNet-18 at width 16 (16 channels at 28 px
down to 128 at 4 px), plus one wide layer (256 channels at 16 px) for contrast. Each figure is the
median of 6 timed calls after 2 untimed ones; the backward counts twice the forward's FLOPs (the
input and the weight gradients).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

LAYERS = ((16, 28), (32, 14), (64, 7), (128, 4), (256, 16))  # (channels in = out, map side)


def conv_gflops(channels: int, side: int, batch: int, bf16: bool, channels_last: bool) -> tuple[float, float]:
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    x = torch.randn(batch, channels, side, side)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    forward, backward = [], []
    for i in range(8):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            start = time.perf_counter()
            y = conv(x)
            mid = time.perf_counter()
        y.float().sum().backward()
        end = time.perf_counter()
        if i >= 2:
            forward.append(mid - start)
            backward.append(end - mid)
        conv.zero_grad()
        x.grad = None
    flops = 2 * batch * channels * channels * 9 * side * side
    return flops / statistics.median(forward) / 1e9, 2 * flops / statistics.median(backward) / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [(bf16, cl) for bf16 in (False, True) for cl in (False, True)]
    names = [f"{'bf16' if bf16 else 'fp32'} {'channels_last' if cl else 'NCHW'}" for bf16, cl in variants]
    print(f"GFLOP/s forward / backward, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}")
    print("| channels, map | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(variants))
    for channels, side in LAYERS:
        cells = [("%.0f / %.0f" % conv_gflops(channels, side, args.batch, bf16, cl)) for bf16, cl in variants]
        print(f"| {channels}, {side}x{side} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
