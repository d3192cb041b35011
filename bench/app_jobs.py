"""The app's long jobs in a real browser beside the CLI's compute time for the same job, in one run: the digits exact
sweep (mean, 16 prompts) on the ablation page, the first and later head clicks after it, and the circuit search on
the circuit page (the same prompts, until stable).

    python bench/app_jobs.py              # 3 rounds, medians
    python bench/app_jobs.py --rounds 1

Each round starts from an empty results cache (HEADSCOPE_RESULTS_DIR, a temporary folder), so nothing comes from the
cache. Per round: the CLI (`python -m headscope ablate ... --no-cache --json`, its reported compute seconds) before and
after the page, whose figure is compared with the mean of the two; the page: from the click on "Run exact sweep" to the
heatmap drawn and the script idle, with the number of websocket messages the browser received meanwhile and the
sweep's own compute time as the page reports it. The load average is printed beside each figure: on a shared machine
compare only figures of the same round.
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
from bench.load import CHROMIUM_ARGS, RUN_RECORDER, free_port

REPO = Path(__file__).resolve().parent.parent
CHART = '[data-testid="stPlotlyChart"]'
JOB = ["--task", "digits", "--n-prompts", "16", "--method", "mean"]


def cli_seconds(env: dict, command: str = "ablate") -> float:
    """The CLI's own compute seconds for JOB (`ablate`: the exact sweep; `circuit`: the search until stable)."""
    done = subprocess.run([sys.executable, "-m", "headscope", command, *JOB, "--no-cache", "--json"], cwd=REPO,
                          env=env, check=True, capture_output=True, text=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def page_circuit(page, port: int) -> tuple[float, str]:
    """The circuit page's search (its defaults: digits, 16 prompts, mean, threshold 80, until stable): click on
    "Find circuit" to its result drawn and the script idle, and the page's own compute time."""
    page.goto(f"http://localhost:{port}/circuit")
    page.wait_for_selector("text=Find circuit", timeout=240_000)
    page.wait_for_selector(IDLE, timeout=240_000)
    page.wait_for_timeout(500)
    began = time.perf_counter()
    page.get_by_role("button", name="Find circuit").click()
    page.locator('[data-testid="stMetric"]').filter(has_text="Circuit score").first.wait_for(timeout=900_000)
    page.wait_for_selector(IDLE, timeout=600_000)
    seconds = time.perf_counter() - began
    shown = page.locator('[data-testid="stMetric"]').filter(has_text="Time").inner_text().split("\n")
    return seconds, " ".join(shown)


# With --trace: each change of the script state also stamps the Chromium trace ("hs:running", "hs:notRunning").
TRACE_STAMPS = """
new MutationObserver(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (app) console.timeStamp('hs:' + app.getAttribute('data-test-script-state'));
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-test-script-state']});
"""


def page_sweep(page, port: int, trace: Path | None = None) -> tuple[float, int, str]:
    """Click to heatmap drawn and idle; `shown` also says, on the page's own clock, how long after the click its
    script runs began and ended (the rest is the browser drawing). `trace`: a Chromium performance trace of the
    click to idle span is written there (load it in chrome://tracing or `bench/trace_summary.py`)."""
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(time.perf_counter())))
    page.add_init_script(RUN_RECORDER)
    if trace is not None:
        page.add_init_script(TRACE_STAMPS)
    page.goto(f"http://localhost:{port}/ablation")
    page.wait_for_selector("text=Run exact sweep", timeout=240_000)
    page.wait_for_selector(IDLE, timeout=240_000)
    page.wait_for_timeout(500)
    if trace is not None:
        page.context.browser.start_tracing(page=page, screenshots=False)
    began = time.perf_counter()
    sent = page.evaluate("performance.now()")
    page.get_by_role("button", name="Run exact sweep").click()
    try:
        page.wait_for_selector(CHART, timeout=900_000)
    except Exception:
        page.screenshot(path=str(REPO / "test-artifacts" / "bench-app-jobs-timeout.png"), full_page=True)
        raise
    page.wait_for_selector(IDLE, timeout=600_000)
    seconds = time.perf_counter() - began
    if trace is not None:
        trace.write_bytes(page.context.browser.stop_tracing())
    drawn = page.evaluate("performance.now()")
    shown = page.locator('[data-testid="stMetric"]').filter(has_text="Time").inner_text().split("\n")
    runs = [(t, state) for t, state in page.evaluate("window.__hsRuns") if t > sent]
    first = next((t for t, state in runs if state == "running"), sent)
    last = max((t for t, state in runs if state == "notRunning"), default=drawn)
    script = (f"script runs from {(first - sent) / 1000:.2f} s to {(last - sent) / 1000:.2f} s after the click, "
              f"{sum(1 for _, state in runs if state == 'running')} runs, the last message "
              f"{max(frames, default=began) - began:.2f} s after the click")
    return seconds, sum(1 for t in frames if t >= began), " ".join(shown) + "; " + script


