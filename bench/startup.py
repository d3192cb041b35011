"""Seconds from `streamlit run app.py` to a usable prompt-tester page (token strip drawn), in a real browser:
cold (no converted weights: the GGUF is dequantized and cached) against warm (converted weights on disk).

    python bench/startup.py

Uses a temporary cache folder for the cold start, so the project's cache/ is untouched. Needs Chromium.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seconds_to_usable_page(cache_dir: str) -> float:
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HEADSCOPE_CACHE_DIR=cache_dir, PYTHONPATH=str(REPO))
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.headless", "true"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                                 args=ARGS)
            page = browser.new_page()
            page.goto(f"http://localhost:{port}")
            page.wait_for_selector('[data-testid="hs-token-strip"]', timeout=300_000)
            elapsed = time.perf_counter() - started
            browser.close()
        return elapsed
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    with tempfile.TemporaryDirectory() as cold_cache:
        cold = seconds_to_usable_page(cold_cache)
        warm = seconds_to_usable_page(cold_cache)  # the same folder now holds the converted weights
    print(f"cold start (dequantize GGUF, save converted weights): {cold:.1f} s to a usable page")
    print(f"warm start (converted weights cached):                {warm:.1f} s to a usable page "
          f"({cold / warm:.1f}× faster)")


if __name__ == "__main__":
    main()
