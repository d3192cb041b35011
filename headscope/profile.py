"""Timings of a page's expensive calls, for finding where a slow page spends its time: with HEADSCOPE_PROFILE=1 each
`timed` block writes one line `profile <name> <seconds> <wall clock at its end>` to stderr (the server's log);
otherwise it costs nothing. The wall clock lines a server's calls up with a browser's timings (bench/long_prompt.py)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Time the block under `name` when HEADSCOPE_PROFILE is set to 1."""
    if os.environ.get("HEADSCOPE_PROFILE", "") != "1":
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        print(f"profile {name} {time.perf_counter() - started:.3f} {time.time():.3f}", file=sys.stderr, flush=True)
