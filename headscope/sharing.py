"""Taking turns on one loaded model: a fair, re-entrant gate that says who holds it and for how long.

Every browser session shares one loaded model. Long jobs (sweeps, circuit searches, long prompts) hold the model only
per chunk (a layer, a block of prompts) and report their progress; requests queue in arrival order (FIFO), so a
prompt-tester request that arrives during a sweep runs at the sweep's next chunk boundary instead of after the whole
sweep. A waiting caller can see what it waits for ("an exact sweep in another session, about 40 s left") through its
`on_wait` callback, and give up by raising from it (Streamlit does so when the user clicks elsewhere).

Callers name themselves with `caller(owner=..., on_wait=...)`, a context manager setting context variables, so engine
signatures stay free of UI concerns.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from headscope.durations import readable_duration, time_left

WAIT_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class GateStatus:
    """What holds the model now: job label, the owner's id, seconds held, estimated seconds left, callers queued."""

    busy: bool
    job: str = ""
    owner: str | None = None
    held_seconds: float = 0.0
    eta_seconds: float | None = None
    waiting: int = 0
    own_remote_job: bool = False  # the caller's own NDIF job (not another job holding the model): said as theirs

    def describe(self, me: str | None = None, timing: bool = True) -> str:
        """'an exact sweep in another session, about 40 s left' (or in this session); without the time left (or taken
        so far) where timing=False."""
        if not self.busy:
            return "nothing"
        if self.own_remote_job:
            return f"{self.job}, {readable_duration(self.held_seconds)} so far" if timing else self.job
        where = "" if self.owner is None else (" in this session" if self.owner == me else " in another session")
        if not timing:
            return f"{self.job or 'a computation'}{where}"
        left = f", {time_left(self.eta_seconds)}" if self.eta_seconds is not None else \
            f", running for {readable_duration(self.held_seconds)}"
        return f"{self.job or 'a computation'}{where}{left}"


WaitCallback = Callable[[GateStatus], None]
_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("headscope_owner", default=None)
_on_wait: contextvars.ContextVar[WaitCallback | None] = contextvars.ContextVar("headscope_on_wait", default=None)


@contextlib.contextmanager
def caller(owner: str | None = None, on_wait: WaitCallback | None = None) -> Iterator[None]:
    """Name the caller of the model primitives run inside this block, and what to do while waiting for the model."""
    owner_token = _owner.set(owner)
    wait_token = _on_wait.set(on_wait)
    try:
        yield
    finally:
        _owner.reset(owner_token)
        _on_wait.reset(wait_token)


def current_owner() -> str | None:
    return _owner.get()


def current_on_wait() -> WaitCallback | None:
    """The caller's on_wait callback (a remote backend shows its job's state through it while waiting)."""
    return _on_wait.get()


@dataclass
class _Job:
    label: str
    owner: str | None
    started: float
    fraction: float = 0.0
    progress_started: float | None = None


