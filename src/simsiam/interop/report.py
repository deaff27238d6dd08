"""The import's report: one table of where each part of the file went, what was left out and why,
and what the file did not have."""
from __future__ import annotations


def import_table(rows: list[tuple[str, str, str, int, str]]) -> str:
    """``rows``: (part, where in the file, where here, tensors, note)."""
    lines = ["| part | in the file | here | tensors | note |", "|---|---|---|---:|---|"]
    lines += [f"| {part} | {there} | {here} | {count} | {note} |" for part, there, here, count, note in rows]
    return "\n".join(lines)


def left_out_rows(dropped: dict[str, str]) -> list[tuple[str, str, str, int, str]]:
    """One row per reason, naming the first few keys or entries left out for it."""
    by_reason: dict[str, list[str]] = {}
    for key, why in dropped.items():
        by_reason.setdefault(why, []).append(key)
    rows = []
    for why, keys in by_reason.items():
        shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3})" if len(keys) > 3 else "")
        rows.append(("left out", shown, "-", len(keys), why))
    return rows
