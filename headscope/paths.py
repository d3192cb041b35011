"""Where headscope keeps things on disk."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Root of the on-disk cache (converted weights, sweep results); HEADSCOPE_CACHE_DIR overrides it."""
    override = os.environ.get("HEADSCOPE_CACHE_DIR")
    path = Path(override).expanduser() if override else REPO_ROOT / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
