"""Path patching speed on the embedded model (CPU): one sender over every later head, batched (the fast path:
receivers join the block loop at their layer, many per batch; and the general path: many receivers per whole
forward) against one whole forward per receiver, in one process, on the same task.

    python bench/path_patching.py                       # sender 20.1, 8 digit prompts, resample, into q
    python bench/path_patching.py --sender 14.4 --prompts 4
    python bench/path_patching.py --example 3           # also: which heads the top total-effect heads feed

Prints seconds, the speed-ups, the largest difference between the routes and the load average (a shared machine's
figures move with it). --example N runs an exact resample sweep on the digits task first and, for its N heads
of largest total effect, the receivers their path changes most.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from headscope.backends.interventions import EdgeGroups
from headscope.backends.path_runs import edge_lds
from headscope.component import Component
from headscope.engine import fast_runner
from headscope.loading import ModelRequest, load_model
from headscope.path_patching import PathQuery, compute_paths, path_groups
from headscope.tasks import build_task_dataset, prepare_dataset


def timed(label: str, fn):
    """fn's value and wall seconds; prints the wall seconds and the process's CPU seconds (every thread), the figure
    that stays comparable on a shared machine where a niced run waits for the CPU."""
    started, cpu = time.perf_counter(), time.process_time()
    value = fn()
    seconds = time.perf_counter() - started
    print(f"  {label:<58} {seconds:8.2f} s  (CPU {time.process_time() - cpu:8.2f} s)", flush=True)
    return value, seconds


def example(model, encoded, top: int) -> None:
    """The digits task's top total-effect heads (exact resample ablation) and the heads each feeds most."""
    from headscope.ablation import exact_sweep

    sweep, _ = timed("exact resample sweep (total effects)", lambda: exact_sweep(
        model, encoded, "resample", include_mlp=False))
    change = sweep.ablated_ld - sweep.clean_ld
    order = np.argsort(-np.abs(change), axis=None)
    n_layers = model.info.n_layers
    heads = [Component(int(i) // change.shape[1], int(i) % change.shape[1]) for i in order]
    heads = [h for h in heads if h.layer < n_layers - 1][:top]
    print(f"clean LD {sweep.clean_ld:.3f}; top total-effect heads (LD change when resampled): "
          + ", ".join(f"{h.label} {change[h.layer, h.head]:+.3f}" for h in heads))
    for head in heads:
        result, _ = timed(f"paths from {head.label} into q", lambda h=head: compute_paths(
            model, encoded, PathQuery(sender=h)))
        fed = ", ".join(f"{r.label} {ld - result.run_ld:+.3f}" for r, ld in result.top_paths(5))
        print(f"    {head.label} feeds (LD change with only that path resampled): {fed}; direct to logits "
              f"{(result.to_logits_ld or 0.0) - result.run_ld:+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--sender", default="20.1")
    parser.add_argument("--into", default="q", choices=("q", "k", "v"))
    parser.add_argument("--method", default="resample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--example", type=int, default=0, metavar="N")
    parser.add_argument("--skip-unbatched", action="store_true")
    parser.add_argument("--only-example", action="store_true", help="skip the timings")
    args = parser.parse_args()

    model = load_model(ModelRequest(args.model, device="cpu"))
    model.prepare_hooks()
    info = model.info
    encoded = prepare_dataset(model, build_task_dataset(args.task, args.prompts, seed=args.seed, model=model))
    query = PathQuery(sender=Component.parse(args.sender), into=args.into, method=args.method)
    planned = path_groups(model, encoded, query)
    task, edges = planned.task, EdgeGroups.from_groups(planned.groups, info.n_layers)
    receivers = len(edges.receivers)
    print(f"{info.name}: {info.n_layers} layers × {info.n_heads} heads; sender {query.sender_label} → "
          f"{receivers} receivers ({args.into} input); {encoded.n_prompts} {args.task} prompts of "
          f"{encoded.seq_len} tokens; {args.method}; torch threads {torch.get_num_threads()}")
    if args.only_example:
        example(model, encoded, args.example or 3)
        return
    print(f"load average before: {os.getloadavg()}")
    native = getattr(model, "native", None)
    route = native.swapped if native is not None else None

    runner = fast_runner(model, task.seq_len, required=True)
    warm = path_groups(model, encoded, PathQuery(sender=Component(info.n_layers - 2, 0)))
    edge_lds(model, warm.task, EdgeGroups.from_groups(warm.groups, info.n_layers), runner=runner)
    fast, fast_s = timed("batched, fast path (receivers join at their layer)",
                         lambda: edge_lds(model, task, edges, runner=runner))
    general, general_s = timed("batched, general path (whole forwards)",
                               lambda: edge_lds(model, task, edges, route=route))
    print(f"  speed-up of the fast path over batched whole forwards: {general_s / fast_s:.1f}×")
    print(f"  largest |fast − general|: {np.abs(fast - general).max():.2e}")
    if not args.skip_unbatched:
        single, single_s = timed("one whole forward per receiver",
                                 lambda: edge_lds(model, task, edges, route=route, max_edges=1))
        print(f"  speed-up, batched fast path vs one forward per receiver: {single_s / fast_s:.1f}×; "
              f"batched general path: {single_s / general_s:.1f}×")
        print(f"  largest |fast − one per receiver|: {np.abs(fast - single).max():.2e}")
    print(f"load average after: {os.getloadavg()}")
    if args.example:
        example(model, encoded, args.example)


if __name__ == "__main__":
    main()
