"""Synchronized BatchNorm for every device, CPU included (the paper trains with SyncBN).

``torch.nn.SyncBatchNorm`` only runs on GPU-like devices: on CPU its forward raises and DDP refuses
to wrap it ("SyncBatchNorm layers only work with GPU modules"). :class:`CpuSyncBatchNorm` is the
same algorithm on CPU kernels, over gloo. In training:

- forward: each rank computes the mean and variance of its slice, the ranks exchange them (one
  all-gather of ``2C + 1`` numbers) and combine them exactly into the global batch's statistics,
  which then normalise the slice with the fused BN kernel;
- backward: each rank sums ``dy`` and ``dy * x_hat`` over its slice (the fused BN backward
  kernel), the sums are all-reduced, and the input gradient uses the global sums -- what one
  process with the whole batch computes. Weight and bias gradients stay local sums: DDP averages
  them like every other gradient.

In eval mode, or in a world of one, it is an ordinary BatchNorm (running statistics, no
communication). :func:`convert_sync_batchnorm` picks torch's CUDA module on GPUs and this one
elsewhere.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed
import torch.nn.functional as F
from torch import nn

from . import distributed as dist


def _global_stats(local_mean: torch.Tensor, local_var: torch.Tensor, count: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, biased variance, count) of the union of every rank's slice, from each rank's own.

    Chan et al.'s parallel formula: as precise as one process, where summing x and x^2 over ranks
    (E[x^2] - E[x]^2) would lose float32 digits when |mean| >> std.
    """
    mine = torch.cat([local_mean, local_var, local_mean.new_full((1,), float(count))])
    parts = [torch.empty_like(mine) for _ in range(dist.world_size())]
    torch.distributed.all_gather(parts, mine)
    every = torch.stack(parts)  # (world, 2C + 1)
    c = local_mean.shape[0]
    means, variances, counts = every[:, :c], every[:, c:2 * c], every[:, -1:]
    n = counts.sum()
    mean = (counts * means).sum(0) / n
    var = (counts * (variances + (means - mean) ** 2)).sum(0) / n
    return mean, var, n


class _SyncBatchNormFunction(torch.autograd.Function):
    """Normalise ``x`` with the global statistics; the backward accounts for their dependence on
    every rank's ``x`` (they are passed in computed, as constants to autograd)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor, eps: float) -> torch.Tensor:
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, weight, mean, invstd, n)
        # Eval-mode BN with the global statistics in place of running ones: the fused normalisation.
        return F.batch_norm(x, mean, var, weight, bias, training=False, momentum=0.0, eps=eps)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight, mean, invstd, n = ctx.saved_tensors
        dy = dy.contiguous(memory_format=_memory_format(x))
        # Local sums of dy * x_hat and of dy in one fused pass (the CPU BN backward kernel), then
        # summed over ranks.
        _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            dy, x, weight, None, None, mean, invstd, True, 0.0, [False, True, True])
        total = torch.cat([sum_dy_xhat, sum_dy])
        torch.distributed.all_reduce(total)
        c = mean.shape[0]
        mean_dy_xhat, mean_dy = total[:c] / n, total[c:] / n
        # dx = w * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)), means over the global batch.
        scale = invstd if weight is None else weight * invstd
        shape = (1, -1) + (1,) * (x.dim() - 2)
        dx = dy * scale.view(shape)
        dx.addcmul_(x - mean.view(shape), (-scale * invstd * mean_dy_xhat).view(shape))
        dx.sub_((scale * mean_dy).view(shape))
        grad_weight = sum_dy_xhat if ctx.needs_input_grad[1] else None
        grad_bias = sum_dy if ctx.needs_input_grad[2] else None
        return dx, grad_weight, grad_bias, None, None, None, None


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when ``x`` is stored so (the fmnist preset trains so), else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks; any input ``(N, C, *)``."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...), got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.world_size() > 1):
            return super().forward(x)  # the framework's kernel: nothing to synchronize
        self._check_input_dim(x)
        xf = x.float()  # statistics in float32 even under bf16 autocast, as the fused kernels keep them
        with torch.no_grad():
            # This slice's mean and biased variance from the BN statistics kernel: the very numbers
            # nn.BatchNorm would compute, and 10x faster on CPU than torch.var_mean over (N, H, W).
            local_mean, local_var = torch.batch_norm_update_stats(xf, None, None, 0.0)
            mean, var, n = _global_stats(local_mean, local_var, x.numel() // x.shape[1])
        y = _SyncBatchNormFunction.apply(xf, self.weight, self.bias, mean, var, n, self.eps)
        if self.track_running_stats:
            self._update_running_stats(mean, var, n)
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
    are shared, not copied, so an optimiser built before the conversion still holds them).

    A BatchNorm subclass with a forward of its own (timm's ``BatchNormAct2d`` adds the activation)
    would lose it in the conversion: refused, with what to do."""
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, CpuSyncBatchNorm)
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m) not in plain:
            raise ValueError(f"run.sync_bn: {name} is a {type(m).__name__}, a BatchNorm with a forward of its own "
                             "that SyncBN would replace by a plain BatchNorm; set run.sync_bn=false (per-device "
                             "BN) or choose a model with plain BatchNorm layers")
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
