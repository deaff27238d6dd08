"""`simsiam finetune` and `simsiam predict`: label draws, the contenders, the folder it writes, the
models it saves, and every bad input the issue names. One fine-tune of a small digits checkpoint is
shared by the tests that only read it."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_checkpoints import make_checkpoint_file, save_checkpoint, small_config
from PIL import Image

from simsiam.cli import main
from simsiam.data import load_dataset
from simsiam.data.label_budget import LabelBudget, draw_labels, parse_budgets
from simsiam.downstream import FinetuneRecipe, finetune
from simsiam.downstream import label_efficiency as le
from simsiam.eval.classifier import Classifier, load_classifier, save_classifier
from simsiam.eval.pretrained import load_pretrained
from simsiam.methods import build_method

FAST = FinetuneRecipe(lrs=(0.1, 0.3), epochs=1, min_steps=6, probe_min_steps=20)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A digits checkpoint with random weights (non-trivial BN statistics), as a run directory."""
    run = tmp_path_factory.mktemp("pretrained") / "run"
    make_checkpoint_file(run / "checkpoint.pt")
    return run


@pytest.fixture(scope="module")
def finetuned(digits_run, tmp_path_factory) -> dict:
    """One fine-tune of it: two budgets, two label seeds, every contender."""
    before = tree_digest(digits_run)
    out = tmp_path_factory.mktemp("ft") / "ft"
    res = finetune(digits_run, labels_per_class=[3, 6], label_seeds=[0, 1], recipe=FAST, out_dir=out,
                   log=lambda line: None)
    return {"res": res, "out": out, "run": digits_run, "run_before": before}


# ---------------------------------------------------------------------------------------------- draws


def test_label_draws_are_stratified_seeded_nested_and_disjoint():
    labels = torch.arange(10).repeat_interleave(50)  # 10 classes of 50
    a = draw_labels(labels, LabelBudget(per_class=10), seed=3, num_classes=10)
    again = draw_labels(labels, LabelBudget(per_class=10), seed=3, num_classes=10)
    other = draw_labels(labels, LabelBudget(per_class=10), seed=4, num_classes=10)
    assert torch.equal(a.train, again.train) and torch.equal(a.val, again.val)
    assert not torch.equal(a.train, other.train)
    assert set(a.train.tolist()).isdisjoint(a.val.tolist())
    # every class: 10 labelled, 2 of them (20%) the validation part
    assert torch.bincount(labels[a.train], minlength=10).tolist() == [8] * 10
    assert torch.bincount(labels[a.val], minlength=10).tolist() == [2] * 10
    # nested: for one seed the smaller budget's images are among the larger one's
    big = draw_labels(labels, LabelBudget(per_class=30), seed=3, num_classes=10)
    assert set(a.train.tolist()) | set(a.val.tolist()) <= set(big.train.tolist()) | set(big.val.tolist())


def test_fraction_budgets_and_names():
    labels = torch.cat([torch.zeros(300), torch.ones(100)]).long()
    draw = draw_labels(labels, parse_budgets(fractions=["10%"])[0], seed=0, num_classes=2)
    assert torch.bincount(labels[torch.cat([draw.train, draw.val])]).tolist() == [30, 10]
    assert [b.name for b in parse_budgets([10], ["1%", "0.1"])] == ["10/class", "1%", "10%"]
    with pytest.raises(ValueError, match="--label-fraction 150%"):
        parse_budgets(fractions=["150%"])
    with pytest.raises(ValueError, match="at least 2"):
        parse_budgets([1])


def test_the_test_split_is_never_drawn_from(digits_run, tmp_path, monkeypatch):
    drawn_from = []
    real = le.select
    monkeypatch.setattr(le, "select", lambda dataset, index: drawn_from.append(len(dataset)) or real(dataset, index))
    res = finetune(digits_run, labels_per_class=[3], label_seeds=[0, 1], contenders=["knn"], recipe=FAST,
                   out_dir=tmp_path / "ft", log=lambda line: None)
    train_size = len(load_dataset("digits", "train"))
    assert drawn_from == [train_size] * 4  # train and validation parts of two seeds, all from the training split
    assert res["settings"]["split"] == "test"
    for cell in res["cells"]:
        assert (cell["train_images"], cell["val_images"], cell["labelled"]) == (20, 10, 30)


# ---------------------------------------------------------------------------------------------- contenders


