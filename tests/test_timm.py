"""timm backbones (``model.backbone=timm:<name>``) and a backbone of your own through the Python API.

timm's test-sized models (a ResNet, a ConvNeXt, a ViT; a few hundred thousand parameters each)
on digits upsampled to 32 pixels (a ConvNeXt's four stride-2 stages need at least 32).
"""
import copy
import json

import pytest
import torch
from test_training import _run_one_epoch_of
from torch import nn

from simsiam import ConfigError, load_pretrained, pretrain, resolve
from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.config.overrides import from_dict
from simsiam.eval.baselines import baseline_knn
from simsiam.methods import build_method

timm = pytest.importorskip("timm")

MODELS = ["timm:test_resnet", "timm:test_convnext", "timm:test_vit"]


def _timm_cfg(cfg, name):
    cfg.model.backbone = name
    cfg.data.image_size = 32
    cfg.data.train_limit, cfg.optim.batch_size = 32, 16  # two steps an epoch
    cfg.data.eval_split = ""
    return cfg


@pytest.mark.parametrize("name", MODELS)
def test_every_trainable_parameter_of_a_timm_backbone_gets_a_gradient(digits_cfg, name):
    cfg = resolve(_timm_cfg(digits_cfg, name))
    method = build_method(cfg, in_channels=1)
    assert method.backbone.num_features == method.projector[0].in_features  # num_features sizes the heads
    # timm's ResNets zero the last BN gamma of each block (as the paper does): the convs feeding it get
    # an exactly zero gradient at step 0, so give those gammas a value for a meaningful check.
    for m in method.backbone.modules():
        if isinstance(m, nn.BatchNorm2d) and not m.weight.any():
            nn.init.ones_(m.weight)
    views = (torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32))
    method.training_step(views)["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing


@pytest.mark.parametrize("name", MODELS)
def test_timm_backbone_trains_and_resumes_exactly(tmp_path, digits_cfg, name):
    cfg = _timm_cfg(digits_cfg, name)
    straight = copy.deepcopy(cfg)
    straight.run.out_dir = str(tmp_path / "straight")
    pretrain(straight)

    interrupted = copy.deepcopy(cfg)
    interrupted.run.out_dir = str(tmp_path / "resumed")
    _run_one_epoch_of(interrupted)  # as a crash after the first epoch's checkpoint would
    pretrain(interrupted, resume=True)

    a = ckpt_io.load(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = ckpt_io.load(tmp_path / "resumed" / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_timm_run_with_channels_last_bf16_knn_and_exports(tmp_path, digits_cfg):
    from simsiam import knn_evaluate
    from simsiam.eval.export import export_checkpoint

    cfg = _timm_cfg(digits_cfg, "timm:test_convnext")
    cfg.optim.epochs = 1
    cfg.run.channels_last, cfg.run.amp = True, "bf16"
    cfg.data.eval_split, cfg.data.eval_limit, cfg.monitor.knn_k = "test", 40, 5
    result = pretrain(cfg)
    assert 0 <= result.final["knn_acc"] <= 100
    knn = knn_evaluate(result.run_dir, ks=(5,), train_limit=40, eval_limit=20)
    assert len(knn["accuracy"]) == 1

    model, _ = load_pretrained(result.run_dir)
    out = export_checkpoint(result.run_dir, "safetensors", tmp_path / "b.safetensors")
    assert out.num_tensors == len(model.backbone.state_dict())
    with pytest.raises(ValueError, match="for the built-in ResNets.*safetensors or onnx"):
        export_checkpoint(result.run_dir, "torchvision", tmp_path / "b.pt")
    try:
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        return
    onnx_path = export_checkpoint(result.run_dir, "onnx", tmp_path / "b.onnx").path
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected = model.backbone(x).numpy()
    got = onnxruntime.InferenceSession(str(onnx_path)).run(None, {"images": x.numpy()})[0]
    assert abs(got - expected).max() < 1e-4


def test_timm_names_are_checked_before_anything_runs(digits_cfg, monkeypatch):
    digits_cfg.model.backbone = "timm:resnet_does_not_exist"
    with pytest.raises(ConfigError, match="timm has no model 'resnet_does_not_exist'"):
        resolve(digits_cfg)
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ImportError("no timm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    digits_cfg.model.backbone = "timm:resnet18"
    with pytest.raises(ConfigError, match=r"needs timm, which is not installed: pip install simsiam\[timm\]"):
        resolve(digits_cfg)


class TinyNet(nn.Module):
    """A backbone of your own: anything with ``num_features`` whose forward gives (B, num_features)."""

    def __init__(self):
        super().__init__()
        self.num_features = 16
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.body(x)


def test_a_backbone_of_your_own_trains_resumes_and_loads(tmp_path, digits_cfg):
    cfg = _timm_cfg(digits_cfg, "resnet18_cifar")
    cfg.data.image_size = 8
    cfg.optim.epochs = 1
    result = pretrain(cfg, backbone=TinyNet())
    saved = ckpt_io.load(result.run_dir / "checkpoint.pt")
    assert saved["config"]["model"]["backbone"] == "custom:TinyNet"
    cfg.optim.epochs = 2
    pretrain(cfg, resume=True, backbone=TinyNet())
    model, _ = load_pretrained(result.run_dir, backbone=TinyNet())
    assert model.backbone(torch.randn(3, 1, 8, 8)).shape == (3, 16)
    with pytest.raises(ValueError, match=r"your own backbone \(custom:TinyNet\).*backbone=TinyNet\(...\)"):
        load_pretrained(result.run_dir)
    cfg.run.out_dir = str(tmp_path / "other")
    with pytest.raises(ValueError, match="needs an integer attribute num_features"):
        pretrain(cfg, backbone=nn.Conv2d(1, 4, 3))


def test_a_backbone_of_your_own_gets_its_baselines_from_its_own_initialisation(tmp_path, digits_cfg):
    """The run's end compares with the random-init network: built from the config for a named backbone,
    but a module of your own can only be the one passed, as it was before training."""
    cfg = digits_cfg
    cfg.data.train_limit, cfg.data.eval_limit, cfg.optim.epochs = 256, 64, 1
    net = TinyNet()
    untrained = {k: v.clone() for k, v in net.state_dict().items()}
    result = pretrain(cfg, backbone=net)
    assert "knn_acc" in result.final
    assert not all(torch.equal(untrained[k], v) for k, v in net.state_dict().items())  # it trained

    fresh = TinyNet()
    fresh.load_state_dict(untrained)
    run_cfg = from_dict(json.loads((result.run_dir / "config.json").read_text()))
    expected = baseline_knn(run_cfg, k=cfg.monitor.knn_k, t=cfg.monitor.knn_t, random_backbone=fresh)
    assert result.final["baselines"] == expected


def test_sync_bn_refuses_a_batchnorm_with_its_own_forward():
    from timm.layers import BatchNormAct2d

    from simsiam.parallel.sync_bn import convert_sync_batchnorm

    model = nn.Sequential(nn.Conv2d(1, 4, 3), BatchNormAct2d(4))
    with pytest.raises(ValueError, match="1 is a BatchNormAct2d.*run.sync_bn=false"):
        convert_sync_batchnorm(model, torch.device("cpu"))
    converted = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)), torch.device("cpu"))
    assert type(converted[1]).__name__ == "CpuSyncBatchNorm"
