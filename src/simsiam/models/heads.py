"""The MLP heads: one builder makes the projector and the predictor (paper, section 2).

Projector (part of the encoder f): ``fc-BN-ReLU`` x (layers-1), then ``fc-BN`` (no ReLU on the
output). Predictor h: ``fc(d/4)-BN-ReLU`` then ``fc(d)`` (no BN and no ReLU on the output).
Where BN goes is an argument (Table 3's ablation), not a subclass.
"""
from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, *, bn_hidden: bool = True,
        bn_out: bool = False, bn_out_affine: bool = True) -> nn.Sequential:
    """``num_layers`` fully connected layers; ReLU after every hidden one, BN where asked.

    A linear layer followed by BN has no bias: BN's shift makes it redundant (the paper's code too).
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not bn_hidden))
        if bn_hidden:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not bn_out))
    if bn_out:
        layers.append(nn.BatchNorm1d(out_dim, affine=bn_out_affine))
    return nn.Sequential(*layers)


# Table 3: where BN goes in the heads. (projector hidden, projector output, predictor hidden,
# predictor output); the hidden layers of both heads share one switch, as in the paper.
HEAD_BN = {
    "none": dict(hidden=False, proj_out=False, pred_out=False),
    "hidden": dict(hidden=True, proj_out=False, pred_out=False),
    "default": dict(hidden=True, proj_out=True, pred_out=False),
    "all": dict(hidden=True, proj_out=True, pred_out=True),
}


def projector(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, head_bn: str = "default",
              out_affine: bool = True) -> nn.Sequential:
    bn = HEAD_BN[head_bn]
    return mlp(in_dim, hidden_dim, out_dim, num_layers, bn_hidden=bn["hidden"], bn_out=bn["proj_out"],
               bn_out_affine=out_affine)


def predictor(dim: int, hidden_dim: int, head_bn: str = "default") -> nn.Sequential:
    bn = HEAD_BN[head_bn]
    return mlp(dim, hidden_dim, dim, 2, bn_hidden=bn["hidden"], bn_out=bn["pred_out"])


def projector_for(model, in_dim: int) -> nn.Sequential:
    """The projector a ``config.Model`` describes, on a backbone of ``in_dim`` features: every
    method builds its heads from the same fields, so an ablation of the heads applies to all."""
    return projector(in_dim, model.proj_hidden, model.dim, model.proj_layers, head_bn=model.head_bn,
                     out_affine=model.proj_out_bn_affine)


def predictor_for(model) -> nn.Sequential:
    """The prediction MLP a ``config.Model`` describes (d -> pred_hidden -> d)."""
    return predictor(model.dim, model.pred_hidden, head_bn=model.head_bn)