class ModelGate:
    """A re-entrant lock served in arrival order, with the current job's label and progress for those waiting."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._holder: int | None = None  # thread id
        self._depth = 0
        self._queue: deque[object] = deque()
        self._job: _Job | None = None
        self._jobs_by_thread: dict[int, _Job] = {}

    # -------------------------------------------------------------------------------------------- acquiring

    def acquire(self, on_wait: WaitCallback | None = None) -> None:
        me = threading.get_ident()
        callback = on_wait if on_wait is not None else _on_wait.get()
        with self._mutex:
            if self._holder == me:
                self._depth += 1
                return
            ticket = object()
            self._queue.append(ticket)
        waited = False
        try:
            while True:
                with self._mutex:
                    if self._holder is None and self._queue[0] is ticket:
                        self._queue.popleft()
                        self._holder, self._depth = me, 1
                        self._job = self._jobs_by_thread.get(me)
                        break
                    self._changed.wait(WAIT_POLL_SECONDS)
                    status = self._status_locked()
                if callback is not None and status.busy:  # (free: this waiter is about to take it, or is next)
                    callback(status)  # may raise to give up waiting
                    waited = True
        except BaseException:
            with self._mutex:
                with contextlib.suppress(ValueError):
                    self._queue.remove(ticket)
                self._changed.notify_all()
            raise
        if waited:  # the wait is over: one last call with a free gate, so the caller can say so at once (a page
            # may end with st.stop() before anything after its model call runs)
            try:
                callback(GateStatus(False, waiting=0))
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        with self._mutex:
            if self._holder != threading.get_ident():
                raise RuntimeError("ModelGate released by a thread that does not hold it")
            self._depth -= 1
            if self._depth == 0:
                self._holder = None
                self._job = None
                self._changed.notify_all()

    def release_all(self) -> int:
        """Release a re-entrant hold completely (to hand the model over mid-job); returns the depth to restore."""
        with self._mutex:
            if self._holder != threading.get_ident():
                raise RuntimeError("ModelGate released by a thread that does not hold it")
            depth, self._depth = self._depth, 0
            self._holder = None
            self._job = None
            self._changed.notify_all()
            return depth

    def restore_depth(self, depth: int) -> None:
        """After release_all() and a fresh acquire(): back to the re-entrant depth held before."""
        with self._mutex:
            if self._holder == threading.get_ident():
                self._depth = depth

    @contextlib.contextmanager
    def hold(self, on_wait: WaitCallback | None = None) -> Iterator[None]:
        """Hold the model for one chunk of work (re-entrant)."""
        self.acquire(on_wait)
        try:
            yield
        finally:
            self.release()

    # -------------------------------------------------------------------------------------------- long jobs

    @contextlib.contextmanager
    def job(self, label: str) -> Iterator[None]:
        """Declare a long job run by this thread (held per chunk inside): waiters see its label and ETA."""
        me = threading.get_ident()
        outer = self._jobs_by_thread.get(me)
        if outer is not None:  # a job inside a job (a circuit search running sweeps): the outer label stays
            yield
            return
        job = _Job(label, current_owner(), time.perf_counter())
        with self._mutex:
            self._jobs_by_thread[me] = job
            if self._holder == me:
                self._job = job
        try:
            yield
        finally:
            with self._mutex:
                self._jobs_by_thread.pop(me, None)
                if self._holder == me:
                    self._job = None

    def report(self, fraction: float) -> None:
        """Progress of this thread's long job, in [0, 1]: waiters get an ETA from it."""
        job = self._jobs_by_thread.get(threading.get_ident())
        if job is None:
            return
        now = time.perf_counter()
        if job.progress_started is None:
            job.progress_started = now
        job.fraction = min(max(fraction, 0.0), 1.0)

    # -------------------------------------------------------------------------------------------- status

    def status(self) -> GateStatus:
        with self._mutex:
            return self._status_locked()

    def has_waiters(self) -> bool:
        with self._mutex:
            return bool(self._queue)

    def held_here(self) -> bool:
        """Whether the calling thread holds the gate (another thread asked to work meanwhile would wait for it)."""
        with self._mutex:
            return self._holder == threading.get_ident()

    def _status_locked(self) -> GateStatus:
        job = self._job
        if self._holder is None and job is None:
            # between two chunks of a long job: report the job that is running, if any; never the asking thread's
            # own (a waiter that has declared its job would read that it waits for itself, "in this session")
            me = threading.get_ident()
            job = next((job for thread, job in self._jobs_by_thread.items() if thread != me), None)
            if job is None:
                return GateStatus(False, waiting=len(self._queue))
        if job is None:
            return GateStatus(True, "a computation", None, 0.0, None, len(self._queue))
        now = time.perf_counter()
        eta = None
        if job.progress_started is not None and 0.02 < job.fraction < 1.0:
            elapsed = now - job.progress_started
            eta = elapsed / job.fraction * (1.0 - job.fraction)
        return GateStatus(True, job.label, job.owner, now - job.started, eta, len(self._queue))
