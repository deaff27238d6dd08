"""``finetune()``: every contender on every label budget and seed, into one folder, resumable.

For each budget, the first label seed runs every contender's search on its validation part; the
later seeds reuse each contender's choice (so a seed costs one training per contender, and the
spread over seeds is the spread of the labels drawn, not of the search). Each finished cell
(budget, seed, contender) is written at once, atomically, to ``cells/``; the same call on the
same folder skips them, so an interrupted fine-tune goes on where it stopped. The pretraining run
is only read.

The folder: ``settings.json``, ``cells/*.json``, ``models/<contender>-<budget>-seed<k>.pt`` (the
trained classifiers, for ``predict``, ``export`` and ``embed``), then ``results.json``,
``report.md`` and ``label_efficiency.png``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..artifacts.checkpoint import write_atomic
from ..artifacts.report import git_commit
from ..artifacts.run_lock import DirectoryLock
from ..config import Config
from ..data import ImageFiles, InMemoryImages, load_dataset
from ..data.cache import decoded_if_configured
from ..data.files import imagenet_stats
from ..data.label_budget import LabelBudget, LabelDraw, draw_labels, parse_budgets
from ..data.subset import select
from ..eval.baselines import pixel_vectors
from ..eval.classifier import save_classifier
from ..eval.pretrained import held_out_split, load_pretrained
from ..methods import build_method
from ..models import input_channels
from ..seeding import seed_everything
from ..train.speed import resolve_amp
from .contenders import (
    FeatureSplit,
    Outcome,
    Task,
    feature_split,
    frozen_features,
    knn_contender,
    linear_probe,
    train_network,
)
from .recipe import CONTENDERS, FinetuneRecipe
from .report import write_outputs

DEFAULT_BUDGETS = ("1%", "10%")
DATASET_CLASS_NAMES = {
    "fmnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"],
    "digits": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


def class_names(dataset, name: str) -> list[str]:
    """The class names of a labelled dataset: its folders' names, a known list, or the indices."""
    found = list(getattr(dataset, "classes", None) or DATASET_CLASS_NAMES.get(name, []))
    return found if len(found) == dataset.num_classes else [str(i) for i in range(dataset.num_classes)]


@dataclasses.dataclass
class Labelled:
    """The labelled dataset a fine-tune trains and tests on."""

    name: str
    data_dir: Optional[str]
    split: str
    train: object
    test: object
    classes: list[str]
    size: int


def load_labelled(cfg: Config, channels: int, dataset: Optional[str], data_dir: Optional[str], image_size: int,
                  budgets: Sequence[LabelBudget], log: Callable[[str], None]) -> Labelled:
    """The labelled training and test splits (a folder decoded into the image cache, as pretraining
    does), checked against the backbone and the budgets before anything is decoded. Raises
    ValueError with one line for data it cannot use."""
    name = dataset or cfg.data.dataset
    ddir = data_dir if data_dir is not None else (cfg.data.data_dir if name == cfg.data.dataset else None)
    if name == "folder":
        raise ValueError("fine-tuning needs labelled images, and dataset 'folder' has none (the run was trained on "
                         "an unlabelled folder?): give a labelled one, e.g. --dataset imagefolder --data-dir DIR "
                         "laid out as DIR/train/<class>/ and DIR/test/<class>/")
    size = image_size or cfg.data.image_size or 224
    data_cfg = dataclasses.replace(cfg.data, dataset=name, data_dir=ddir, image_size=size)
    split = held_out_split(cfg, name)
    train, test = load_dataset(name, "train", ddir), load_dataset(name, split, ddir)
    if train.num_classes < 2:
        raise ValueError(f"dataset {name!r} has {train.num_classes} class(es) in its training split; fine-tuning "
                         "a classifier needs at least 2 labelled classes")
    if isinstance(train, ImageFiles) and train.channels != channels:
        # Files decode to any mode: a grayscale backbone reads a colour folder as gray (as `embed` does).
        log(f"{name}: decoding the images with {channels} channel(s), as the run's backbone takes")
        train, test = (_with_channels(d, channels) for d in (train, test))
    if train.channels != channels:
        raise ValueError(f"{name} has {train.channels}-channel images but the run's backbone takes {channels}; "
                         f"fine-tune on images with {channels} channel(s) (grayscale for 1, colour for 3)")
    classes = class_names(train, name)
    for budget in budgets:  # a budget a class cannot fill fails now, not after the decoding
        draw_labels(torch.as_tensor(train.labels), budget, 0, len(classes), classes)
    train = decoded_if_configured(train, data_cfg, log=log)
    test = decoded_if_configured(test, data_cfg, log=log)
    return Labelled(name, ddir, split, train, test, classes, size)


def _with_channels(files: ImageFiles, channels: int) -> ImageFiles:
    """The same files decoded with ``channels`` channels; ImageNet's statistics (averaged for gray)."""
    mean, std = imagenet_stats(channels)
    return ImageFiles(files.paths, files.labels, files.name, files.num_classes, channels=channels, mean=mean,
                      std=std, classes=files.classes)


