"""The app in a real browser (Chromium through Playwright), on this machine: how fast a researcher gets an answer.

    python bench/browser.py              # warm starts, first hook page, reload, Ctrl+Enter
    python bench/browser.py --starts 5   # more warm starts

Measures, on the embedded model with its converted weights already cached:
- warm start: seconds from starting the server process (`streamlit run app.py`, as `make run` does) to a usable
  prompt tester (token strip drawn, script idle); median of --starts servers;
- the first page that needs TransformerLens' hooks (the ablation page's Run button drawn), from the same start: the
  bridge is set up in the background once the prompt tester is drawn, or on that page's demand;
- page reload with the model loaded (target ≤ 2 s);
- prompt tester: from Ctrl+Enter in the prompt box to the new result drawn and the script idle (target ≤ 0.7 s).
Run it on a quiet machine; figures are medians.

A launcher that starts loading the model while Streamlit starts (`headscope.serve`) measured no faster, in two forms:
loading from the process's start, 10.89 s against 10.86 s; loading once the server answers (while Chromium starts),
10.94 s against 10.44 s (medians of 3, TransformerLens already off the start). The first shares the interpreter lock
with Streamlit's own start; both share the two cores with Chromium, which needs them as much.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.load import CHROMIUM_ARGS, RUN_RECORDER, free_port  # the same browser and page clock

REPO = Path(__file__).resolve().parent.parent

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
STRIP = '[data-testid="hs-token-strip"]'
PROMPTS = ["2 3 4 5 ", "3 4 5 6 ", "one two three four", "Monday Tuesday Wednesday", "A B C D ", "10 20 30 40 ",
           "January February March", "1 1 2 3 5 ", "9 8 7 6 ", "red green blue red green "]


def start(command: list[str], port: int) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([*command, "--server.port", str(port), "--server.headless", "true"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_healthy(port: int, deadline: float) -> None:
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not become healthy")


def usable(page) -> None:
    page.wait_for_selector(STRIP, timeout=180_000)
    page.wait_for_selector(IDLE, timeout=180_000)


def measure_server(playwright, label: str, command: list[str], interactive: bool) -> dict[str, float]:
    port = free_port()
    started = time.perf_counter()
    server = start(command, port)
    figures: dict[str, float] = {}
    try:
        wait_healthy(port, time.time() + 180)
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(RUN_RECORDER)
        page.goto(f"http://localhost:{port}/")
        usable(page)
        figures["start"] = time.perf_counter() - started
        print(f"  {label}: usable prompt tester {figures['start']:.2f} s after the server process started",
              flush=True)
        if interactive:
            page.goto(f"http://localhost:{port}/ablation")
            page.wait_for_selector("text=Run exact sweep", timeout=180_000)
            page.wait_for_selector(IDLE, timeout=180_000)
            figures["hooks"] = time.perf_counter() - started
            print(f"  ablation page (TransformerLens' hooks set up) usable {figures['hooks']:.2f} s after the start",
                  flush=True)
            page.goto(f"http://localhost:{port}/")
            usable(page)
            reloads = []
            for _ in range(5):
                began = time.perf_counter()
                page.reload()
                usable(page)
                reloads.append(time.perf_counter() - began)
            figures["reload"] = statistics.median(reloads)
            print(f"  page reload with the model loaded: median {figures['reload']:.2f} s "
                  f"(of {', '.join(f'{x:.2f}' for x in reloads)}; target ≤ 2 s)", flush=True)
            answers = []
            box = page.get_by_role("textbox", name="Prompt", exact=True)
            for prompt in PROMPTS:
                box.fill(prompt)
                page.wait_for_timeout(200)
                sent = page.evaluate("performance.now()")  # the page's own clock: no polling delay counted
                box.press("Control+Enter")
                page.wait_for_selector('[data-testid="stApp"][data-test-script-state="running"]', timeout=30_000)
                page.wait_for_selector(IDLE, timeout=60_000)
                page.wait_for_timeout(100)
                runs = [run for run in page.evaluate("window.__hsRuns") if run[0] > sent]
                began = next(t for t, state in runs if state == "running")
                ended = next(t for t, state in runs if state == "notRunning" and t > began)
                answers.append((ended - sent) / 1000)
            figures["answer"] = statistics.median(answers)
            print(f"  prompt tester, Ctrl+Enter to the new result drawn: median {figures['answer']:.2f} s, "
                  f"max {max(answers):.2f} s (target ≤ 0.7 s)", flush=True)
        browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    return figures


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=3, help="warm starts measured (default 3; median reported)")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "headscope", "prepare"], cwd=REPO, check=True, capture_output=True)
    command = [sys.executable, "-m", "streamlit", "run", "app.py"]
    with sync_playwright() as playwright:
        print("embedded model, converted weights cached (a second `make run`):")
        starts = [measure_server(playwright, "streamlit run app.py", command, interactive=False)["start"]
                  for _ in range(args.starts - 1)]
        figures = measure_server(playwright, "streamlit run app.py, then the other measures", command,
                                 interactive=True)
    starts.append(figures["start"])
    print(f"\nwarm start, median of {len(starts)}: {statistics.median(starts):.2f} s (target ≤ 5 s); first hook "
          f"page {figures['hooks']:.2f} s; reload {figures['reload']:.2f} s; Ctrl+Enter {figures['answer']:.2f} s")


if __name__ == "__main__":
    main()
