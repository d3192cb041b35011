"""How good are the time bounds? Each job's estimate before it starts (headscope.job_time) beside its measured time,
in one process on the embedded model (issue 20: "Estimate every job's time before it starts from the measured cost of
a block on this machine").

    python bench/job_time.py                      # digits and months at 16 and 48 prompts
    python bench/job_time.py --prompts 16 --tasks digits

For each task and prompt count: the exact sweep, the attribution estimate, the circuit search (threshold 80, until
stable, and in one pass) and path patching (sender 20.1 into q, resample), each computed without the results cache;
prints the estimate, the measured seconds and measured ÷ estimate (a job the task refuses, e.g. a circuit search on
prompts the model gets wrong, is skipped and said). A good bound is within 1.5× either way; the factors in
headscope/job_time.py (CALIBRATION) are what this calibrates. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from headscope.ablation import prepare_dataset, run_sweep
from headscope.api import load
from headscope.circuit import run_circuit
from headscope.component import Component
from headscope.errors import InputError
from headscope.job_time import CALIBRATION, JobKind, circuit_estimate, paths_estimate, sweep_estimate
from headscope.path_patching import PathQuery, run_paths
from headscope.tasks import build_task_dataset


def timed(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def jobs_for(model, encoded, method: str, sender: Component) -> list[tuple[str, JobKind, Callable, Callable]]:
    """(name, its calibration entry, its estimate, its run) of each job on one dataset."""
    query = PathQuery(sender=sender, into="q", direction="noise", method="resample")
    return [
        ("exact sweep", "sweep", lambda: sweep_estimate(model, encoded, method, False),
         lambda: run_sweep(model, encoded, method, use_cache=False)),
        ("attribution estimate", "attribution", lambda: sweep_estimate(model, encoded, method, True),
         lambda: run_sweep(model, encoded, method, estimate=True, use_cache=False)),
        ("circuit search", "circuit", lambda: circuit_estimate(model, encoded, method, False, False),
         lambda: run_circuit(model, encoded, method, 80.0, use_cache=False)),
        ("circuit search, one pass", "one-pass circuit", lambda: circuit_estimate(model, encoded, method, True, False),
         lambda: run_circuit(model, encoded, method, 80.0, one_pass=True, use_cache=False)),
        ("path patching (20.1 → q)", "paths", lambda: paths_estimate(model, encoded, query),
         lambda: run_paths(model, encoded, query, use_cache=False)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,months")
    parser.add_argument("--prompts", default="16,48")
    parser.add_argument("--method", default="mean")
    args = parser.parse_args()

    model = load().backend
    model.prepare_hooks()
    sender = Component(20, 1)
    ratios: dict[str, list[float]] = {}
    raw: dict[JobKind, list[float]] = {}  # measured ÷ the estimate at factor 1: CALIBRATION's ratios
    header = f"{'task':<8} {'n':>3} {'rows':>4} {'job':<28} {'estimate':>9} {'measured':>9} {'ratio':>6}"
    print(f"{header}   load {os.getloadavg()[0]:.1f}")
    for task in args.tasks.split(","):
        for n_prompts in (int(n) for n in args.prompts.split(",")):
            encoded = prepare_dataset(model, build_task_dataset(task, n_prompts, seed=0, model=model))
            jobs = jobs_for(model, encoded, args.method, sender)
            for name, kind, estimate_of, run in jobs:
                estimate = estimate_of()
                assert estimate is not None
                try:
                    measured = timed(run)
                except InputError as error:  # e.g. a circuit search on prompts the model gets wrong
                    print(f"{task:<8} {n_prompts:>3} {estimate.rows:>4} {name:<28} skipped: {error}", flush=True)
                    continue
                ratio = measured / estimate.seconds
                ratios.setdefault(name, []).append(ratio)
                raw.setdefault(kind, []).append(ratio * CALIBRATION[kind].factor)
                print(f"{task:<8} {n_prompts:>3} {estimate.rows:>4} {name:<28} {estimate.seconds:8.1f}s "
                      f"{measured:8.1f}s {ratio:6.2f}   load {os.getloadavg()[0]:.1f}", flush=True)
    print("\nmeasured ÷ estimate, median per job (1.0 = exact; the factor to multiply the job's factor by):")
    for name, values in ratios.items():
        print(f"  {name:<28} {statistics.median(values):.2f}  ({', '.join(f'{v:.2f}' for v in values)})")
    print("\nmeasured ÷ the estimate at factor 1 (CALIBRATION's ratios; its factor is their median):")
    for kind, values in raw.items():
        print(f"  {kind:<28} median {statistics.median(values):.2f}  ratios ({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
