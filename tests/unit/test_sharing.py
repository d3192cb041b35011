"""The model gate: FIFO turns, re-entrancy, hand-over mid-job, what a waiting caller is told, giving up."""

import threading
import time

import pytest

from headscope.sharing import GateStatus, ModelGate, caller


def test_reentrant_hold_by_one_thread():
    gate = ModelGate()
    with gate.hold(), gate.hold():
        assert gate.status().busy
    assert not gate.status().busy


def test_waiters_are_served_in_arrival_order():
    gate = ModelGate()
    order: list[int] = []
    gate.acquire()
    threads = []
    for index in range(4):
        def run(index: int = index) -> None:
            with gate.hold():
                order.append(index)
        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        while gate.status().waiting < index + 1:  # queue them one after another
            time.sleep(0.005)
    gate.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3]


def test_a_long_job_lets_a_short_request_in_between_chunks_and_says_what_it_is():
    gate = ModelGate()
    seen: list[GateStatus] = []
    served_at: list[int] = []
    chunk_done: list[int] = []
    started = threading.Event()

    def long_job() -> None:
        with caller(owner="session-a"), gate.job("an exact ablation sweep"):
            for chunk in range(20):
                with gate.hold():
                    started.set()
                    time.sleep(0.02)
                gate.report((chunk + 1) / 20)
                chunk_done.append(chunk)

    worker = threading.Thread(target=long_job)
    worker.start()
    started.wait(5)
    time.sleep(0.05)
    with caller(owner="session-b", on_wait=seen.append), gate.hold():
        served_at.append(len(chunk_done))
    worker.join(5)
    assert served_at[0] < 19  # served between chunks, long before the job ended
    busy = [status for status in seen if status.busy]
    assert busy, "the waiting caller was told what it waits for"
    assert busy[-1].job == "an exact ablation sweep" and busy[-1].owner == "session-a"
    assert "another session" in busy[-1].describe("session-b")
    assert "this session" in busy[-1].describe("session-a")


def test_a_waiter_with_its_own_job_is_never_told_it_waits_for_itself():
    """The gate is free for a moment (between two chunks, or before a declared job has taken the model): a caller that
    has declared its own job first hears of the other job, never of its own (seen in Chromium: "Waiting for
    TransformerLens' set-up … in this session")."""
    gate = ModelGate()
    declared, release = threading.Event(), threading.Event()

    def other() -> None:
        with caller(owner="session-a"), gate.job("the other job"):
            declared.set()
            release.wait(5)

    with caller(owner="session-b"), gate.job("my job"):  # declared before the other one
        worker = threading.Thread(target=other)
        worker.start()
        declared.wait(5)
        status = gate.status()
    release.set()
    worker.join(5)
    assert status.busy and status.job == "the other job" and status.owner == "session-a"
    assert "another session" in status.describe("session-b")


def _held_elsewhere(gate: ModelGate, seconds: float) -> threading.Thread:
    """Another thread holds the gate for `seconds` (from when this returns)."""
    holding = threading.Event()

    def hold() -> None:
        with gate.hold():
            holding.set()
            time.sleep(seconds)

    worker = threading.Thread(target=hold)
    worker.start()
    assert holding.wait(5)
    return worker


def test_a_waiter_hears_once_more_when_its_wait_is_over():
    """The last call has a free gate, made once the waiter holds the model, so a page can take its notice down before
    its own code goes on (the ablation page may end with st.stop() before app.py could)."""
    gate = ModelGate()
    seen: list[tuple[bool, bool]] = []  # (status busy, the waiter holds the gate)

    def note(status: GateStatus) -> None:
        seen.append((status.busy, gate._holder == threading.get_ident()))

    worker = _held_elsewhere(gate, 0.5)
    with gate.hold(on_wait=note):
        pass
    worker.join(5)
    assert seen[0] == (True, False) and seen[-1] == (False, True)
    assert [busy for busy, _ in seen].count(False) == 1
    seen.clear()
    with gate.hold(on_wait=note):  # nobody else holds it: no wait, no calls
        pass
    assert seen == []


def test_a_waiter_that_raises_at_the_last_call_leaves_the_gate_free():
    """Streamlit raises from the notice's update when the browser asks for a rerun; at the last call the waiter
    already holds the gate, which it must then let go."""
    gate = ModelGate()

    class Rerun(Exception):
        pass

    def rerun_when_free(status: GateStatus) -> None:
        if not status.busy:
            raise Rerun

    worker = _held_elsewhere(gate, 0.5)
    with pytest.raises(Rerun):
        gate.acquire(on_wait=rerun_when_free)
    worker.join(5)
    assert not gate.status().busy and gate.status().waiting == 0
    with gate.hold():
        pass


def test_giving_up_leaves_the_queue():
    gate = ModelGate()
    gate.acquire()

    class GiveUp(Exception):
        pass

    def impatient(status: GateStatus) -> None:
        raise GiveUp

    result: list[str] = []

    def wait() -> None:
        try:
            gate.acquire(on_wait=impatient)
        except GiveUp:
            result.append("gave up")

    thread = threading.Thread(target=wait)
    thread.start()
    thread.join(5)
    assert result == ["gave up"]
    assert gate.status().waiting == 0
    gate.release()
    with gate.hold():  # the gate still works
        pass


def test_hand_over_restores_the_depth():
    gate = ModelGate()
    gate.acquire()
    gate.acquire()
    depth = gate.release_all()
    assert depth == 2 and not gate.status().busy
    gate.acquire()
    gate.restore_depth(depth)
    gate.release()
    assert gate.status().busy
    gate.release()
    assert not gate.status().busy


def test_release_by_another_thread_is_an_error():
    gate = ModelGate()
    gate.acquire()
    errors: list[Exception] = []

    def other() -> None:
        try:
            gate.release()
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(5)
    gate.release()
    assert errors


def test_eta_from_reported_progress():
    """ETA = time since the first report / fraction done × fraction left: at a quarter done, three times the time
    spent since the first report, which lies between the sleep and the whole span measured around it."""
    gate = ModelGate()
    with gate.job("a sweep"), gate.hold():
        before = time.perf_counter()
        gate.report(0.1)
        time.sleep(0.05)
        gate.report(0.25)
        status = gate.status()
        span = time.perf_counter() - before
    assert status.eta_seconds is not None
    assert 3 * 0.05 <= status.eta_seconds <= 3 * span
    with gate.job("a sweep"), gate.hold():
        gate.report(0.01)  # too early to tell (at most 2 % done): no ETA rather than a wild one
        assert gate.status().eta_seconds is None
