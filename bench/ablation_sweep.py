"""Ablation sweep speed on the embedded model (CPU): the exact batched engine and the attribution estimate, as ratios
against the naive loop (one full forward pass per head) run in the same process.

    python bench/ablation_sweep.py                 # 270 heads, 16 digit prompts, mean ablation
    python bench/ablation_sweep.py --prompts 8 --method zero

Prints seconds, speed-ups, the largest difference from the naive loop and the estimate's rank correlation with the
exact result. Heads only in the comparison (the naive loop has no MLP rows); the full engine run (heads + MLPs) is
reported beside it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from headscope.ablation import attribution_sweep, exact_sweep, naive_sweep, prepare_dataset
from headscope.loading import ModelRequest, load_model
from headscope.tasks import build_task_dataset


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a.ravel())), np.argsort(np.argsort(b.ravel()))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def timed(label: str, fn):
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    print(f"  {label:<52} {seconds:8.2f} s", flush=True)
    return value, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--method", default="mean")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = load_model(ModelRequest(args.model))
    info = model.info
    encoded = prepare_dataset(model, build_task_dataset(args.task, args.prompts, seed=args.seed, model=model))
    distinct = len({tuple(row) for row in encoded.clean.tolist()})
    print(f"{info.name}: {info.n_layers} layers × {info.n_heads} heads = {info.n_layers * info.n_heads} heads; "
          f"{encoded.n_prompts} {args.task} prompts ({distinct} distinct) of {encoded.seq_len} tokens; "
          f"{args.method} ablation; torch threads {torch.get_num_threads()}")

    exact_sweep(model, encoded, args.method, include_mlp=False)  # warm-up (allocator, kernels)
    (naive, _, naive_clean), t_naive = timed("naive loop: one full forward per head (baseline)",
                                             lambda: naive_sweep(model, encoded, args.method, include_mlp=False))
    (exact_nd, _, _, _), t_exact_nd = timed(
        "exact batched, every prompt computed",
        lambda: exact_sweep(model, encoded, args.method, include_mlp=False, deduplicate=False))
    (exact, _, clean, _), t_exact = timed(
        "exact batched, repeated prompts computed once",
        lambda: exact_sweep(model, encoded, args.method, include_mlp=False))
    _, t_full = timed("exact batched, heads + MLP rows (as the app runs)",
                      lambda: exact_sweep(model, encoded, args.method, include_mlp=True))
    print(f"  (the app's run with MLP rows costs {t_full / t_exact:.2f}× the heads-only run)")
    (estimate, _, _, _), t_attr = timed("attribution-patching estimate (1 fwd + 1 bwd)",
                                        lambda: attribution_sweep(model, encoded, args.method))

    diff_nd = float(np.abs(exact_nd - naive).max())
    diff = float(np.abs(exact - naive).max())
    print()
    print(f"speed-up vs naive: exact (every prompt) {t_naive / t_exact_nd:.2f}×, exact (distinct prompts) "
          f"{t_naive / t_exact:.2f}×, attribution {t_naive / t_attr:.0f}×")
    print(f"max |exact − naive| of LD: {diff_nd:.2e} (every prompt), {diff:.2e} (distinct); "
          f"clean LD {clean:.4f} (naive {naive_clean:.4f})")
    top_estimate = set(np.argsort(-np.abs(estimate - clean), axis=None)[:10])
    top_exact = set(np.argsort(-np.abs(exact - clean), axis=None)[:10])
    print(f"attribution vs exact: Spearman {spearman(estimate - clean, exact - clean):.3f} over all heads; "
          f"top-10 overlap {len(top_estimate & top_exact)}/10")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          f"(weights {info.memory_bytes / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
