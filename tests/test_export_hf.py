"""`simsiam export --format hf`: the folder loads back bitwise (load_pretrained, `import --from hf`,
huggingface_hub's loader), `simsiam knn` reads it, its card names the run's figures, and the
printed lines load the backbone in plain torchvision."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from simsiam.artifacts.checkpoint import CheckpointError
from simsiam.artifacts.runlog import read_metrics
from simsiam.cli import main
from simsiam.eval.pretrained import load_pretrained
from simsiam.interop import import_checkpoint


@pytest.fixture(scope="module")
def exported(finished_digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "digits-simsiam"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(finished_digits_run.run_dir), "--format", "hf", "--out", str(out)]) == 0
    return finished_digits_run.run_dir, out, printed.getvalue()


def _bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_the_folder_holds_the_convention_s_files_and_loads_back_bitwise(exported, tmp_path):
    run, out, _ = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    original = load_pretrained(run)[0].state_dict()
    assert _bitwise_equal(load_pretrained(out)[0].state_dict(), original)
    assert _bitwise_equal(load_file(out / "model.safetensors"), original)
    res = import_checkpoint(out, "hf", tmp_path / "again")
    assert _bitwise_equal(load_pretrained(res.run_dir)[0].state_dict(), original)
    info = json.loads((out / "config.json").read_text())
    assert info["config"]["data"]["dataset"] == "digits" and info["backbone"] == "resnet18_cifar"


def test_huggingface_hub_loads_the_folder_into_the_model(exported):
    hub = pytest.importorskip("huggingface_hub")
    run, out, _ = exported
    model, _ = load_pretrained(run)
    for p in model.parameters():
        p.data.zero_()
    hub.load_torch_model(model, out)  # strict: every key of the model, nothing more
    assert _bitwise_equal(model.state_dict(), load_pretrained(run)[0].state_dict())


def test_knn_reads_the_folder_and_the_card_names_the_run_s_figures(exported, capsys):
    run, out, _ = exported
    card = (out / "README.md").read_text()
    last = [r for r in read_metrics(run) if r.get("kind") == "epoch"][-1]
    assert card.startswith("---\nlibrary_name: simsiam\n")  # the Hub's metadata header
    assert f"{last['knn_acc']:.2f}%" in card and "raw pixels" in card  # the monitor's kNN and the baselines
    # the command as report.md has it ("python API" here: pytest called main(), not the simsiam script)
    assert "preset: `digits`" in card and "- command: `python API`" in card
    assert main(["knn", str(out), "--k", "20"]) == 0
    assert f"| 20 | 0.1 | {last['knn_acc']:.2f} |" in capsys.readouterr().out  # the run's own figure again


def test_the_printed_lines_load_the_backbone_in_plain_torchvision(exported):
    run, out, printed = exported
    lines = printed.split("# without it", 1)[1].split("\n", 1)[1]
    scope: dict = {}
    exec(lines, scope)  # noqa: S102 -- the lines the user is told to run
    tv = scope["model"]
    assert sorted(scope["missing"]) == ["fc.bias", "fc.weight"] and scope["unexpected"] == []
    tv.fc = torch.nn.Identity()
    backbone = load_pretrained(run)[0].backbone
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(tv.eval()(x), backbone(x), atol=1e-5, rtol=1e-5)


def test_a_cut_safetensors_file_is_refused_in_one_line(exported, tmp_path):
    _, out, _ = exported
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text((out / "config.json").read_text())
    data = (out / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_pretrained(cut)