def test_scratch_starts_from_a_fresh_init_not_the_run(digits_run):
    from simsiam.eval.pretrained import load_pretrained

    pretrained, cfg = load_pretrained(digits_run)
    scratch = le._start("scratch", pretrained, cfg, 1, seed=0, device=torch.device("cpu"))()
    tuned = le._start("finetune", pretrained, cfg, 1, seed=0, device=torch.device("cpu"))()
    conv = "backbone.conv1.weight"
    assert torch.equal(tuned.state_dict()[conv], pretrained.state_dict()[conv])
    assert tuned.backbone is not pretrained.backbone  # a copy: training it leaves the run's alone
    assert not torch.equal(scratch.state_dict()[conv], pretrained.state_dict()[conv])
    # a fresh init: BN statistics at their initial values, not the run's randomised ones
    assert torch.equal(scratch.state_dict()["backbone.bn1.running_mean"], torch.zeros(8))
    again = le._start("scratch", pretrained, cfg, 1, seed=0, device=torch.device("cpu"))()
    assert torch.equal(again.state_dict()[conv], scratch.state_dict()[conv])  # seeded


def test_finetuning_changes_the_backbone_and_the_run_is_never_touched(finetuned):
    out, run = finetuned["out"], finetuned["run"]
    assert tree_digest(run) == finetuned["run_before"]
    run_state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    tuned, meta, _ = load_classifier(out / "models" / "finetune-3-per-class-seed0.pt")
    changed = [k for k, v in tuned.backbone.state_dict().items() if not torch.equal(v, run_state[f"backbone.{k}"])]
    assert "conv1.weight" in changed and any(k.endswith("running_mean") for k in changed)
    assert meta["contender"] == "finetune" and meta["classes"] == [str(i) for i in range(10)]


def test_the_linear_probe_leaves_the_backbone_bitwise_unchanged(digits_run):
    from simsiam.data.subset import select
    from simsiam.downstream.contenders import (
        Task,
        feature_split,
        frozen_features,
        linear_probe,
    )
    from simsiam.eval.frozen import assert_backbone_unchanged, backbone_state_from_disk
    from simsiam.eval.pretrained import load_pretrained

    pretrained, _ = load_pretrained(digits_run)
    train = load_dataset("digits", "train")
    draw = draw_labels(train.labels, LabelBudget(per_class=4), 0, 10)
    task = Task(select(train, draw.train), select(train, draw.val), load_dataset("digits", "test"), 10, 8,
                torch.device("cpu"), 0, 0.2)
    test = frozen_features(pretrained.backbone, task.test, 8, task.device)
    outcome = linear_probe(feature_split(pretrained.backbone, task, test), 10, FAST, FAST.probe_lrs, 0)
    assert 0 <= outcome.test <= 100 and outcome.choice["lr"] in FAST.probe_lrs
    assert_backbone_unchanged(pretrained.backbone, backbone_state_from_disk(digits_run), when="after the probe")


def test_the_folder_holds_the_report_the_picture_and_one_cell_per_result(finetuned):
    out, res = finetuned["out"], finetuned["res"]
    assert len(res["cells"]) == 2 * 2 * 5  # budgets x seeds x contenders
    report = (out / "report.md").read_text()
    for name in ("SimSiam, fine-tuned", "same network from scratch", "linear probe", "kNN on pixels", "3/class"):
        assert name in report
    assert (out / "label_efficiency.png").stat().st_size > 5000
    summary = json.loads((out / "results.json").read_text())["summary"]
    row = next(r for r in summary if r["budget"] == "6/class" and r["contender"] == "knn")
    tests = [c["test"] for c in res["cells"] if c["budget"] == "6/class" and c["contender"] == "knn"]
    assert row["test_mean"] == pytest.approx(sum(tests) / 2) and row["seeds"] == 2
    # the search ran on the first seed; the second reused its choice
    cells = {(c["seed"], c["contender"]): c for c in res["cells"] if c["budget"] == "6/class"}
    assert len(cells[(0, "scratch")]["search"]) == 2 and len(cells[(1, "scratch")]["search"]) == 1
    assert cells[(1, "scratch")]["choice"]["base_lr"] == cells[(0, "scratch")]["choice"]["base_lr"]
    assert {f.name for f in (out / "models").iterdir()} == {
        f"{c}-{b}-per-class-seed{s}.pt" for c in ("finetune", "scratch") for b in (3, 6) for s in (0, 1)}


