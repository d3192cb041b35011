"""Taking turns on the shared model, visibly: while another session's job holds the model, the page says what it
waits for ("Waiting for an exact sweep in another session, about 12 s left…") and offers to give up.

The model gate (headscope.sharing) calls `on_wait` on the script thread a few times a second while a request waits.
Each call updates the notice; any click (Give up included) makes Streamlit rerun the script, which raises at that
update and so ends the wait. After a Give up click the rerun's next wait stops at once with a message, instead of
queueing again.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import streamlit as st

from components.text import md
from headscope import sharing
from headscope.errors import Cancelled

SESSION_ID = "_hs_session_id"
GIVE_UP = "_hs_give_up"


def session_id() -> str:
    """This browser session's id (the gate's owner name): random, kept in session state, shown to nobody."""
    if SESSION_ID not in st.session_state:
        st.session_state[SESSION_ID] = uuid.uuid4().hex
    return st.session_state[SESSION_ID]


def waiting_text(status: sharing.GateStatus, what: str) -> str:
    """What a waiting request is told: the other job's time left is that job's, not this request's wait (a request
    goes in at the job's next step), so it is said as the job's."""
    if status.own_remote_job:
        return f"Waiting for NDIF: {status.describe()}…"
    if status.eta_seconds is not None:
        timing = f"about {status.eta_seconds:.0f} s left for that job as a whole"
    else:
        timing = f"that job has run for {status.held_seconds:.0f} s"
    return f"Waiting for the model: {what} is using it ({timing}; this request goes in at its next step)…"


class WaitingNotice:
    """The placeholder that shows the wait; one per script run."""

    def __init__(self, me: str, gave_up: bool) -> None:
        self.me = me
        self.gave_up = gave_up
        self.text_slot = st.empty()
        self.button_slot = st.empty()
        self.started: float | None = None  # when this run first waited
        self.waited_until = 0.0  # the last time it was still waiting
        self.last: str = ""  # what it waited for, last seen
        self.button_shown = False  # during the current wait
        self.waits = 0  # waits in this run so far (each wait's Give up button gets its own key)
        self.closed = False  # a message took the notice's place
        self.server_job = False  # what it waited for last is the server's own (no session's) job

    def on_wait(self, status: sharing.GateStatus) -> None:
        what = status.describe(self.me, timing=False)
        if self.gave_up:
            raise Cancelled(f"You gave up waiting for {what}. Change anything on the page to try again.")
        now = time.perf_counter()
        if self.started is None:
            self.started = now
        self.waited_until = now
        if not status.busy:  # the holder has let go: this request is next, or has the model already
            if self.button_shown:
                # "Waited … s for …" at once: the page may end (st.stop()) before app.py could finish the notice
                self.finish()
            return
        # for "Waited 3.1 s for …" (its time left is stale, as is an NDIF job's state)
        self.last = "your NDIF job" if status.own_remote_job else what
        # nobody's job (the server's own set-up of the model) leaves no "Waited" line once over: nobody asked for it
        self.server_job = status.owner is None
        self.text_slot.info(md(waiting_text(status, what)), icon=":material/hourglass_top:")
        if not self.button_shown:
            self.button_shown = True
            self.waits += 1
            self.button_slot.button("Give up", key=f"_hs_give_up_button_{self.waits}", icon=":material/close:",
                                    on_click=lambda: st.session_state.update({GIVE_UP: True}))

    def show_gave_up(self, error: Cancelled) -> None:
        """Show the message of a wait given up in the notice's place."""
        self.button_slot.empty()
        self.text_slot.info(md(str(error)), icon=":material/block:")
        self.closed = True

    def finish(self) -> None:
        """Replace the notice by a line saying how long this request waited, or by nothing."""
        self.button_slot.empty()
        self.button_shown = False
        if self.closed:
            return
        if self.started is None or not self.last or self.server_job:
            self.text_slot.empty()
            return
        waited = self.waited_until - self.started + sharing.WAIT_POLL_SECONDS
        self.text_slot.caption(md(f"Waited {waited:.1f} s for {self.last}."))


@contextlib.contextmanager
def taking_turns() -> Iterator[WaitingNotice]:
    """Model calls inside this block are made on behalf of this browser session; waits show a notice here.

    A page that catches the Cancelled of a "Give up" itself shows it where it likes; one that does not lets it reach
    app.py, which shows it in the notice's place."""
    notice = WaitingNotice(session_id(), gave_up=bool(st.session_state.pop(GIVE_UP, False)))
    with sharing.caller(owner=notice.me, on_wait=notice.on_wait):
        yield notice
    notice.finish()
