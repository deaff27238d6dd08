import pytest
import torch
from torch import nn

from simsiam import get_preset, resolve
from simsiam.methods import build_method
from simsiam.models import BACKBONES, build_backbone, predictor, projector


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("channels", [1, 3])
def test_backbones_give_pooled_features(name, channels):
    net = build_backbone(name, in_channels=channels, width=8)
    x = torch.randn(2, channels, 32, 32)
    out = net(x)
    assert out.shape == (2, net.num_features)
    expansion = 4 if name == "resnet50" else 1
    assert net.num_features == 8 * 8 * expansion


def test_cifar_stem_is_3x3_stride1_without_maxpool():
    net = build_backbone("resnet18_cifar")
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    imagenet = build_backbone("resnet18")
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)


def test_small_stem_pools_to_half_the_side_with_the_cifar_trunks_parameters():
    small = build_backbone("resnet18_small", in_channels=1, width=8)
    cifar = build_backbone("resnet18_cifar", in_channels=1, width=8)
    x = torch.randn(2, 1, 28, 28)
    assert small.forward_maps(x).shape[-2:] == (2, 2) and cifar.forward_maps(x).shape[-2:] == (4, 4)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.MaxPool2d)
    assert small.state_dict().keys() == cifar.state_dict().keys()  # the same weights: only the pooling differs


@pytest.mark.parametrize("size", [28, 40])
def test_a_pool_grid_keeps_the_layout_of_the_last_stage(size):
    """pool_grid=2: the last stage's map averaged over its four quadrants, flattened channel by channel."""
    torch.manual_seed(0)
    grid = build_backbone("resnet18_small", in_channels=1, width=8, pool_grid=2).eval()
    assert grid.num_features == 4 * build_backbone("resnet18_small", in_channels=1, width=8).num_features
    x = torch.randn(3, 1, size, size)
    with torch.no_grad():
        maps, out = grid.forward_maps(x), grid(x)
    assert out.shape == (3, grid.num_features)
    expected = nn.functional.adaptive_avg_pool2d(maps, 2).flatten(1)
    assert torch.allclose(out, expected) and not torch.allclose(out[:, 0::4], out[:, 3::4])
    with pytest.raises(ValueError, match="pool_grid"):
        build_backbone("resnet18_small", pool_grid=0)
    with pytest.raises(ValueError, match="pools as it was built"):
        build_backbone("timm:resnet18", pool_grid=2)


def test_feature_stages_concatenate_earlier_stages_at_finer_grids():
    """feature_stages=3, pool_grid=2 at 28 px: stage 4 (2x2) as 2x2, stage 3 (4x4) as 4x4, stage 2 (7x7)
    as 8x8, flattened and concatenated in that order; the weights are those of the one-stage trunk."""
    torch.manual_seed(0)
    net = build_backbone("resnet18_small", in_channels=1, width=8, pool_grid=2, feature_stages=3).eval()
    one = build_backbone("resnet18_small", in_channels=1, width=8, pool_grid=2)
    assert net.state_dict().keys() == one.state_dict().keys()
    assert net.num_features == 64 * 2 * 2 + 32 * 4 * 4 + 16 * 8 * 8
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        out = net(x)
        s = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        s2 = net.layer2(net.layer1(s))
        s3 = net.layer3(s2)
        s4 = net.layer4(s3)
    pool = nn.functional.adaptive_avg_pool2d
    expected = torch.cat([pool(s4, 2).flatten(1), pool(s3, 4).flatten(1), pool(s2, 8).flatten(1)], 1)
    assert out.shape == (3, net.num_features) and torch.allclose(out, expected)
    with pytest.raises(ValueError, match="feature_stages must be 1 to 4"):
        build_backbone("resnet18_small", feature_stages=5)
    with pytest.raises(ValueError, match="pools as it was built"):
        build_backbone("timm:resnet18", feature_stages=2)


