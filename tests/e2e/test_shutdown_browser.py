"""Stopping the server (SIGTERM) right after a first page has started TransformerLens' set-up in the background ends
cleanly: no C++ abort ("terminate called without an active exception") and exit status 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests.e2e.browser_helpers import REPO, wait_for_app
from tests.e2e.conftest import _free_port


def test_sigterm_during_the_background_set_up_ends_cleanly(browser, tmp_path):
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=str(tmp_path / "results"))
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        url = f"http://localhost:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        context = browser.new_context()
        page = context.new_page()
        wait_for_app(page, url)
        page.wait_for_selector("text=Token table", timeout=180_000)  # answered: the set-up now starts after the run
        page.wait_for_timeout(10_000)  # TransformerLens imported, the model being wrapped (seen to abort here)
        server.send_signal(signal.SIGTERM)  # with the browser session still open
        _, stderr = server.communicate(timeout=120)
        context.close()
    finally:
        if server.poll() is None:
            server.kill()
    assert "terminate called" not in stderr.decode(errors="replace")
    assert server.returncode == 0
