"""Direct logit attribution, what a head writes and the logit lens: their cost against one plain forward of the same
prompts in the same process (medians), on the embedded model unless --model says otherwise.

    python bench/dla_lens.py [--model SOURCE] [--backend bridge|nnsight] [--prompts 16] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.prompt_tester import median_seconds  # the same warm-up and median
from headscope.component import Component
from headscope.lens import logit_lens
from headscope.loading import ModelRequest, load_model
from headscope.logit_attribution import head_writes, read_direct, run_dla
from headscope.tasks import build_task_dataset, prepare_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--backend", default="bridge")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    model = load_model(ModelRequest(args.model, device=args.device, backend=args.backend))
    model.prepare_hooks()
    print(f"{model.info.name} on {model.info.backend_label}, {model.placement.label}")
    encoded = prepare_dataset(model, build_task_dataset("digits", args.prompts, model=model))
    clean = encoded.clean
    ids = encoded.clean[:, :1].repeat(1, 2)  # any two token ids: the cost does not depend on them
    forward = median_seconds(lambda: model.last_logits(clean), args.runs)
    direct = median_seconds(lambda: read_direct(model, clean, ids), args.runs)
    dla = median_seconds(lambda: run_dla(model, encoded, use_cache=False), args.runs)
    one = clean[:1]
    forward_one = median_seconds(lambda: model.last_logits(one), args.runs)
    prompt = encoded.dataset.items[0].prompt
    lens = median_seconds(lambda: logit_lens(model, prompt, encoded.dataset.items[0].correct), args.runs)
    writes = median_seconds(lambda: head_writes(model, prompt, Component(model.info.n_layers - 1, 0), -1), args.runs)
    print(f"{args.prompts} digit prompts of {encoded.seq_len} tokens ({encoded.n_prompts} rows; the task's repeats "
          f"computed once by run_dla), median of {args.runs}:")
    print(f"  one forward (last-position logits)  {1000 * forward:8.1f} ms")
    print(f"  read_direct (every head and MLP)    {1000 * direct:8.1f} ms  {direct / forward:5.2f}× a forward")
    print(f"  run_dla (uncached)                  {1000 * dla:8.1f} ms  {dla / forward:5.2f}× a forward")
    print(f"one prompt: forward {1000 * forward_one:.1f} ms; logit lens {1000 * lens:.1f} ms "
          f"({lens / forward_one:.2f}×); what a head writes {1000 * writes:.1f} ms ({writes / forward_one:.2f}×)")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
