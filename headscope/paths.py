"""Where headscope keeps things on disk."""

import os
from pathlib import Path

from headscope.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Root of the on-disk cache (converted weights, sweep results); HEADSCOPE_CACHE_DIR overrides it."""
    override = os.environ.get("HEADSCOPE_CACHE_DIR")
    path = Path(override).expanduser() if override else REPO_ROOT / "cache"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        where = "HEADSCOPE_CACHE_DIR" if override else "The cache folder"
        raise InputError(f"{where} {str(path)!r} cannot be used as a folder ({error.strerror or error}): point "
                         "HEADSCOPE_CACHE_DIR at a writable folder.") from error
    return path


def results_dir() -> Path:
    """Where computed results (sweeps, head scores) live; HEADSCOPE_RESULTS_DIR overrides it (tests use a temp dir)."""
    override = os.environ.get("HEADSCOPE_RESULTS_DIR")
    return Path(override).expanduser() if override else cache_dir() / "results"
