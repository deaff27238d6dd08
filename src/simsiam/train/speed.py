"""Training-step speed options: mixed precision, memory format and ``torch.compile`` with a fallback.

Each option is one function here, read by the training loop and by ``simsiam bench`` alike, so the
step that is benchmarked is the step that trains. None of them changes what is computed beyond
rounding: bf16 autocast rounds matmul/conv inputs, channels_last only reorders memory, and
``torch.compile`` fuses the same ops.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Optional, Sequence

import torch

from ..paths import cache_root


def cpu_bf16_is_native() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), which oneDNN uses.

    Without them oneDNN emulates bf16 convolutions through fp32, and autocast only adds casts.
    """
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # private, hence probed
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


# ``run.amp=auto`` on CPU: bf16 autocast where the CPU computes bf16 natively. On the project's 2-core
# AMD EPYC (Zen 5, AVX512-BF16) it made the step 1.5x (fmnist preset) and 1.8x (cifar10 preset) faster
# (docs/PERFORMANCE.md); elsewhere oneDNN emulates bf16 through fp32 and autocast only adds casts, so
# auto keeps fp32. bf16 rounds every result differently, so tests pin their precision: they set
# SIMSIAM_CPU_AUTO_AMP=off (tests/conftest.py), which makes ``auto`` mean fp32 on every CPU.
def cpu_auto_bf16() -> bool:
    if os.environ.get("SIMSIAM_CPU_AUTO_AMP", "").lower() == "off":
        return False
    return cpu_bf16_is_native()


def amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``run.amp`` on ``device``, or None for full fp32.

    ``auto``: bf16 on a CUDA device that supports it (fp32's exponent range, so no loss scaling);
    on CPU bf16 where it is native (:func:`cpu_auto_bf16`), else fp32. ``bf16`` asks for it on any device.
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp != "auto":
        raise ValueError(f"run.amp={amp!r} is not valid; choose one of: auto, bf16, off")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and cpu_auto_bf16():
        return torch.bfloat16
    return None


def resolve_amp(amp: str, device: torch.device) -> tuple[str, str]:
    """``run.amp`` as the run will use it ("bf16" or "off", recorded in its config so that a resume
    elsewhere keeps it) and why, for the run's first line."""
    dtype = amp_dtype(amp, device)
    chosen = "bf16" if dtype is torch.bfloat16 else "off"
    if amp != "auto":
        return chosen, f"run.amp={amp}"
    if device.type == "cuda":
        return chosen, "run.amp=auto: bf16 on this GPU" if dtype else "run.amp=auto: this GPU has no bf16"
    why = ("this CPU has native bf16 (AVX512-BF16 or AMX)" if dtype else
           "fp32, as this CPU has no native bf16" if not cpu_bf16_is_native() else "fp32 (SIMSIAM_CPU_AUTO_AMP=off)")
    return chosen, f"run.amp=auto: {why}"


def autocast(amp: str, device: torch.device):
    """A context manager running the forward pass at ``amp``'s precision (a no-op for fp32)."""
    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_memory_format(views: Sequence[torch.Tensor], channels_last: bool) -> tuple[torch.Tensor, ...]:
    """The views in channels_last order when the model is, so the first conv needs no reorder.

    A model converted to channels_last still accepts NCHW input, but then every step pays a
    layout conversion of the batch (and on CPU oneDNN may pick a slower kernel for mixed layouts).
    A no-op copy-free return when the views already are in that order (one-channel images are
    both orders at once).
    """
    if not channels_last:
        return tuple(views)
    return tuple(v.contiguous(memory_format=torch.channels_last) for v in views)


class CompiledWithFallback:
    """``torch.compile(module)``, or ``module`` itself from the moment compiling fails.

    ``torch.compile`` is lazy: a missing C compiler, an unsupported op or a backend bug surfaces
    only at the first call. That first call is therefore guarded: on an exception ``warn`` gets a
    message saying why and that training goes on eagerly, and the eager module runs the call. The
    backward graph is lowered during that same first call (it is normally lowered lazily at the
    first ``backward()``, outside this guard), so its failures are caught too.

    If the compiled call fails after part of the forward ran (a graph break before the failing
    subgraph), that part runs twice on the first batch; the only state it can touch is BN's
    running statistics, updated once more. Later calls are not guarded: a recompilation failure
    then is a bug to report, not something to hide.

    The first call is timed (``compile_seconds``) and, given ``info``, said in one line: the compile
    time a user waits for before training starts, and what a cached later run no longer pays.

    Not an ``nn.Module``: it owns no parameters; ``module`` stays what is saved and optimised.
    """

    def __init__(self, module: Callable, warn: Callable[[str], None], backend: str | Callable = "inductor",
                 info: Optional[Callable[[str], None]] = None):
        self.cache_dir = persistent_compile_cache()
        self.module = module
        self.compiled: Optional[Callable] = torch.compile(module, backend=backend)
        self.warn, self.info = warn, info
        self.checked = False
        self.compile_seconds: Optional[float] = None  # the first call's, compiling included

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args, **kwargs):
        if self.checked:
            run = self.compiled if self.compiled is not None else self.module
            return run(*args, **kwargs)
        self.checked = True
        start = time.perf_counter()
        try:
            with _lower_backward_now():
                out = self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 -- any failure of the compiler means: run eagerly
            self.compiled = None
            self.warn(f"torch.compile failed ({_reason(err)}); continuing without it (eager mode, same results, "
                      "slower). Set run.compile=false to skip the attempt.")
            return self.module(*args, **kwargs)
        self.compile_seconds = time.perf_counter() - start
        if self.info is not None:
            self.info(f"compile: the first step compiled in {self.compile_seconds:.1f} s (forward and backward; "
                      f"inductor's caches in {self.cache_dir}, reused by later runs of this model)")
        return out