def head_clicks(page, heads=((5, 2), (8, 1), (12, 4)), trace: Path | None = None) -> list[float]:
    """Click heatmap cells one after another; each time from the click to that head's heading shown, its pattern
    frame drawn and the script idle. `trace`: a Chromium performance trace of the first click written there."""
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
        tracing = trace is not None and not times
        if tracing:
            page.context.browser.start_tracing(page=page, screenshots=False)
        began = time.perf_counter()
        sent = page.evaluate("performance.now()")
        page.mouse.click(x, y)
        page.get_by_text(f"Attention pattern of head {layer}.{head} on", exact=False).wait_for(timeout=180_000)
        page.frame_locator('[data-testid="stIFrame"], iframe').last.locator("canvas, svg").first.wait_for(
            timeout=120_000)
        page.wait_for_selector(IDLE, timeout=180_000)
        times.append(time.perf_counter() - began)
        runs = [(t, state) for t, state in page.evaluate("window.__hsRuns") if t > sent]
        print(f"  click on {layer}.{head}: {times[-1]:.2f} s; script runs (s after the click): " + ", ".join(
            f"{state} {(t - sent) / 1000:.2f}" for t, state in runs), flush=True)
        if tracing:
            trace.write_bytes(page.context.browser.stop_tracing())
    return times


PLAIN_FORWARD = """
import sys, time, torch
sys.path.insert(0, {repo!r})
from transformers import AutoModelForCausalLM
from bench.long_prompt import english_text
from headscope.loading import ModelRequest, embedded_converted_folder, load_model
plain = AutoModelForCausalLM.from_pretrained(embedded_converted_folder()[0], dtype=torch.float32,
                                             attn_implementation="sdpa").eval()
ids = load_model(ModelRequest()).tensor([load_model(ModelRequest()).input_ids(english_text({chars}))])
with torch.inference_mode():
    plain(ids[:, :16])
    started = time.perf_counter(); plain(ids).logits; print(ids.shape[1], time.perf_counter() - started)
"""


def plain_forward(chars: int, env: dict) -> tuple[int, float]:
    done = subprocess.run([sys.executable, "-c", PLAIN_FORWARD.format(repo=str(REPO), chars=chars)], cwd=REPO,
                          env=env, check=True, capture_output=True, text=True)
    tokens, seconds = done.stdout.strip().splitlines()[-1].split()
    return int(tokens), float(seconds)


def script_span(page, sent: float) -> float:
    """Seconds from `sent` (the page's clock) to the end of the last script run after it: the server's part."""
    runs = [(t, state) for t, state in page.evaluate("window.__hsRuns") if t > sent]
    return (max((t for t, state in runs if state == "notRunning"), default=sent) - sent) / 1000


