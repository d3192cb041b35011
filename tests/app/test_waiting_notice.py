"""The waiting notice: while another session's job holds the shared model, a page says what it waits for, and a
"Give up" ends the wait. The other session is a thread holding the real model's gate, as a sweep does per chunk."""

from __future__ import annotations

import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from headscope import sharing
from tests.pinned import EMBEDDED_ON_CPU
from tests.shown import shown

HOLD_SECONDS = 2.0


def _turns_and_prompt_tester():
    """What app.py wraps around every page (AppTest registers no clicks under st.navigation)."""
    import runpy

    from components.turns import taking_turns

    with taking_turns() as notice:
        try:
            runpy.run_path("pages/prompt_tester.py")
        except Exception as error:
            from headscope.errors import Cancelled

            if not isinstance(error, Cancelled):
                raise
            notice.show_gave_up(error)


@pytest.fixture
def shared_model():
    """The model the pages use (the process-wide registry of components.model_state), loaded by a first run."""
    from components.model_state import model_registry

    AppTest.from_function(_turns_and_prompt_tester, default_timeout=300).run()
    model = model_registry().loaded(EMBEDDED_ON_CPU)
    assert model is not None
    return model


def _hold(model, seconds: float, started: threading.Event,
          release: threading.Event | None = None) -> threading.Thread:
    """Another session's job holding the model for `seconds`, or until `release` is set."""
    def run() -> None:
        with sharing.caller(owner="another-browser-session"), model.gate.job("an exact sweep"), model.gate.hold():
            started.set()
            (release or threading.Event()).wait(seconds)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    return thread


def test_a_request_behind_another_sessions_job_says_what_it_waited_for(shared_model):
    app = AppTest.from_function(_turns_and_prompt_tester, default_timeout=300)
    holder = _hold(shared_model, HOLD_SECONDS, threading.Event())
    began = time.perf_counter()
    app.run()
    waited = time.perf_counter() - began
    holder.join()
    assert not app.exception and not app.error
    assert waited >= HOLD_SECONDS * 0.5  # it really waited for the other session
    notes = [shown(c.value) for c in app.caption if c.value.startswith("Waited")]
    assert len(notes) == 1, [c.value for c in app.caption]
    assert notes[0].endswith(" s for an exact sweep in another session.")  # no stale "running for 2 s" in it
    assert HOLD_SECONDS * 0.5 <= float(notes[0].split()[1]) <= waited + 0.5
    assert len(app.get("dataframe")) >= 2  # and then it got its answer: the token and top-k tables


def _turns_then_a_model_call_then_stop():
    """A page that waits for the model, uses it and ends with st.stop() (as the ablation page does with nothing to
    show): app.py's finish after the page is then never drawn."""
    import streamlit as st

    from components.model_state import model_registry
    from components.turns import taking_turns
    from tests.pinned import EMBEDDED_ON_CPU

    with taking_turns():
        model = model_registry().loaded(EMBEDDED_ON_CPU)
        with model.gate.hold():
            st.write("used the model")
        st.stop()


def test_a_page_that_stops_after_its_wait_says_what_it_waited_for(shared_model):
    """Seen in Chromium: "Waiting for TransformerLens' set-up…" and Give up stayed on the idle ablation page."""
    app = AppTest.from_function(_turns_then_a_model_call_then_stop, default_timeout=300)
    holder = _hold(shared_model, HOLD_SECONDS, threading.Event())
    app.run()
    holder.join()
    assert not app.exception and not app.error
    assert [m.value for m in app.markdown] == ["used the model"]  # the page ran to its st.stop()
    assert not [i for i in app.info if "Waiting for" in i.value]
    assert not app.button  # no Give up left behind
    notes = [shown(c.value) for c in app.caption if c.value.startswith("Waited")]
    assert len(notes) == 1 and " s for an exact sweep in another session" in notes[0], [c.value for c in app.caption]