def default_out_dir(run: Path, labelled_name: str, run_dataset: str) -> Path:
    """Beside the run, never inside it: ``runs/demo-finetune`` (``-<dataset>`` for another dataset)."""
    suffix = "" if labelled_name == run_dataset else f"-{labelled_name}"
    return run.parent / f"{run.name}-finetune{suffix}"


def finetune(run: str | Path, *, dataset: Optional[str] = None, data_dir: Optional[str] = None,
             labels_per_class: Sequence[int] = (), label_fractions: Sequence[str | float] = (),
             label_seeds: Sequence[int] = (0, 1, 2), contenders: Sequence[str] = CONTENDERS,
             recipe: Optional[FinetuneRecipe] = None, out_dir: Optional[str | Path] = None, image_size: int = 0,
             device: str = "cpu", log: Callable[[str], None] = print) -> dict:
    """Fine-tune a pretraining run's backbone on few labels, beside the other contenders; write the
    folder described in the module doc and return its results (``results.json``'s content)."""
    git_commit()  # the code as it starts (read once per process), not as the tree is when it ends
    recipe = recipe or FinetuneRecipe()
    budgets = parse_budgets(labels_per_class, label_fractions) or parse_budgets(fractions=DEFAULT_BUDGETS)
    seeds = list(dict.fromkeys(int(s) for s in label_seeds))
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown or not contenders or not seeds:
        raise ValueError(f"contenders must be among {', '.join(CONTENDERS)} (got {list(contenders)}), and at least "
                         "one label seed is needed")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    run_path = Path(run)
    run_dir = run_path if run_path.is_dir() else run_path.parent
    pretrained, cfg = load_pretrained(run_path, dev)
    channels = input_channels(pretrained.backbone)
    data = load_labelled(cfg, channels, dataset, data_dir, image_size, budgets, log)
    out = Path(out_dir) if out_dir else default_out_dir(run_dir, data.name, cfg.data.dataset)
    if out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} is inside the pretraining run {run_dir}; a fine-tune writes to its own folder")
    precision, why = resolve_amp(recipe.amp, dev)
    recipe = dataclasses.replace(recipe, amp=precision)  # recorded as used: a resume elsewhere keeps it
    crop_min = cfg.aug.crop_scale_min if cfg.aug.crop_scale_min is not None else 0.08
    crop_min = recipe.crop_scale_min if recipe.crop_scale_min is not None else crop_min
    settings = {"run": str(run_path.resolve()), "dataset": data.name, "data_dir": data.data_dir, "split": data.split,
                "image_size": data.size, "budgets": [b.name for b in budgets], "label_seeds": seeds,
                "contenders": list(contenders), "crop_scale_min": crop_min, "recipe": dataclasses.asdict(recipe)}
    # One process per folder: two would train the same cells and write the same files.
    with DirectoryLock(out, "fine-tune", advice="choose another --out", on_stop="each finished result is kept"):
        _claim(out, settings)
        log(f"fine-tuning {run_path} on {data.name} ({len(data.train)} training, {len(data.test)} {data.split} "
            f"images, {len(data.classes)} classes) at {data.size}px; budgets {', '.join(b.name for b in budgets)}; "
            f"label seeds {seeds}; precision {'bf16' if precision == 'bf16' else 'fp32'} ({why}); outputs in {out}")
        contest = _Contest(pretrained, cfg, channels, data, recipe, dev)
        cells = _fill_cells(out, contest, budgets, seeds, contenders, crop_min, settings, log)
        results = {"settings": settings, "classes": data.classes, "precision": precision, "cells": cells}
        write_outputs(out, results, budgets, contenders)
    results["out_dir"] = str(out)
    return results


def _fill_cells(out: Path, contest: "_Contest", budgets: Sequence[LabelBudget], seeds: list[int],
                contenders: Sequence[str], crop_min: float, settings: dict, log: Callable[[str], None]) -> list[dict]:
    """Every (budget, seed, contender) cell: read from ``out/cells`` when finished there, else run
    and written at once, atomically."""
    data = contest.data
    cells: dict[tuple[str, int, str], dict] = {}
    for budget in budgets:
        choices: dict[str, dict] = {}  # each contender's setting, chosen on the first seed
        for seed in seeds:
            draw = draw_labels(torch.as_tensor(data.train.labels), budget, seed, len(data.classes), data.classes)
            task = Task(select(data.train, draw.train), select(data.train, draw.val), data.test, len(data.classes),
                        data.size, contest.device, seed, crop_min)
            for contender in contenders:
                path = out / "cells" / f"{budget.slug}-seed{seed}-{contender}.json"
                if path.is_file():
                    cell = json.loads(path.read_text())
                else:
                    label = f"{budget.name} seed {seed} {contender}"
                    outcome = contest.run(contender, task, choices.get(contender), log, label)
                    if outcome.model is not None:
                        _save_model(out, contender, budget, draw, outcome, contest.cfg, data, settings)
                    cell = {"budget": budget.name, "seed": seed, "contender": contender, "labelled": draw.labelled,
                            "train_images": len(draw.train), "val_images": len(draw.val),
                            "searched": contender not in choices, **outcome.record()}
                    write_atomic(path, lambda fh: fh.write(json.dumps(cell, indent=2).encode()))
                    log(f"{label}: test {cell['test']:.2f}% (val {cell['val']:.2f}%, {_choice_words(cell['choice'])}, "
                        f"{cell['time_s']:.0f}s)")
                choices.setdefault(contender, cell["choice"])
                cells[(budget.name, seed, contender)] = cell
    return list(cells.values())


