"""Where borealis-eval keeps its caches (bundled model imports, encoder features)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Return the cache folder (env BOREALIS_CACHE_DIR, else ~/.cache/borealis-eval), created on demand."""
    env = os.environ.get("BOREALIS_CACHE_DIR")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "borealis-eval"
    root.mkdir(parents=True, exist_ok=True)
    return root
