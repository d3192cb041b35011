"""One long run on a page (a sweep, a circuit search): a progress bar with the ETA and a Cancel button, both cleared
when the run ends."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import streamlit as st

from components.text import md
from headscope.durations import time_left
from headscope.engine import Progress
from headscope.job_time import JobEstimate

REDRAW_SECONDS = 1.0  # the progress bar's least interval between redraws
# Streamlit's bar slides to each new value; that animation took about 25 ms of the browser's main thread per redraw,
# on the cores the computation needs (a still bar: 0.80 → 0.46 CPU-s of Chromium per 14 redraws; docs/benchmarks.md)
STILL_BAR_CSS = "<style>[data-testid='stProgress'] * { transition: none !important; }</style>"


def still_progress_bars() -> None:
    """This page's progress bars jump to each value instead of sliding to it (see STILL_BAR_CSS)."""
    st.html(STILL_BAR_CSS)


def say_if_stopped(prefix: str) -> None:
    """At the top of the page: a run this session started and did not finish (progress_with_cancel's flag is still
    set) is named once, with why it stopped: Cancel, or a control changed (or the page was left) while it ran."""
    stopped = st.session_state.pop(f"{prefix}_running", None)
    by_button = st.session_state.pop(f"{prefix}_cancelled", False)
    if stopped:
        reason = "" if by_button else " because a control changed (or the page was left) while it ran"
        st.info(md(f"The {stopped} was cancelled{reason}; nothing was stored."), icon=":material/cancel:")


@contextlib.contextmanager
def progress_with_cancel(prefix: str, what: str) -> Iterator[Callable[[Progress], None]]:
    """Yields the run's progress callback. Cancel sets st.session_state[f"{prefix}_cancelled"]; like any click it
    reruns the page, which stops the running job at its next progress report. `what` (e.g. "sweep") is kept under
    f"{prefix}_running" until the block ends, so that a run stopped before its end is named on the next run
    (say_if_stopped). An error caught inside the block leaves the bar and the button cleared as well."""
    cancelled_flag = f"{prefix}_cancelled"
    st.session_state[f"{prefix}_running"] = what
    still_progress_bars()
    bar = st.progress(0.0, text="Starting…")
    cancel_slot = st.empty()
    cancel_slot.button("Cancel", key=f"{prefix}_cancel",
                       on_click=lambda: st.session_state.update({cancelled_flag: True}))

    last_drawn = -math.inf

    def report(update: Progress) -> None:
        # at most REDRAW_SECONDS apart: a sweep reports every block (hundreds of times), and each redraw is a message
        # the server sends and the browser lays out, on the cores the computation runs on
        nonlocal last_drawn
        now = time.perf_counter()
        if now - last_drawn < REDRAW_SECONDS and update.fraction < 1.0:
            return
        last_drawn = now
        eta = f" · {time_left(update.eta_seconds)}" if update.eta_seconds is not None else ""
        bar.progress(update.fraction, text=md(f"{100 * update.fraction:.0f}%{eta} · {update.message}"))

    yield report
    bar.empty()
    cancel_slot.empty()  # the run is over: nothing left to cancel
    st.session_state.pop(f"{prefix}_running", None)


def within_time_limit(prefix: str, asked: str | None, estimate_for: Callable[[str], JobEstimate | None]) -> str | None:
    """The job to run in this script run: `asked` ("exact" or "estimate", the button clicked now, or None) when its
    estimated time is within HEADSCOPE_MAX_JOB_SECONDS; a longer one is held back with its estimate, what to do, and
    a "Run anyway" button (the job then runs on that click's rerun). A held job is forgotten when the controls change
    (its estimate then differs) or on "Don't run"."""
    pending_key = f"{prefix}_pending_job"
    if asked is not None:
        st.session_state.pop(pending_key, None)
        expected = estimate_for(asked)
        if expected is None or not expected.over():
            return asked
        st.session_state[pending_key] = (asked, round(expected.token_blocks))
    pending = st.session_state.get(pending_key)
    if pending is None:
        return None
    kind, work = pending
    expected = estimate_for(kind)
    if expected is None or round(expected.token_blocks) != work:  # the controls changed: the job asked is gone
        st.session_state.pop(pending_key, None)
        return None
    slot = st.empty()  # cleared as soon as the job runs
    with slot.container():
        st.warning(md(expected.advice(where="app")), icon=":material/timer:")
        run_col, drop_col, _ = st.columns([1.4, 1, 3])
        run_anyway = run_col.button(md(f"Run anyway (about {expected.readable})"), key=f"{prefix}_run_anyway")
        dropped = drop_col.button("Don't run", key=f"{prefix}_drop_pending")
    if run_anyway or dropped:
        st.session_state.pop(pending_key, None)
        slot.empty()
    return kind if run_anyway else None
