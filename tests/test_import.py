"""`simsiam import`: checkpoints of the official release, lightly, solo-learn, torchvision and timm,
built by hand in their layouts, import to a model whose outputs equal the source network's; bad
files are refused with one line each."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import torchvision
from fixtures_data import make_imagefolder
from fixtures_foreign import OfficialSimSiam, official_as_lightly, official_as_solo_learn, save_official

from simsiam.artifacts.checkpoint import CheckpointError
from simsiam.cli import main
from simsiam.eval.export import export_checkpoint
from simsiam.eval.pretrained import load_pretrained
from simsiam.interop import import_checkpoint


def _outputs_equal(source: torch.nn.Module, model: torch.nn.Module, size: int = 64) -> None:
    """z and p of both networks on the same batch, in eval mode and in train mode (batch statistics)."""
    # 16 images: train-mode BN normalises by the batch's statistics, which a batch of a few makes ill-conditioned
    x = torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(1))
    for train in (False, True):
        source.train(train)
        model.train(train)
        with torch.no_grad():
            (z_src, p_src), (z, p) = source(x), model(x)
        torch.testing.assert_close(z, z_src, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(p, p_src, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def official18(tmp_path_factory):
    net = OfficialSimSiam("resnet18", dim=64, pred_dim=16)
    return net, save_official(net, tmp_path_factory.mktemp("official") / "checkpoint_0099.pth.tar")


@pytest.fixture(scope="module")
def official50(tmp_path_factory):
    """The official release's shape: ResNet-50, 3-layer projector 2048 -> 2048, predictor bottleneck 512."""
    net = OfficialSimSiam("resnet50", dim=2048, pred_dim=512)
    return net, save_official(net, tmp_path_factory.mktemp("official50") / "checkpoint_0099.pth.tar", arch="resnet50")


def test_official_resnet50_reads_its_architecture_from_the_tensors_and_gives_the_source_outputs(official50, tmp_path,
                                                                                                capsys):
    net, path = official50
    assert main(["import", str(path), "--from", "official", "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "module.encoder.fc.*" in printed and "folded" in printed and "optimizer" in printed
    model, cfg = load_pretrained(tmp_path / "run")
    m = cfg.model
    assert (m.backbone, m.width, m.in_channels) == ("resnet50", 64, 3)
    assert (m.proj_layers, m.proj_hidden, m.dim, m.pred_hidden) == (3, 2048, 2048, 512)
    assert (m.head_bn, m.proj_out_bn_affine) == ("default", False)  # the output BN without affine
    _outputs_equal(net, model)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["imported_from"]["format"] == "official" and config["imported_from"]["epoch"] == 100
    assert len(config["imported_from"]["sha256"]) == 64


def test_an_imported_resnet50_takes_the_evaluation_commands_and_exports_to_onnx(official50, tmp_path, capsys):
    _, path = official50
    run = tmp_path / "run"
    make_imagefolder(tmp_path / "data")
    assert main(["import", str(path), "--from", "official", "--out", str(run), "--dataset", "imagefolder",
                 "--data-dir", str(tmp_path / "data")]) == 0
    assert main(["knn", str(run), "--k", "3"]) == 0
    assert "| 3 | 0.1 |" in capsys.readouterr().out
    assert main(["linear", str(run), "--cached-features", "--epochs", "2", "--batch-size", "4", "--quiet"]) == 0
    assert "top-1" in capsys.readouterr().out
    assert main(["embed", str(run), "--data", str(tmp_path / "data" / "train"), "--out", str(tmp_path / "emb"),
                 "--quiet"]) == 0
    assert (tmp_path / "emb" / "embeddings.npy").is_file()
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):  # the onnx extra
        assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "b.onnx")]) == 0
        assert (tmp_path / "b.onnx").stat().st_size > 1_000_000


def test_lightly_and_solo_learn_layouts_of_the_same_weights_import_to_the_same_model(official18, tmp_path):
    net, path = official18
    files = {"official": path,
             "lightly": official_as_lightly(net, tmp_path / "lightly.ckpt"),
             "lightly-named": official_as_lightly(net, tmp_path / "lightly-named.ckpt", sequential_backbone=False),
             "solo-learn": official_as_solo_learn(net, tmp_path / "solo.ckpt")}
    states = {}
    for name, file in files.items():
        res = import_checkpoint(file, name.replace("-named", ""), tmp_path / name)
        states[name] = load_pretrained(res.run_dir)[0].state_dict()
    reference = states.pop("official")
    for name, state in states.items():
        assert state.keys() == reference.keys(), name
        assert all(torch.equal(state[k], reference[k]) for k in state), name
    solo = (tmp_path / "solo-learn" / "import.md").read_text()
    assert "classifier.weight" in solo and "online linear classifier" in solo  # left out, and said why
    _outputs_equal(net, load_pretrained(tmp_path / "lightly")[0], size=32)


