"""``simsiam reproduce``: tables resolve, claims are judged from the numbers, the runner records
failures and divergence and skips finished runs, and a tiny stop-gradient table shows the collapse."""
import json

import pytest

from simsiam import get_preset
from simsiam.cli import main
from simsiam.reproduce import all_tables
from simsiam.reproduce.claims import expectations, run_collapsed, verdict
from simsiam.reproduce.report import write_index, write_report
from simsiam.reproduce.runner import _same_settings, row_config, run_rows, slug
from simsiam.resolve import resolve


@pytest.mark.parametrize("preset", ["fmnist", "digits", "imagenet"])
def test_every_row_of_every_table_is_a_valid_config(preset, tmp_path):
    tables = all_tables(preset)
    assert {"stopgrad", "predictor", "batch", "bn", "similarity", "symmetry", "dim", "kstep", "ema"} <= set(tables)
    for name, rows in tables.items():
        names = [r["name"] for r in rows]
        assert len(set(map(slug, names))) == len(names), f"{name}: two rows share a directory"
        for row in rows:
            assert {"name", "overrides", "paper", "claim"} <= set(row)
            resolve(row_config(preset, ["optim.epochs=10"], row, 0, tmp_path))
            for check in expectations(row):  # references name rows of the same table
                if len(check) > 1:
                    assert check[1] in names, (name, row["name"], check)


def test_batch_table_scales_with_the_preset_and_warms_up_large_batches(tmp_path):
    assert [r["name"] for r in all_tables("fmnist")["batch"]][-1] == "batch 1024"
    assert [r["name"] for r in all_tables("imagenet")["batch"]][-1] == "batch 4096"
    big = next(r for r in all_tables("fmnist")["batch"] if r["name"] == "batch 1024")
    cfg = row_config("fmnist", ["optim.epochs=20", "optim.batch_size=32"], big, 0, tmp_path)
    assert cfg.optim.batch_size == 1024  # the row's own setting wins over the command line
    assert cfg.optim.warmup_epochs == pytest.approx(2.0)  # the paper's 10 of 100 epochs, scaled


def test_setup_applies_before_the_command_line(tmp_path):
    row = all_tables("fmnist")["stopgrad"][1]
    assert row_config("fmnist", [], row, 0, tmp_path).optim.batch_size == 64
    cfg = row_config("fmnist", ["optim.batch_size=32"], row, 3, tmp_path)
    assert cfg.optim.batch_size == 32 and cfg.loss.stop_grad is False and cfg.run.seed == 3


def _summary(name, knn=None, collapsed=0, finished=1, loss=-0.5, std=1.0):
    return {"name": name, "finished": finished, "collapsed": collapsed, "knn": {"mean": knn}, "linear": {"mean": None},
            "loss": {"mean": loss}, "std_sqrt_d": {"mean": std}}


def test_claims_are_judged_from_the_numbers():
    base = _summary("base", knn=70.0)
    rows = {"base": base}
    collapse_row = {"name": "x", "claim": "collapses", "expect": [["collapse"], ["worse", "base"]]}
    assert verdict(collapse_row, _summary("x", knn=20.0, collapsed=1, std=0.01), rows)[0] == "held"
    assert verdict(collapse_row, _summary("x", knn=20.0, collapsed=0), rows)[0] == "did not hold"
    assert verdict(collapse_row, _summary("x", finished=0), rows)[0] == "undecided"
    close = {"name": "y", "claim": "", "expect": [["close", "base", 2.0]]}
    assert verdict(close, _summary("y", knn=71.5), rows)[0] == "held"
    assert verdict(close, _summary("y", knn=67.0), rows)[0] == "did not hold"
    assert verdict(close, _summary("y", knn=75.0), rows)[0] == "did not hold"  # too far above counts too
    at_least = {"name": "v", "claim": "", "expect": [["not_worse", "base", 2.0]]}
    assert [verdict(at_least, _summary("v", knn=k), rows)[0] for k in (75.0, 68.5, 67.0)] == \
        ["held", "held", "did not hold"]
    at_most = {"name": "u", "claim": "", "expect": [["not_better", "base", 1.0]]}
    assert [verdict(at_most, _summary("u", knn=k), rows)[0] for k in (60.0, 70.5, 72.0)] == \
        ["held", "held", "did not hold"]
    loss = {"name": "z", "claim": "", "expect": [["higher_loss", "base"]]}
    assert verdict(loss, _summary("z", loss=-0.1), rows)[0] == "held"
    assert verdict({"name": "w", "claim": "nothing to check"}, _summary("w"), rows)[0] == "not checked"


