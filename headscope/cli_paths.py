"""The `paths` command: path patching from the command line (headscope.path_patching).

`python -m headscope paths (--task T | --dataset F) (--sender L.H | --receiver L.H|logits) [--into q|k|v]
[--direction noise|denoise] [--method resample|mean|zero] [--n-prompts N] [--json]`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headscope.cli_args import add_prompt_source, print_intervals
from headscope.component import Component
from headscope.errors import InputError
from headscope.methods import get_method, methods_help

INTO_CHOICES = ("q", "k", "v")
DIRECTION_CHOICES = ("noise", "denoise")


@dataclass(frozen=True)
class CliSteps:
    """The command line's shared steps (headscope.cli passes its own: this module does not import it)."""

    add_model_options: Callable[[argparse.ArgumentParser], None]
    model_and_dataset: Callable[[argparse.Namespace], Any]
    progress_printer: Callable[[argparse.Namespace], Any]
    clear_progress: Callable[[argparse.Namespace], None]
    check_time: Callable[[argparse.Namespace, Callable[[], Any]], None]


def add_paths_parser(sub: Any, steps: CliSteps) -> None:
    paths = sub.add_parser("paths", help="path patching: a sender head's effect through each later head's query, "
                                         "key or value input, or a receiver's from each earlier head")
    add_prompt_source(paths)
    which = paths.add_mutually_exclusive_group(required=True)
    which.add_argument("--sender", metavar="L.H", help="sender head: its path into every later head")
    which.add_argument("--receiver", metavar="L.H|logits",
                       help="receiver head (every earlier head's path into it), or 'logits' (every head's direct "
                            "path to the unembedding)")
    paths.add_argument("--into", choices=INTO_CHOICES, default="q",
                       help="the receiver's input the path enters (default q; k and v are per KV group on "
                            "grouped-query models)")
    paths.add_argument("--direction", choices=DIRECTION_CHOICES, default="noise",
                       help="noise (default): clean run, the path carries the sender's ablated value; denoise: "
                            "corrupted run, the path carries its clean value")
    paths.add_argument("--method", default="resample",
                       help=f"how the sender is ablated when noising: {methods_help()} (default: resample)")
    paths.add_argument("--top", type=int, default=10, help="how many paths the table lists (default 10)")
    paths.add_argument("--per-prompt", action="store_true",
                       help="each prompt's own LDs and bootstrap intervals of each path's effect: --json adds "
                            "per_prompt_ld (prompts × layers × heads), per_prompt_run_ld, change_low, change_high, "
                            "crosses_zero, in_top_k and bootstrap; the table adds 95%% intervals and top-10 "
                            "stability (1000 resamples, seed 0)")
    paths.add_argument("--no-cache", action="store_true", help="recompute even if the result is cached")
    paths.add_argument("--no-time-limit", action="store_true",
                       help="run even if the job is estimated above HEADSCOPE_MAX_JOB_SECONDS")
    steps.add_model_options(paths)
    paths.set_defaults(handler=functools.partial(cmd_paths, steps=steps))


def _head(option: str, text: str) -> Component:
    try:
        head = Component.parse(text)
    except ValueError:
        raise InputError(f"{option} {text!r} is not a head: write layer.head, e.g. 5.2.") from None
    if head.head is None:
        raise InputError(f"{option} must name a head (layer.head), not {head.label}.")
    return head


def query_from_args(args: argparse.Namespace) -> Any:
    """The PathQuery the options state (checked against the model later)."""
    from headscope.path_patching import PathQuery

    get_method(args.method)  # an unknown method is refused before any model loads
    options = {"into": args.into, "direction": args.direction, "method": args.method}
    if args.sender is not None:
        query = PathQuery(sender=_head("--sender", args.sender), **options)
    elif args.receiver.strip().lower() == "logits":
        query = PathQuery(to_logits=True, **options)
    else:
        query = PathQuery(receiver=_head("--receiver", args.receiver), **options)
    query.check_options()
    return query


def _nulls(grid: Any) -> list[list[float | None]]:
    return [[None if math.isnan(float(v)) else float(v) for v in row] for row in grid]


