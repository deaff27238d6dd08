"""``run.compile=auto``: the decision table (measured speed-up x planned steps against the compile
time), the words old configs and checkpoints hold (a bool), and the one line a run prints."""
import json
import os

import pytest
import torch

from simsiam import get_preset, pretrain
from simsiam.artifacts import checkpoint as ckpt_io
from simsiam.config import ConfigError, apply_overrides, from_dict
from simsiam.resolve import resolve
from simsiam.train import compile_pays, speed
from simsiam.train.compile_pays import FMNIST, Measurement, StepSignature, choose, decide

# A made-up measurement, so that the rule is tested apart from the figures in MEASURED: 100 ms saved
# a step, 60 s to compile -- twice the compile time saved at 1,200 steps.
TOY = Measurement("cpu-avx2", "fp32", FMNIST, eager_ms=600, compiled_ms=500, compile_s=60, source="a test")


# ------------------------------------------------------------------------------- the decision table
def test_measured_speedup_times_steps_must_beat_the_compile_time():
    short = decide("cpu-avx2", "fp32", FMNIST, planned_steps=1000, measured=[TOY])
    long = decide("cpu-avx2", "fp32", FMNIST, planned_steps=1300, measured=[TOY])
    assert not short.on and "1,000 steps would save 100 s, not twice the 60 s it takes to compile" in short.line
    assert long.on and "1,300 steps save about 130 s for 60 s of compiling" in long.line
    assert not decide("cpu-avx2", "fp32", FMNIST, planned_steps=1200, measured=[TOY]).on  # only twice: not more


def test_todays_measurements_on_an_amx_cpu():
    bf16 = decide("cpu-amx", "bf16", FMNIST, planned_steps=10**7)
    assert not bf16.on  # 1.01x: within the noise of one measurement, however long the run
    assert bf16.line == ("compile: off (measured 1.01x for this model in bf16 on this CPU kind (AMX); "
                         "run.compile=true forces it)")
    assert not decide("cpu-amx", "fp32", FMNIST, planned_steps=1000).on  # 1.08x: 36 s saved, 117 s to compile
    assert not decide("cpu-amx", "fp32", FMNIST, planned_steps=3_276).on  # the preset in fp32: 118 s, not 234
    assert decide("cpu-amx", "fp32", FMNIST, planned_steps=10_000).on


@pytest.mark.parametrize("kind, precision, model", [
    ("cuda", "bf16", FMNIST),  # no GPU measured yet
    ("cpu-avx2", "fp32", FMNIST),  # another CPU kind
    ("cpu-amx", "fp32", StepSignature("simsiam", "resnet18_small", 32, (2, 512, 512, 128), (1, 4), (1, 28), 128,
                                      True)),  # another width
    ("cpu-amx", "fp32", StepSignature("simsiam", "resnet18_small", 16, (2, 512, 512, 128), (1, 4), (1, 28), 64,
                                      True)),  # another batch
])
def test_unmeasured_is_off(kind, precision, model):
    choice = decide(kind, precision, model, planned_steps=10**7)
    assert not choice.on
    assert choice.line.startswith("compile: off (not measured for this model") and "run.compile=true forces it" in choice.line


def test_true_and_false_are_obeyed_and_said():
    assert choose("true", "cuda", "bf16", FMNIST, 1).line == \
        "compile: on (run.compile=true; run.compile=false turns it off)"
    assert not choose("false", "cpu-amx", "fp32", FMNIST, 10**7).on
    kept = choose("false", "cpu-amx", "fp32", FMNIST, 10**7, kept=True)
    assert not kept.on and "the run's own run.compile=false (kept on resume)" in kept.line


def test_the_fmnist_signature_is_the_fmnist_presets():
    cfg = resolve(get_preset("fmnist"))
    assert StepSignature.of(cfg, 1, 28, cfg.optim.batch_size) == FMNIST
    assert all(m.source and m.compile_s > 0 for m in compile_pays.MEASURED)


def test_device_kinds():
    assert compile_pays.device_kind(torch.device("cuda")) == "cuda"  # only the type is read: no GPU needed
    assert compile_pays.device_kind(torch.device("cpu")) in compile_pays.KIND_WORDS