def test_predict_reproduces_the_reports_test_accuracy(finetuned, tmp_path):
    test = load_dataset("digits", "test")
    for i in range(len(test)):
        img, label = test[i]
        (tmp_path / "imgs" / str(label)).mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / "imgs" / str(label) / f"{i:03d}.png")
    model = finetuned["out"] / "models" / "finetune-6-per-class-seed1.pt"
    assert main(["predict", str(model), "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].startswith("path,predicted,probability,truth,p_0") and len(rows) == 301
    correct = sum(r.split(",")[1] == r.split(",")[3] for r in rows[1:])
    cell = next(c for c in finetuned["res"]["cells"]
                if (c["budget"], c["seed"], c["contender"]) == ("6/class", 1, "finetune"))
    assert 100 * correct / 300 == pytest.approx(cell["test"], abs=1e-4)


def test_a_finetuned_model_exports_with_its_head_and_embeds(finetuned, tmp_path):
    model = finetuned["out"] / "models" / "scratch-3-per-class-seed0.pt"
    classifier, meta, _ = load_classifier(model)
    assert main(["export", str(model), "--format", "torchvision", "--out", str(tmp_path / "tv.pt")]) == 0
    state = torch.load(tmp_path / "tv.pt", weights_only=True)
    assert torch.equal(state["fc.weight"], classifier.head.weight) and state["fc.weight"].shape == (10, 64)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(imgs / f"{i}.png")
    assert main(["embed", str(model), "--data", str(imgs), "--out", str(tmp_path / "emb"), "--quiet"]) == 0
    assert np.load(tmp_path / "emb" / "embeddings.npy").shape == (3, 64)


def test_a_model_with_non_finite_weights_is_not_saved(finetuned, tmp_path):
    path = finetuned["out"] / "models" / "scratch-3-per-class-seed0.pt"
    method, cfg = load_pretrained(path)
    classifier = Classifier(method.backbone, 10)
    meta = load_classifier(path)[1]
    with torch.no_grad():
        classifier.head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in 1 tensor\(s\) \(classifier.weight\).*smaller --lrs"):
        save_classifier(tmp_path / "m.pt", method, classifier, cfg.to_dict(), meta)
    assert not (tmp_path / "m.pt").exists()


# ---------------------------------------------------------------------------------------------- resume, Ctrl-C


def test_ctrl_c_keeps_finished_cells_and_the_same_call_goes_on(digits_run, tmp_path, monkeypatch):
    from simsiam.downstream import contenders

    out = tmp_path / "ft"
    calls = []
    real = contenders.fit_classifier

    def interrupted_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(contenders, "fit_classifier", interrupted_on_third)
    before = tree_digest(digits_run)
    kw = dict(labels_per_class=[3], label_seeds=[0], contenders=["finetune", "scratch", "knn"], recipe=FAST,
              out_dir=out, log=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        finetune(digits_run, **kw)
    assert [p.name for p in (out / "cells").iterdir()] == ["3-per-class-seed0-finetune.json"]
    assert not list(out.rglob("*.tmp")) and tree_digest(digits_run) == before
    calls.clear()
    res = finetune(digits_run, **kw)
    assert len(calls) == 2  # only scratch's two rates: the finished fine-tune was not trained again
    assert len(res["cells"]) == 3 and (out / "report.md").is_file()
    with pytest.raises(ValueError, match="other settings"):
        finetune(digits_run, **{**kw, "label_seeds": [5]})


def test_ctrl_c_through_the_cli_is_one_line(digits_run, tmp_path, monkeypatch, capsys):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(le, "train_network", stop)
    rc = main(["finetune", str(digits_run), "--labels-per-class", "3", "--out", str(tmp_path / "ft"), "--quiet"])
    assert rc == 130
    assert "interrupted; every result finished so far is kept" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- bad input


def _labelled_folder(root: Path, counts: dict[str, tuple[int, int]], mode: str = "L", test: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for cls, (n_train, n_test) in counts.items():
        for split, n in (("train", n_train), ("test", n_test if test else 0)):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (8, 8) if mode == "L" else (8, 8, 3)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_more_labels_than_a_class_has(digits_run, tmp_path, capsys):
    data = _labelled_folder(tmp_path / "data", {"a": (5, 2), "b": (3, 2)})
    line = _error(capsys, ["finetune", str(digits_run), "--dataset", "imagefolder", "--data-dir", str(data),
                           "--labels-per-class", "4", "--out", str(tmp_path / "ft")])
    assert "class 'b' has 3 training images" in line and "--labels-per-class 3" in line


def test_a_class_with_no_images(digits_run, tmp_path, capsys):
    data = _labelled_folder(tmp_path / "data", {"a": (5, 2), "b": (5, 2), "c": (0, 2)})
    line = _error(capsys, ["finetune", str(digits_run), "--dataset", "imagefolder", "--data-dir", str(data),
                           "--labels-per-class", "2", "--out", str(tmp_path / "ft")])
    assert "class 'c' has no images in the training split" in line


def test_a_run_on_an_unlabelled_folder_needs_a_labelled_dataset(tmp_path, capsys):
    cfg = small_config()
    cfg.data.dataset, cfg.data.data_dir = "folder", str(tmp_path / "photos")
    run = tmp_path / "run"
    save_checkpoint(build_method(cfg, 1), cfg, run / "checkpoint.pt")
    line = _error(capsys, ["finetune", str(run)])
    assert "needs labelled images" in line and "--dataset imagefolder" in line


def test_channels_that_do_not_match(digits_run, tmp_path, capsys):
    from fixtures_data import make_cifar10

    make_cifar10(tmp_path)
    line = _error(capsys, ["finetune", str(digits_run), "--dataset", "cifar10", "--data-dir", str(tmp_path),
                           "--out", str(tmp_path / "ft")])
    assert "cifar10 has 3-channel images but the run's backbone takes 1" in line


def test_no_test_split(digits_run, tmp_path, capsys):
    data = _labelled_folder(tmp_path / "data", {"a": (5, 0), "b": (5, 0)}, test=False)
    shutil.rmtree(data / "test")
    line = _error(capsys, ["finetune", str(digits_run), "--dataset", "imagefolder", "--data-dir", str(data),
                           "--out", str(tmp_path / "ft")])
    assert "split 'test'" in line


def test_predict_refuses_a_pretraining_checkpoint(digits_run, tmp_path, capsys):
    line = _error(capsys, ["predict", str(digits_run), "--data", str(tmp_path)])
    assert "has no classifier" in line and "simsiam finetune" in line


# ---------------------------------------------------------------------------------------------- the CLI end to end


def test_finetune_end_to_end_through_the_cli_on_a_folder(digits_run, tmp_path, capsys):
    """Transfer: the digits checkpoint fine-tuned on a small grayscale folder at 10 labels per class."""
    data = _labelled_folder(tmp_path / "data", {"a": (12, 3), "b": (12, 3), "c": (12, 3)})
    out = tmp_path / "ft"
    rc = main(["finetune", str(digits_run), "--dataset", "imagefolder", "--data-dir", str(data),
               "--labels-per-class", "10", "--label-seeds", "0", "--lrs", "0.1", "--epochs", "1", "--min-steps", "3",
               "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| 10/class | 30 |" in printed and f"outputs in {out}" in printed
    clf, meta, cfg = load_classifier(out / "models" / "finetune-10-per-class-seed0.pt")
    assert meta["classes"] == ["a", "b", "c"] and cfg.data.dataset == "imagefolder"
    assert meta["test_images"] == "memory"  # the folder went through the image cache, as pretraining's do


def test_lp_ft_starts_from_the_probe_head_folded_into_one_layer(digits_run):
    """With head_init=probe the classifier's first outputs are the probe's (its BN folded exactly)."""
    from simsiam.data.subset import select
    from simsiam.downstream.contenders import Task, feature_split, fit_probe, probe_head
    from simsiam.eval.features import eval_mode
    from simsiam.eval.pretrained import load_pretrained

    pretrained, _ = load_pretrained(digits_run)
    train = load_dataset("digits", "train")
    draw = draw_labels(train.labels, LabelBudget(per_class=6), 0, 10)
    task = Task(select(train, draw.train), select(train, draw.val), None, 10, 8, torch.device("cpu"), 0, 0.2)
    folded = probe_head(pretrained.backbone, task, FAST)
    x = torch.randn(16, pretrained.backbone.num_features)
    f = feature_split(pretrained.backbone, task, (x[:0], torch.zeros(0, dtype=torch.long)))
    _, _, head, _ = fit_probe(f, 10, FAST, FAST.probe_lrs, 0)
    with eval_mode(head):
        assert torch.allclose(folded(x), head(x), atol=1e-5)
    assert not torch.equal(folded.weight, torch.zeros_like(folded.weight))


def test_backbone_lr_scale_zero_trains_the_head_only(digits_run):
    from simsiam.downstream.fit import fit_classifier
    from simsiam.eval.classifier import Classifier
    from simsiam.eval.pretrained import load_pretrained

    pretrained, _ = load_pretrained(digits_run)
    classifier = Classifier(pretrained.backbone, 10)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    train = load_dataset("digits", "train")
    recipe = FinetuneRecipe(backbone_lr_scale=0.0, weight_decay=0.0, min_steps=5, epochs=1)
    fit_classifier(classifier, train, recipe, 0.3, size=8, device=torch.device("cpu"), seed=0, crop_scale_min=0.2)
    after = classifier.state_dict()
    assert torch.equal(after["backbone.conv1.weight"], before["backbone.conv1.weight"])
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert not torch.equal(after["backbone.bn1.running_mean"], before["backbone.bn1.running_mean"])  # BN in train mode
