"""Where headscope keeps things on disk, and where the app's files are."""

import os
from pathlib import Path

from headscope.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent


def in_checkout() -> bool:
    """Whether headscope runs from its source tree (a clone, or an editable install of one), not from a wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "app.py").is_file()


def cache_dir() -> Path:
    """Root of the on-disk cache (converted weights, sweep results): cache/ in a checkout, ~/.cache/headscope (or
    $XDG_CACHE_HOME/headscope) for an installed package; HEADSCOPE_CACHE_DIR overrides both."""
    override = os.environ.get("HEADSCOPE_CACHE_DIR")
    if override:
        path = Path(override).expanduser()
    elif in_checkout():
        path = REPO_ROOT / "cache"
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "headscope"
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


def app_folder() -> Path:
    """The folder holding app.py, pages/ and components/: headscope/_app/ in an installed wheel, the checkout's root
    otherwise."""
    packaged = PACKAGE_DIR / "_app"
    return packaged if (packaged / "app.py").is_file() else REPO_ROOT
