"""The app's long jobs in a real browser beside the CLI's compute time for the same job, in one run: the digits exact
sweep (mean, 16 prompts) on the ablation page, and the first and later head clicks after it.

    python bench/app_jobs.py              # 3 rounds, medians
    python bench/app_jobs.py --rounds 1

Each round starts from an empty results cache (HEADSCOPE_RESULTS_DIR, a temporary folder), so nothing comes from the
cache. Per round: the CLI (`python -m headscope ablate ... --no-cache --json`, its reported compute seconds), then the
page: from the click on "Run exact sweep" to the heatmap drawn and the script idle, with the number of websocket
messages the browser received meanwhile and the sweep's own compute time as the page reports it. The load average
is printed beside each figure: on a shared machine compare only figures of the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.browser import IDLE, start, wait_healthy  # the same server start and idle test
from bench.load import CHROMIUM_ARGS, free_port

REPO = Path(__file__).resolve().parent.parent
CHART = '[data-testid="stPlotlyChart"]'
JOB = ["--task", "digits", "--n-prompts", "16", "--method", "mean"]


def cli_seconds(env: dict) -> float:
    done = subprocess.run([sys.executable, "-m", "headscope", "ablate", *JOB, "--no-cache", "--json"], cwd=REPO,
                          env=env, check=True, capture_output=True, text=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def page_sweep(page, port: int) -> tuple[float, int, str]:
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(time.perf_counter())))
    page.goto(f"http://localhost:{port}/ablation")
    page.wait_for_selector("text=Run exact sweep", timeout=240_000)
    page.wait_for_selector(IDLE, timeout=240_000)
    page.wait_for_timeout(500)
    began = time.perf_counter()
    page.get_by_role("button", name="Run exact sweep").click()
    page.wait_for_selector(CHART, timeout=600_000)
    page.wait_for_selector(IDLE, timeout=600_000)
    seconds = time.perf_counter() - began
    shown = page.locator('[data-testid="stMetric"]').filter(has_text="Time").inner_text().split("\n")
    return seconds, sum(1 for t in frames if t >= began), " ".join(shown)


def head_clicks(page, heads=((5, 2), (8, 1), (12, 4))) -> list[float]:
    """Click heatmap cells one after another; each time from the click to that head's heading shown, its pattern
    frame drawn and the script idle."""
    times = []
    chart = page.locator(CHART).first
    page.wait_for_timeout(1500)  # the layout settles after the progress bar goes
    for layer, head in heads:
        target = chart.locator(".scatterlayer .trace").first.locator("path.point").nth(layer * 9 + head)
        target.scroll_into_view_if_needed()
        cell = target.bounding_box()
        x, y = cell["x"] + cell["width"] / 2, cell["y"] + cell["height"] / 2
        page.mouse.move(x, y)  # plotly clicks the point under the hover
        page.wait_for_timeout(300)
        began = time.perf_counter()
        page.mouse.click(x, y)
        page.get_by_text(f"Attention pattern of head {layer}.{head}", exact=False).wait_for(timeout=180_000)
        page.frame_locator('[data-testid="stIFrame"], iframe').last.locator("canvas, svg").first.wait_for(
            timeout=120_000)
        page.wait_for_selector(IDLE, timeout=180_000)
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-clicks", action="store_true")
    args = parser.parse_args()
    rows = []
    with sync_playwright() as playwright:
        for round_ in range(args.rounds):
            results = tempfile.mkdtemp(prefix="hs-bench-")
            env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=results)
            load_before = os.getloadavg()[0]
            cli = cli_seconds(env)
            port = free_port()
            os.environ["HEADSCOPE_RESULTS_DIR"] = results
            server = start([sys.executable, "-m", "streamlit", "run", "app.py"], port)
            try:
                wait_healthy(port, time.time() + 240)
                browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                                     args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                shutil.rmtree(results, ignore_errors=True)  # the CLI's run is not read back by the page
                seconds, messages, shown = page_sweep(page, port)
                print(f"  page sweep {seconds:.1f} s ({shown}; {messages} messages), CLI {cli:.1f} s", flush=True)
                clicks = [] if args.no_clicks else head_clicks(page)
                browser.close()
            finally:
                server.terminate()
                server.wait(timeout=30)
            row = {"cli": cli, "page": seconds, "ratio": seconds / cli, "messages": messages, "shown": shown,
                   "clicks": clicks, "load": (load_before, os.getloadavg()[0])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"median: CLI {statistics.median(r['cli'] for r in rows):.1f} s, page "
          f"{statistics.median(r['page'] for r in rows):.1f} s, ratio {statistics.median(r['ratio'] for r in rows):.2f}")


if __name__ == "__main__":
    main()