def _notice_during_and_after_a_wait(wait_ends: bool):
    """The notice as a page sees it while it waits (the gate calls on_wait with busy statuses), and once the wait is
    over (the gate's last call, with a free status)."""
    from components.turns import WaitingNotice
    from headscope.sharing import GateStatus

    notice = WaitingNotice("this-session", gave_up=False)
    notice.on_wait(GateStatus(True, "an exact sweep", "another-session", held_seconds=3.0, eta_seconds=12.0))
    if wait_ends:
        notice.on_wait(GateStatus(False))


@pytest.mark.parametrize("wait_ends", [False, True])
def test_the_notice_says_what_it_waits_for_and_gives_way_when_the_wait_ends(wait_ends):
    app = AppTest.from_function(_notice_during_and_after_a_wait, args=(wait_ends,)).run()
    assert not app.exception
    waiting = [shown(i.value) for i in app.info if "Waiting for" in i.value]
    waited = [shown(c.value) for c in app.caption if c.value.startswith("Waited")]
    if not wait_ends:
        # the 12 s are the other job's, not this request's wait: said so
        assert waiting == ["Waiting for the model: an exact sweep in another session is using it (about 12 s left for "
                           "that job as a whole; this request goes in at its next step)…"]
        assert [b.label for b in app.button] == ["Give up"] and not waited
    else:
        assert not waiting and not app.button
        assert len(waited) == 1 and waited[0].endswith(" s for an exact sweep in another session."), waited


def test_give_up_ends_the_wait_with_a_message(shared_model):
    from components.turns import GIVE_UP

    app = AppTest.from_function(_turns_and_prompt_tester, default_timeout=300)
    app.session_state[GIVE_UP] = True  # what the "Give up" button's click leaves for the rerun
    release = threading.Event()
    holder = _hold(shared_model, 120.0, threading.Event(), release)
    try:
        app.run()
        # it did not wait for the other job: that job still holds the model (it holds until released, so this is
        # behaviour, not a duration on this machine)
        assert holder.is_alive() and shared_model.gate.status().busy
    finally:
        release.set()
    assert not app.exception
    # the page shows the message where its model call was (here: in place of the analysis)
    gave_up = [shown(m.value) for m in [*app.error, *app.info] if "gave up" in m.value]
    assert gave_up and gave_up[0].startswith("You gave up waiting for an exact sweep in another session")
    holder.join()
    app.run()  # the next run waits again as usual (the give-up was used once)
    assert not app.exception and not [m for m in [*app.error, *app.info] if "gave up" in m.value]


def test_no_notice_when_nobody_else_holds_the_model(shared_model):
    app = AppTest.from_function(_turns_and_prompt_tester, default_timeout=300).run()
    assert not [c for c in app.caption if c.value.startswith("Waited")]
    assert not [i for i in app.info if "Waiting" in i.value]


def _hold_as_the_server(model, seconds: float, started: threading.Event) -> threading.Thread:
    """The server's own job (the background TransformerLens set-up): no session's, so no owner."""
    def run() -> None:
        with model.gate.job("TransformerLens' set-up on the model (once per model)"), model.gate.hold():
            started.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    return thread


def test_a_wait_for_the_servers_own_set_up_leaves_no_line_behind(shared_model):
    # seen: "Waited 1.2 s for TransformerLens' set-up on …" stayed above the prompt tester's title, for a user who
    # never asked for TransformerLens
    app = AppTest.from_function(_turns_and_prompt_tester, default_timeout=300)
    holder = _hold_as_the_server(shared_model, HOLD_SECONDS, threading.Event())
    app.run()
    holder.join()
    assert not app.exception and not app.error
    assert not [c.value for c in app.caption if c.value.startswith("Waited")]
    assert not [i for i in app.info if "Waiting" in i.value] and not app.button
    assert len(app.get("dataframe")) >= 2  # it got its answer
