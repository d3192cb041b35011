"""Stopping the server (SIGTERM) during the first model load, or right after a first page has started TransformerLens'
set-up in the background, ends cleanly: no C++ abort ("terminate called without an active exception") and exit
status 0."""

from __future__ import annotations

import signal
import subprocess

from tests.e2e.browser_helpers import REPO, wait_for_app
from tests.e2e.conftest import start_healthy_server
from tests.pinned import cpu_env


def test_sigterm_during_the_background_set_up_ends_cleanly(browser, tmp_path):
    # a server of its own (it is stopped here), on the CPU, healthy on a port that is its own (conftest's start:
    # another port where one was taken between finding it free and binding it)
    env = cpu_env(PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=str(tmp_path / "results"))
    log = tmp_path / "server.log"
    server, port = start_healthy_server(env, log)
    try:
        context = browser.new_context()
        page = context.new_page()
        wait_for_app(page, f"http://localhost:{port}")
        page.wait_for_selector("text=Token table", timeout=180_000)  # answered: the set-up now starts after the run
        page.wait_for_timeout(10_000)  # TransformerLens imported, the model being wrapped (seen to abort here)
        server.send_signal(signal.SIGTERM)  # with the browser session still open
        server.wait(timeout=120)
        context.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
    assert "terminate called" not in log.read_text(errors="replace")
    assert server.returncode == 0


def _stopped_cleanly(server: subprocess.Popen, log) -> None:
    assert "terminate called" not in log.read_text(errors="replace")
    assert server.returncode == 0


def test_sigterm_during_the_first_model_load_ends_cleanly(browser, tmp_path):
    """The first page loads the model in its script thread, a daemon: stopped mid-load, the process aborted inside
    torch's C++ reading the weights. The load now runs on a thread the exit waits for."""
    env = cpu_env(PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=str(tmp_path / "results"))
    log = tmp_path / "server.log"
    server, port = start_healthy_server(env, log)
    try:
        context = browser.new_context()
        page = context.new_page()
        wait_for_app(page, f"http://localhost:{port}")
        page.wait_for_selector("text=Loading", timeout=120_000)  # the status box of the first load
        page.wait_for_timeout(1_500)  # torch imported, the weights being read
        assert page.locator("text=Token table").count() == 0  # still loading: the case this test is about
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        context.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
    _stopped_cleanly(server, log)
