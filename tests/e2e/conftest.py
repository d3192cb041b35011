"""A real server (`streamlit run app.py`) and a real browser (Debian's Chromium through Playwright)."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.browser_helpers import ARTIFACTS, REPO
from tests.pinned import cpu_env

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen | None:
    """A streamlit server on `port`, once healthy; None when it exited first (e.g. the port was taken between
    _free_port releasing it and streamlit binding it: the caller tries another port)."""
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )
    deadline = time.time() + 90
    while time.time() < deadline:
        if server.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as reply:
                # ours, not another server that took the port: alive, and its log names the port it serves
                if reply.status == 200 and server.poll() is None and f":{port}" in log.read_text(errors="replace"):
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    server.kill()
    pytest.fail(f"streamlit did not become healthy; see {log}")


def start_healthy_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    """A healthy streamlit server of this checkout and its port; another port where one was taken meanwhile."""
    for _ in range(3):
        port = _free_port()
        server = _start_server(port, env, log)
        if server is not None:
            return server, port
    pytest.fail(f"streamlit exited before becoming healthy three times; see {log}")


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """A real server with its own results folder (the tests clear cached results: never the user's cache/), on the
    CPU (a GPU machine would otherwise serve CUDA float16). The converted embedded model is shared: it is read only."""
    env = cpu_env(PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=str(tmp_path_factory.mktemp("server-results")))
    ARTIFACTS.mkdir(exist_ok=True)
    server, port = start_healthy_server(env, ARTIFACTS / "streamlit-server.log")
    yield f"http://localhost:{port}"
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
