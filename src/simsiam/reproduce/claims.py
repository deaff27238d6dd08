"""Whether the paper's claim about a row held here: its checks evaluated on the measured figures.

A run counts as collapsed when std(z/|z|) x sqrt(d) at its last epoch is under the run's own
``monitor.collapse_threshold`` (the same test the training monitor warns with), or when its kNN
accuracy is within :data:`NEAR_CHANCE_POINTS` of chance. Ordering checks compare the mean over
seeds of linear accuracy when both rows have it, else of kNN accuracy (the paper's figures are
linear accuracy). A check on a row or a reference that has no finished run is "undecided".

Rows without an ``expect`` list (e.g. from another table file) get one from their claim's words:
"does not collapse" / "no collapse" / "not collapse" -> no collapse; otherwise "collapse" -> collapse.
"""
from __future__ import annotations

import re
from typing import Optional

NEAR_CHANCE_POINTS = 5.0  # kNN accuracy (%) this close to chance counts as collapsed


def run_collapsed(final: dict, threshold: float, chance: Optional[float]) -> bool:
    std = final.get("z_std_sqrt_d")
    knn = final.get("knn_acc")
    return (std is not None and std < threshold) or (
        knn is not None and chance is not None and knn <= chance + NEAR_CHANCE_POINTS)


def expectations(row: dict) -> list[list]:
    if row.get("expect"):
        return row["expect"]
    claim = row.get("claim", "").lower()
    if re.search(r"(does not|doesn't|no|not) collapse", claim):
        return [["no_collapse"]]
    if "collapse" in claim:
        return [["collapse"]]
    return []


def _accuracy(summary: dict, other: dict) -> tuple[str, Optional[float], Optional[float]]:
    """The metric both rows have (linear before kNN), and the two means."""
    for key, label in (("linear", "linear"), ("knn", "kNN")):
        a, b = summary.get(key, {}).get("mean"), other.get(key, {}).get("mean")
        if a is not None and b is not None:
            return label, a, b
    return "kNN", None, None


def check(kind: str, args: list, summary: dict, by_name: dict[str, dict]) -> tuple[Optional[bool], str]:
    """One check -> (True / False / None for undecided, the numbers behind it)."""
    runs = summary.get("finished", 0)
    if kind in ("collapse", "no_collapse"):
        if runs == 0:
            return None, "no finished run"
        n = summary["collapsed"]
        std = summary.get("std_sqrt_d", {}).get("mean")
        why = f"collapsed in {n}/{runs} run(s), std x sqrt(d) {std:.3f}" if std is not None else f"collapsed in {n}/{runs}"
        return (n == runs if kind == "collapse" else n == 0), why
    other = by_name.get(args[0])
    if other is None or other.get("finished", 0) == 0 or runs == 0:
        return None, f"no finished run of {'this row' if runs == 0 else repr(args[0])}"
    if kind == "higher_loss":
        a, b = summary["loss"]["mean"], other["loss"]["mean"]
        return a > b, f"final loss {a:.3f} vs {b:.3f} ({args[0]})"
    label, a, b = _accuracy(summary, other)
    if a is None:
        return None, "no accuracy to compare"
    why = f"{label} {a:.2f} vs {b:.2f} ({args[0]})"
    if kind == "better":
        return a > b, why
    if kind == "worse":
        return a < b, why
    if kind == "close":
        return abs(a - b) <= float(args[1]), why + f", within {args[1]} points?"
    if kind == "not_worse":  # "as good or better": better by any margin, or at most POINTS below
        return a >= b - float(args[1]), why + f", at most {args[1]} points below?"
    if kind == "not_better":  # "does not help": worse by any margin, or at most POINTS above
        return a <= b + float(args[1]), why + f", at most {args[1]} points above?"
    raise ValueError(f"unknown check {kind!r}; known: collapse, no_collapse, better, worse, close, not_worse, "
                     "not_better, higher_loss")


def verdict(row: dict, summary: dict, by_name: dict[str, dict]) -> tuple[str, str]:
    """("held" / "did not hold" / "undecided" / "not checked", the reasons)."""
    checks = expectations(row)
    if not checks:
        return "not checked", "no automatic check for this claim"
    results = [check(c[0], list(c[1:]), summary, by_name) for c in checks]
    reasons = "; ".join(("" if ok else "NOT: " if ok is False else "?: ") + why for ok, why in results)
    if any(ok is False for ok, _ in results):
        return "did not hold", reasons
    if all(ok for ok, _ in results):
        return "held", reasons
    return "undecided", reasons
