"""Rank-safe helpers: the same calls work in one process and under torchrun (DDP).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`init` reads them, so one entry point serves
both. Without them every helper is a no-op for a world of one.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_enabled() else 0


def world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init(device: str = "auto") -> torch.device:
    """Start the process group when launched by torchrun and return this process's device.

    nccl on GPUs and gloo on CPU are chosen here, automatically. A device asked for by name that
    this process cannot use is an error, never a silent fall back to the CPU.
    """
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise ValueError(f"run.device={device}: this process sees {count} CUDA device(s)"
                             f"{'' if torch.cuda.is_available() else ' (torch.cuda.is_available() is False)'}; "
                             "use --device cpu, or auto to take a GPU when there is one")
    use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
    if launched_by_torchrun() and not is_enabled():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", store=_attempt_store(),
                                rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    if not use_cuda:
        return torch.device("cpu")
    if is_enabled():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(device if device.startswith("cuda") else "cuda")


def _attempt_store() -> dist.Store:
    """The rendezvous store of ``env://`` (torchrun's own), its keys prefixed by torchrun's restart count.

    torchrun keeps one store for all the restart attempts of a job. Each rank writes its address
    there to connect to the others, and the keys of a crashed attempt stay: a rank of the restarted
    attempt that reads a key before its peer has rewritten it gets the dead process's address, and
    init fails ("Gloo connectFullMesh failed ... Connect timeout" or "Connection refused"; measured:
    the first restart after a ``kill -9`` of one worker failed, the second got through). Keys of
    their own per attempt leave nothing stale to read."""
    store, _, _ = next(dist.rendezvous("env://"))
    return dist.PrefixStore(f"simsiam/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def collective_device() -> torch.device:
    """Where a tensor must live to be reduced: nccl takes CUDA tensors only, gloo CPU ones."""
    if is_enabled() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_enabled():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (a copy; ``t`` is left unchanged)."""
    if not is_enabled():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / world_size()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if not is_enabled():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0 (sizes may differ between ranks). No gradient."""
    if not is_enabled():
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    padded = torch.zeros((max_n, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    chunks = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(chunks, padded)
    return torch.cat([c[: int(s.item())] for c, s in zip(chunks, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    """Forward: every rank's ``t`` concatenated. Backward: rank r's rows of the output depend on
    rank r's input only, so its input gradient is the sum over ranks of their gradient for those rows."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # all-reduce, not reduce-scatter: gloo has no reduce-scatter
        n = grad.shape[0] // world_size()
        return grad[rank() * n:(rank() + 1) * n]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (same shape on every rank) from every rank along dim 0, WITH gradient.

    For losses whose negatives come from the global batch (SimCLR): the gradient a rank computes
    for another rank's rows is sent back and summed there, so after DDP's gradient averaging the
    update equals one process computing the loss of the mean over ranks. Identity in one process.
    """
    if not is_enabled():
        return t
    return _GatherWithGrad.apply(t)


def all_gather_objects(items: list) -> list:
    """Concatenate a Python list from every rank (for small things: file paths, counts)."""
    if not is_enabled():
        return list(items)
    out: list = [None] * world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def broadcast_object(obj, src: int = 0):
    """``obj`` as rank ``src`` holds it, on every rank: for decisions one rank makes (e.g. an error
    found on rank 0's filesystem) that every rank must act on, so none waits alone in a collective."""
    if not is_enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    if is_enabled():
        dist.destroy_process_group()
