"""headscope's CLI commands on a local NDIF (tests/ndif/serve.sh) beside the same command on the local nnsight backend:
wall time, HTTP requests and bytes each way (counted on the client's httpx), and NDIF's overhead per request.

    tests/ndif/serve.sh start && eval "$(tests/ndif/serve.sh env)"
    python bench/ndif.py                              # tokens, and ablate zero on 4 digit prompts
    python bench/ndif.py --only tokens

Each command runs in this process (headscope.cli.main), the remote one first, then the local one. Overhead per
request = (remote wall - local wall) / requests sent; on this test bed the "remote" model runs on the same CPUs,
so that is NDIF's queue, Ray, object-store and polling cost, not a network's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx

from headscope.cli import main

HOSTED = "HuggingFaceTB/SmolLM2-135M-Instruct"
COMMANDS = {
    "tokens": ["tokens", "The capital of France is", "--answer", " Paris"],
    "ablate": ["ablate", "--task", "digits", "--n-prompts", "4", "--method", "zero", "--no-cache"],
    "heads": ["heads", "--score", "induction", "--prompt", "a b c d e a b c d e", "--no-cache"],
}


@dataclass
class Traffic:
    requests: int = 0
    sent: int = 0
    received: int = 0
    by_path: dict | None = None


TRAFFIC = Traffic(by_path={})


def _count_request(request: httpx.Request) -> None:
    TRAFFIC.requests += 1
    TRAFFIC.sent += len(request.read())
    path = request.url.path.split("/")[1] if request.url.path.count("/") else request.url.path
    TRAFFIC.by_path[path] = TRAFFIC.by_path.get(path, 0) + 1


def _count_response(response: httpx.Response) -> None:
    TRAFFIC.received += len(response.read())


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
    args = parser.parse_args()
    if not os.environ.get("NDIF_HOST"):
        raise SystemExit('NDIF_HOST is not set: tests/ndif/serve.sh start && eval "$(tests/ndif/serve.sh env)"')
    print(f"{'command':8} {'NDIF s':>8} {'local s':>8} {'requests':>8} {'sent KB':>8} {'recv KB':>8} "
          f"{'s/request':>9}  calls")
    for name in args.only or list(COMMANDS):
        before = Traffic(TRAFFIC.requests, TRAFFIC.sent, TRAFFIC.received, dict(TRAFFIC.by_path))
        remote_s, code = _run([*COMMANDS[name], "--model", HOSTED, "--backend", "nnsight", "--remote", "--json"])
        requests = TRAFFIC.requests - before.requests
        sent, received = TRAFFIC.sent - before.sent, TRAFFIC.received - before.received
        calls = {k: v - before.by_path.get(k, 0) for k, v in TRAFFIC.by_path.items() if v != before.by_path.get(k, 0)}
        local_s, local_code = _run([*COMMANDS[name], "--model", "embedded", "--backend", "nnsight", "--json"])
        jobs = calls.get("request", 0)
        overhead = (remote_s - local_s) / jobs if jobs else float("nan")
        print(f"{name:8} {remote_s:8.1f} {local_s:8.1f} {requests:8d} {sent / 1024:8.1f} {received / 1024:8.1f} "
              f"{overhead:9.2f}  {calls} (exit {code}/{local_code})", flush=True)


if __name__ == "__main__":
    main_bench()