def test_last_bn_of_every_residual_block_starts_at_zero():
    for name, attr in (("resnet18", "bn2"), ("resnet50", "bn3")):
        net = build_backbone(name, width=8)
        blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
        assert all(torch.all(getattr(b, attr).weight == 0) for b in blocks)
        assert torch.all(net.bn1.weight == 1)


def test_standard_backbone_keys_match_torchvision():
    import torchvision

    ours = set(build_backbone("resnet50").state_dict())
    theirs = set(torchvision.models.resnet50().state_dict())
    assert theirs - ours == {"fc.weight", "fc.bias"} and not ours - theirs


def test_projector_layout_bn_on_every_fc_including_output():
    head = projector(64, 32, 16, num_layers=3)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    two = projector(64, 32, 16, num_layers=2, out_affine=False)
    assert [type(m).__name__ for m in two] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert two[-1].affine is False


def test_predictor_layout_bottleneck_no_bn_or_relu_on_output():
    head = predictor(16, 4)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head[0].out_features == 4 and head[-1].out_features == 16 and head[-1].bias is not None


def test_head_bn_placements():
    def n_bn(m):
        return sum(isinstance(x, nn.BatchNorm1d) for x in m.modules())

    assert n_bn(projector(8, 8, 8, 3, head_bn="none")) == 0 and n_bn(predictor(8, 2, head_bn="none")) == 0
    assert n_bn(projector(8, 8, 8, 3, head_bn="hidden")) == 2 and n_bn(predictor(8, 2, head_bn="hidden")) == 1
    assert n_bn(projector(8, 8, 8, 3, head_bn="default")) == 3 and n_bn(predictor(8, 2, head_bn="default")) == 1
    assert n_bn(predictor(8, 2, head_bn="all")) == 2


def test_predictor_hidden_defaults_to_a_quarter_of_d():
    cfg = resolve(get_preset("cifar10"))
    assert cfg.model.pred_hidden == cfg.model.dim // 4 == 512


def test_every_trainable_parameter_gets_a_gradient_and_no_gradient_reaches_targets():
    cfg = resolve(get_preset("digits"))
    # With the zero-init gammas, the conv feeding each of them has an exactly zero gradient at step 0;
    # turn it off here so that "every parameter gets a non-zero gradient" is a meaningful check.
    cfg.model.zero_init_residual = False
    model = build_method(cfg, in_channels=1)
    views = (torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8))
    out = model.training_step(views)
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []
    assert not out["z"].requires_grad


def test_stop_grad_off_lets_gradient_through_the_target_branch():
    """With stop_grad the gradient reaching z2 comes only via p2; without it, also via the target."""
    cfg = resolve(get_preset("digits"))
    model = build_method(cfg, in_channels=1)
    x1, x2 = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    from simsiam.methods.losses import asymmetric_loss

    for stop_grad, expect_grad in ((True, False), (False, True)):
        model.zero_grad()
        z2 = model.encode(x2)
        z2.retain_grad()
        _, p1 = model(x1)
        asymmetric_loss(p1, z2, stop_grad=stop_grad).backward()
        assert (z2.grad is not None) == expect_grad


def test_frozen_and_identity_predictors():
    cfg = resolve(get_preset("digits"))
    cfg.model.predictor = "frozen"
    frozen = build_method(cfg, 1)
    assert all(not p.requires_grad for p in frozen.predictor.parameters())
    assert [g["name"] for g in frozen.param_groups()] == ["encoder"]
    cfg.model.predictor = "none"
    ident = build_method(cfg, 1)
    assert isinstance(ident.predictor, nn.Identity)


@pytest.mark.parametrize("size", [7, 8, 9])
def test_the_shortcut_conv_computes_a_strided_1x1_convolution_with_its_gradients(size):
    from simsiam.models.backbones import SubsampledPointwiseConv

    torch.manual_seed(0)
    conv = SubsampledPointwiseConv(4, 8, kernel_size=1, stride=2, bias=False)
    x = torch.randn(3, 4, size, size, requires_grad=True)
    out = conv(x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.conv2d(ref_x, conv.weight.detach().clone().requires_grad_(True), stride=2)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad)
