"""Label budgets: which training images keep their labels when a user has only a few.

The semi-supervised protocol (SimCLR, BYOL: fine-tuning on 1% and 10% of ImageNet's labels) draws
a class-stratified subset of the *training* split; the test split is never drawn from. Every
choice the fine-tuning recipe makes (its learning rate) is made on a validation part carved from
the drawn images themselves, so the test split decides nothing but the reported figure.

Draws are seeded and nested: for one seed, each class's images are put in one random order and a
budget takes the first images of that order, so 10 labels per class are a subset of 100. The first
``val`` images of a class's labelled ones are its validation part.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

# The literature's named budgets (SimCLR, BYOL): a fraction of each class's training images.
NAMED_FRACTIONS = {"1%": 0.01, "10%": 0.10}
VAL_FRACTION = 0.2  # of each class's labelled images, for the recipe's choices (at least one image)


@dataclass(frozen=True)
class LabelBudget:
    """Labels per class (``per_class``) or a fraction of every class (``fraction``), never both."""

    per_class: Optional[int] = None
    fraction: Optional[float] = None

    @property
    def name(self) -> str:
        if self.per_class is not None:
            return f"{self.per_class}/class"
        return f"{100 * self.fraction:g}%"

    @property
    def slug(self) -> str:
        """The name as a file-name part: ``10-per-class``, ``1pct``."""
        return f"{self.per_class}-per-class" if self.per_class is not None else f"{100 * self.fraction:g}pct"

    def labels_of(self, class_size: int) -> int:
        """How many of a class's ``class_size`` training images keep their labels."""
        if self.per_class is not None:
            return self.per_class
        return max(2, round(self.fraction * class_size))


def parse_budgets(per_class: Sequence[int] = (), fractions: Sequence[str | float] = ()) -> list[LabelBudget]:
    """Budgets from ``--labels-per-class`` and ``--label-fraction`` values ("1%", "0.1", 0.1, "10%").

    Raises ValueError naming the value that is not a budget."""
    budgets = []
    for n in per_class:
        if int(n) < 2:
            raise ValueError(f"--labels-per-class {n}: each class needs at least 2 labelled images "
                             "(one to train on, one for the validation part that chooses the learning rate)")
        budgets.append(LabelBudget(per_class=int(n)))
    for f in fractions:
        budgets.append(LabelBudget(fraction=_fraction(f)))
    return list(dict.fromkeys(budgets))  # in the order given, each once


def _fraction(value: str | float) -> float:
    text = str(value).strip()
    if text in NAMED_FRACTIONS:
        return NAMED_FRACTIONS[text]
    match = re.fullmatch(r"([0-9.]+)\s*%", text)
    try:
        f = float(match.group(1)) / 100 if match else float(text)
    except ValueError:
        f = math.nan
    if not 0 < f <= 1:
        raise ValueError(f"--label-fraction {value}: give a fraction in (0, 1] (0.01) or a percentage (1%)")
    return f


@dataclass
class LabelDraw:
    """Indices into the training split: ``train`` to fit on, ``val`` to choose the recipe with."""

    budget: LabelBudget
    seed: int
    train: torch.Tensor
    val: torch.Tensor

    @property
    def labelled(self) -> int:
        return len(self.train) + len(self.val)


def draw_labels(labels: torch.Tensor, budget: LabelBudget, seed: int, num_classes: int,
                class_names: Sequence[str] = (), val_fraction: float = VAL_FRACTION) -> LabelDraw:
    """Draw ``budget`` from the training split's ``labels`` with ``seed``, class by class.

    Raises ValueError when a class has no images or fewer than the budget asks for, naming it and
    how many it has."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    train, val = [], []
    for cls in range(num_classes):
        members = torch.nonzero(labels == cls).flatten()
        name = class_names[cls] if cls < len(class_names) else str(cls)
        if len(members) == 0:
            raise ValueError(f"class {name!r} has no images in the training split; every class needs labelled "
                             "images (remove its folder, or add images to it)")
        take = budget.labels_of(len(members))
        if take > len(members):
            raise ValueError(f"class {name!r} has {len(members)} training images, but the budget {budget.name} "
                             f"asks for {take}; use --labels-per-class {len(members)} or fewer")
        gen = torch.Generator().manual_seed(seed * 1_000_003 + cls)  # per class: nested budgets for one seed
        chosen = members[torch.randperm(len(members), generator=gen)[:take]]
        n_val = min(take - 1, max(1, round(val_fraction * take)))
        val.append(chosen[:n_val])
        train.append(chosen[n_val:])
    return LabelDraw(budget, seed, torch.cat(train).sort().values, torch.cat(val).sort().values)
