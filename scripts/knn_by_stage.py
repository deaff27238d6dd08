"""Where in the network a run's kNN accuracy is: each stage of a built-in ResNet read out at several
grid sides, beside the run's own features (docs/RECIPES.md, section 6).

    python scripts/knn_by_stage.py runs/demo [--grids 1 2 4 7] [--random-init]

Stage S pooled to G x G and flattened is one readout; a grid larger than the stage's map is skipped.
``--random-init`` reads the same network at its initialisation (the run's seed), the control that
says how much of a readout's figure the training made. Uses the run's dataset and held-out split,
k = 200 and T = 0.1 as the monitor does.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from simsiam.data import load_dataset
from simsiam.eval import eval_mode, extract_features
from simsiam.eval.knn import knn_accuracy
from simsiam.eval.pretrained import held_out_split, load_pretrained
from simsiam.methods import build_method
from simsiam.seeding import seed_everything


def readouts(backbone, sample: torch.Tensor, grids: list[int]) -> list[tuple[str, int, int, int]]:
    """(name, stage, grid, features) of every readout; stage 0 is the backbone's own output."""
    with torch.no_grad():
        maps = backbone.stage_maps(sample)
    found = [("the run's features", 0, 0, backbone.num_features)]
    for stage, m in enumerate(maps, start=1):
        channels, side = m.shape[1], m.shape[-1]
        found += [(f"stage {stage} ({side}x{side}) pooled to {g}x{g}", stage, g, channels * g * g)
                  for g in grids if g <= side]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory or checkpoint")
    parser.add_argument("--grids", type=int, nargs="+", default=[1, 2, 4, 7], help="grid sides to pool each stage to")
    parser.add_argument("--random-init", action="store_true", help="the same network at its initialisation")
    args = parser.parse_args()
    model, cfg = load_pretrained(args.run)
    name = cfg.data.dataset
    bank_set = load_dataset(name, "train", cfg.data.data_dir)
    query_set = load_dataset(name, held_out_split(cfg, name), cfg.data.data_dir)
    backbone = model.backbone
    if not hasattr(backbone, "stage_maps"):
        raise SystemExit(f"{cfg.model.backbone} is not one of the built-in ResNets; this script reads their stages")
    if args.random_init:
        seed_everything(cfg.run.seed)
        backbone = build_method(cfg, bank_set.channels).backbone
    size = cfg.data.image_size or bank_set.image_size
    found = readouts(backbone.eval(), torch.zeros(1, bank_set.channels, size, size), args.grids)

    def all_readouts(x: torch.Tensor) -> torch.Tensor:
        maps = backbone.stage_maps(x)
        return torch.cat([backbone(x) if stage == 0 else F.adaptive_avg_pool2d(maps[stage - 1], g).flatten(1)
                          for _, stage, g, _ in found], 1)

    kw = dict(device=torch.device("cpu"), image_size=cfg.data.image_size)
    with eval_mode(backbone), torch.no_grad():
        bank, bank_y, _, _ = extract_features(all_readouts, bank_set, **kw)
        query, query_y, _, _ = extract_features(all_readouts, query_set, **kw)
    classes = max(bank_set.num_classes, query_set.num_classes)
    print(f"{'readout' + (' (random init)' if args.random_init else ''):<40s} {'dims':>6s} {'kNN':>7s}")
    start = 0
    for label, _, _, dims in found:
        acc = knn_accuracy(query[:, start:start + dims], query_y, bank[:, start:start + dims], bank_y, classes,
                           k=200, t=0.1)
        start += dims
        print(f"{label:<40s} {dims:>6d} {acc:6.2f}%", flush=True)


if __name__ == "__main__":
    main()
