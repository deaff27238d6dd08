"""The five contenders of a label budget, each choosing its one setting on the validation part.

* ``finetune`` and ``scratch``: a network trained end to end (:func:`train_network`) from the
  pretrained backbone or from a fresh initialisation of the same architecture, lr searched;
* ``linear``: a linear probe on the frozen pretrained features, lr searched;
* ``knn`` and ``pixels_knn``: weighted kNN with the labelled training part as the bank, on the
  frozen features or on standardised pixels, k searched.

Each returns an :class:`Outcome`: the validation and test accuracy of the chosen setting, the
choice, and the whole search.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from ..eval.classifier import Classifier
from ..eval.features import eval_mode, extract_features
from ..eval.knn import knn_accuracy, knn_sweep
from ..eval.linear import linear_config, topk_accuracy, train_on_features
from .fit import Diverged, accuracy, fit_classifier, logits_of
from .recipe import FinetuneRecipe


@dataclass
class Task:
    """One label draw: its training and validation parts, the test split, and how to feed them."""

    train: object  # datasets (data.subset.select of the training split), and the test split
    val: object
    test: object
    num_classes: int
    size: int  # input side
    device: torch.device
    seed: int  # the label seed: also the seed of the views and of a fresh initialisation
    crop_scale_min: float
    frozen: dict = field(default_factory=dict, repr=False)  # this draw's frozen features / pixels, made once


@dataclass
class Outcome:
    val: float
    test: float
    choice: dict
    search: list[dict]
    time_s: float = 0.0
    model: Optional[tuple[nn.Module, Classifier]] = field(default=None, repr=False)  # (method, classifier)

    def record(self) -> dict:
        return {"val": self.val, "test": self.test, "choice": self.choice, "search": self.search,
                "time_s": round(self.time_s, 1)}


def train_network(start: Callable[[], nn.Module], task: Task, recipe: FinetuneRecipe, lrs: tuple[float, ...],
                  log: Callable[[str], None], label: str) -> Outcome:
    """Train a classifier on ``start()``'s backbone at each of ``lrs``; keep the best on validation.

    ``start`` returns a method (backbone + heads) whose backbone is trained in place: a copy of the
    pretrained one, or a fresh initialisation. The head starts at zero, or (``recipe.head_init ==
    "probe"``) as the linear probe fitted on that backbone's frozen features. A rate whose loss
    diverges scores nothing."""
    t0 = time.perf_counter()
    best: Optional[tuple[float, float, nn.Module, Classifier, dict]] = None
    search = []
    head = probe_head(start().backbone, task, recipe) if recipe.head_init == "probe" else None
    for lr in lrs:
        t = time.perf_counter()
        method = start()
        classifier = Classifier(method.backbone, task.num_classes).to(task.device)
        if head is not None:
            classifier.head.load_state_dict(head.state_dict())
        try:
            fitted = fit_classifier(classifier, task.train, recipe, lr, size=task.size, device=task.device,
                                    seed=task.seed, crop_scale_min=task.crop_scale_min)
        except Diverged as err:
            search.append({"base_lr": lr, "val": None, "diverged": str(err)})
            log(f"{label} base lr {lr:g}: diverged")
            continue
        val = accuracy(*logits_of(classifier, task.val, size=task.size, device=task.device, amp=recipe.amp))
        search.append({"base_lr": lr, "val": val, "steps": fitted["steps"], "time_s": round(time.perf_counter() - t, 1)})
        log(f"{label} base lr {lr:g}: val {val:.2f}% ({fitted['steps']} steps, {time.perf_counter() - t:.0f}s)")
        if best is None or val > best[0]:
            best = (val, lr, method, classifier, fitted)
    if best is None:
        raise ValueError(f"{label}: the loss diverged at every learning rate tried ({', '.join(map(str, lrs))}); "
                         "lower them (--lrs)")
    val, lr, method, classifier, fitted = best
    test = accuracy(*logits_of(classifier, task.test, size=task.size, device=task.device, amp=recipe.amp))
    choice = {"base_lr": lr, "lr": fitted["lr"], "steps": fitted["steps"], "batch_size": fitted["batch_size"]}
    return Outcome(val, test, choice, search, time.perf_counter() - t0, (method, classifier))


@dataclass
class FeatureSplit:
    """Features (or pixel vectors) of a draw's parts and of the test split, with their labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def frozen_features(backbone: nn.Module, dataset, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, labels)`` of the un-augmented images, the backbone in eval mode (nothing changes)."""
    with eval_mode(backbone):
        x, y, _, _ = extract_features(backbone, dataset, device=device, image_size=size)
    return x, y


