"""One side of an A/B speed comparison that a shared machine cannot spoil: the exact sweep and the circuit search on
the embedded model with ONE torch thread, timed in CPU seconds of the calling thread (time.thread_time), which other
processes' load barely moves (unlike wall time), beside wall seconds. Uses only functions both the engine before issue
16 (dc2ecbc) and today's have, so bench/engine_regression.sh's exported trees can run this same file:

    PYTHONPATH=/tmp/engreg/A python bench/engine_cpu_ab.py --repeats 3     # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from headscope.ablation import exact_sweep, prepare_dataset
from headscope.circuit import find_circuit
from headscope.loading import ModelRequest, load_model
from headscope.tasks import build_task_dataset


def clocked(run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    return time.thread_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--circuit-prompts", type=int, default=8)
    parser.add_argument("--method", default="mean")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(ModelRequest("embedded"))
    sweep_data = prepare_dataset(model, build_task_dataset("digits", args.prompts, seed=0, model=model))
    circuit_data = prepare_dataset(model, build_task_dataset("digits", args.circuit_prompts, seed=0, model=model))
    jobs = {
        "exact sweep, heads + MLPs": lambda: exact_sweep(model, sweep_data, args.method, include_mlp=True),
        "exact sweep, every prompt": lambda: exact_sweep(model, sweep_data, args.method, include_mlp=True,
                                                         deduplicate=False),
        "circuit search": lambda: find_circuit(model, circuit_data, args.method, 80.0),
    }
    jobs["exact sweep, heads + MLPs"]()  # warm-up: hooks set up, allocator, kernels
    out: dict[str, dict[str, float]] = {}
    for name, run in jobs.items():
        cpu, wall = zip(*(clocked(run) for _ in range(args.repeats)), strict=True)
        out[name] = {"cpu": statistics.median(cpu), "wall": statistics.median(wall), "cpu_all": list(cpu)}
    print(json.dumps({"load": os.getloadavg()[0], "jobs": out}))


if __name__ == "__main__":
    main()
