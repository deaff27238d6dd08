"""Checkpoints in other implementations' layouts, built by hand from their public descriptions, for
the import tests: the official release's, lightly's, solo-learn's, a plain torchvision ResNet's."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn


def _randomise_bn(net: nn.Module, seed: int) -> nn.Module:
    """BN statistics and affines away from their initial 0/1, so that eval mode tests them."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) * 0.4 + 0.3)  # < 1: features stay O(1)
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net


class OfficialSimSiam(nn.Module):
    """The official model as its README and paper describe it: a torchvision ResNet whose ``fc`` is
    the projector (Linear-BN-ReLU twice, Linear with a bias, BN without affine) and a predictor
    (Linear-BN-ReLU, Linear)."""

    def __init__(self, arch: str = "resnet18", dim: int = 64, pred_dim: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = getattr(torchvision.models, arch)(num_classes=dim)
        width = self.encoder.fc.in_features
        last = self.encoder.fc  # Linear(width, dim) with its bias
        self.encoder.fc = nn.Sequential(nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
                                        nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
                                        last, nn.BatchNorm1d(dim, affine=False))
        self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(),
                                       nn.Linear(pred_dim, dim))
        _randomise_bn(self, seed)

    def forward(self, x):
        z = self.encoder(x)
        return z, self.predictor(z)


def save_official(net: OfficialSimSiam, path: Path, arch: str = "resnet18") -> Path:
    """As the official script saves: ``{'epoch', 'arch', 'state_dict', 'optimizer'}``, DDP's ``module.``."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 100, "arch": arch, "state_dict": state, "optimizer": optimizer.state_dict()}, path)
    return path


# torchvision ResNet children with tensors -> their index in nn.Sequential(*resnet.children()[:-1]) (lightly)
_CHILD_INDEX = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


def official_as_lightly(net: OfficialSimSiam, path: Path, sequential_backbone: bool = True,
                        projector: bool = True) -> Path:
    """The same function in lightly's layout: its projection head has no bias before the output BN
    (folded into the BN's running mean here), in a Lightning-style ``state_dict`` entry."""
    state = {}
    for k, v in net.encoder.state_dict().items():
        head, _, rest = k.partition(".")
        if head == "fc":
            if projector:
                state[f"projection_head.layers.{rest}"] = v
        else:
            state[f"backbone.{_CHILD_INDEX[head]}.{rest}" if sequential_backbone else f"backbone.{k}"] = v
    if projector:
        bias = state.pop("projection_head.layers.6.bias")
        state["projection_head.layers.7.running_mean"] = state["projection_head.layers.7.running_mean"] - bias
    state.update({f"prediction_head.layers.{k}": v for k, v in net.predictor.state_dict().items()})
    torch.save({"state_dict": state, "epoch": 10, "global_step": 100}, path)
    return path


def official_as_solo_learn(net: OfficialSimSiam, path: Path, num_classes: int = 10) -> Path:
    """The same weights in solo-learn's layout (backbone.*, projector.*, predictor.*, its online classifier)."""
    state = {}
    for k, v in net.encoder.state_dict().items():
        state[f"projector.{k[3:]}" if k.startswith("fc.") else f"backbone.{k}"] = v
    state.update({f"predictor.{k}": v for k, v in net.predictor.state_dict().items()})
    width = net.encoder.fc[0].in_features
    state["classifier.weight"], state["classifier.bias"] = torch.randn(num_classes, width), torch.zeros(num_classes)
    torch.save({"state_dict": state, "epoch": 10, "global_step": 100, "pytorch-lightning_version": "2.0.0"}, path)
    return path