def feature_split(backbone: nn.Module, task: Task, test: tuple[torch.Tensor, torch.Tensor]) -> FeatureSplit:
    """The frozen features of a draw's training and validation parts, with ``test``'s."""
    return FeatureSplit(*frozen_features(backbone, task.train, task.size, task.device),
                        *frozen_features(backbone, task.val, task.size, task.device), *test)


def fit_probe(f: FeatureSplit, num_classes: int, recipe: FinetuneRecipe, lrs: tuple[float, ...], seed: int
              ) -> tuple[float, float, nn.Module, list[dict]]:
    """A BN + linear head on frozen features (eval.linear's trainer), the best of ``lrs`` on
    validation: ``(validation accuracy, lr, head, search)``."""
    epochs = recipe.probe_epochs(len(f.train_x))
    best, search = None, []
    for lr in lrs:
        cfg = linear_config("sgd", epochs=epochs, base_lr=lr, bn_head=True, seed=seed)
        try:
            head, _ = train_on_features(f.train_x, f.train_y, num_classes, cfg)
        except FloatingPointError as err:
            search.append({"lr": lr, "val": None, "diverged": str(err)})
            continue
        val = topk_accuracy(head, f.val_x, f.val_y, (1,))[1]
        search.append({"lr": lr, "val": val})
        if best is None or val > best[0]:
            best = (val, lr, head)
    if best is None:
        raise ValueError(f"the linear probe diverged at every learning rate tried ({lrs})")
    return (*best, search)


def linear_probe(f: FeatureSplit, num_classes: int, recipe: FinetuneRecipe, lrs: tuple[float, ...],
                 seed: int) -> Outcome:
    """The linear probe contender: :func:`fit_probe`, then its test accuracy."""
    t0 = time.perf_counter()
    val, lr, head, search = fit_probe(f, num_classes, recipe, lrs, seed)
    test = topk_accuracy(head, f.test_x, f.test_y, (1,))[1]
    return Outcome(val, test, {"lr": lr, "epochs": recipe.probe_epochs(len(f.train_x))}, search,
                   time.perf_counter() - t0)


def probe_head(backbone: nn.Module, task: Task, recipe: FinetuneRecipe) -> nn.Linear:
    """The linear probe of ``backbone`` on the task's labels (lr searched on validation), its BN
    folded into one ``nn.Linear`` -- the head that fine-tuning starts from in LP-FT (Kumar et al.
    2022: a fitted head moves the features less than a zero one while it learns)."""
    no_test = torch.zeros(0, backbone.num_features), torch.zeros(0, dtype=torch.long)
    _, _, head, _ = fit_probe(feature_split(backbone, task, no_test), task.num_classes, recipe, recipe.probe_lrs,
                              task.seed)
    bn, linear = head[0], head[1]
    scale = (bn.running_var + bn.eps).rsqrt()  # eval-mode BN: (x - mean) * scale
    folded = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        folded.weight.copy_(linear.weight * scale)
        folded.bias.copy_(linear.bias - linear.weight @ (bn.running_mean * scale))
    return folded


def knn_contender(f: FeatureSplit, num_classes: int, recipe: FinetuneRecipe, ks: tuple[int, ...]) -> Outcome:
    """Weighted kNN with the training part as the bank; the best of ``ks`` on validation (ties: the
    smaller k; k is clipped to the bank)."""
    t0 = time.perf_counter()
    ks = sorted({min(k, len(f.train_x)) for k in ks})
    on_val = knn_sweep(f.val_x, f.val_y, f.train_x, f.train_y, num_classes, ks, (recipe.knn_t,))
    search = [{"k": k, "val": on_val[f"k={k},t={recipe.knn_t}"]} for k in ks]
    best = max(search, key=lambda s: (s["val"], -s["k"]))
    test = knn_accuracy(f.test_x, f.test_y, f.train_x, f.train_y, num_classes, best["k"], recipe.knn_t)
    return Outcome(best["val"], test, {"k": best["k"], "t": recipe.knn_t}, search, time.perf_counter() - t0)
