"""A real server (`streamlit run app.py`) and a real browser (Debian's Chromium through Playwright)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import serving
from tests.e2e.browser_helpers import ARTIFACTS, FIRST_LOAD_MS, REPO
from tests.pinned import cpu_env

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def streamlit_command(port: int) -> list[str]:
    """This checkout's app served on `port`."""
    return [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def _start_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen | None:
    """This checkout's app on `port` once healthy; None where it exited first (kept for tests/ndif's older import)."""
    return serving.start_on_port(streamlit_command(port), port, env, log, cwd=REPO)


_free_port = serving.free_port


def start_healthy_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    """A healthy streamlit server of this checkout and its port (tests/serving.py: another port where one was taken
    between finding it free and streamlit binding it)."""
    return serving.start_healthy_server(streamlit_command, env, log, cwd=REPO)


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """A real server with its own results folder (the tests clear cached results: never the user's cache/), on the
    CPU (a GPU machine would otherwise serve CUDA float16). The converted embedded model is shared: it is read only."""
    env = cpu_env(PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=str(tmp_path_factory.mktemp("server-results")))
    ARTIFACTS.mkdir(exist_ok=True)
    server, port = start_healthy_server(env, ARTIFACTS / "streamlit-server.log")
    yield f"http://localhost:{port}"
    serving.stop(server)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail("Chromium is missing: `make browser` (or apt-get install chromium) installs it")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_navigation_timeout(FIRST_LOAD_MS)  # a reload is a first load of a new session too
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    yield page
    context.close()
