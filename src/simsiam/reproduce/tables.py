"""The paper's ablation tables (sections 4-5) as data: one row = config overrides + the paper's figure + its claim.

A row is a dict:

- ``name``: what the paper calls the variant (also the run directory, slugified);
- ``overrides``: ``key=value`` strings applied on the preset after the user's overrides, so a
  row's own setting wins (the batch table's rows set the batch whatever the command line says);
- optional ``setup``: ``key=value`` strings shared by a table's rows, applied *before* the user's
  overrides (a setting the table needs at small scale, which the command line may change);
- ``paper``: the paper's figure (ImageNet linear accuracy, 100 epochs) as text;
- ``claim``: the paper's qualitative claim about the row;
- optional ``expect``: checks that decide automatically whether the claim held here, each a
  list: ``["collapse"]``, ``["no_collapse"]``, ``["better", ROW]``, ``["worse", ROW]``,
  ``["close", ROW, POINTS]`` (kNN accuracy within POINTS), ``["not_worse", ROW, POINTS]`` (better,
  or at most POINTS below), ``["not_better", ROW, POINTS]`` (worse, or at most POINTS above),
  ``["higher_loss", ROW]``
  (see :mod:`simsiam.reproduce.claims`);
- optional ``warmup_fraction``: linear lr warmup as a fraction of the run's epochs. The paper
  warms up 10 of 100 epochs for batch >= 1024 and for the no-BN heads; a short run keeps the
  proportion (``optim.warmup_epochs = fraction x optim.epochs``, set by the runner).

The figures are those of ``/work/shared/paper/SIMSIAM.md`` (sections 4-5; "(r)" = recalled).
"""
from __future__ import annotations

from typing import Callable, Optional

PAPER_WARMUP = 0.1  # 10 warmup epochs of the paper's 100 (batch >= 1024, and no BN in the heads)


def row(name: str, overrides: list[str], paper: str, claim: str, expect: Optional[list] = None,
        warmup_fraction: float = 0.0, setup: Optional[list[str]] = None) -> dict:
    r = {"name": name, "overrides": list(overrides), "paper": paper, "claim": claim, "expect": expect or []}
    if warmup_fraction:
        r["warmup_fraction"] = warmup_fraction
    if setup:
        r["setup"] = list(setup)
    return r


# Figure 2. Without stop-gradient the collapse takes steps at a large lr: on digits (d = 64) the
# std of z/|z| x sqrt(d) reached the 0.1 threshold after about 200 steps at lr 0.5-1; on
# Fashion-MNIST (6000 images, d = 512, batch 64, lr 0.5) it was 0.44 at the end of a 4-epoch run (372 steps)
# and 0.096 after 7 epochs of a 16-epoch run, 0.011 at the end; without the predictor 0.093 after 8 of 16
# epochs (docs/REPRODUCTION.md). The paper's first ImageNet epoch is 2500 steps. So the table's
# setup trades batch for steps (64) at lr 0.5, for both rows alike; the command line may change
# it, and the epochs are the command line's. The threshold stays the monitor's.
STOPGRAD_SETUP = ["optim.batch_size=64", "optim.base_lr=2.0"]


def stopgrad(preset: str) -> list[dict]:
    return [
        row("with stop-grad", [], "67.7 +- 0.1",
            "no collapse: std of l2-normalised z stays near 1/sqrt(d), kNN accuracy rises", [["no_collapse"]],
            setup=STOPGRAD_SETUP),
        row("without stop-grad", ["loss.stop_grad=false"], "0.1 (chance)",
            "collapses: loss reaches -1 at once, std of l2-normalised z drops to 0",
            [["collapse"], ["worse", "with stop-grad"]], setup=STOPGRAD_SETUP),
    ]


def predictor(preset: str) -> list[dict]:
    base = "predictor, lr with cosine decay"
    return [
        row(base, ["optim.fix_pred_lr=false"], "67.7", "the baseline: trains", [["no_collapse"]]),
        row("no predictor (identity)", ["model.predictor=none"], "0.1",
            "collapses (with the symmetric loss stop-grad only halves the gradient of D(z1, z2))",
            [["collapse"], ["worse", base]]),
        row("predictor fixed at random init", ["model.predictor=frozen"], "1.5",
            "does not collapse, but does not converge: the loss stays high",
            [["no_collapse"], ["higher_loss", base], ["worse", base]]),
        row("predictor with constant lr", [], "68.1", "a constant predictor lr is as good or better",
            [["no_collapse"], ["not_worse", base, 2.0]]),
    ]


def batch(preset: str) -> list[dict]:
    """Table 2. The paper's 64..4096 on 1.28M images; a 60k-image dataset has 1024 at ~58 steps an
    epoch (the paper's 4096 has ~310), so smaller presets stop at 1024."""
    sizes = (64, 128, 256, 512, 1024, 2048, 4096) if preset == "imagenet" else (64, 128, 256, 512, 1024)
    paper = {64: "66.1", 128: "67.3", 256: "68.1", 512: "68.1", 1024: "68.0", 2048: "67.9", 4096: "64.0 (r)"}
    rows = []
    for b in sizes:
        # "works": no collapse, and not more than 3 points below batch 256 (above it is no refutation)
        expect = [["no_collapse"]] + ([["not_worse", "batch 256", 3.0]] if 128 <= b <= 1024 and b != 256 else [])
        rows.append(row(f"batch {b}", [f"optim.batch_size={b}"], paper[b],
                        "works over a wide range of batch sizes with lr = base_lr x batch/256 (no large batch needed)",
                        expect, warmup_fraction=PAPER_WARMUP if b >= 1024 else 0.0))
    return rows


