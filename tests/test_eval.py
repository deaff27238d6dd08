"""Evaluation: kNN sweep, linear evaluation (trainer, protocol, sanity check), embeddings, pictures."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from fixtures_checkpoints import make_checkpoint_file
from PIL import Image

from simsiam.artifacts.checkpoint import CheckpointError
from simsiam.cli import main
from simsiam.eval import knn as knn_module
from simsiam.eval import knn_accuracy, knn_predict, knn_sweep
from simsiam.eval import linear as linear_module
from simsiam.eval.embed import embed_folder
from simsiam.eval.frozen import (
    BackboneChanged,
    assert_backbone_unchanged,
    backbone_state_from_disk,
)
from simsiam.eval.linear import (
    lars_too_few_steps,
    linear_config,
    linear_evaluate,
    topk_accuracy,
    train_on_features,
)
from simsiam.eval.visualize import class_names, visualize


def gaussian_clusters(classes: int = 5, dim: int = 32, per_class: int = 100, seed: int = 0, spread: float = 1.0):
    """Well separated clusters: centres ~ N(0, 25 I), points = centre + N(0, spread^2 I)."""
    gen = torch.Generator().manual_seed(seed)
    centres = 5 * torch.randn(classes, dim, generator=gen)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=gen), labels


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    """A random-weight digits-sized model saved as a checkpoint: (path, model, cfg)."""
    return make_checkpoint_file(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt")


# ------------------------------------------------------------------------------------------ kNN


def _naive_knn_accuracy(q, qy, bank, by, num_classes, k, t):
    """Written from the definition: cosine to every bank item, top-k, votes exp(sim/t), argmax."""
    q = q / q.norm(dim=1, keepdim=True)
    bank = bank / bank.norm(dim=1, keepdim=True)
    correct = 0
    for i in range(len(q)):
        sims = (bank @ q[i]).tolist()
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[:min(k, len(sims))]
        votes = [0.0] * num_classes
        for j in order:
            votes[int(by[j])] += float(np.exp(sims[j] / t))
        correct += int(int(np.argmax(votes)) == int(qy[i]))
    return 100.0 * correct / len(q)


def test_knn_sweep_matches_the_naive_definition_for_every_k_and_t():
    gen = torch.Generator().manual_seed(0)
    bank, by = torch.randn(60, 8, generator=gen), torch.randint(0, 4, (60,), generator=gen)
    q, qy = torch.randn(23, 8, generator=gen), torch.randint(0, 4, (23,), generator=gen)
    ks, ts = (1, 5, 20, 100), (0.07, 0.5)  # k=100 > bank size: clipped to 60
    res = knn_sweep(q, qy, bank, by, 4, ks, ts, chunk=7)  # several chunks
    for k in ks:
        for t in ts:
            assert res[f"k={k},t={t}"] == pytest.approx(_naive_knn_accuracy(q, qy, bank, by, 4, k, t))
            assert knn_accuracy(q, qy, bank, by, 4, k, t) == pytest.approx(res[f"k={k},t={t}"])
    assert knn_predict(q, bank, by, 4, k=5).shape == (23, 4)


def test_knn_sweep_finds_neighbours_once_for_all_k_and_t(monkeypatch):
    calls = []
    real = knn_module._top_neighbours

    def counting(queries, bank, k, chunk):
        calls.append(k)
        return real(queries, bank, k, chunk)

    monkeypatch.setattr(knn_module, "_top_neighbours", counting)
    x, y = gaussian_clusters()
    knn_sweep(x, y, x, y, 5, ks=(1, 10, 50), ts=(0.05, 0.1, 0.2))
    assert calls == [50]  # one search, for the largest k


def test_knn_is_perfect_on_separated_clusters():
    x, y = gaussian_clusters(seed=0)
    xq, yq = gaussian_clusters(seed=0, per_class=20)  # same centres, fresh points
    res = knn_sweep(xq, yq, x, y, 5, ks=(5, 20), ts=(0.1,))
    assert res == {"k=5,t=0.1": 100.0, "k=20,t=0.1": 100.0}


# ------------------------------------------------------------------------------------------ linear


@pytest.mark.parametrize("preset, overrides", [("sgd", {"base_lr": 0.1}), ("sgd", {"bn_head": True}),
                                               ("lars", {"batch_size": 64, "base_lr": 20.0})])
def test_linear_trainer_is_perfect_on_separated_clusters(preset, overrides):
    x, y = gaussian_clusters(seed=1)
    xt, yt = gaussian_clusters(seed=1, per_class=30)
    head, losses = train_on_features(x, y, 5, linear_config(preset, epochs=10, **overrides))
    acc = topk_accuracy(head, xt, yt, (1, 5))
    assert acc[1] == 100.0 and acc[5] == 100.0
    assert losses[-1] < losses[0]


def test_topk_accuracy_by_hand():
    head = torch.nn.Identity()
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    acc = topk_accuracy(head, logits, torch.tensor([1, 2, 0]), (1, 2, 5))
    assert acc[1] == pytest.approx(100 / 3)  # only the first is right at top-1
    assert acc[2] == pytest.approx(200 / 3)  # the second's class 2 is its runner-up
    assert acc[5] == 100.0  # clipped to the 3 classes


def test_lars_on_too_few_steps_is_warned_about():
    # 60k images at batch 4096: 15 steps an epoch, 1350 in 90 epochs -- short of LARS's needs.
    message = lars_too_few_steps(linear_config("lars"), 60_000)
    assert message and "1350 steps" in message and "--preset sgd" in message
    assert lars_too_few_steps(linear_config("lars", epochs=300), 60_000) is None  # 4500 steps
    assert lars_too_few_steps(linear_config("sgd"), 1_000) is None  # SGD's recipe converges on few images
    assert "90 steps" in lars_too_few_steps(linear_config("lars"), 500)  # one (smaller) batch an epoch


def test_linear_end_to_end_on_digits_beats_chance(digits_ckpt):
    path, _, _ = digits_ckpt
    cfg = linear_config("sgd", epochs=3, base_lr=1.0, bn_head=True, train_limit=512)
    res = linear_evaluate(path, cfg)
    assert res["mode"].startswith("augmented") and res["epochs"] == 3 and res["test_images"] == 300
    assert res["top1"] > 15.0  # chance is 10%
    assert res["top5"] >= res["top1"] and res["time_s"] > 0


def test_linear_cli_with_cached_features_writes_json(digits_ckpt, tmp_path, capsys):
    path, _, _ = digits_ckpt
    out = tmp_path / "linear.json"
    rc = main(["linear", str(path), "--cached-features", "--preset", "sgd", "--lr", "1", "--bn-head", "--epochs", "5",
               "--eval-limit", "100", "--quiet", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "cached features" and res["test_images"] == 100 and res["config"]["preset"] == "sgd"
    assert "| top-1 (%) | top-5 (%) |" in capsys.readouterr().out


def test_sanity_check_names_a_changed_bn_statistic(digits_ckpt, monkeypatch):
    """A backbone left in train mode updates its BN running statistics: the check must catch it."""
    path, _, _ = digits_ckpt
    monkeypatch.setattr(linear_module, "freeze", lambda backbone: backbone.train().requires_grad_(False))
    cfg = linear_config("sgd", epochs=2, batch_size=32, train_limit=64, eval_limit=10)
    with pytest.raises(BackboneChanged, match=r"'bn1\.running_mean'.*after the first epoch"):
        linear_evaluate(path, cfg)


def test_sanity_check_names_a_changed_weight_with_cached_features(digits_ckpt, monkeypatch):
    path, _, _ = digits_ckpt
    real_extract = linear_module.extract_features

    def extract_then_perturb(net, dataset, **kw):
        out = real_extract(net, dataset, **kw)
        with torch.no_grad():
            net.layer4[1].conv2.weight[0, 0, 0, 0] += 1e-3
        return out

    monkeypatch.setattr(linear_module, "extract_features", extract_then_perturb)
    cfg = linear_config("sgd", epochs=1, cached_features=True, train_limit=64, eval_limit=10)
    with pytest.raises(BackboneChanged, match=r"weight 'layer4\.1\.conv2\.weight'"):
        linear_evaluate(path, cfg)


def test_assert_backbone_unchanged_compares_with_the_file(digits_ckpt):
    path, model, _ = digits_ckpt
    reference = backbone_state_from_disk(path)
    assert_backbone_unchanged(model.backbone, reference)  # untouched: passes
    with torch.no_grad():
        model.backbone.layer1[0].bn1.running_var[0] += 1.0
    try:
        with pytest.raises(BackboneChanged, match=r"BN statistic 'layer1\.0\.bn1\.running_var'"):
            assert_backbone_unchanged(model.backbone, reference)
    finally:
        with torch.no_grad():
            model.backbone.layer1[0].bn1.running_var[0] -= 1.0


def test_bad_checkpoint_path_gives_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        linear_evaluate(tmp_path / "missing.pt", linear_config(epochs=1))
    assert main(["linear", str(tmp_path / "missing.pt")]) == 2


def test_checkpoint_of_another_architecture_gives_a_clear_error(tmp_path):
    path, _, _ = make_checkpoint_file(tmp_path / "w8.pt", width=8)
    saved = torch.load(path, weights_only=True)
    saved["config"]["model"]["width"] = 16  # the config no longer describes the weights
    torch.save(saved, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="does not match the model built from its config"):
        linear_evaluate(tmp_path / "wrong.pt", linear_config(epochs=1))
    with pytest.raises(CheckpointError, match="does not match"):
        embed_folder(tmp_path / "wrong.pt", tmp_path, tmp_path / "out")


# ------------------------------------------------------------------------------------------ embed


def test_embed_folder_writes_embeddings_index_and_unreadable(digits_ckpt, tmp_path, capsys):
    path, model, cfg = digits_ckpt
    images = tmp_path / "images"
    (images / "sub" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(images / "a.png")  # RGB
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(images / "sub" / "b.jpg")  # grey
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(images / "sub" / "deeper" / "c.bmp")
    (images / "sub" / "broken.png").write_bytes(b"not an image")

    out = tmp_path / "emb"
    rc = main(["embed", str(path), "--data", str(images), "--out", str(out), "--quiet", "--batch-size", "2"])
    assert rc == 0
    emb = np.load(out / "embeddings.npy")
    assert emb.dtype == np.float32 and emb.shape == (3, model.backbone.num_features)
    with open(out / "index.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["row"] for r in rows] == ["0", "1", "2"]
    assert [r["path"].split("images/")[1] for r in rows] == ["a.png", "sub/b.jpg", "sub/deeper/c.bmp"]
    assert (out / "unreadable.txt").read_text().strip().endswith("broken.png")
    assert "broken.png" in capsys.readouterr().err

    proj = embed_folder(path, images, tmp_path / "proj", projector=True, progress=False)
    assert np.load(tmp_path / "proj" / "embeddings.npy").shape == (3, cfg.model.dim)
    assert proj["channels"] == 1 and proj["image_size"] == cfg.data.image_size


# ------------------------------------------------------------------------------------------ pictures


def test_visualize_writes_both_pictures(digits_ckpt, tmp_path):
    path, _, _ = digits_ckpt
    res = visualize(path, tmp_path, limit=40, queries=3, k=4, bank_limit=100)
    for name in ("embedding_map.png", "retrieval.png"):
        with Image.open(tmp_path / name) as img:
            assert img.size[0] > 200 and img.size[1] > 200
    assert res["points"] == 40 and res["bank"] == 100


def test_fashion_mnist_class_names():
    names = class_names("fmnist", object(), 10)
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot" and len(names) == 10
    assert class_names("unknown", object(), 3) == ["0", "1", "2"]
