"""``run.compile=auto``: compile the step only where a measurement says that it pays for this run.

``torch.compile`` of the whole step costs minutes of compiling before the first step, and what it
saves per step depends on the model, the device and the precision: on the project's Intel Xeon
(AMX) it made the ``fmnist`` step 1.08x faster in fp32 and 1.01x in bf16, where the convolutions
stay oneDNN calls and training-mode batch norm does not fold (docs/PERFORMANCE.md). So ``auto``
does not guess: :data:`MEASURED` lists each comparison of compiled and eager steps taken here, and
:func:`decide` turns compile on only where one matches the run's model, device kind and precision
and the run's planned steps save more than twice the measured compile time. Anything unmeasured -- a
GPU included, until ``scripts/gpu_figures.sh`` measures one -- stays eager. A new measurement is
one more entry in :data:`MEASURED`, with the command and machine it came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..config import Config
from ..parallel import distributed as dist
from .speed import amp_dtype


@dataclass(frozen=True)
class StepSignature:
    """What sets the cost of one training step beside the device: the method, its model and the
    batch each process steps on."""

    method: str
    backbone: str
    width: int
    heads: tuple[int, int, int, int]  # projector layers, projector hidden width, d, predictor hidden width
    features: tuple[int, int]  # model.pool_grid, model.feature_stages
    image: tuple[int, int]  # channels, side in pixels
    batch: int  # per process
    channels_last: bool

    @classmethod
    def of(cls, cfg: Config, channels: int, image_size: int, batch: int) -> "StepSignature":
        """``cfg`` resolved (pred_hidden filled); ``channels`` and ``image_size`` as the model sees them."""
        m = cfg.model
        return cls(cfg.method, m.backbone, m.width, (m.proj_layers, m.proj_hidden, m.dim, m.pred_hidden),
                   (m.pool_grid, m.feature_stages), (channels, image_size), batch, cfg.run.channels_last)

    def __str__(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        return (f"{self.method}, {self.backbone} width {self.width}, heads {'/'.join(map(str, self.heads))}, "
                f"features {self.features[0]}x{self.features[1]}, {self.image[0]}x{self.image[1]}x{self.image[1]}, "
                f"batch {self.batch}, {layout}")


@dataclass(frozen=True)
class Measurement:
    """Compiled and eager steps of one model, timed side by side on one device kind and precision."""

    device_kind: str  # see device_kind()
    precision: str  # "fp32" or "bf16"
    model: StepSignature
    eager_ms: float  # median step time, eager
    compiled_ms: float  # median step time, compiled, in the same process, steps taken in turns
    compile_s: float  # the first compiled step's compiling, with no cache
    source: str  # the command, machine and commit the figures come from

    @property
    def speedup(self) -> float:
        return self.eager_ms / self.compiled_ms


# The fmnist preset's step (docs/PERFORMANCE.md, "What was tried on the step's fixed costs").
FMNIST = StepSignature("simsiam", "resnet18_small", 16, (2, 512, 512, 128), (1, 4), (1, 28), 128, True)
_FMNIST_SOURCE = ("perf/bench.py's Trainer built twice, with and without run.compile=true, steps interleaved on "
                  "the same synthetic views, 15 medians; 1 thread, 2-core Intel Xeon (AMX, AVX512-BF16) under "
                  "load 4-5, torch 2.14.1, commit 7553cd2")

MEASURED: tuple[Measurement, ...] = (
    Measurement("cpu-amx", "bf16", FMNIST, eager_ms=372, compiled_ms=369, compile_s=191, source=_FMNIST_SOURCE),
    Measurement("cpu-amx", "fp32", FMNIST, eager_ms=504, compiled_ms=468, compile_s=117, source=_FMNIST_SOURCE),
)

# Speed-ups under this are within the spread of one side-by-side measurement on a shared machine
# (docs/PERFORMANCE.md): they count as none, however long the run.
NOISE = 1.03
# The planned steps must save this many times the measured compile time: the same first compile took
# 117 s and 270 s on the same machine as its load changed (docs/PERFORMANCE.md), and a run that only
# breaks even waits minutes before its first step for nothing.
PAYBACK = 2.0

KIND_WORDS = {"cuda": "this GPU kind", "cpu-amx": "this CPU kind (AMX)",
              "cpu-avx512-bf16": "this CPU kind (AVX512-BF16)", "cpu-avx2": "this CPU kind (AVX2)",
              "cpu": "this CPU kind"}


def device_kind(device: torch.device) -> str:
    """The kind of device a measurement holds for: "cuda", or a CPU by the widest matrix
    instructions oneDNN uses on it (AMX, then AVX512-BF16, then AVX2)."""
    if device.type != "cpu":
        return device.type
    cpu = getattr(torch, "cpu", None)
    for probe, kind in (("_is_amx_tile_supported", "cpu-amx"), ("_is_avx512_bf16_supported", "cpu-avx512-bf16"),
                        ("_is_avx2_supported", "cpu-avx2")):  # private, hence probed
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return kind
    return "cpu"


@dataclass(frozen=True)
class Choice:
    on: bool
    line: str  # the run's one line saying on or off, and why


FORCE_ON, TURN_OFF = "run.compile=true forces it", "run.compile=false turns it off"


def decide(kind: str, precision: str, model: StepSignature, planned_steps: int,
           measured: Optional[Sequence[Measurement]] = None) -> Choice:
    """``run.compile=auto``: on when a measurement of this model on this device kind and precision
    (from ``measured``, by default :data:`MEASURED`) saves, over ``planned_steps``, more than its
    compile time."""
    where = f"in {precision} on {KIND_WORDS.get(kind, kind)}"
    table = MEASURED if measured is None else measured
    found: Optional[Measurement] = next((m for m in table if (m.device_kind, m.precision, m.model)
                                         == (kind, precision, model)), None)
    if found is None:
        return Choice(False, f"compile: off (not measured for this model {where}; {FORCE_ON})")
    fact = f"measured {found.speedup:.2f}x for this model {where}"
    if found.speedup < NOISE:
        return Choice(False, f"compile: off ({fact}; {FORCE_ON})")
    saved_s = planned_steps * (found.eager_ms - found.compiled_ms) / 1e3
    if saved_s <= PAYBACK * found.compile_s:
        return Choice(False, f"compile: off ({fact}: {planned_steps:,} steps would save {saved_s:.0f} s, not "
                             f"twice the {found.compile_s:.0f} s it takes to compile; {FORCE_ON})")
    return Choice(True, f"compile: on ({fact}: {planned_steps:,} steps save about {saved_s:.0f} s for "
                        f"{found.compile_s:.0f} s of compiling; {TURN_OFF})")


def settle(cfg: Config, device: torch.device, channels: int, image_size: int, steps_per_epoch: int,
           stored: Optional[str] = None) -> Choice:
    """Set ``cfg.run.compile`` to "true" or "false" for a run of ``cfg.optim.epochs`` epochs of
    ``steps_per_epoch`` steps, and say which and why. ``stored``: the value a resumed run recorded
    (a resume with "auto" keeps it, as it keeps ``run.amp``'s choice)."""
    requested, kept = cfg.run.compile, False
    if stored not in (None, "auto") and requested in ("auto", stored):  # the CLI's --resume passes the run's own
        requested, kept = stored, True
    model = StepSignature.of(cfg, channels, image_size, cfg.optim.batch_size // dist.world_size())
    precision = "bf16" if amp_dtype(cfg.run.amp, device) is torch.bfloat16 else "fp32"
    choice = choose(requested, device_kind(device), precision, model, cfg.optim.epochs * steps_per_epoch, kept)
    cfg.run.compile = "true" if choice.on else "false"
    return choice


def choose(requested: str, kind: str, precision: str, model: StepSignature, planned_steps: int,
           kept: bool = False) -> Choice:
    """``run.compile`` as the run will use it: "true" and "false" as they say, "auto" by :func:`decide`.

    ``kept``: ``requested`` is what a resumed run recorded when it started, kept as ``run.amp``'s
    choice is (a bool of an older checkpoint means what it meant); the line says so."""
    said = "the run's own run.compile={} (kept on resume)" if kept else "run.compile={}"
    if requested == "true":
        return Choice(True, f"compile: on ({said.format('true')}; {TURN_OFF})")
    if requested == "false":
        return Choice(False, f"compile: off ({said.format('false')}; {FORCE_ON})")
    return decide(kind, precision, model, planned_steps)
