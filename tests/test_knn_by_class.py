"""scripts/knn_by_class.py on a digits checkpoint: one line per class, and the three feature views."""
from fixtures_checkpoints import make_checkpoint_file
from fixtures_scripts import run_script


def test_per_class_accuracies_and_the_overall_figure(tmp_path, monkeypatch, capsys):
    path, _, _ = make_checkpoint_file(tmp_path / "checkpoint.pt")
    out = run_script("knn_by_class.py", [str(path)], monkeypatch, capsys)
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert [line.split()[4] for line in lines[:3]] == ["as", "centred", "standardised"]
    per_class = [line for line in lines if line.strip().split()[0].isdigit()]
    assert len(per_class) == 10  # digits 0-9, each with a features and a pixels figure
    overall = [line for line in lines if line.strip().startswith("all")][0].split()
    features_all = float(overall[1].rstrip("%"))
    assert 0.0 <= features_all <= 100.0 and float(lines[0].split()[-1].rstrip("%")) == features_all
