"""A real server (`streamlit run app.py`) and a real browser (Debian's Chromium through Playwright)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.browser_helpers import ARTIFACTS, REPO

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    port = _free_port()
    # a results folder of its own: the tests never read, nor remove, the checkout's cached results (nothing is
    # cached at the start, so every first run really computes)
    results = tmp_path_factory.mktemp("e2e-results")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=str(results))
    log = (ARTIFACTS / "streamlit-server.log")
    ARTIFACTS.mkdir(exist_ok=True)
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )
        url = f"http://localhost:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            server.kill()
            pytest.fail(f"streamlit did not become healthy; see {log}")
        yield url
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


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
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    yield page
    context.close()
