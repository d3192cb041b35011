"""One long run on a page (a sweep, a circuit search): a progress bar with the ETA and a Cancel button, both cleared
when the run ends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import streamlit as st

from components.text import md
from headscope.engine import Progress


@contextlib.contextmanager
def progress_with_cancel(cancel_key: str, cancelled_flag: str) -> Iterator[Callable[[Progress], None]]:
    """Yields the run's progress callback. Cancel sets st.session_state[cancelled_flag]; like any click it reruns
    the page, which stops the running job at its next progress report. An error caught inside the block leaves the
    bar and the button cleared as well."""
    bar = st.progress(0.0, text="Starting…")
    cancel_slot = st.empty()
    cancel_slot.button("Cancel", key=cancel_key, on_click=lambda: st.session_state.update({cancelled_flag: True}))

    def report(update: Progress) -> None:
        eta = f" · about {update.eta_seconds:.0f} s left" if update.eta_seconds is not None else ""
        bar.progress(update.fraction, text=md(f"{100 * update.fraction:.0f}%{eta} · {update.message}"))

    yield report
    bar.empty()
    cancel_slot.empty()  # the run is over: nothing left to cancel