def long_prompt_pages(page, port: int, chars: int) -> dict[str, float]:
    """A long prompt opened by link on the prompt tester and on the attention page (4 heads), then one head added;
    beside each, when its last script run ended (`… script s`; the rest is the browser drawing)."""
    from urllib.parse import quote

    from bench.long_prompt import english_text

    text = quote(english_text(chars))
    figures = {}
    began = time.perf_counter()
    page.goto(f"http://localhost:{port}/?prompt={text}")
    page.wait_for_selector('[data-testid="hs-token-strip"]', timeout=600_000)
    page.wait_for_selector(IDLE, timeout=600_000)
    figures["prompt tester"] = time.perf_counter() - began
    figures["prompt tester script s"] = script_span(page, 0.0)
    heads = "3.4,9.1,17.2,23.3"
    began = time.perf_counter()
    page.goto(f"http://localhost:{port}/attention?prompt={text}&heads={heads}")
    page.wait_for_selector('iframe', timeout=600_000)
    page.wait_for_selector(IDLE, timeout=600_000)
    figures["attention, 4 heads"] = time.perf_counter() - began
    figures["attention, 4 heads script s"] = script_span(page, 0.0)
    box = page.get_by_role("textbox", name="Heads (layer.head, …) — overrides the preset")
    began = time.perf_counter()
    sent = page.evaluate("performance.now()")
    box.fill(heads.replace(",", ", ") + ", 12.1")
    box.press("Enter")
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="running"]', timeout=30_000)
    page.wait_for_selector(IDLE, timeout=600_000)
    figures["attention, one head added"] = time.perf_counter() - began
    figures["attention, one head added script s"] = script_span(page, sent)
    return figures


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-clicks", action="store_true")
    parser.add_argument("--no-circuit", action="store_true", help="leave out the circuit search (page and CLI)")
    parser.add_argument("--trace", type=Path, default=None,
                        help="write Chromium performance traces of the sweep's click to idle (sweep.json) and of "
                             "the first head click (click.json) to this folder")
    parser.add_argument("--long-chars", type=int, default=0,
                        help="also a long prompt of this many characters (16000: about 4,400 tokens) on both pages")
    args = parser.parse_args()
    rows = []
    with sync_playwright() as playwright:
        for _ in range(args.rounds):
            results = tempfile.mkdtemp(prefix="hs-bench-")
            # no time limit: this bench measures the job, not the confirmation (a loaded machine's estimate can be long)
            env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), HEADSCOPE_RESULTS_DIR=results,
                       HEADSCOPE_MAX_JOB_SECONDS="86400")
            load_before = os.getloadavg()[0]
            # the CLI runs before and after the page, and the page is compared with their mean: this machine's speed
            # drifts between minutes by more than the target's margin, and one run on one side biases the ratio
            cli_runs = [cli_seconds(env)]
            circuit_runs = [] if args.no_circuit else [cli_seconds(env, "circuit")]
            forward_before = plain_forward(args.long_chars, env)[1] if args.long_chars else 0.0
            port = free_port()
            os.environ.update(HEADSCOPE_RESULTS_DIR=results, HEADSCOPE_MAX_JOB_SECONDS="86400")
            server = start([sys.executable, "-m", "streamlit", "run", "app.py"], port)
            try:
                wait_healthy(port, time.time() + 240)
                browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                                     args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                shutil.rmtree(results, ignore_errors=True)  # the CLI's run is not read back by the page
                if args.trace is not None:
                    args.trace.mkdir(parents=True, exist_ok=True)
                seconds, messages, shown = page_sweep(page, port, args.trace and args.trace / "sweep.json")
                print(f"  page sweep {seconds:.1f} s ({shown}; {messages} messages)", flush=True)
                clicks = [] if args.no_clicks else head_clicks(page, trace=args.trace and args.trace / "click.json")
                circuit = None if args.no_circuit else page_circuit(page, port)
                if circuit is not None:
                    print(f"  page circuit {circuit[0]:.1f} s ({circuit[1]})", flush=True)
                long_figures = long_prompt_pages(page, port, args.long_chars) if args.long_chars else {}
                browser.close()
            finally:
                server.terminate()
                server.wait(timeout=30)
            cli_runs.append(cli_seconds(env))
            cli = statistics.mean(cli_runs)
            if not args.no_circuit:
                circuit_runs.append(cli_seconds(env, "circuit"))
            cli_circuit = statistics.mean(circuit_runs) if circuit_runs else None
            print(f"  CLI sweep {' and '.join(f'{t:.1f}' for t in cli_runs)} s, circuit "
                  f"{' and '.join(f'{t:.1f}' for t in circuit_runs)} s (before and after the page)", flush=True)
            if args.long_chars:
                tokens, forward = plain_forward(args.long_chars, env)
                forward = (forward + forward_before) / 2  # before and after the browser
                long_figures = {name: round(value if name.endswith(" s") else value / forward, 2)
                                for name, value in long_figures.items()}
                long_figures |= {"plain forward s": round(forward, 1), "tokens": tokens}
            row = {"long prompt (x plain forward)": long_figures,
                   "cli": cli, "cli runs": cli_runs, "page": seconds, "ratio": seconds / cli, "messages": messages,
                   "shown": shown, "clicks": clicks, "load": (load_before, os.getloadavg()[0]),
                   "circuit": None if circuit is None else {"cli": cli_circuit, "cli runs": circuit_runs,
                                                            "page": circuit[0], "ratio": circuit[0] / cli_circuit,
                                                            "shown": circuit[1]}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    cli, shown = statistics.median(r["cli"] for r in rows), statistics.median(r["page"] for r in rows)
    print(f"median: CLI {cli:.1f} s, page {shown:.1f} s, ratio {statistics.median(r['ratio'] for r in rows):.2f}")
    circuits = [r["circuit"] for r in rows if r["circuit"] is not None]
    if circuits:
        print(f"median circuit: CLI {statistics.median(c['cli'] for c in circuits):.1f} s, page "
              f"{statistics.median(c['page'] for c in circuits):.1f} s, ratio "
              f"{statistics.median(c['ratio'] for c in circuits):.2f}")


if __name__ == "__main__":
    main()