def test_claims_without_expectations_are_read_from_their_words():
    assert expectations({"claim": "BYOL without momentum collapses"}) == [["collapse"]]
    assert expectations({"claim": "does not collapse, lower accuracy"}) == [["no_collapse"]]
    assert expectations({"claim": "on par with MoCo v2"}) == []


def test_collapse_is_the_monitors_threshold_or_knn_near_chance():
    assert run_collapsed({"z_std_sqrt_d": 0.05, "knn_acc": 60.0}, 0.1, 10.0)
    assert run_collapsed({"z_std_sqrt_d": 0.8, "knn_acc": 12.0}, 0.1, 10.0)
    assert not run_collapsed({"z_std_sqrt_d": 0.8, "knn_acc": 60.0}, 0.1, 10.0)


def test_runner_records_failures_and_divergence_goes_on_and_skips_finished_runs(tmp_path, monkeypatch):
    import simsiam.train.pretrain as train

    real, calls = train.pretrain, []

    def pretrain(cfg, resume=False):
        calls.append(cfg.run.out_dir)
        if "diverges" in cfg.run.out_dir:
            raise train.TrainingDiverged("the loss became nan")
        return real(cfg, resume=resume)

    monkeypatch.setattr(train, "pretrain", pretrain)
    rows = [{"name": "fails", "overrides": ["optim.batch_size=4096"], "paper": "", "claim": ""},  # > the dataset
            {"name": "diverges", "overrides": [], "paper": "", "claim": ""},
            {"name": "ok", "overrides": [], "paper": "", "claim": ""}]
    kw = dict(preset="digits", seeds=[0], overrides=["optim.epochs=1", "data.train_limit=256", "data.eval_limit=64",
                                                      "optim.batch_size=64"], out=tmp_path, log=lambda _: None)
    records = run_rows("t", rows, linear_epochs=2, **kw)
    assert [r["outcome"]["status"] for r in records] == ["failed", "diverged", "done"]
    assert [r["linear"] is not None for r in records] == [False, False, True]  # only a finished run is evaluated
    assert 0 <= records[2]["linear"]["top1"] <= 100 and (tmp_path / "t" / "ok" / "seed0" / "linear.json").is_file()
    assert "fewer than one batch" in records[0]["outcome"]["error"]
    assert (tmp_path / "t" / "fails" / "seed0" / "error.txt").is_file()
    assert [[m for m in r["metrics"] if m["kind"] == "epoch"][-1]["epochs_done"] for r in records[2:]] == [1]
    calls.clear()
    again = run_rows("t", rows, linear_epochs=2, **kw)
    assert calls == [str(tmp_path / "t" / "fails" / "seed0")]  # a failure is retried; the others are finished
    assert [r["outcome"]["status"] for r in again] == ["failed", "diverged", "done"]
    assert again[2]["linear"] == json.loads((tmp_path / "t" / "ok" / "seed0" / "linear.json").read_text())
    report = write_report("t", rows, again, out=tmp_path, command="c", preset="digits", overrides=[], seeds=[0],
                          chance=10.0, seconds=1.0).read_text()
    assert "linear (ours)" in report and "## Failed runs" in report and "fewer than one batch" in report


def test_a_run_directory_of_other_settings_is_refused(tmp_path):
    rows = [{"name": "ok", "overrides": [], "paper": "", "claim": ""}]
    kw = dict(preset="digits", seeds=[0], out=tmp_path, log=lambda _: None)
    small = ["optim.epochs=1", "data.train_limit=128", "data.eval_split=", "optim.batch_size=64"]
    run_rows("t", rows, overrides=small, **kw)
    with pytest.raises(FileExistsError, match="other settings"):
        run_rows("t", rows, overrides=small + ["model.dim=32"], **kw)


def test_a_run_saved_before_a_recipe_field_existed_is_the_same_run():
    """A checkpoint written before a field joined the recipes (its value absent) matches today's config."""
    cfg = resolve(get_preset("digits"))
    saved = cfg.to_dict()
    del saved["aug"]["crop_ratio_min"], saved["aug"]["crop_ratio_max"]
    assert _same_settings(saved, cfg)
    saved["aug"]["crop_scale_min"] = 0.5
    assert not _same_settings(saved, cfg)