def result_json(result: Any, per_prompt: bool) -> dict[str, Any]:
    """The --json object: the keys the README documents."""
    query = result.query
    out = {
        "model": result.model, "task": result.task, "sender": None if query.sender is None else query.sender.label,
        "receiver": "logits" if query.to_logits else None if query.receiver is None else query.receiver.label,
        "into": query.into, "direction": query.direction, "method": query.method, "clean_ld": result.clean_ld,
        "corrupt_ld": result.corrupt_ld, "ld": _nulls(result.ld), "to_logits_ld": result.to_logits_ld,
        "kv_grouped": result.kv_grouped, "n_prompts": result.n_prompts, "seconds": result.seconds,
        "cached": result.cached,
    }
    if per_prompt:
        out["per_prompt_ld"] = [_nulls(prompt) for prompt in result.per_prompt_ld]
    return out


def confidence_json(confidence: Any, run_ld: Any, kv_grouped: bool) -> dict[str, Any]:
    """--per-prompt's interval fields: each prompt's run LD, each path's 95 % interval of its effect (patched − run
    LD), whether it reaches 0, its top-k share, and how the bootstrap was drawn (null off the partners)."""
    import numpy as np

    intervals, stability = confidence.intervals, confidence.stability
    valid = ~np.isnan(intervals.mean)
    return {
        "per_prompt_run_ld": [float(v) for v in run_ld],
        "change_low": _nulls(intervals.low), "change_high": _nulls(intervals.high),
        "crosses_zero": [[bool(c) if ok else None for c, ok in zip(row, mask, strict=True)]
                         for row, mask in zip(intervals.crosses_zero, valid, strict=True)],
        "in_top_k": _nulls(np.where(valid, stability.frequency, np.nan)),
        "bootstrap": {"level": intervals.level, "resamples": intervals.resamples, "seed": intervals.seed,
                      "k": stability.k, "unit": "kv-group" if kv_grouped else "head"},
    }


def cmd_paths(args: argparse.Namespace, steps: CliSteps) -> int:
    from headscope.backends.interventions import UnsupportedIntervention
    from headscope.job_time import paths_estimate
    from headscope.path_patching import load_paths, run_paths
    from headscope.tasks import prepare_dataset

    query = query_from_args(args)
    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}.")
    model, dataset = steps.model_and_dataset(args)
    model.prepare_hooks()
    encoded = prepare_dataset(model, dataset)
    if args.no_cache or load_paths(model, encoded, query) is None:
        steps.check_time(args, lambda: paths_estimate(model, encoded, query))
    try:
        result = run_paths(model, encoded, query, use_cache=not args.no_cache, progress=steps.progress_printer(args))
    except UnsupportedIntervention as error:
        raise InputError(str(error)) from None
    steps.clear_progress(args)
    confidence = None
    if args.per_prompt:
        from headscope.path_confidence import path_confidence

        confidence = path_confidence(result, model.info.heads_per_kv)
    if args.json:
        out = result_json(result, args.per_prompt) | {"backend": model.info.backend}
        if confidence is not None:
            out |= confidence_json(confidence, result.run_prompt_ld, result.cells_per_group)
        print(json.dumps(out))
        return 0
    print(f"model: {result.model}   backend: {model.info.backend_label}   task: {result.task}   "
          f"paths: {query.sender_label} → {query.receiver_label} ({query.into} input)   {query.direction}, "
          f"{query.method}")
    corrupt = "n/a" if result.corrupt_ld is None else f"{result.corrupt_ld:.3f}"
    print(f"clean LD {result.clean_ld:.3f}   corrupted LD {corrupt}   prompts {result.n_prompts}   "
          f"{result.seconds:.1f} s{'  (from cache)' if result.cached else ''}")
    if result.kv_grouped:
        shows = ", and every head of a group shows the group's value" if result.cells_per_group else ""
        print(f"note: {model.info.name} shares each key/value input among {model.info.heads_per_kv} query heads: "
              f"the path enters the whole KV group{shows}.")
    if result.to_logits_ld is not None:
        print(f"{query.sender_label} → logits (direct path): LD {result.to_logits_ld:.3f}   "
              f"change {result.to_logits_ld - result.run_ld:+.3f}")
    partner = "receiver" if query.sender is not None else "sender"
    headers = f"{partner:>8}  {'LD':>8}  {'change':>8}"
    rows = [(f"{head.label:>8}  {ld:>8.3f}  {ld - result.run_ld:>+8.3f}", (head.layer, head.head))
            for head, ld in result.top_paths(args.top)]
    if confidence is not None:
        print_intervals(confidence, rows, headers, " (KV groups counted once)" if result.cells_per_group else "")
        return 0
    print(f"\n{headers}")
    for line, _ in rows:
        print(line)
    return 0
