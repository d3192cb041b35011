"""Prompt-tester latency under load, in real browsers: p50/p95 of a prompt-tester request with 1, 4 and 8 sessions
asking at once while another session runs an exact ablation sweep (target: p95 ≤ 3 s on the embedded model).

    python bench/load.py                      # starts its own server (a temporary results cache), then measures
    python bench/load.py --url http://host:8501 --sessions 1,4,8 --requests 10 --sweep-prompts 64

A request is one edit of the prompt box (Ctrl+Enter) in one browser session; its latency runs from the key press to
the end of the script run it started, read from the page's own script-state attribute (browser clock). Each phase
starts a new exact sweep (a fresh seed, so nothing comes from the results cache) and restarts it if it ends before
the phase does; the report says how many requests ran while a sweep was running. Run it on a quiet machine: every
session is a Chromium page on the same host as the server. Needs Playwright and Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-renderer-backgrounding", "--disable-background-timer-throttling"]
LOAD_MS = 240_000
# Records every change of the app's script state with the page's clock, so that a run is never missed between polls.
RUN_RECORDER = """
window.__hsRuns = [];
new MutationObserver(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (app) window.__hsRuns.push([performance.now(), app.getAttribute('data-test-script-state')]);
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-test-script-state']});
"""
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "red", "green", "blue",
         "Monday", "Tuesday", "Wednesday", "January", "February", "March", "April"]


@dataclass(frozen=True)
class Phase:
    sessions: int
    requests: int
    p50_s: float
    p95_s: float
    max_s: float
    during_sweep: int  # requests that began while a sweep was running
    sweeps_started: int


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(results_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=results_dir)
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.headless", "true"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://localhost:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not become healthy")


async def open_page(browser, url: str):
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    await page.add_init_script(RUN_RECORDER)
    await page.goto(url)
    await page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=LOAD_MS)
    return context, page


class Sweeper:
    """One browser session that keeps an exact sweep running (a new seed whenever one ends)."""

    def __init__(self, browser, url: str, prompts: int) -> None:
        self.browser, self.url, self.prompts = browser, url, prompts
        self.started = 0
        self.page = None
        self.context = None

    async def start(self) -> None:
        seed = random.randrange(10_000, 10_000_000)
        if self.context is not None:
            await self.context.close()
        self.context, self.page = await open_page(self.browser, f"{self.url}/ablation?n={self.prompts}&seed={seed}")
        await self.page.get_by_role("button", name="Run exact sweep").click()
        await self.page.wait_for_selector('[data-testid="stProgress"]', timeout=LOAD_MS)
        self.started += 1

    async def running(self) -> bool:
        return await self.page.locator('[data-testid="stProgress"]').count() > 0

    async def keep_running(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not await self.running():
                await self.start()
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self.context is not None:
            await self.context.close()


async def one_request(page, prompt: str) -> float:
    box = page.get_by_role("textbox", name="Prompt", exact=True)
    await box.fill(prompt)
    sent = await page.evaluate("performance.now()")
    await box.press("Control+Enter")
    finished = await page.wait_for_function(
        """(sent) => {
            const runs = window.__hsRuns.filter(([t]) => t > sent);
            const started = runs.findIndex(([, state]) => state === 'running');
            if (started < 0) return false;
            const done = runs.slice(started).find(([, state]) => state === 'notRunning');
            return done ? done[0] : false;
        }""", arg=sent, timeout=120_000, polling=50)
    return (await finished.json_value() - sent) / 1000


async def tester(page, requests: int, sweeper: Sweeper | None, latencies: list, during: list) -> None:
    for _ in range(requests):
        words = random.sample(WORDS, 4)
        if sweeper is not None:
            during.append(await sweeper.running())
        latencies.append(await one_request(page, " ".join(words) + " "))
        await asyncio.sleep(random.uniform(0.2, 0.6))  # a person reading the answer, briefly


async def phase(browser, url: str, sessions: int, requests: int, sweep_prompts: int | None) -> Phase:
    pages = [await open_page(browser, url) for _ in range(sessions)]
    sweeper = Sweeper(browser, url, sweep_prompts) if sweep_prompts else None
    stop = asyncio.Event()
    keeper = None
    if sweeper is not None:
        await sweeper.start()
        keeper = asyncio.create_task(sweeper.keep_running(stop))
    latencies: list[float] = []
    during: list[bool] = []
    try:
        await asyncio.gather(*(tester(page, requests, sweeper, latencies, during) for _, page in pages))
    finally:
        stop.set()
        if keeper is not None:
            await keeper
        if sweeper is not None:
            await sweeper.close()
        for context, _ in pages:
            await context.close()
    return Phase(sessions, len(latencies), statistics.median(latencies), percentile(latencies, 0.95),
                 max(latencies), sum(during), sweeper.started if sweeper else 0)


async def run(args: argparse.Namespace, url: str) -> list[Phase]:
    from playwright.async_api import async_playwright

    executable = args.chromium or shutil.which("chromium") or "/usr/bin/chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        warm_context, _ = await open_page(browser, url)  # the first visit loads the model
        await warm_context.close()
        results = []
        for sessions in args.sessions:
            result = await phase(browser, url, sessions, args.requests, None if args.no_sweep else args.sweep_prompts)
            results.append(result)
            print(f"{result.sessions} session(s): {result.requests} requests, p50 {result.p50_s:.2f} s, "
                  f"p95 {result.p95_s:.2f} s, max {result.max_s:.2f} s; {result.during_sweep} began during a sweep "
                  f"({result.sweeps_started} sweep(s) started)", flush=True)
        await browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running app (default: start one with a temporary results cache)")
    parser.add_argument("--sessions", default="1,4,8", help="comma-separated session counts (default 1,4,8)")
    parser.add_argument("--requests", type=int, default=10, help="requests per session and phase (default 10)")
    parser.add_argument("--sweep-prompts", type=int, default=64, help="prompts of the background sweep (default 64)")
    parser.add_argument("--no-sweep", action="store_true", help="measure without the background sweep (baseline)")
    parser.add_argument("--chromium", help="path of the Chromium executable")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    args.sessions = [int(n) for n in args.sessions.split(",") if n.strip()]
    server = None
    results_dir = tempfile.mkdtemp(prefix="headscope-load-")
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            server, url = start_server(results_dir)
        results = asyncio.run(run(args, url))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(results_dir, ignore_errors=True)
    target = 3.0
    verdict = "met" if all(r.p95_s <= target for r in results) else "NOT met"
    print(f"target p95 ≤ {target:.0f} s: {verdict} (background sweep: "
          f"{'none' if args.no_sweep else f'exact, {args.sweep_prompts} prompts'})")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
