"""Long prompts on the embedded model (CPU): the prompt tester and the pattern view against a plain transformers
forward of the same prompt, run in the same process.

    python bench/long_prompt.py                   # 20,000 characters of English (this repository's README)
    python bench/long_prompt.py --chars 8000 --heads 3.4,17.2
    python bench/long_prompt.py --browser --chars 16000   # the app in Chromium (bench/app_jobs.py's long steps)

`--browser`: a server with HEADSCOPE_PROFILE=1 (its `profile <call> <seconds>` lines are printed after the run), the
server warmed (the prompt tester and the attention page on their defaults, as after bench/app_jobs.py's sweep), the
long prompt opened by link on the prompt tester and on the attention page (4 heads), one head added, each beside the
mean of two plain forwards of the same prompt, each in its own process, before and after the browser, with the bytes
the browser received.

Baseline: the model loaded by plain transformers (SDPA attention, float32), one forward returning the logits of every
position. Target: the prompt tester (every position's top-1, the top-k and the answer at the last position) and the
pattern view of a few heads within 1.5× of it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from headscope.heads import parse_head_list
from headscope.loading import ModelRequest, embedded_converted_folder, load_model
from headscope.patterns import compute_patterns
from headscope.predict import analyze_prompt

ROOT = Path(__file__).resolve().parent.parent


def english_text(chars: int) -> str:
    """Plain English prose from the README (repeated if needed), cut at a word boundary."""
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    while len(text) < chars:
        text = text + " " + text
    return text[:chars].rsplit(" ", 1)[0]


def timed(label: str, fn, repeats: int = 1):
    best, value = None, None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    print(f"  {label:<60} {best:8.2f} s", flush=True)
    return best, value


def browser_run(chars: int) -> None:
    """The app's long-prompt steps in Chromium (bench/app_jobs.py's `long_prompt_pages`), then a plain forward."""
    import json
    import shutil
    import subprocess
    import tempfile

    from playwright.sync_api import sync_playwright

    from bench.app_jobs import long_prompt_pages, plain_forward
    from bench.browser import IDLE, wait_healthy
    from bench.load import CHROMIUM_ARGS, RUN_RECORDER, free_port

    results = tempfile.mkdtemp(prefix="hs-long-")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), HEADSCOPE_RESULTS_DIR=results,
               HEADSCOPE_MAX_JOB_SECONDS="86400", HEADSCOPE_PROFILE="1")
    load_before = os.getloadavg()[0]
    # a plain forward before and after the browser, the pages compared with their mean: this machine's speed drifts
    # between minutes by more than the target's margin
    tokens, forward_before = plain_forward(chars, env)
    port = free_port()
    log = Path(results) / "server.log"
    with open(log, "w") as stderr:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                   "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=stderr)
    received: list[int] = []
    try:
        wait_healthy(port, time.time() + 240)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.add_init_script(RUN_RECORDER)
            page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: received.append(len(payload))))
            for path in ("/", "/attention"):  # warm, as after bench/app_jobs.py's sweep: model and hooks set up
                page.goto(f"http://localhost:{port}{path}")
                page.wait_for_selector("iframe" if path == "/attention" else '[data-testid="hs-token-strip"]',
                                      timeout=600_000)
                page.wait_for_selector(IDLE, timeout=600_000)
            page.wait_for_timeout(15_000)  # the background first-use work (pattern route check, block cost) ends
            began = time.time()
            received.clear()
            figures = long_prompt_pages(page, port, chars)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    tokens, forward_after = plain_forward(chars, env)
    forward = (forward_before + forward_after) / 2
    ratios = {name: round(value if name.endswith(" s") else value / forward, 2) for name, value in figures.items()}
    print(json.dumps({"seconds": {name: round(value, 2) for name, value in figures.items()},
                      "x plain forward": ratios, "plain forward s": [round(forward_before, 2), round(forward_after, 2)],
                      "tokens": tokens,
                      "browser received MB": round(sum(received) / 2**20, 1),
                      "load": (load_before, os.getloadavg()[0])}), flush=True)
    for line in log.read_text().splitlines():  # profile <call> <seconds> <wall clock at its end>
        if line.startswith("profile "):
            *name, seconds, end = line.split()[1:]
            print(f"  {' '.join(name):<28} {float(seconds):7.2f} s, ended at {float(end) - began:7.2f} s")
    shutil.rmtree(results, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--heads", default="3.4,9.1,17.2,23.3", help="heads of the pattern view")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--browser", action="store_true", help="the app's pages in Chromium instead")
    args = parser.parse_args()
    if args.browser:
        browser_run(args.chars)
        return

    from transformers import AutoModelForCausalLM

    folder, _ = embedded_converted_folder()
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
    model = load_model(ModelRequest())
    prompt = english_text(args.chars)
    ids = model.tensor([model.input_ids(prompt)])
    heads = parse_head_list(args.heads)
    print(f"{model.info.name}: a {len(prompt):,}-character prompt, {ids.shape[1]:,} tokens (BOS included); "
          f"torch threads {torch.get_num_threads()}")

    with torch.inference_mode():
        t_plain, _ = timed("plain transformers forward (SDPA, all logits) — baseline",
                           lambda: plain(ids).logits, args.repeats)
    t_tester, _ = timed("prompt tester: analyze_prompt (top-1 everywhere, top-k, answer)",
                        lambda: analyze_prompt(model, prompt, " the", " a", 10), args.repeats)
    t_patterns, _ = timed(f"pattern view: {len(heads)} heads ({args.heads})",
                          lambda: compute_patterns(model, prompt, heads), args.repeats)
    print(f"\nprompt tester {t_tester / t_plain:.2f}× the plain forward; pattern view {t_patterns / t_plain:.2f}× "
          "(target ≤ 1.5×)")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
