"""Exports load back where they are meant to: torchvision, safetensors, detectron2 names."""
from __future__ import annotations

import pytest
import torch
import torchvision
from fixtures_checkpoints import make_checkpoint_file
from safetensors.torch import load_file

from simsiam.artifacts.checkpoint import CheckpointError
from simsiam.cli import main
from simsiam.eval.export import detectron2_key, export_checkpoint


@pytest.fixture(scope="module")
def standard_ckpt(tmp_path_factory):
    """A standard torchvision-shaped backbone: ResNet-18, width 64, 3 channels, ImageNet stem."""
    return make_checkpoint_file(tmp_path_factory.mktemp("std") / "checkpoint.pt", backbone="resnet18", width=64,
                                in_channels=3)


def _features_equal(torchvision_model, backbone, in_channels=3, size=64):
    torchvision_model.fc = torch.nn.Identity()  # pooled features, as model.backbone returns
    torchvision_model.eval()
    backbone.eval()
    x = torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(torchvision_model(x), backbone(x), atol=1e-5, rtol=1e-5)


def test_torchvision_export_loads_into_stock_resnet18(standard_ckpt, tmp_path, capsys):
    path, model, _ = standard_ckpt
    out = tmp_path / "r18.pth"
    assert main(["export", str(path), "--format", "torchvision", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "torchvision.models.resnet18()" in captured.out
    state = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # a plain dict of tensors
    tv = torchvision.models.resnet18()
    missing, unexpected = tv.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    _features_equal(tv, model.backbone)
    assert [p.name for p in tmp_path.iterdir()] == ["r18.pth"]  # no temporary file left behind


def test_cifar_stem_export_warns_and_matches_the_documented_surgery(tmp_path, capsys):
    path, model, _ = make_checkpoint_file(tmp_path / "c.pt", backbone="resnet18_cifar", width=64, in_channels=3)
    assert main(["export", str(path), "--format", "torchvision", "--out", str(tmp_path / "c18.pth")]) == 0
    captured = capsys.readouterr()
    assert "CIFAR stem" in captured.err and "model.maxpool = torch.nn.Identity()" in captured.out
    tv = torchvision.models.resnet18()
    tv.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    tv.maxpool = torch.nn.Identity()
    missing, unexpected = tv.load_state_dict(torch.load(tmp_path / "c18.pth", weights_only=True), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    _features_equal(tv, model.backbone, size=16)


def test_how_to_load_lines_rebuild_a_narrow_one_channel_backbone_in_torchvision(tmp_path):
    """The printed recipe is runnable: it gives a torchvision model with the backbone's features."""
    path, model, _ = make_checkpoint_file(tmp_path / "narrow.pt", backbone="resnet18_cifar", width=8, in_channels=1)
    res = export_checkpoint(path, "torchvision", tmp_path / "narrow.pth")
    assert res.warnings and "width 8" in res.warnings[0]
    namespace: dict = {}
    exec(res.how_to_load, namespace)  # noqa: S102 - our own generated code
    assert sorted(namespace["missing"]) == ["fc.bias", "fc.weight"] and namespace["unexpected"] == []
    _features_equal(namespace["model"], model.backbone, in_channels=1, size=8)


@pytest.mark.parametrize("backbone, width, in_channels, pool_grid, size", [
    ("resnet18_small", 8, 1, 2, 28),  # the fmnist preset's shape: small stem, narrow, grey, 2x2 grid
    ("resnet18", 64, 3, 2, 64),  # only the grid differs from torchvision's
])
def test_how_to_load_lines_rebuild_the_small_stem_and_the_pool_grid(tmp_path, backbone, width, in_channels,
                                                                   pool_grid, size):
    path, model, _ = make_checkpoint_file(tmp_path / "g.pt", backbone=backbone, width=width, in_channels=in_channels,
                                          pool_grid=pool_grid)
    res = export_checkpoint(path, "torchvision", tmp_path / "g.pth")
    assert "pool grid 2x2" in res.warnings[0]
    assert "torchvision.models.resnet18()" in res.how_to_load
    namespace: dict = {}
    exec(res.how_to_load, namespace)  # noqa: S102 - our own generated code
    assert sorted(namespace["missing"]) == ["fc.bias", "fc.weight"] and namespace["unexpected"] == []
    assert namespace["model"].fc.in_features == model.backbone.num_features
    _features_equal(namespace["model"], model.backbone, in_channels=in_channels, size=size)


def test_how_to_load_lines_give_the_features_of_several_stages(tmp_path):
    path, model, _ = make_checkpoint_file(tmp_path / "s.pt", backbone="resnet18_small", width=8, in_channels=1,
                                          pool_grid=2, feature_stages=3)
    res = export_checkpoint(path, "torchvision", tmp_path / "s.pth")
    assert "last 3 stages" in res.warnings[0]
    namespace: dict = {}
    exec(res.how_to_load, namespace)  # noqa: S102 - our own generated code
    assert sorted(namespace["missing"]) == ["fc.bias", "fc.weight"] and namespace["unexpected"] == []
    namespace["model"].eval()
    model.backbone.eval()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(namespace["features"](x), model.backbone(x), atol=1e-5, rtol=1e-5)


def test_safetensors_export_round_trips(standard_ckpt, tmp_path):
    path, model, _ = standard_ckpt
    res = export_checkpoint(path, "safetensors", tmp_path / "b.safetensors")
    loaded = load_file(tmp_path / "b.safetensors")
    expected = model.backbone.state_dict()
    assert loaded.keys() == expected.keys() and res.num_tensors == len(expected)
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key

    export_checkpoint(path, "safetensors", tmp_path / "all.safetensors", include_heads=True)
    whole = load_file(tmp_path / "all.safetensors")
    assert whole.keys() == model.state_dict().keys()
    assert torch.equal(whole["projector.0.weight"], model.projector[0].weight)


@pytest.mark.parametrize("key, expected", [
    ("conv1.weight", "stem.conv1.weight"),
    ("bn1.running_mean", "stem.conv1.norm.running_mean"),
    ("layer1.0.conv1.weight", "res2.0.conv1.weight"),
    ("layer1.1.bn2.bias", "res2.1.conv2.norm.bias"),
    ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
    ("layer2.0.downsample.1.running_var", "res3.0.shortcut.norm.running_var"),
    ("layer4.2.bn3.weight", "res5.2.conv3.norm.weight"),  # ResNet-50 bottleneck
])
def test_detectron2_key_mapping(key, expected):
    assert detectron2_key(key) == expected


def test_detectron2_export_renames_and_keeps_tensors(standard_ckpt, tmp_path):
    path, model, _ = standard_ckpt
    res = export_checkpoint(path, "detectron2", tmp_path / "d2.pth")
    saved = torch.load(tmp_path / "d2.pth", weights_only=True)
    assert saved["__author__"] == "simsiam" and saved["matching_heuristics"] is True
    d2 = saved["model"]
    source = {k: v for k, v in model.backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(d2) == len(source) == res.num_tensors
    for key, tensor in source.items():
        assert torch.equal(d2[detectron2_key(key)], tensor), key
    assert {"stem.conv1.weight", "stem.conv1.norm.running_var", "res3.0.shortcut.norm.weight",
            "res5.1.conv2.norm.running_mean"} <= d2.keys()
    assert not any(k.startswith(("layer", "bn1", "conv1")) or "downsample" in k for k in d2)
    assert "MODEL.RESNETS.DEPTH 18" in res.how_to_load


def test_export_errors_are_clear(standard_ckpt, tmp_path):
    path, _, _ = standard_ckpt
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        export_checkpoint(tmp_path / "nothing.pt", "torchvision", tmp_path / "x.pth")
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_checkpoint(path, "tflite", tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="name it .pth"):
        export_checkpoint(path, "detectron2", tmp_path / "x.pkl")
    with pytest.raises(ValueError, match="only for --format safetensors"):
        export_checkpoint(path, "torchvision", tmp_path / "x.pth", include_heads=True)
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    assert main(["export", str(tmp_path / "junk.pt"), "--format", "torchvision", "--out", str(tmp_path / "y")]) == 2
