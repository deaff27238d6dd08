"""ONNX export: onnxruntime gives the PyTorch features at two batch sizes; the printed lines work.

Each export traces the model with torch.export (a few seconds), so the exports are shared."""
import numpy as np
import pytest
import torch
from fixtures_checkpoints import make_checkpoint_file

from simsiam.cli import main
from simsiam.eval.export import export_checkpoint
from simsiam.eval.pretrained import load_pretrained

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    path, _, _ = make_checkpoint_file(tmp_path_factory.mktemp("onnx") / "checkpoint.pt", backbone="resnet18_cifar",
                                      width=8, in_channels=1)
    return path


def _assert_matches(path, net, size):
    session = ort.InferenceSession(str(path))
    for batch in (1, 7):  # the batch axis is dynamic: the export traced batch 2
        x = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_onnx_backbone_matches_pytorch_and_the_printed_lines_embed_an_image(digits_ckpt, tmp_path, capsys,
                                                                            monkeypatch):
    from PIL import Image

    out = tmp_path / "backbone.onnx"
    assert main(["export", str(digits_ckpt), "--format", "onnx", "--out", str(out)]) == 0
    model, cfg = load_pretrained(digits_ckpt)
    _assert_matches(out, model.backbone, cfg.data.image_size)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["image_size"] == str(cfg.data.image_size) and meta["channels"] == "1"

    lines = capsys.readouterr().out.split("To load it:\n", 1)[1]
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(tmp_path / "image.png")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(lines, scope)  # the printed lines, run as a user would paste them
    assert scope["features"].shape == (1, model.backbone.num_features)


def test_onnx_with_the_projector_outputs_z(digits_ckpt, tmp_path):
    out = export_checkpoint(digits_ckpt, "onnx", tmp_path / "encoder.onnx", include_heads=True).path
    model, cfg = load_pretrained(digits_ckpt)
    _assert_matches(out, model.encode, cfg.data.image_size)


def test_onnx_of_features_from_several_stages_at_grids_that_do_not_divide_the_maps(tmp_path):
    """feature_stages=4 at 28 px: stage 2's 7x7 map pooled to 4x4 and stage 1's 14x14 to 8x8 (uneven bins)."""
    from types import SimpleNamespace

    from simsiam.eval.export_onnx import export_onnx
    from simsiam.models.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("resnet18_small", in_channels=1, width=8, feature_stages=4).eval()
    assert backbone.num_features == 64 * 1 + 32 * 4 + 16 * 16 + 8 * 64
    out = export_onnx(SimpleNamespace(backbone=backbone), tmp_path / "stages.onnx", channels=1, image_size=28,
                      metadata={})
    _assert_matches(out, backbone, 28)