class _Contest:
    """Runs one contender on one label draw: its search over the recipe's grid when ``choice`` is
    None (the first seed), else the ``choice`` alone. Keeps what the draws share: the frozen
    backbone's features and the pixels of the test split."""

    def __init__(self, pretrained: torch.nn.Module, cfg: Config, channels: int, data: Labelled,
                 recipe: FinetuneRecipe, device: torch.device):
        self.pretrained, self.cfg, self.channels, self.data = pretrained, cfg, channels, data
        self.recipe, self.device = recipe, device
        self.test: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the test split's, by kind

    def run(self, contender: str, task: Task, choice: Optional[dict], log: Callable[[str], None],
            label: str) -> Outcome:
        r = self.recipe
        if contender in ("finetune", "scratch"):
            lrs = r.lrs if choice is None else (choice["base_lr"],)
            start = _start(contender, self.pretrained, self.cfg, self.channels, task.seed, self.device)
            return train_network(start, task, r, lrs, log, label)
        split = self._split("pixels" if contender == "pixels_knn" else "features", task)
        if contender == "linear":
            return linear_probe(split, task.num_classes, r, r.probe_lrs if choice is None else (choice["lr"],),
                                task.seed)
        return knn_contender(split, task.num_classes, r, r.knn_ks if choice is None else (choice["k"],))

    def _split(self, kind: str, task: Task) -> FeatureSplit:
        """The draw's frozen features or pixels ("features", "pixels"), made once per draw."""
        if kind not in task.frozen:
            backbone, kw = self.pretrained.backbone, dict(device=self.device, image_size=task.size)
            if kind == "pixels":
                test = self.test.get(kind) or pixel_vectors(task.test, True, **kw)
                task.frozen[kind] = FeatureSplit(*pixel_vectors(task.train, True, **kw),
                                                 *pixel_vectors(task.val, True, **kw), *test)
            else:
                test = self.test.get(kind) or frozen_features(backbone, task.test, task.size, self.device)
                task.frozen[kind] = feature_split(backbone, task, test)
            self.test[kind] = test
        return task.frozen[kind]


def _claim(out: Path, settings: dict) -> None:
    """Make ``out`` this fine-tune's folder, or check that it already is (a resume)."""
    path = out / "settings.json"
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
    if path.is_file():
        before = json.loads(path.read_text())
        if before != settings:
            differ = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            raise ValueError(f"{out} holds a fine-tune with other settings ({', '.join(differ)} differ); choose "
                             "another --out, or delete that folder to start again")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda fh: fh.write(json.dumps(settings, indent=2).encode()))


def _start(contender: str, pretrained: torch.nn.Module, cfg: Config, channels: int, seed: int,
           device: torch.device) -> Callable[[], torch.nn.Module]:
    """What each training of a contender starts from: a copy of the pretrained method, or a fresh
    initialisation of the same architecture (seeded by the label seed, not the run's weights)."""
    if contender == "finetune":
        return lambda: copy.deepcopy(pretrained).to(device)

    def fresh() -> torch.nn.Module:
        seed_everything(10_007 + seed)
        return build_method(cfg, channels).to(device)
    return fresh


def _save_model(out: Path, contender: str, budget: LabelBudget, draw: LabelDraw, outcome: Outcome, cfg: Config,
                data: Labelled, settings: dict) -> Path:
    method, classifier = outcome.model
    config = cfg.to_dict()
    config["data"].update(dataset=data.name, data_dir=data.data_dir, image_size=data.size, eval_split=data.split)
    meta = {"classes": data.classes, "contender": contender, "budget": budget.name, "label_seed": draw.seed,
            "labelled": draw.labelled, "val_accuracy": outcome.val, "test_accuracy": outcome.test,
            "choice": outcome.choice, "mean": list(data.train.mean), "std": list(data.train.std),
            "image_size": data.size, "test_images": "memory" if isinstance(data.test, InMemoryImages) else "files",
            "dataset": data.name, "data_dir": data.data_dir, "split": data.split,
            "pretrained_from": settings["run"] if contender == "finetune" else None,
            "precision": settings["recipe"]["amp"]}
    path = out / "models" / f"{contender}-{budget.slug}-seed{draw.seed}.pt"
    return save_classifier(path, method, classifier, config, meta)


def _choice_words(choice: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in choice.items())
