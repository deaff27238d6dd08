"""A script of ``scripts/`` run as ``python scripts/NAME.py ARGS`` would run it, but in the test's own
process: a new interpreter would import torch again, seconds a run on a busy 2-core machine."""
import runpy
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, args: list[str], monkeypatch, capsys) -> str:
    """The stdout of ``scripts/<name>`` run as ``__main__`` with ``args``."""
    capsys.readouterr()  # what the test printed before is not the script's
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / name), *args])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    return capsys.readouterr().out
