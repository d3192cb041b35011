"""The running local NDIF (tests/ndif/serve.sh) the `ndif`-marked tests talk to."""

import os
from pathlib import Path

import pytest

# The browser tier's Chromium (Debian's, through Playwright) and its page, which records console errors: one
# definition, tests/e2e's, for both tiers
from tests.e2e.conftest import browser, page  # noqa: F401
from tests.ndif.realserver import SERVE, api_up, client_env


@pytest.fixture(scope="session")
def ndif() -> dict[str, str]:
    """The client environment of a running local NDIF (started here when none runs, and then stopped after)."""
    import subprocess

    if not Path(os.environ.get("NDIF_VENV", "/work/venvs/ndif"), "bin", "ndif").exists():
        pytest.skip("no NDIF venv: run tests/ndif/serve.sh install")
    env = client_env()
    started = False
    if not api_up(env["NDIF_HOST"]):
        subprocess.run(["bash", str(SERVE), "start"], check=True, timeout=900)
        started = True
    yield env
    if started:
        subprocess.run(["bash", str(SERVE), "stop"], check=False, timeout=120)