def test_a_torchvision_resnet_imports_with_its_classifier_left_out_and_fresh_heads(tmp_path):
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    res = import_checkpoint(tmp_path / "r18.pth", "torchvision", tmp_path / "run")
    assert "torchvision's classifier" in res.table and "initialised (seed 0)" in res.table
    model, _ = load_pretrained(res.run_dir)
    tv.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x), tv.eval()(x), atol=1e-5, rtol=1e-5)


def test_a_timm_state_dict_imports_by_its_model_name(tmp_path):
    timm = pytest.importorskip("timm")
    source = timm.create_model("resnet18", pretrained=False).eval()
    torch.save(source.state_dict(), tmp_path / "timm.pth")
    res = import_checkpoint(tmp_path / "timm.pth", "timm:resnet18", tmp_path / "run")
    assert "timm's classifier" in res.table
    model, cfg = load_pretrained(res.run_dir)
    assert cfg.model.backbone == "timm:resnet18"
    source.reset_classifier(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x), source(x), atol=1e-5, rtol=1e-5)
    # and out again as a Hugging Face folder, whose printed lines load the backbone in plain timm
    res = export_checkpoint(res.run_dir, "hf", tmp_path / "hf")
    scope: dict = {}
    exec(res.how_to_load.split("# without it", 1)[1].split("\n", 1)[1], scope)  # noqa: S102 -- the printed lines
    with torch.no_grad():
        torch.testing.assert_close(scope["model"].eval()(x), source(x), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ bad input


def _refused(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_a_vit_checkpoint_is_refused_saying_what_it_is(tmp_path, capsys):
    vit = {"module.encoder.cls_token": torch.zeros(1, 1, 8), "module.encoder.pos_embed": torch.zeros(1, 5, 8),
           "module.encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16),
           "module.encoder.blocks.0.attn.qkv.weight": torch.zeros(24, 8)}
    torch.save({"epoch": 1, "arch": "vit_small", "state_dict": vit}, tmp_path / "vit.pth.tar")
    err = _refused(capsys, "import", str(tmp_path / "vit.pth.tar"), "--from", "official", "--out", str(tmp_path / "r"))
    assert "Vision Transformer" in err and "expects a ResNet" in err
    assert not (tmp_path / "r").exists()


def test_a_truncated_checkpoint_is_refused(official18, tmp_path, capsys):
    _, path = official18
    data = path.read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[: len(data) // 2])
    err = _refused(capsys, "import", str(tmp_path / "cut.pth.tar"), "--from", "official", "--out", str(tmp_path / "r"))
    assert "truncated or corrupt" in err


def test_unexpected_keys_are_named(official18, tmp_path, capsys):
    _, path = official18
    saved = torch.load(path, weights_only=True)
    saved["state_dict"]["module.queue"] = torch.zeros(4, 4)
    torch.save(saved, tmp_path / "extra.pth.tar")
    err = _refused(capsys, "import", str(tmp_path / "extra.pth.tar"), "--from", "official", "--out", str(tmp_path / "r"))
    assert "unexpected key" in err and "module.queue" in err


def test_a_lightly_checkpoint_without_its_projector_is_refused(official18, tmp_path, capsys):
    net, _ = official18
    path = official_as_lightly(net, tmp_path / "lightly.ckpt", projector=False)
    err = _refused(capsys, "import", str(path), "--from", "lightly", "--out", str(tmp_path / "r"))
    assert "no projection_head.layers.*" in err and "--from torchvision" in err


def test_a_checkpoint_holding_objects_is_refused_without_running_them(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("PAYLOAD RAN",))

    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Payload()}, tmp_path / "pickled.pth")
    err = _refused(capsys, "import", str(tmp_path / "pickled.pth"), "--from", "official", "--out", str(tmp_path / "r"))
    assert "pickled Python objects" in err and "PAYLOAD RAN" not in err


def test_a_shape_that_does_not_fit_is_named(official18, tmp_path):
    _, path = official18
    saved = torch.load(path, weights_only=True)
    saved["state_dict"]["module.encoder.layer1.0.bn1.running_var"] = torch.ones(3)
    torch.save(saved, tmp_path / "bad.pth.tar")
    with pytest.raises(CheckpointError, match=r"layer1\.0\.bn1\.running_var \(3,\) in the file"):
        import_checkpoint(tmp_path / "bad.pth.tar", "official", tmp_path / "r")


def test_an_imported_run_is_not_resumed_as_a_training_run(official18, tmp_path, capsys):
    _, path = official18
    import_checkpoint(path, "official", tmp_path / "run", preset="digits")
    err = _refused(capsys, "pretrain", "--resume", str(tmp_path / "run"))
    assert "it was imported" in err and "holds weights, not a training state" in err
