"""The README says what the code does: its preset table against the presets themselves (it once said
the `fmnist` preset read 512 features when it read 1,920), and the project speaks, not a person."""
import re
from pathlib import Path

import pytest
import torch

from simsiam.cli import main
from simsiam.config.presets import PRESETS, get_preset
from simsiam.models import build_backbone

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def _preset_table() -> dict[str, dict[str, str]]:
    """The README's preset table: ``{preset: {column: cell}}``."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| preset |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        rows[cells["preset"].strip("`")] = cells
    return rows


def _listed() -> dict[str, tuple[int, str]]:
    """``simsiam presets``' lines: ``{preset: (features, budget)}``."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["presets"]) == 0
    listed = {}
    for line in out.getvalue().splitlines():
        m = re.match(r"(\S+) .*?, ([\d,]+) features, .*, (\d+ epochs|[\d,]+ images seen), aug ", line)
        if m:
            listed[m[1]] = (int(m[2].replace(",", "")), m[3])
    return listed


def test_the_readme_preset_table_says_each_presets_features_and_budget():
    table, listed = _preset_table(), _listed()
    assert {"fmnist", "small", "tinyimagenet", "cifar10", "imagenet", "digits"} <= set(table) <= set(PRESETS)
    assert set(listed) == set(PRESETS)
    for name, row in table.items():
        features, budget = int(row["features"].replace(",", "")), row["budget"]
        assert (features, budget) == listed[name], name  # what `simsiam presets` says
        c = get_preset(name)
        backbone = build_backbone(c.model.backbone, width=c.model.width, pool_grid=c.model.pool_grid,
                                  feature_stages=c.model.feature_stages).eval()
        side = 8 if name == "digits" else 64
        with torch.no_grad():
            assert backbone(torch.zeros(1, 3, side, side)).shape == (1, features), name  # what the network gives
        assert budget == (f"{c.optim.epochs} epochs" if c.optim.epochs else f"{c.optim.budget_images:,} images seen")


@pytest.mark.parametrize("path", [README, *sorted((REPO / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_the_docs_speak_without_a_first_person(path):
    text = re.sub(r"```.*?```|`[^`\n]*`", "", path.read_text(), flags=re.S)  # code may name my_images
    found = re.findall(r"[^\n]*\b(?:I|I'm|I've|I'd|me|my|myself)\b[^\n]*", text)
    assert not found, found[:3]


def test_the_readme_stays_a_page_for_users():
    # Run-by-run history belongs in docs/RECIPES.md and docs/PERFORMANCE.md; the README links there.
    assert len(README.read_text().splitlines()) <= 280
