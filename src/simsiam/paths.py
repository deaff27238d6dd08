"""Where the package keeps what it derives between runs (decoded images, baselines, the
augmentation kernel): ``$SIMSIAM_CACHE_DIR``, else ``~/.cache/simsiam``. Its own module so that
``augment`` and ``data`` can both use it without importing each other."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("SIMSIAM_CACHE_DIR") or Path.home() / ".cache" / "simsiam")
