"""A checkpoint whose weights hold NaN or inf is refused by every command that reads weights, with one
line naming the tensors; ``pretrain`` never writes one (it keeps the last good checkpoint)."""
import pytest
import torch
from fixtures_checkpoints import make_checkpoint_file
from fixtures_data import save_image

from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.cli import main
from simsiam.train import step as step_module

TINY = ["--preset", "digits", "--quiet", "data.eval_split=", "model.width=4", "model.proj_hidden=32", "model.dim=32",
        "data.train_limit=256", "run.deterministic=true"]


def _poisoned(path, keys: int = 1):
    """A valid checkpoint, then NaN written into its first ``keys`` float tensors; their names."""
    make_checkpoint_file(path, width=4)
    ckpt = torch.load(path, weights_only=True)
    names = [k for k, v in ckpt["model"].items() if v.is_floating_point()][:keys]
    for k in names:
        ckpt["model"][k].fill_(float("nan"))
    ckpt_io.save_atomic(ckpt, path)
    return names


@pytest.fixture
def damaged(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    names = _poisoned(run / "checkpoint.pt", keys=5)
    images = tmp_path / "images"
    for i in range(4):
        save_image(images / f"{i}.png", size=(8, 8), seed=i, mode="L")
    return run, names, images


@pytest.mark.parametrize("command", ["knn", "embed", "similar", "export", "linear", "finetune", "predict", "resume"])
def test_every_command_refuses_non_finite_weights_in_one_line(damaged, tmp_path, capsys, command):
    run, names, images = damaged
    ckpt = str(run / "checkpoint.pt")
    out = str(tmp_path / "out")
    argv = {"knn": ["knn", ckpt], "linear": ["linear", ckpt], "finetune": ["finetune", ckpt, "--out", out],
            "embed": ["embed", ckpt, "--data", str(images), "--out", out],
            "similar": ["similar", ckpt, "--data", str(images), "--out", out],
            "export": ["export", ckpt, "--format", "torchvision", "--out", out + ".pth"],
            "predict": ["predict", ckpt, "--data", str(images), "--out", out],
            "resume": ["pretrain", "--resume", str(run)]}[command]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert "is damaged" in line and "NaN or inf" in line and ckpt in line
    assert f"5 tensor(s) ({', '.join(names[:3])} and 2 more)" in line
    if command == "resume":  # what a resumed run can do instead
        assert "no earlier checkpoint is kept" in line and "start the run anew" in line
    assert not list(tmp_path.glob("out*/**/*.*")) and not (tmp_path / "out.pth").exists()  # nothing written


def test_a_resume_is_pointed_at_the_earlier_checkpoints_kept(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    make_checkpoint_file(run / "checkpoint.pt", width=4)
    ckpt_io.keep_recent(run / "checkpoint.pt", 8, keep=2)  # a good one kept as checkpoint-step000000008.pt
    _poisoned(run / "checkpoint.pt")  # replaced (renamed over): the kept copy stays good
    ckpt_io.keep_recent(run / "checkpoint.pt", 12, keep=2)  # the damaged one's own hard link: not an earlier one
    assert main(["pretrain", "--resume", str(run)]) == 2
    line = capsys.readouterr().err.strip()
    assert "checkpoint-step000000008.pt" in line and "step000000012" not in line and "copy it over" in line
    assert torch.isfinite(ckpt_io.load(run / "checkpoint-step000000008.pt")["model"]["backbone.conv1.weight"]).all()


def test_finite_weights_load_and_the_check_sees_optimizer_state_and_inf(tmp_path):
    path, _, _ = make_checkpoint_file(tmp_path / "ok.pt", width=4)
    assert ckpt_io.non_finite_tensors(ckpt_io.load(path)) == []
    ckpt = torch.load(path, weights_only=True)
    ckpt["optimizer"]["state"] = {3: {"momentum_buffer": torch.tensor([1.0, float("inf")])}}
    ckpt["rng"] = {"torch": torch.tensor([float("nan")])}  # not weights: not looked at
    assert ckpt_io.non_finite_tensors(ckpt) == ["optimizer.state.3.momentum_buffer"]


def test_pretrain_never_writes_non_finite_weights(tmp_path, capsys, monkeypatch):
    """Weights poisoned after step 3 of a run checkpointing every 2 steps: the step-4 checkpoint is
    refused with one line, and the step-2 one stays as it was."""
    real_call = step_module.TrainStep.__call__

    def call_then_poison(self, views, step):
        out = real_call(self, views, step)
        if step + 1 == 3:
            with torch.no_grad():
                next(self.method.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(step_module.TrainStep, "__call__", call_then_poison)
    run = tmp_path / "run"
    code = main(["pretrain", *TINY, "data.train_limit=1024", "--epochs", "1", "--out-dir", str(run),
                 "run.checkpoint_every_steps=2", "run.log_every=1000"])  # 8 steps: checkpoints at steps 2, 4, ...
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert "weights became NaN or inf by step 4" in lines[0] and "checkpoint was not written" in lines[0]
    assert f"{run / 'checkpoint.pt'}, is intact" in lines[0]
    kept = ckpt_io.load(run / "checkpoint.pt")  # loads: finite
    assert kept["step"] == 2
