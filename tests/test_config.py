import pytest

from simsiam import ConfigError, apply_overrides, get_preset, resolve
from simsiam.config import apply_mapping, from_dict, valid_keys


def test_overrides_are_typed():
    cfg = apply_overrides(get_preset("fmnist"), ["optim.base_lr=1e-2", "optim.epochs=3", "loss.stop_grad=false",
                                                 "data.data_dir=/x"])
    assert cfg.optim.base_lr == 0.01 and cfg.optim.epochs == 3 and cfg.loss.stop_grad is False
    assert cfg.data.data_dir == "/x"


def test_unknown_key_names_it_and_the_valid_choices():
    with pytest.raises(ConfigError) as err:
        apply_overrides(get_preset("fmnist"), ["optim.lrr=0.1"])
    assert "optim.lrr" in str(err.value) and "base_lr" in str(err.value)
    with pytest.raises(ConfigError, match="no field 'optimm'"):
        apply_overrides(get_preset("fmnist"), ["optimm.epochs=1"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="optim.epochs: expected an integer"):
        apply_overrides(get_preset("fmnist"), ["optim.epochs=ten"])
    with pytest.raises(ConfigError, match="loss.stop_grad: expected true/false"):
        apply_overrides(get_preset("fmnist"), ["loss.stop_grad=maybe"])


def test_bad_choice_lists_the_valid_ones():
    cfg = apply_overrides(get_preset("fmnist"), ["model.predictor=mlpp"])
    with pytest.raises(ConfigError, match="mlp, none, frozen"):
        resolve(cfg)
    cfg = apply_overrides(get_preset("fmnist"), ["data.dataset=mnist"])
    with pytest.raises(ConfigError, match="fmnist"):
        resolve(cfg)


def test_resolve_fills_the_augmentation_from_its_recipe():
    cfg = resolve(get_preset("cifar10"))
    assert cfg.aug.blur_p == 0.0 and cfg.aug.crop_scale_min == 0.2 and cfg.aug.jitter_p == 0.8
    cfg = resolve(apply_overrides(get_preset("cifar10"), ["aug.blur_p=0.3"]))
    assert cfg.aug.blur_p == 0.3  # an explicit value wins over the recipe


def test_yaml_mapping_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  epochs: 7\nmodel:\n  width: 24\n")
    from simsiam.config import load_yaml

    cfg = apply_mapping(get_preset("fmnist"), load_yaml(path))
    assert cfg.optim.epochs == 7 and cfg.model.width == 24
    assert from_dict(cfg.to_dict()) == cfg
    assert "optim.base_lr" in valid_keys()


def test_presets_follow_the_paper():
    c = get_preset("cifar10")
    assert (c.model.backbone, c.model.proj_layers, c.model.dim, c.optim.base_lr, c.optim.weight_decay,
            c.optim.epochs, c.optim.batch_size, c.aug.recipe) == ("resnet18_cifar", 2, 2048, 0.03, 5e-4, 800, 512, "cifar")
    i = get_preset("imagenet")
    assert (i.model.backbone, i.model.proj_layers, i.optim.base_lr, i.optim.weight_decay) == ("resnet50", 3, 0.05, 1e-4)
    assert all(get_preset(n).optim.fix_pred_lr for n in ("cifar10", "imagenet", "fmnist"))


def test_every_preset_resolves_and_the_cpu_ones_state_a_budget_in_images():
    from simsiam.config.presets import PRESETS

    for name, make in PRESETS.items():
        cfg = resolve(make())
        assert cfg.preset == name
        assert cfg.optim.epochs > 0 or cfg.optim.budget_images > 0, name
    for name in ("fmnist", "small"):
        cfg = get_preset(name)
        assert cfg.optim.epochs == 0 and cfg.optim.budget_images > 0 and cfg.model.backbone == "resnet18_small"
    assert get_preset("small").data.dataset == "imagefolder"
