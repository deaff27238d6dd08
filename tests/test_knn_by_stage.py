"""scripts/knn_by_stage.py on a digits checkpoint: every stage at every grid that fits, and the control."""
from fixtures_checkpoints import make_checkpoint_file
from fixtures_scripts import run_script


def _rows(args: list[str], monkeypatch, capsys) -> dict[str, tuple[int, float]]:
    out = run_script("knn_by_stage.py", args, monkeypatch, capsys)
    rows = {}
    for line in out.strip().splitlines()[1:]:
        label, dims, acc = line.rsplit(None, 2)
        rows[label.strip()] = (int(dims), float(acc.rstrip("%")))
    return rows


def test_every_stage_at_every_grid_that_fits_and_the_random_init_control(tmp_path, monkeypatch, capsys):
    # digits: 8x8 images through the CIFAR stem, so the stages' maps are 8, 4, 2 and 1 a side.
    path, _, _ = make_checkpoint_file(tmp_path / "checkpoint.pt", backbone="resnet18_cifar", width=8)
    rows = _rows([str(path), "--grids", "1", "2", "4"], monkeypatch, capsys)
    assert list(rows) == ["the run's features",
                          "stage 1 (8x8) pooled to 1x1", "stage 1 (8x8) pooled to 2x2", "stage 1 (8x8) pooled to 4x4",
                          "stage 2 (4x4) pooled to 1x1", "stage 2 (4x4) pooled to 2x2", "stage 2 (4x4) pooled to 4x4",
                          "stage 3 (2x2) pooled to 1x1", "stage 3 (2x2) pooled to 2x2",
                          "stage 4 (1x1) pooled to 1x1"]
    assert rows["stage 1 (8x8) pooled to 4x4"][0] == 8 * 16 and rows["stage 4 (1x1) pooled to 1x1"][0] == 64
    # The run's features are the last stage's global average (pool_grid 1): the same figure.
    assert rows["the run's features"] == rows["stage 4 (1x1) pooled to 1x1"]
    assert all(0.0 <= acc <= 100.0 for _, acc in rows.values())

    control = _rows([str(path), "--grids", "1", "--random-init"], monkeypatch, capsys)
    assert len(control) == 5 and control != {k: v for k, v in rows.items() if k in control}
