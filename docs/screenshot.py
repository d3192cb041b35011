"""Regenerate docs/screenshot.png: the ablation page with a cached digits sweep and one head clicked.

    python -m headscope ablate --task digits      # precompute the sweep (the page then shows it at once)
    python docs/screenshot.py
"""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent


def main(layer: int = 23, head: int = 3) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                                 args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1500, "height": 1900})
            page.goto(f"http://localhost:{port}/ablation")
            page.wait_for_selector('[data-testid="stMetric"]', timeout=180_000)
            page.wait_for_timeout(1500)
            points = page.locator('[data-testid="stPlotlyChart"]').first.locator(".scatterlayer .trace").first
            box = points.locator("path.point").nth(layer * 9 + head).bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.wait_for_timeout(300)
            page.mouse.click(x, y)
            page.get_by_text(f"Attention pattern of head {layer}.{head}").wait_for(timeout=60_000)
            page.wait_for_timeout(2500)
            page.screenshot(path=str(REPO / "docs" / "screenshot.png"))
            browser.close()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
