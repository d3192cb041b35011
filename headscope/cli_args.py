"""Command-line options several commands share, defined once: headscope.cli and headscope.cli_paths both add them
from here (cli_paths cannot import cli, which imports it)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

# the built-in tasks (headscope.tasks.TASKS, not imported here: it loads torch, and --help should be instant)
TASK_HELP = "digits, number-words, months, days, template, step (--step K), decreasing, fibonacci, letters"
DATASET_HELP = "CSV or JSON with prompt, correct, incorrect[, corrupted_prompt]"
SEED_HELP = "seed for a built-in task's prompts and corrupted prompts (default 0)"
STEP_HELP = "the step of the step task (default 2)"


def add_prompt_source(parser: argparse.ArgumentParser, *, seed_help: str = SEED_HELP,
                      step_help: str = STEP_HELP) -> None:
    """The prompts a command runs on: --task or --dataset (exactly one), and for a built-in task --n-prompts,
    --seed and --step (headscope.cli's _model_and_dataset refuses them beside a dataset file)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="built-in task: " + TASK_HELP)
    source.add_argument("--dataset", metavar="FILE", help=DATASET_HELP)
    parser.add_argument("--n-prompts", type=int, default=None,
                        help="prompts generated for a built-in task (default 16)")
    parser.add_argument("--seed", type=int, default=None, help=seed_help)
    parser.add_argument("--step", type=int, default=None, help=step_help)


def print_intervals(confidence: Any, rows: Sequence[tuple[str, tuple[int, int]]], headers: str,
                    note: str = "") -> None:
    """The confidence table every --per-prompt command prints (headscope.confidence.RankingConfidence): a line saying
    how the bootstrap was drawn (`note` added), then per row its leading columns (formatted by the command, under
    `headers`), the cell's 95 % interval, its top-k share and whether the interval reaches 0; rows: (leading
    columns, the cell's [layer, head] index)."""
    intervals, stability = confidence.intervals, confidence.stability
    k = stability.k
    print(f"\nconfidence: {intervals.how}; top-{k} stability = share of resamples in the top-{k}{note}")
    print(f"\n{headers}  {'95% interval':>19}  {f'in top-{k}':>9}")
    for leading, at in rows:
        flag = "  crosses 0" if intervals.crosses_zero[at] else ""
        print(f"{leading}  [{intervals.low[at]:>+7.3f}, {intervals.high[at]:>+7.3f}]  {stability.frequency[at]:>8.0%}"
              f"{flag}")
