"""headscope's CLI commands on a local NDIF (tests/ndif/serve.sh) beside the same command on the local nnsight backend:
wall time, HTTP requests and bytes each way (counted on the client's httpx), and NDIF's overhead per request.

    tests/ndif/serve.sh start && eval "$(tests/ndif/serve.sh env)"
    python bench/ndif.py                              # every command below, on the embedded model
    python bench/ndif.py --only tokens --tiny         # on the tiny random Llama: NDIF's overhead alone

Each command runs in this process (headscope.cli.main), the remote one first, then the local one. Overhead per
request = (remote wall - local wall) / jobs sent; on this test bed the "remote" model runs on the same CPUs,
so that is NDIF's queue, Ray, object-store and polling cost, not a network's. Job latency is measured on the
client: from sending `POST /request` to the end of the result's download from the object store (median, max).
With --tiny the model is the tiny random Llama (tests/ndif/tiny_models.py), whose forward takes milliseconds: its
job latency is NDIF's overhead per request outright.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx

from headscope.cli import main

HOSTED = "HuggingFaceTB/SmolLM2-135M-Instruct"
TESTBED = os.environ.get("NDIF_TESTBED_DIR", "/tmp/headscope-ndif")
TINY = ("headscope-tiny/llama", os.path.join(TESTBED, "tiny", "llama"))
OUT = tempfile.mkdtemp(prefix="headscope-bench-ndif-")  # patterns' HTML view, and a results folder of its own:
os.environ["HEADSCOPE_RESULTS_DIR"] = os.path.join(OUT, "results")  # a cached result would send no job
COMMANDS = {
    "tokens": ["tokens", "The capital of France is", "--answer", " Paris"],
    "ablate": ["ablate", "--task", "digits", "--n-prompts", "4", "--method", "zero", "--no-cache"],
    "heads": ["heads", "--score", "induction", "--prompt", "a b c d e a b c d e", "--no-cache"],
    "lens": ["lens", "1 2 3 4 ", "--answer", "5", "--contrast", "6"],
    "dla": ["dla", "--task", "digits", "--n-prompts", "4", "--no-cache"],
    "patterns": ["patterns", "--prompt", "When Mary and John went to the store, John gave a drink to", "--heads",
                 "0.1,1.2", "--html", os.path.join(OUT, "patterns.html")],
    "circuit": ["circuit", "--task", "digits", "--n-prompts", "4", "--method", "mean", "--one-pass", "--no-cache"],
    "paths": ["paths", "--task", "digits", "--n-prompts", "4", "--receiver", "logits", "--no-cache"],
}


@dataclass
class Traffic:
    requests: int = 0
    sent: int = 0
    received: int = 0
    by_path: dict | None = None
    latencies: list | None = None  # seconds from POST /request to the result's download, one per job


TRAFFIC = Traffic(by_path={}, latencies=[])
_SENT_AT: list[float] = []  # jobs sent whose result has not come back yet (results arrive in order here)
API_CALLS = {"request", "response", "status", "subscribe", "ping", "connected"}


def _call(request: httpx.Request) -> str:
    return request.url.path.split("/")[1] if request.url.path.count("/") else request.url.path


def _count_request(request: httpx.Request) -> None:
    TRAFFIC.requests += 1
    TRAFFIC.sent += len(request.read())
    path = _call(request)
    if path == "request":
        _SENT_AT.append(time.perf_counter())
    elif path not in API_CALLS:
        path = "store GET"  # the presigned object-store address of a result
    TRAFFIC.by_path[path] = TRAFFIC.by_path.get(path, 0) + 1


def _count_response(response: httpx.Response) -> None:
    TRAFFIC.received += len(response.read())
    if _call(response.request) not in API_CALLS and _SENT_AT:
        TRAFFIC.latencies.append(time.perf_counter() - _SENT_AT.pop(0))


_init = httpx.Client.__init__


def _counting_init(self, *args, **kwargs):
    hooks = kwargs.pop("event_hooks", None) or {}
    hooks = {"request": [*hooks.get("request", []), _count_request],
             "response": [*hooks.get("response", []), _count_response]}
    _init(self, *args, event_hooks=hooks, **kwargs)


httpx.Client.__init__ = _counting_init


def _run(argv: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return time.perf_counter() - started, code


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(COMMANDS), action="append")
    parser.add_argument("--tiny", action="store_true", help="the tiny random Llama instead of the embedded model")
    args = parser.parse_args()
    if not os.environ.get("NDIF_HOST"):
        raise SystemExit('NDIF_HOST is not set: tests/ndif/serve.sh start && eval "$(tests/ndif/serve.sh env)"')
    remote_model, local_model = TINY if args.tiny else (HOSTED, "embedded")
    print(f"model {remote_model}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'command':8} {'NDIF s':>8} {'local s':>8} {'requests':>8} {'sent KB':>8} {'recv KB':>8} "
          f"{'s/job':>6} {'job s median/max':>16}  calls")
    for name in args.only or list(COMMANDS):
        before = Traffic(TRAFFIC.requests, TRAFFIC.sent, TRAFFIC.received, dict(TRAFFIC.by_path))
        first_latency = len(TRAFFIC.latencies)
        remote_s, code = _run([*COMMANDS[name], "--model", remote_model, "--backend", "nnsight", "--remote",
                               "--json"])
        requests = TRAFFIC.requests - before.requests
        sent, received = TRAFFIC.sent - before.sent, TRAFFIC.received - before.received
        calls = {k: v - before.by_path.get(k, 0) for k, v in TRAFFIC.by_path.items() if v != before.by_path.get(k, 0)}
        latencies = sorted(TRAFFIC.latencies[first_latency:])
        local_s, local_code = _run([*COMMANDS[name], "--model", local_model, "--backend", "nnsight", "--json"])
        jobs = calls.get("request", 0)
        overhead = (remote_s - local_s) / jobs if jobs else float("nan")
        job_s = f"{latencies[len(latencies) // 2]:.1f}/{latencies[-1]:.1f}" if latencies else "-"
        print(f"{name:8} {remote_s:8.1f} {local_s:8.1f} {requests:8d} {sent / 1024:8.1f} {received / 1024:8.1f} "
              f"{overhead:6.2f} {job_s:>16}  {calls} (exit {code}/{local_code})", flush=True)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main_bench()