# ------------------------------------------------------------------------------------ the config
@pytest.mark.parametrize("given, kept", [("true", "true"), ("false", "false"), ("on", "true"), ("off", "false"),
                                         ("auto", "auto")])
def test_command_line_words(given, kept):
    assert apply_overrides(get_preset("digits"), [f"run.compile={given}"]).run.compile == kept


def test_auto_is_the_default_and_a_wrong_word_is_refused():
    assert get_preset("digits").run.compile == "auto"
    with pytest.raises(ConfigError, match="run.compile='sometimes' is not valid; choose one of: auto, true, false"):
        resolve(apply_overrides(get_preset("digits"), ["run.compile=sometimes"]))


def test_old_configs_with_a_bool_keep_their_meaning():
    old = get_preset("digits").to_dict()
    for flag, word in ((True, "true"), (False, "false")):
        old["run"]["compile"] = flag  # as configs and checkpoints before run.compile=auto held it
        assert from_dict(old).run.compile == word
        cfg = get_preset("digits")
        cfg.run.compile = flag  # the Python API, as older versions took it
        assert resolve(cfg).run.compile == word
    assert apply_overrides(get_preset("digits"), ["run.amp=off"]).run.amp == "off"  # other keys keep on/off


# --------------------------------------------------------------------------- the run's one line
def _compile_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("compile:")]


def _tiny(cfg):
    cfg.optim.epochs = 1
    cfg.data.eval_split, cfg.data.train_limit = "", 256
    return cfg


@pytest.fixture
def compile_is_a_no_op(monkeypatch):
    """torch.compile returns the module itself: the choice and its lines, without minutes of inductor."""
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)


def test_a_run_says_its_choice_in_one_line_and_records_it(digits_cfg, capsys):
    run_dir = pretrain(_tiny(digits_cfg)).run_dir
    lines = _compile_lines(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith("compile: off (not measured for this model in fp32 on this")
    assert json.loads((run_dir / "config.json").read_text())["run"]["compile"] == "false"


def test_auto_compiles_where_measured_to_pay_and_says_the_compile_time(digits_cfg, capsys, monkeypatch,
                                                                        compile_is_a_no_op, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # unset: the package's cache home is used
    cfg = resolve(_tiny(digits_cfg))
    digits = StepSignature.of(cfg, 1, 8, cfg.optim.batch_size)
    kind = compile_pays.device_kind(torch.device("cpu"))
    monkeypatch.setattr(compile_pays, "MEASURED", (Measurement(kind, "fp32", digits, 100, 50, 0.01, "a test"),))
    result = pretrain(cfg)
    lines = _compile_lines(capsys.readouterr().out)
    assert len(lines) == 2 and lines[0].startswith("compile: on (measured 2.00x for this model in fp32")
    assert lines[1].startswith("compile: the first step compiled in ")
    assert os.path.join(os.environ["SIMSIAM_CACHE_DIR"], "torch-inductor") in lines[1]
    assert json.loads((result.run_dir / "config.json").read_text())["run"]["compile"] == "true"


def test_a_user_set_inductor_cache_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert speed.persistent_compile_cache() == str(tmp_path / "mine")


@pytest.mark.parametrize("stored, line", [
    (False, "compile: off (the run's own run.compile=false (kept on resume)"),
    (True, "compile: on (the run's own run.compile=true (kept on resume)"),
])
def test_a_resumed_run_keeps_the_bool_of_an_older_checkpoint(digits_cfg, capsys, compile_is_a_no_op, stored, line):
    digits_cfg.data.eval_split, digits_cfg.data.train_limit = "", 256
    digits_cfg.optim.epochs = 1
    pretrain(digits_cfg)
    path = digits_cfg.run.out_dir + "/checkpoint.pt"
    saved = ckpt_io.load(path)
    saved["config"]["run"]["compile"] = stored  # as written before run.compile=auto
    ckpt_io.save_atomic(saved, path)
    capsys.readouterr()
    digits_cfg.optim.epochs = 2  # run.compile left at auto
    pretrain(digits_cfg, resume=True)
    lines = _compile_lines(capsys.readouterr().out)
    assert lines[0].startswith(line)
    assert ckpt_io.load(path)["config"]["run"]["compile"] == ("true" if stored else "false")