def test_reproduce_stopgrad_on_digits_shows_the_collapse(tmp_path):
    """Without stop-gradient the representation collapses (std(z/|z|) x sqrt(d) under the monitor's
    0.1) within ~200 steps at lr 1 on digits; with it, it does not. 5 epochs x 46 steps here."""
    out = tmp_path / "out"
    code = main(["reproduce", "stopgrad", "optim.epochs=5", "optim.batch_size=32", "optim.base_lr=8",
                 "monitor.every=5", "--preset", "digits", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "stopgrad" / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["rows"]}
    without, with_sg = rows["without stop-grad"], rows["with stop-grad"]
    assert without["collapsed"] == 1 and without["std_sqrt_d"]["mean"] < 0.1 and without["loss"]["mean"] < -0.95
    assert with_sg["collapsed"] == 0 and with_sg["std_sqrt_d"]["mean"] > 0.5
    assert with_sg["verdict"] == "held"
    # The second claim of the row, "kNN worse than with stop-grad", is decided by a fraction of a point
    # at this scale (without 53.7% vs with 53.0% on an AVX2 CPU; it held on the AVX-512 CPU the test was
    # written on), so the test asks that the verdict follow the measured figures, whichever way they fall.
    knn_without, knn_with = without["knn"]["mean"], with_sg["knn"]["mean"]
    assert without["verdict"] == ("held" if knn_without < knn_with else "did not hold"), (knn_without, knn_with)
    report = (out / "stopgrad" / "report.md").read_text()
    assert "| without stop-grad |" in report and "0.1 (chance)" in report and "**held**" in report
    assert (out / "stopgrad" / "curves.png").is_file()
    assert (out / "stopgrad" / "without_stop-grad" / "seed0" / "checkpoint.pt").is_file()


def test_a_row_with_the_settings_of_a_finished_run_is_copied_not_trained(tmp_path, monkeypatch):
    import simsiam.train.pretrain as train

    real, calls = train.pretrain, []

    def pretrain(cfg, resume=False):
        calls.append(cfg.run.out_dir)
        return real(cfg, resume=resume)

    monkeypatch.setattr(train, "pretrain", pretrain)
    kw = dict(preset="digits", seeds=[0], out=tmp_path, log=lambda _: None,
              overrides=["optim.epochs=1", "data.train_limit=128", "data.eval_split=", "optim.batch_size=64"])
    base = {"name": "base", "overrides": [], "paper": "", "claim": ""}
    other = {"name": "other", "overrides": ["model.dim=32"], "paper": "", "claim": ""}
    first = run_rows("a", [base], **kw)
    second = run_rows("b", [base, other], **kw)  # b's base row is a's: the same config, seed and epochs
    assert calls == [str(tmp_path / "a" / "base" / "seed0"), str(tmp_path / "b" / "other" / "seed0")]
    assert second[0]["outcome"]["reused_from"] == str(tmp_path / "a" / "base" / "seed0")
    assert second[0]["metrics"] == first[0]["metrics"]
    assert "reused_from" not in second[1]["outcome"]
    calls.clear()
    run_rows("c", [base], **{**kw, "seeds": [1]})  # another seed is another run
    assert calls == [str(tmp_path / "c" / "base" / "seed1")]


def test_report_lists_speed_and_peak_memory_and_the_index_every_table(tmp_path):
    rows = [{"name": "ok", "overrides": [], "paper": "", "claim": ""}]
    records = run_rows("t", rows, preset="digits", seeds=[0], out=tmp_path, log=lambda _: None,
                       overrides=["optim.epochs=1", "data.train_limit=128", "data.eval_split=", "optim.batch_size=64"])
    write_report("t", rows, records, out=tmp_path, command="c", preset="digits", overrides=[], seeds=[0],
                 chance=None, seconds=1.0)
    row = json.loads((tmp_path / "t" / "summary.json").read_text())["rows"][0]
    assert row["images_per_s"]["mean"] > 0 and row["peak_mb"]["mean"] > 10
    assert "| img/s | peak MiB |" in (tmp_path / "t" / "report.md").read_text()
    index = write_index(tmp_path, ["t"]).read_text()  # every table's rows, one summary
    assert "| t | ok |" in index and "- t: `c`" in index