def persistent_compile_cache() -> str:
    """Where inductor keeps its FX-graph and AOTAutograd caches, made to outlive the machine's /tmp.

    Both caches are on by default in torch, keyed by the graph, torch's version and the compile
    settings, and both look up ``TORCHINDUCTOR_CACHE_DIR`` at every use. Unset, it is
    ``/tmp/torchinductor_<user>``, which many systems clear at reboot -- and importing
    ``torch._dynamo`` already writes that default into the environment, so "unset" is read as
    "unset, or torch's own default". A directory the user chose is kept; else the package's cache
    home is used (``$SIMSIAM_CACHE_DIR``, else ``~/.cache/simsiam``, see ``paths.py``).
    """
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
        torch_default = os.path.abspath(default_cache_dir())
    except ImportError:  # pragma: no cover -- private module moved: only an unset variable is replaced
        torch_default = None
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")
    if not chosen or os.path.abspath(chosen) == torch_default:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_root() / "torch-inductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _reason(err: BaseException) -> str:
    """``Type: first line`` of the error's root cause (dynamo wraps the backend's own error)."""
    root = err
    while True:
        inner = getattr(root, "inner_exception", None) or root.__cause__
        if inner is None or inner is root:
            break
        root = inner
    lines = [line for line in str(root).splitlines() if line.strip()]
    where = f"{type(err).__name__} <- " if root is not err else ""
    return f"{where}{type(root).__name__}: {lines[0][:300] if lines else ''}"


def _lower_backward_now():
    """Make AOTAutograd compile the backward graph together with the forward, where available."""
    try:
        import torch._functorch.config as aot_config
    except ImportError:  # pragma: no cover -- private module moved: fall back to lazy lowering
        return contextlib.nullcontext()
    if not hasattr(aot_config, "force_non_lazy_backward_lowering"):
        return contextlib.nullcontext()
    return aot_config.patch(force_non_lazy_backward_lowering=True)


def compile_with_fallback(module: Callable, warn: Callable[[str], None], backend: str | Callable = "inductor",
                          info: Optional[Callable[[str], None]] = None) -> CompiledWithFallback:
    """See :class:`CompiledWithFallback`; ``backend`` is torch.compile's (tests pass a failing one);
    ``info`` gets one line with the compile time after the first call."""
    return CompiledWithFallback(module, warn, backend, info)
