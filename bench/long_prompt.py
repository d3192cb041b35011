"""Long prompts on the embedded model (CPU): the prompt tester and the pattern view against a plain transformers
forward of the same prompt, run in the same process.

    python bench/long_prompt.py                   # 20,000 characters of English (this repository's README)
    python bench/long_prompt.py --chars 8000 --heads 3.4,17.2

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--heads", default="3.4,9.1,17.2,23.3", help="heads of the pattern view")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

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
