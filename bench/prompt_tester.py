"""Prompt-tester latency and memory on the embedded model: median of 20 analyses after load, against one bare
forward pass of the same prompt in the same process (the floor any analysis pays).

    python bench/prompt_tester.py [--model SOURCE] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from headscope.loading import ModelRequest, load_model
from headscope.predict import analyze_prompt

PROMPTS = ["1 2 3 4 ", "one two three four", "January February March April",
           "Van done in 1. Hat done in 2. Ring done in 3. Desk done in 4. Sun done in "]


def median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    model = load_model(ModelRequest(args.model))
    print(f"{model.info.name}: loaded in {time.perf_counter() - started:.2f} s (warm: converted weights cached)")
    for prompt in PROMPTS:
        tokens = model.tensor([model.input_ids(prompt)])
        forward = median_seconds(lambda tokens=tokens: model.logits(tokens), args.runs)
        full = median_seconds(lambda prompt=prompt: analyze_prompt(model, prompt, "5", "4", top_k=10), args.runs)
        print(f"  {prompt!r:<80} {tokens.shape[1]:>3} tokens: analysis {1000 * full:6.1f} ms "
              f"(median of {args.runs}), bare forward {1000 * forward:6.1f} ms, ratio {full / forward:.2f}×")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak resident memory {peak / 1024:.0f} MiB (before load {rss_before / 1024:.0f} MiB); "
          f"weights {model.info.memory_bytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
