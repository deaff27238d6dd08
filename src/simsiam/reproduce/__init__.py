"""``simsiam reproduce TABLE``: the paper's ablation tables re-run at a chosen scale.

``tables`` holds sections 4-5 as rows (overrides + the paper's figure + its claim);
``methods_tables`` (when present) adds section 6's comparisons in the same row format;
``runner`` runs every row x seed, ``claims`` decides whether each claim held, ``report``
writes ``OUT/TABLE/report.md``.
"""
from __future__ import annotations

import importlib.util

from .tables import ABLATION_TABLES


def _method_tables() -> dict[str, list[dict]]:
    # Another file may define section 6's tables; a missing file is fine, a broken one is an error.
    if importlib.util.find_spec(f"{__name__}.methods_tables") is None:
        return {}
    from . import methods_tables

    return dict(methods_tables.TABLES)


def all_tables(preset: str) -> dict[str, list[dict]]:
    """Every table by name, its rows sized for ``preset``."""
    tables = {name: build(preset) for name, build in ABLATION_TABLES.items()}
    tables.update(_method_tables())
    return tables


def table_names() -> list[str]:
    return list(ABLATION_TABLES) + [n for n in _method_tables() if n not in ABLATION_TABLES]


__all__ = ["all_tables", "table_names"]