def bn(preset: str) -> list[dict]:
    default = "BN hidden + projector output (default)"
    return [
        row("no BN in the heads", ["model.head_bn=none"], "34.6", "no collapse, but hard to optimise",
            [["no_collapse"], ["worse", default]], warmup_fraction=PAPER_WARMUP),
        row("BN on hidden layers", ["model.head_bn=hidden"], "67.4", "BN on the hidden layers does most of it",
            [["no_collapse"], ["better", "no BN in the heads"]]),
        row(default, [], "68.1", "the default", [["no_collapse"]]),
        row("default, projector-output BN without affine", ["model.proj_out_bn_affine=false"], "68.2",
            "as good as the default", [["no_collapse"], ["close", default, 2.0]]),
        row("BN on every output, predictor's too", ["model.head_bn=all"], "unstable",
            "unstable, the loss oscillates; not collapse", [["no_collapse"]]),
    ]


def similarity(preset: str) -> list[dict]:
    return [
        row("cosine", [], "68.1", "no collapse", [["no_collapse"]]),
        row("cross-entropy", ["loss.similarity=cross_entropy"], "63.2",
            "no collapse either; a little worse than cosine", [["no_collapse"], ["worse", "cosine"]]),
    ]


def symmetry(preset: str) -> list[dict]:
    return [
        row("symmetric", [], "68.1", "symmetrisation helps accuracy", [["no_collapse"]]),
        row("asymmetric", ["loss.symmetry=asymmetric"], "64.8", "works, lower than symmetric",
            [["no_collapse"], ["worse", "symmetric"]]),
        row("asymmetric 2x", ["loss.symmetry=asymmetric2x"], "67.3",
            "two pairs per image make up most of the gap", [["no_collapse"], ["better", "asymmetric"]]),
    ]


def dim(preset: str) -> list[dict]:
    """Appendix B, Table A: output dimension d (predictor hidden d/4). Presets narrower than the
    paper's 2048 get the same ratios below their own d."""
    paper_dims = (256, 512, 1024, 2048)
    top = 2048 if preset in ("imagenet", "cifar10") else 512
    figures = ("65.3", "67.2", "67.5", "68.1")
    rows = [row(f"d = {d * top // 2048}", [f"model.dim={d * top // 2048}", "model.pred_hidden=0"], f"{fig} (r)",
                "larger d is better, modestly", [["no_collapse"]]) for d, fig in zip(paper_dims, figures)]
    rows[-1]["expect"].append(["better", rows[0]["name"]])
    rows.append(row(f"d = {top}, predictor hidden = d (no bottleneck)", [f"model.dim={top}", f"model.pred_hidden={top}"],
                    "(text: works, less stable)", "the bottleneck d/4 is the more robust choice", [["no_collapse"]]))
    return rows


def kstep(preset: str) -> list[dict]:
    """Section 5: eta cached for k SGD steps. A k longer than an epoch is cut at the epoch's end."""
    method = ["method=simsiam_kstep"]
    return [
        row("k = 1 (SimSiam)", method + ["hypothesis.kstep=1"], "68.1", "the alternation works", [["no_collapse"]]),
        row("k = 10", method + ["hypothesis.kstep=10"], "68.7", "multi-step alternation works as well or better",
            [["no_collapse"], ["not_worse", "k = 1 (SimSiam)", 2.0]]),
        row("k = 100", method + ["hypothesis.kstep=100"], "68.9", "multi-step alternation works as well or better",
            [["no_collapse"], ["not_worse", "k = 1 (SimSiam)", 3.0]]),
        row("k = one epoch", method + ["hypothesis.kstep=-1"], "67.0", "still works, somewhat worse",
            [["no_collapse"]]),
    ]


def ema(preset: str) -> list[dict]:
    bank = ["method=simsiam_ema", "model.predictor=none"]
    return [
        row("SimSiam (predictor)", [], "68.1", "the reference", [["no_collapse"]]),
        row("no predictor, moving-average eta (m = 0.8)", bank + ["hypothesis.ema_m=0.8"], "55.0",
            "works without a predictor: no collapse",
            [["no_collapse"], ["better", "no predictor, no moving average (m = 0)"]]),
        row("no predictor, no moving average (m = 0)", bank, "0.1", "collapses", [["collapse"]]),
    ]


ABLATION_TABLES: dict[str, Callable[[str], list[dict]]] = {
    "stopgrad": stopgrad,
    "predictor": predictor,
    "batch": batch,
    "bn": bn,
    "similarity": similarity,
    "symmetry": symmetry,
    "dim": dim,
    "kstep": kstep,
    "ema": ema,
}
