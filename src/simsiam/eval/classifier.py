"""A backbone with a linear classifier on its pooled features: what ``simsiam finetune`` trains and
saves, and what ``predict``, ``export`` and ``embed`` read back.

A fine-tuned checkpoint is a pretraining checkpoint plus two entries, so every command that reads a
run reads it too (``embed`` and ``knn`` see the fine-tuned backbone):

* ``model``: the method's state dict, its ``backbone.*`` tensors the fine-tuned ones (the heads are
  the pretraining run's, untouched);
* ``config``: the run's config with ``data`` naming the labelled dataset it was fine-tuned on (so
  the normalisation and image size that ``embed`` and ``export`` use are the fine-tuning's);
* ``classifier``: ``{"weight": (C, F), "bias": (C,)}``;
* ``finetune``: plain values -- the class names, the label budget and seed, the learning rate, the
  validation and test accuracy, the normalisation, the pretraining run it came from.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..artifacts import checkpoint as ckpt_io
from ..version import __version__
from .pretrained import load_pretrained


class Classifier(nn.Module):
    """``logits = head(backbone(x))``; the head starts at zero (as SimCLR's fine-tuning head), so the
    first steps move the head, not the pretrained features."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.num_features = num_classes  # the width of what forward returns, as eval.features expects

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def save_classifier(path: str | Path, method: nn.Module, classifier: Classifier, config: dict, meta: dict) -> Path:
    """Write the checkpoint described in the module doc, atomically. ``method.backbone`` must be
    ``classifier.backbone`` (one module), so the method's state holds the trained backbone."""
    if method.backbone is not classifier.backbone:
        raise ValueError("the method's backbone must be the classifier's own module")
    state = {k: v.detach().cpu() for k, v in method.state_dict().items()}
    head = {"weight": classifier.head.weight.detach().cpu(), "bias": classifier.head.bias.detach().cpu()}
    saved = {"model": state, "config": config, "classifier": head, "finetune": meta, "version": __version__}
    bad = ckpt_io.non_finite_tensors(saved)
    if bad:  # load would refuse it; a model that predicts nothing must not be left for predict/export
        raise ValueError(f"the fine-tuned weights hold NaN or inf in {len(bad)} tensor(s) ({', '.join(bad[:3])}): "
                         f"not saved to {str(path)!r}; the training diverged -- choose smaller --lrs")
    return ckpt_io.save_atomic(saved, path)


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict, object]:
    """``(classifier in eval mode, its finetune record, config)`` of a fine-tuned checkpoint.

    Raises CheckpointError for a checkpoint without a classifier (a pretraining run)."""
    saved = ckpt_io.load(path)
    head = saved.get("classifier")
    if not isinstance(head, dict) or "weight" not in head or "bias" not in head:
        raise ckpt_io.CheckpointError(
            f"{str(path)!r} has no classifier: it is a pretraining checkpoint. Fine-tune it on labelled images "
            f"first (`simsiam finetune {path}`), then use one of the models it saves")
    method, cfg = load_pretrained(path, device)
    classifier = Classifier(method.backbone, int(head["weight"].shape[0]))
    try:
        classifier.head.load_state_dict(head)
    except RuntimeError as err:
        raise ckpt_io.CheckpointError(f"{str(path)!r}: the classifier does not fit the backbone's features: "
                                      f"{str(err).splitlines()[0]}") from err
    return classifier.to(device).eval(), dict(saved.get("finetune") or {}), cfg


def classifier_head(path: str | Path) -> dict | None:
    """The ``classifier`` entry of a checkpoint (``None`` for a pretraining checkpoint) and its classes."""
    saved = ckpt_io.load(path)
    head = saved.get("classifier")
    if head is None:
        return None
    return {"weight": head["weight"], "bias": head["bias"],
            "classes": list((saved.get("finetune") or {}).get("classes") or [])}
