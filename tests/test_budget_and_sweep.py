"""The budget in images seen (``optim.epochs=0``), ``simsiam sweep`` (rows, ranking, shared runs between
processes) and the kNN monitor's two temperatures."""
import json

import pytest

from simsiam import get_preset
from simsiam.artifacts.run_lock import LOCK_NAME
from simsiam.cli import main
from simsiam.config import ConfigError, apply_overrides
from simsiam.data.sampler import EpochSampler, images_per_epoch
from simsiam.reproduce.runner import _claim, run_rows
from simsiam.reproduce.sweep import parse_axes, sweep_rows
from simsiam.resolve import resolve
from simsiam.train.budget import epochs_for, settle_budget, settle_for_data

SMALL = ["data.train_limit=256", "data.eval_limit=64", "optim.batch_size=64"]


def test_a_budget_in_images_gives_a_small_dataset_more_epochs():
    assert epochs_for(600_000, 60_000) == 10 and epochs_for(600_000, 8_000) == 75
    assert epochs_for(1_000, 60_000) == 1  # never none
    whole = "optim.batch_size=100"  # 1000 images in whole batches: every image trained each epoch
    cfg = apply_overrides(get_preset("digits"), [whole, "optim.epochs=0", "optim.budget_images=5000", "monitor.every=0"])
    line = settle_budget(cfg, 1000)
    assert cfg.optim.epochs == 5 and cfg.monitor.every == 1 and "5,000 images seen" in line and "= 5 epochs" in line
    long = apply_overrides(get_preset("digits"), [whole, "optim.epochs=0", "optim.budget_images=72000",
                                                  "monitor.every=0"])
    settle_budget(long, 1000)
    assert (long.optim.epochs, long.monitor.every) == (72, 15)  # about 5 kNN evaluations, the last included
    given = apply_overrides(get_preset("digits"), ["optim.epochs=7", "optim.budget_images=5000"])
    assert settle_budget(given, 1000) == "" and given.optim.epochs == 7  # optim.epochs, when given, wins


def test_the_budget_counts_the_images_an_epoch_trains_not_the_folder():
    # 245 images at batch 128: one whole batch an epoch, the other 117 are left out (drop_last).
    cfg = apply_overrides(get_preset("small"), ["optim.batch_size=128"])
    line = settle_budget(cfg, 245)
    assert cfg.optim.epochs == round(360_000 / 128) == 2812
    assert "/ 128 images trained an epoch (245 training images in whole batches of 128; 117 left out" in line
    assert "= 2,812 epochs" in line
    # The sampler yields exactly that many images an epoch, over all ranks.
    for world in (1, 2):
        yielded = 0
        for rank in range(world):
            sampler = EpochSampler(245, 128, rank, world, seed=0)
            sampler.set_epoch(0)
            yielded += len(list(sampler))
        assert yielded == images_per_epoch(245, 128) == 128
    with pytest.raises(ConfigError, match="fewer than one batch"):
        settle_budget(apply_overrides(get_preset("small"), ["optim.batch_size=128"]), 100)


def test_epochs_zero_without_a_budget_is_one_clear_error():
    cfg = apply_overrides(get_preset("digits"), ["optim.epochs=0", "optim.budget_images=0"])
    with pytest.raises(ConfigError, match="optim.budget_images"):
        resolve(cfg)
    with pytest.raises(ConfigError, match="must be positive"):
        resolve(apply_overrides(get_preset("digits"), ["optim.budget_images=-5"]))


def test_the_budget_counts_the_subset_and_the_run_says_what_it_chose(tmp_path, capsys):
    cfg = apply_overrides(get_preset("digits"), SMALL + ["optim.epochs=0", "optim.budget_images=512"])
    settle_for_data(cfg)
    assert cfg.optim.epochs == 2  # 512 images seen / a 256-image subset
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "digits", "--out-dir", str(out), "--quiet", *SMALL,
                 "optim.epochs=0", "optim.budget_images=512"]) == 0
    assert "= 2 epochs; optim.epochs=N overrides" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["optim"]["epochs"] == 2  # recorded as chosen


def test_sweep_rows_multiply_grid_axes_and_vary_others_one_at_a_time():
    rows = sweep_rows(parse_axes(["optim.base_lr=0.1,0.2", "model.dim=32,64"]), parse_axes(["aug.flip_p=0"]))
    names = [r["name"] for r in rows]
    assert names[:4] == ["optim.base_lr=0.1 model.dim=32", "optim.base_lr=0.1 model.dim=64",
                         "optim.base_lr=0.2 model.dim=32", "optim.base_lr=0.2 model.dim=64"]
    assert names[4] == "optim.base_lr=0.1 model.dim=32 aug.flip_p=0"  # on the first combination
    assert [r["name"] for r in sweep_rows({}, parse_axes(["optim.base_lr=0.1,0.4"]))] == \
        ["base", "optim.base_lr=0.1", "optim.base_lr=0.4"]
    for bad in (["optim.base_lr"], ["=0.1"], ["optim.base_lr=0.1", "optim.base_lr=0.2"]):
        with pytest.raises(ConfigError, match="KEY=V1,V2|given twice"):
            parse_axes(bad)


def test_a_run_claimed_by_another_process_is_left_to_it(tmp_path):
    rows = [{"name": "ok", "overrides": [], "expect": []}]
    kw = dict(preset="digits", seeds=[0], out=tmp_path, log=lambda _: None,
              overrides=["optim.epochs=1", "data.train_limit=128", "data.eval_split=", "optim.batch_size=64"])
    run_dir = tmp_path / "t" / "ok" / "seed0"
    with _claim(run_dir) as mine:  # as if a second terminal were training it
        assert mine
        records = run_rows("t", rows, **kw)
    assert records[0]["outcome"]["status"] == "running elsewhere" and not (run_dir / "checkpoint.pt").exists()
    assert run_rows("t", rows, **kw)[0]["outcome"]["status"] == "done"  # free again: trained
    # each claim removes its lock file when released (the run directory's own lock file stays inside it)
    assert not [p for p in tmp_path.rglob("*.lock") if p.name != LOCK_NAME]


