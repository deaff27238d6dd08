"""Using a finished run: rebuild the model from a checkpoint, evaluate its backbone with kNN."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..artifacts import checkpoint as ckpt_io
from ..config import Config, from_dict
from ..data import load_dataset
from ..data.subset import subset
from ..methods import build_method
from ..parallel import distributed as dist
from . import eval_mode, extract_features
from .knn_sharded import sharded_knn_sweep


def load_pretrained(path: str | Path, device: str | torch.device = "cpu",
                    backbone: Optional[nn.Module] = None) -> tuple[nn.Module, Config]:
    """The method (backbone + heads) with its trained weights, in eval mode, and its config.

    ``path``: a checkpoint file or a run directory. ``backbone``: for a run trained with your own
    module, a fresh one of the same class (the weights come from the checkpoint). Raises
    ``CheckpointError`` with a clear message when the file is missing, unreadable or of another
    architecture.
    """
    saved = ckpt_io.load(path)
    cfg = from_dict(saved["config"])
    in_channels = cfg.model.in_channels or _infer_in_channels(saved["model"])
    model = build_method(cfg, in_channels, backbone)
    ckpt_io.load_model_state(model, saved["model"])
    return model.to(device).eval(), cfg


def _infer_in_channels(state: dict) -> int:
    """The input channels of the backbone's first convolution (the first 4-d weight: a ResNet's
    conv1, a ViT's patch embedding); 3 when there is none."""
    first = next((v for k, v in state.items() if k.startswith("backbone.") and v.dim() == 4), None)
    return int(first.shape[1]) if first is not None else 3


def held_out_split(cfg: Config, dataset: str) -> str:
    """The labelled split to evaluate a checkpoint on: the one its run was monitored on, when it is
    evaluated on the dataset it was trained on (a folder's ``data.eval_split=val``, say), so that
    ``simsiam knn`` and ``simsiam linear`` report on the images the run's own figures used;
    ``test`` for any other dataset."""
    if dataset == cfg.data.dataset and cfg.data.eval_split:
        return cfg.data.eval_split
    return "test"


def knn_evaluate(path: str | Path, *, dataset: Optional[str] = None, data_dir: Optional[str] = None,
                 split: Optional[str] = None, ks: Sequence[int] = (200,), ts: Sequence[float] = (0.1,),
                 train_limit: int = 0, eval_limit: int = 0, device: str = "cpu", batch_size: int = 512) -> dict:
    """Weighted kNN of a checkpoint's pooled backbone features: bank = the training split,
    queries = ``split`` (default: :func:`held_out_split`). Returns ``{"k=200,t=0.1": accuracy, ...}``
    plus the data it used.

    Under torchrun every rank embeds a shard of each split and classifies a share of the queries;
    every rank returns the same, global figures."""
    dev = dist.init(device)  # this process's device (cuda:LOCAL_RANK under torchrun with GPUs)
    model, cfg = load_pretrained(path, dev)
    name = dataset or cfg.data.dataset
    ddir = data_dir if data_dir is not None else cfg.data.data_dir
    split = split or held_out_split(cfg, name)
    bank_set = subset(load_dataset(name, "train", ddir), train_limit)
    query_set = subset(load_dataset(name, split, ddir), eval_limit)
    takes = next(p for p in model.backbone.parameters() if p.dim() == 4).shape[1]  # the first conv's inputs
    if bank_set.channels != takes:
        raise ValueError(f"{name} has {bank_set.channels}-channel images but the checkpoint's backbone takes {takes} "
                         f"channel(s); evaluate it on data like those it was trained on ({cfg.data.dataset})")
    if min(ks) < 1:
        raise ValueError(f"--k must be at least 1, got {min(ks)}")
    # k beyond the bank is clipped (knn_predict): report the k actually used, not the one asked for.
    ks = list(dict.fromkeys(min(k, len(bank_set)) for k in ks))
    kw = dict(device=dev, batch_size=batch_size, image_size=cfg.data.image_size if name == cfg.data.dataset else 0)
    with eval_mode(model.backbone):
        bank, bank_y, _, _ = extract_features(model.backbone, bank_set, **kw)
        query, query_y, _, _ = extract_features(model.backbone, query_set, **kw)
    num_classes = max(bank_set.num_classes, query_set.num_classes)
    results = sharded_knn_sweep(query, query_y, bank, bank_y, num_classes, ks, ts)
    return {"dataset": name, "split": split, "bank_size": len(bank), "queries": len(query), "accuracy": results}
