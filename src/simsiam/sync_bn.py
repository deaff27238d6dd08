"""Synchronized BatchNorm for every device, CPU included (the paper trains with SyncBN).

``torch.nn.SyncBatchNorm`` only runs on GPU-like devices: on CPU its forward raises and DDP refuses
to wrap it. :class:`CpuSyncBatchNorm` does the same computation with plain tensor operations and
one differentiable all-gather, so it runs on gloo: in training, the mean and variance are those of
the *global* batch (every rank's slice), and the backward pass sends each rank the gradient of
its statistics from every rank, as a single process with the whole batch would compute it. In
eval mode, or in a world of one, it is an ordinary BatchNorm (running statistics, no
communication).

:func:`convert_sync_batchnorm` picks torch's fused CUDA kernel on GPUs and this module elsewhere.
"""
from __future__ import annotations

import torch
import torch.distributed
from torch import nn

from . import distributed as dist


class _AllGather(torch.autograd.Function):
    """``(world, *t.shape)``: every rank's ``t``. Rank r's output row q depends on rank q's input, so
    the gradient of rank q's input is the sum over ranks of their gradient for row q."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(dist.world_size())]
        torch.distributed.all_gather(parts, t.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad[dist.rank()]


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks; any input ``(N, C, *)``."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...), got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.world_size() > 1):
            return super().forward(x)  # the framework's kernel: nothing to synchronize
        self._check_input_dim(x)
        reduce_dims = [0, *range(2, x.dim())]  # every dimension but the channels
        shape = (1, -1) + (1,) * (x.dim() - 2)  # broadcasts a (C,) vector over x
        xf = x.float()  # statistics in float32 even under bf16 autocast, as the fused kernels keep them

        # Each rank's own mean and variance, combined exactly (Chan et al.'s parallel formula): as
        # precise as one process, where E[x^2] - E[x]^2 would lose float32 digits when |mean| >> std.
        local_var, local_mean = torch.var_mean(xf, dim=reduce_dims, correction=0)  # (C,), (C,)
        count = xf.new_full((1,), x.numel() // x.shape[1])  # ranks may hold different batch sizes
        every = _AllGather.apply(torch.cat([local_mean, local_var, count]))  # (world, 2C + 1)
        c = x.shape[1]
        means, variances, counts = every[:, :c], every[:, c:2 * c], every[:, -1:].detach()
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (counts * (variances + (means - mean) ** 2)).sum(0) / n  # biased: BN normalises with it
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)

        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        """As ``F.batch_norm`` does: momentum average, the variance made unbiased with the global count."""
        self.num_batches_tracked.add_(1)
        factor = (1.0 / self.num_batches_tracked.item()) if self.momentum is None else self.momentum
        unbiased = var * (n / (n - 1).clamp(min=1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d in ``module`` by a synchronized one (parameters and buffers
    are shared, not copied, so an optimiser built before the conversion still holds them)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_to_cpu_sync(module)


def _convert_to_cpu_sync(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_to_cpu_sync(child))
    return out
