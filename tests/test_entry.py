"""The command's start: ``import simsiam`` is light (torch comes with the first name used), and a
Ctrl-C while the command line is still importing torch ends it with one line and exit status 130."""
from __future__ import annotations

import subprocess
import sys

import pytest

import simsiam
from simsiam.cli import main, parse_args


def test_import_simsiam_does_not_import_torch_and_its_names_resolve():
    code = ("import sys, simsiam, simsiam.cli; light = 'torch' not in sys.modules; "
            "print(light, simsiam.get_preset('digits').data.dataset, 'pretrain' in dir(simsiam))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "digits", "True"]
    assert set(simsiam.__all__) >= {"pretrain", "finetune", "load_pretrained", "Config", "__version__"}
    with pytest.raises(AttributeError, match="no attribute 'pretrian'"):
        simsiam.pretrian  # noqa: B018
    assert simsiam.data.load_dataset is not None  # a sub-package by attribute, as before the names were lazy


def test_ctrl_c_while_the_command_line_imports_is_one_line(monkeypatch, capsys):
    class Interrupting:  # an import finder "interrupted" when the first module that needs torch is imported
        def find_spec(self, name, path=None, target=None):
            if name == "simsiam.parallel.distributed":
                raise KeyboardInterrupt
            return None

    import simsiam.parallel.distributed  # noqa: F401 -- imported, and every command's parser built,
    parse_args(["presets"])  # so that only the import below meets the finder
    monkeypatch.delitem(sys.modules, "simsiam.parallel.distributed")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert main(["presets"]) == 130
    assert capsys.readouterr().err.strip() == "simsiam presets: interrupted; no checkpoint was written"


def test_a_real_sigint_while_torch_is_imported_prints_no_traceback():
    # SIGINT 50 ms after the command line is called: the import of torch, which takes far longer,
    # is then under way.
    code = ("import os, signal; from simsiam.cli import main; "
            "signal.signal(signal.SIGALRM, lambda *a: os.kill(os.getpid(), signal.SIGINT)); "
            "signal.setitimer(signal.ITIMER_REAL, 0.05); raise SystemExit(main(['presets']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "simsiam: interrupted while starting; nothing was done"