def test_a_claim_is_exclusive_across_processes_and_leaves_no_lock_file(tmp_path):
    import subprocess
    import sys

    run_dir = tmp_path / "t" / "row" / "seed0"
    probe = ("import sys; from pathlib import Path; from simsiam.reproduce.runner import _claim\n"
             "with _claim(Path(sys.argv[1])) as mine: print(mine)")
    with _claim(run_dir) as mine:
        assert mine and run_dir.with_name("seed0.lock").exists()
        other = subprocess.run([sys.executable, "-c", probe, str(run_dir)], capture_output=True, text=True)
        assert other.stdout.strip() == "False", other.stderr
    assert not run_dir.with_name("seed0.lock").exists()
    other = subprocess.run([sys.executable, "-c", probe, str(run_dir)], capture_output=True, text=True)
    assert other.stdout.strip() == "True", other.stderr  # released: the next process gets it


def test_sweep_command_ranks_rows_beside_the_baselines_at_both_temperatures(tmp_path):
    out = tmp_path / "sw"
    code = main(["sweep", "--preset", "digits", *SMALL, "optim.epochs=0", "optim.budget_images=512",
                 "--vary", "model.dim=32", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "sweep" / "summary.json").read_text())
    rows = summary["rows"]
    assert {r["name"] for r in rows} == {"base", "model.dim=32"} and all(r["finished"] == 1 for r in rows)
    assert rows[0]["knn"]["mean"] >= rows[1]["knn"]["mean"]  # best first
    for r in rows:
        assert r["epochs"]["mean"] == 2 and 0 < r["raw_pixels"]["mean"] <= 100 and 0 < r["random_init"]["mean"] <= 100
        assert r["knn"]["mean"] == r["knn_t0.1"]["mean"] and 0 < r["knn_t0.2"]["mean"] <= 100  # the monitor's T is 0.1
    report = (out / "sweep" / "report.md").read_text()
    assert "| `base` |" in report and "kNN T=0.2" in report and "raw pixels" in report
    assert "simsiam sweep" in summary["command"] and "--vary model.dim=32" in summary["command"]


def test_a_second_sweep_on_the_same_out_keeps_the_first_ones_rows_in_the_report(tmp_path):
    out, common = tmp_path / "sw", ["sweep", "--preset", "digits", *SMALL, "optim.epochs=1"]
    assert main([*common, "--vary", "model.dim=32", "--out", str(out)]) == 0
    assert main([*common, "--vary", "optim.base_lr=0.1", "--out", str(out)]) == 0
    summary = json.loads((out / "sweep" / "summary.json").read_text())
    assert {r["name"] for r in summary["rows"]} == {"base", "model.dim=32", "optim.base_lr=0.1"}
    assert len(summary["commands"]) == 2 and "--vary optim.base_lr=0.1" in summary["commands"][1]
    report = (out / "sweep" / "report.md").read_text()
    assert "| `model.dim=32` |" in report and report.count("- command: `") == 2
    # Another base (other common overrides) is another table: the earlier rows are not mixed in.
    assert main([*common, "optim.weight_decay=0", "--out", str(tmp_path / "other")]) == 0
    (tmp_path / "other" / "sweep" / "summary.json").write_text((out / "sweep" / "summary.json").read_text())
    assert main([*common, "optim.weight_decay=0", "--out", str(tmp_path / "other")]) == 0
    other = json.loads((tmp_path / "other" / "sweep" / "summary.json").read_text())
    assert [r["name"] for r in other["rows"]] == ["base"]


def test_a_stop_signal_ends_the_whole_table_and_the_run_is_not_called_done(tmp_path, monkeypatch):
    import simsiam.train.pretrain as train
    from simsiam.reproduce.runner import TableStopped

    calls = []

    def stopped_pretrain(cfg, resume=False):  # as pretrain returns after SIGTERM: checkpointed, "signal"
        calls.append(cfg.run.out_dir)
        return train.RunResult(run_dir=tmp_path, epochs_done=0, stopped_early="signal")

    monkeypatch.setattr(train, "pretrain", stopped_pretrain)
    rows = [{"name": "a", "overrides": [], "expect": []}, {"name": "b", "overrides": [], "expect": []}]
    with pytest.raises(TableStopped, match="run the same command again"):
        run_rows("t", rows, preset="digits", seeds=[0], out=tmp_path, log=lambda _: None,
                 overrides=["optim.epochs=1", "data.eval_split="])
    assert calls == [str(tmp_path / "t" / "a" / "seed0")]  # b was not started
    assert json.loads((tmp_path / "t" / "a" / "seed0" / "outcome.json").read_text())["status"] == "stopped"


def test_the_sweep_command_exits_75_with_one_line_when_a_run_is_stopped(tmp_path, monkeypatch, capsys):
    import simsiam.train.pretrain as train

    monkeypatch.setattr(train, "pretrain", lambda cfg, resume=False: train.RunResult(
        run_dir=tmp_path, epochs_done=0, stopped_early="signal"))
    code = main(["sweep", "--preset", "digits", "optim.epochs=1", "data.eval_split=", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 75 and len(err) == 1 and err[0].startswith("simsiam sweep: stopped by a signal")
