"""Section 6 as tables for ``simsiam reproduce``: the methods compared (6.1, Table 4 at 100 epochs)
and the cross-ablations that relate them to SimSiam (6.2).

Rows have the format of :mod:`simsiam.reproduce.tables` (``name``, ``overrides``, ``paper``,
``claim``, ``expect``). A method's row applies that method's small-scale recipe
(``presets_methods.SMALL``, the same settings as the ``fmnist_<method>`` presets) on top of the
chosen SimSiam preset (``fmnist`` or ``digits``); the SimSiam row is that preset as it is. The
figures are the paper's ImageNet linear accuracies (ResNet-50, 100 epochs; Table 4 and the
tables of section 6.2); the BYOL-without-momentum figure is from BYOL's own paper (Table 5 there).
"""
from __future__ import annotations

from ..config.presets_methods import small_overrides

SIMCLR, MOCO, BYOL, SWAV = (small_overrides(m) for m in ("simclr", "moco", "byol", "swav"))


def _with(recipe: list[str], *changes: str) -> list[str]:
    """``recipe`` with ``changes`` applied: a key set by both keeps the change only."""
    keys = {c.split("=", 1)[0] for c in changes}
    return [o for o in recipe if o.split("=", 1)[0] not in keys] + list(changes)


def _row(name: str, overrides: list[str], paper: str, claim: str, expect: list) -> dict:
    return {"name": name, "overrides": list(overrides), "paper": paper, "claim": claim, "expect": expect}


METHODS = [
    _row("SimSiam", [], "68.1", "the highest of the five at 100 epochs, with batch 256, no negatives and no "
         "momentum encoder", [["no_collapse"]]),
    _row("SimCLR", SIMCLR, "66.5", "works (negatives prevent collapse); SimSiam is better than SimCLR in all cases",
         [["no_collapse"], ["worse", "SimSiam"]]),
    _row("MoCo v2", MOCO, "67.4", "works (negatives from a queue, momentum encoder); below SimSiam at 100 epochs",
         [["no_collapse"], ["worse", "SimSiam"]]),
    _row("BYOL", BYOL, "66.5", "works (momentum encoder, no negatives); below SimSiam at 100 epochs",
         [["no_collapse"], ["worse", "SimSiam"]]),
    _row("SwAV", SWAV, "66.5", "works (Sinkhorn-Knopp online clustering); below SimSiam at 100 epochs",
         [["no_collapse"], ["worse", "SimSiam"]]),
]

RELATIONS = [
    _row("SimCLR", SIMCLR, "66.5", "the reference: contrastive, no predictor, no stop-gradient", [["no_collapse"]]),
    _row("SimCLR + predictor", _with(SIMCLR, "methods.predictor=true"), "66.4",
         "SimSiam's predictor does not help SimCLR", [["no_collapse"], ["not_better", "SimCLR", 1.0]]),
    _row("SimCLR + predictor + stop-grad", _with(SIMCLR, "methods.predictor=true", "methods.stop_grad=true"), "66.0",
         "nor does the stop-gradient: they belong to another optimisation problem than contrastive learning",
         [["no_collapse"], ["not_better", "SimCLR", 1.0]]),
    _row("SwAV", SWAV, "66.5", "the reference: Sinkhorn targets behind a stop-gradient", [["no_collapse"]]),
    _row("SwAV + predictor", _with(SWAV, "methods.predictor=true"), "65.2", "the predictor does not help SwAV",
         [["no_collapse"], ["worse", "SwAV"]]),
    _row("SwAV without stop-grad", _with(SWAV, "methods.stop_grad=false"), "diverges",
         "training end to end through the Sinkhorn targets diverges: SwAV is an alternating method",
         [["worse", "SwAV"]]),
    _row("BYOL", BYOL, "66.5", "the reference: momentum target network", [["no_collapse"]]),
    _row("BYOL without momentum encoder", _with(BYOL, "methods.momentum=0"), "0.3 (BYOL's paper)",
         "BYOL's paper saw a collapse; SimSiam (= BYOL without the momentum encoder) says the momentum "
         "encoder is not what prevents collapse: stop-gradient and predictor are", [["no_collapse"]]),
    _row("BYOL without momentum encoder or stop-grad", _with(BYOL, "methods.momentum=0", "methods.stop_grad=false"),
         "0.1 (as SimSiam without stop-grad)", "without both, nothing prevents the collapse", [["collapse"]]),
]

TABLES: dict[str, list[dict]] = {"methods": METHODS, "relations": RELATIONS}
