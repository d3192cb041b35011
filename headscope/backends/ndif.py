"""How the nnsight backend's requests travel: here, through nnsight's dry run of the remote path, or to NDIF.

The run modes mirror nnsight's own `remote=` argument (False / "local" / True) as objects:
- LOCAL: nnsight wraps the very transformers model the loader loaded; traces run in this process, and weight
  computations call the model's modules directly (no trace);
- DRY_RUN: nnsight's dry run of the remote path (`remote="local"`): every trace is serialised as for NDIF (local
  modules hidden) and run in this process. Tests use it to check that every request would travel;
- NdifRun: traces are sent to NDIF (`RemoteBackend`, non-blocking) and polled; no weights on this machine.

Also the NDIF client's checks before any job: the key, the host, NDIF's reachability and hosted models, and
messages for failed requests that say what to do.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from nnsight.intervention.backends.remote import RemoteBackend

from headscope.errors import HeadscopeError, ModelLoadError
from headscope.sharing import GateStatus, current_on_wait, current_owner

REMOTE_MAX_TOKENS = 1 << 16  # tokens (rows × positions) in one NDIF request
NDIF_PROBE_SECONDS = 3.0  # how long the reachability probe waits before saying NDIF is unreachable
NDIF_DEFAULT_TIMEOUT = 30 * 60.0  # seconds to wait for one job (HEADSCOPE_NDIF_TIMEOUT overrides)
# how long a job may wait while NDIF starts its model (a COLD model's first job: PROVISIONING, DEPLOYING), at least;
# that wait is not counted in the job's own timeout (a large model on NDIF can take minutes to start)
NDIF_START_SECONDS = 30 * 60.0
NDIF_KEY_URL = "https://login.ndif.us"


class RemoteJobError(HeadscopeError):
    """An NDIF request that could not be sent, failed on the server or did not finish in time."""


# ---------------------------------------------------------------------------------------------------------------
# Remote jobs

@dataclass(frozen=True)
class RemoteJobState:
    """One look at an NDIF job while waiting for it: its id, state (received, queued, running, ...) and seconds
    since it was sent."""

    job_id: str | None
    state: str
    elapsed: float


STARTING = "starting the model"  # NDIF's PROVISIONING and DEPLOYING: a replica of a COLD model is being started
_STATE_WORDS = {"RECEIVED": "received", "QUEUED": "queued", "PROVISIONING": STARTING,
                "DEPLOYING": STARTING, "DISPATCHED": "running", "RUNNING": "running",
                "COMPLETED": "completed", "ERROR": "failed", "LOG": "running"}


def wait_for_job(job: Any, *, timeout: float, on_state: Callable[[RemoteJobState], None] | None,
                 poll_seconds: float = 0.5, started: float | None = None) -> dict:
    """Poll a submitted non-blocking NDIF job (`nnsight`'s RemoteBackend after submit) until its result arrives.

    `on_state` sees the state and elapsed time after every poll and may raise to stop waiting (the job itself keeps
    running on NDIF: nnsight has no cancel call). Raises RemoteJobError when the job fails, when NDIF stops
    answering, or after `timeout` seconds. Time spent while NDIF starts the model (a COLD model's first job) is not
    counted in `timeout`: that wait has its own bound, max(timeout, NDIF_START_SECONDS)."""
    started = time.perf_counter() if started is None else started
    job_id = getattr(job, "job_id", None)
    interval = poll_seconds
    starting_seconds = 0.0  # time between polls of which one saw NDIF starting the model
    start_limit = max(timeout, NDIF_START_SECONDS)
    last_poll, last_state = started, None
    while True:
        try:
            result = job.poll()
        except Exception as error:  # nnsight's RemoteError (status ERROR), httpx errors
            if type(error).__name__ == "RemoteError":
                raise RemoteJobError(f"The NDIF job {job_id} failed: {error}") from error
            raise RemoteJobError(f"Lost contact with NDIF while waiting for job {job_id}: {error}. The job may "
                                 "still finish there; try again in a moment.") from error
        status = getattr(getattr(job, "status", None), "value", None) or "RECEIVED"
        now = time.perf_counter()
        elapsed = now - started
        if result is not None:
            if on_state is not None:
                on_state(RemoteJobState(job_id, "completed", elapsed))
            return result
        state = _STATE_WORDS.get(status, status.lower())
        if STARTING in (state, last_state):
            starting_seconds += now - last_poll
        if last_state == STARTING and state != STARTING:
            interval = poll_seconds  # the model runs now: the job itself follows soon
        last_poll, last_state = now, state
        if on_state is not None:
            on_state(RemoteJobState(job_id, state, elapsed))
        if state == STARTING and starting_seconds > start_limit:
            raise RemoteJobError(
                f"NDIF was still starting the model after {starting_seconds:.0f} s (the NDIF job {job_id} waits for "
                "it; a model NDIF lists as cold is started by its first job). Try again later: once the model runs, "
                "jobs start at once."
            )
        if state != STARTING and elapsed - starting_seconds > timeout:
            starting = (f" after {starting_seconds:.0f} s in which NDIF started the model (not counted)"
                        if starting_seconds else "")
            raise RemoteJobError(
                f"The NDIF job {job_id} did not finish within {timeout:.0f} s{starting} (last state: {state}). NDIF "
                "may be busy: try again later, or allow longer with HEADSCOPE_NDIF_TIMEOUT (seconds)."
            )
        time.sleep(interval)
        interval = min(2.0, interval * 1.5)


def gate_on_state(state: RemoteJobState) -> None:
    """Show the job's state through the caller's on_wait callback (see headscope.sharing), which may cancel; a
    completed job ends the wait (the CLI clears its progress line, the page its notice)."""
    callback = current_on_wait()
    if callback is not None:
        callback(GateStatus(state.state != "completed", f"the NDIF job ({state.state})", current_owner(),
                            state.elapsed, None, 0, own_remote_job=True))


class _NdifJob(RemoteBackend):
    """nnsight's non-blocking RemoteBackend whose submission errors say what to do (a trace's exit submits)."""

    def submit(self, tracer: Any) -> None:
        try:
            return super().submit(tracer)
        except Exception as error:
            raise _request_error(error, self.host, self.api_key) from error


@dataclass(frozen=True)
class NdifTarget:
    """Where NDIF is, the model's key there and how long to wait. The API key is held by the backend only (never in
    here: this is shown in reprs)."""

    host: str
    model_key: str
    timeout: float
    cold_repo_id: str | None = None  # the model, when NDIF listed it COLD at load: its first job waits for its start

# ---------------------------------------------------------------------------------------------------------------
# Run modes


class RunMode:
    """How a trace or session runs. Subclasses say where (`runs_here`: weights may be read by calling the local
    modules directly; `remote`: on NDIF's machines, sized by REMOTE_MAX_TOKENS), give nnsight the backend object of
    the next request, and collect what the request saved."""

    name = "?"
    runs_here = False
    remote = False

    def job(self, model: Any, api_key: str | None, attn_implementation: str | None = None) -> Any:
        """nnsight's backend for the next trace or session (None: run here, nnsight's default)."""
        return None

    def outputs(self, job: Any, scope: dict, names: tuple[str, ...],
                on_state: Callable[[RemoteJobState], None] | None = None) -> tuple:
        """The values a request saved, by name: from the caller's frame (here, dry run) or from NDIF."""
        return tuple(scope[name] for name in names)

    def __repr__(self) -> str:
        return self.name


class LocalRun(RunMode):
    """nnsight's default: the request runs in this process on the local model."""

    name = "local"
    runs_here = True


class DryRun(RunMode):
    """nnsight's `remote="local"`: serialised as for NDIF (local modules hidden), run in this process."""

    name = "simulate"

    def job(self, model: Any, api_key: str | None, attn_implementation: str | None = None) -> Any:
        from nnsight.intervention.backends.local import LocalSimulationBackend

        return LocalSimulationBackend(model)


class NdifRun(RunMode):
    """nnsight's `remote=True`: the request is sent to NDIF without blocking and polled until its result arrives."""

    name = "ndif"
    remote = True

    def __init__(self, target: NdifTarget) -> None:
        self.target = target
        self.jobs_completed = 0  # a cold model's first completed job has started it on NDIF

    @property
    def starting_notice(self) -> str | None:
        """The one line said before a COLD model's first job (None once a job has completed, or for a deployed
        model)."""
        cold = self.target.cold_repo_id
        return None if cold is None or self.jobs_completed else cold_model_notice(cold)

    def job(self, model: Any, api_key: str | None, attn_implementation: str | None = None) -> Any:
        env = dict(model._remoteable_get_env())
        if attn_implementation is not None:
            env["attn_implementation"] = attn_implementation
        job = _NdifJob(self.target.model_key, host=self.target.host, api_key=api_key, env=env, blocking=False)
        job.display.enabled = False  # no status lines on stdout (the CLI's --json owns it)
        return job

    def outputs(self, job: Any, scope: dict, names: tuple[str, ...],
                on_state: Callable[[RemoteJobState], None] | None = None) -> tuple:
        if getattr(job, "job_id", None) is None:
            raise RemoteJobError("NDIF did not accept the request (no job id came back).")
        result = wait_for_job(job, timeout=self.target.timeout, on_state=on_state)
        self.jobs_completed += 1
        missing = [name for name in names if name not in result]
        if missing:
            raise RemoteJobError(f"The NDIF job {job.job_id} finished without {', '.join(missing)}.")
        return tuple(result[name] for name in names)


LOCAL = LocalRun()
DRY_RUN = DryRun()
RUN_MODES: dict[str, RunMode] = {mode.name: mode for mode in (LOCAL, DRY_RUN)}  # those a local model can take


# ---------------------------------------------------------------------------------------------------------------
# Checks before any job

def no_key_message() -> str:
    return (f"NDIF needs an API key: get one at {NDIF_KEY_URL}, then enter it in the sidebar or set NDIF_API_KEY "
            "(the CLI reads NDIF_API_KEY). It is kept in memory only.")


def resolve_api_key(given: str | None) -> str:
    """The key to use: the one given (sidebar, argument), else NDIF_API_KEY, else nnsight's own saved login."""
    for candidate in (given, os.environ.get("NDIF_API_KEY")):
        if candidate and candidate.strip():
            return candidate.strip()
    with contextlib.suppress(Exception):
        from nnsight.schema.config import CONFIG

        if CONFIG.API.APIKEY:
            return str(CONFIG.API.APIKEY).strip()
    raise ModelLoadError(no_key_message())


def ndif_host() -> str:
    """NDIF's API address: NDIF_HOST when set, else nnsight's configured host (https://api.ndif.us)."""
    host = os.environ.get("NDIF_HOST")
    if not host:
        from nnsight.schema.config import CONFIG

        host = CONFIG.API.HOST
    return host.rstrip("/")


def shown_host(host: str) -> str:
    """The host as messages show it: a user name and password in the address (http://user:secret@host) left out."""
    parsed = urlparse(host)
    if parsed.username is None and parsed.password is None:
        return host
    netloc = parsed.hostname or ""
    if parsed.port is not None:
        netloc += f":{parsed.port}"
    return parsed._replace(netloc=netloc).geturl()


def _without_credentials(text: str, host: str) -> str:
    return text.replace(host, shown_host(host)) if host else text


@dataclass(frozen=True)
class NdifListing:
    """The models NDIF's /status lists, by repo id: `deployed` (HOT or WARM: a replica serves it now) and `cold`
    (downloaded, no replica: NDIF starts one for the model's first job, which waits meanwhile)."""

    deployed: tuple[str, ...]
    cold: tuple[str, ...] = ()

    def _find(self, ids: tuple[str, ...], repo_id: str) -> bool:
        return repo_id.lower() in {known.lower() for known in ids}

    def is_deployed(self, repo_id: str) -> bool:
        return self._find(self.deployed, repo_id)

    def is_cold(self, repo_id: str) -> bool:
        return not self.is_deployed(repo_id) and self._find(self.cold, repo_id)

    def describe(self) -> str:
        """'a, b, c (cold)', or 'none right now'."""
        names = [*self.deployed, *(f"{name} (cold)" for name in self.cold if name not in self.deployed)]
        return ", ".join(names) if names else "none right now"


_LISTED_LEVELS = {"HOT": "deployed", "WARM": "deployed", "COLD": "cold"}  # NDIF's deployment_level values


def cold_model_notice(model: str) -> str:
    """The one line said before a COLD model's first job (the CLI's stderr, the page's sidebar)."""
    return (f"NDIF lists {model} as cold (no replica running): its first job waits while NDIF starts the model "
            "(seconds for a small model, minutes for a large one); later jobs run at once.")


def probe_ndif(host: str, timeout: float = NDIF_PROBE_SECONDS) -> NdifListing | None:
    """Ask NDIF's status call within `timeout` seconds. Returns the models NDIF lists (deployed now, or cold), or None
    when the answer holds no list; raises a ModelLoadError when NDIF does not answer at all or answers that it is
    down."""
    import httpx

    parsed = urlparse(host)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ModelLoadError(f"NDIF host {shown_host(host)!r} is not an http(s) address: fix NDIF_HOST (default "
                             "https://api.ndif.us).")
    try:
        response = httpx.get(f"{host}/status", timeout=httpx.Timeout(timeout))
    except httpx.HTTPError as error:
        reason = (f"no answer within {timeout:.0f} s" if isinstance(error, httpx.TimeoutException)
                  else _without_credentials(str(error), host))
        raise ModelLoadError(
            f"NDIF ({shown_host(host)}) is not reachable from this machine ({reason}). Check the network connection "
            "(a proxy or firewall may block it), or see https://discuss.ndif.us for NDIF's status; local backends keep "
            "working."
        ) from None
    if response.status_code >= 500:
        raise ModelLoadError(f"NDIF ({shown_host(host)}) answered that it cannot take requests now (HTTP "
                             f"{response.status_code}): try again later (https://discuss.ndif.us has its status); "
                             "local backends keep working.")
    try:
        deployments = response.json().get("deployments")
    except (ValueError, AttributeError):
        return None
    if not isinstance(deployments, dict):
        return None
    listed: dict[str, set[str]] = {"deployed": set(), "cold": set()}
    for name, value in deployments.items():
        kind = _LISTED_LEVELS.get(value.get("deployment_level")) if isinstance(value, dict) else None
        if kind is not None:
            listed[kind].add(str(value.get("repo_id", name)))
    return NdifListing(tuple(sorted(listed["deployed"])), tuple(sorted(listed["cold"] - listed["deployed"])))


def _without_key(text: str, api_key: str | None) -> str:
    """The text with the API key left out: NDIF echoes a malformed key in its refusal ("Invalid API key format:
    '<key>'"), and a message is shown, logged and may be pasted into a bug report."""
    return text.replace(api_key, "<your key>") if api_key else text


def _request_error(error: Exception, host: str, api_key: str | None = None) -> HeadscopeError:
    """nnsight's remote-request failures as messages that say what to do (never holding the key)."""
    text = _without_key(_without_credentials(str(error), host), api_key)
    name = type(error).__name__
    if name in ("ConnectError", "ConnectTimeout", "WebSocketAddressException") or isinstance(error, ConnectionError):
        return RemoteJobError(f"NDIF ({shown_host(host)}) is not reachable: {text}. Check the network; local backends "
                              "keep working.")
    if name == "RemoteError":
        lowered = text.lower()
        if "key" in lowered or "401" in text or "403" in text or "unauthor" in lowered:
            return RemoteJobError(f"NDIF refused the request: {text}. Check the API key ({NDIF_KEY_URL}).")
        return RemoteJobError(f"NDIF could not run the request: {text}")
    return RemoteJobError(f"The NDIF request failed: {name}: {text}")


def starting_notice(model: Any) -> str | None:
    """What to say before a loaded model's first job when NDIF listed it COLD at load (None otherwise)."""
    mode = getattr(model, "mode", None)
    return mode.starting_notice if isinstance(mode, NdifRun) else None


def say_starting_notice(model: Any) -> None:
    """The command line's and the Python API's way to say starting_notice: one line on stderr, right after the load
    (the app shows it under the model card instead)."""
    notice = starting_notice(model)
    if notice:
        print(notice, file=sys.stderr)


__all__ = ["DRY_RUN", "LOCAL", "NDIF_DEFAULT_TIMEOUT", "NDIF_KEY_URL", "NDIF_START_SECONDS", "REMOTE_MAX_TOKENS",
           "RUN_MODES", "STARTING", "DryRun", "LocalRun", "NdifListing", "NdifRun", "NdifTarget", "RemoteJobError",
           "RemoteJobState", "RunMode", "cold_model_notice", "gate_on_state", "ndif_host", "no_key_message",
           "probe_ndif", "resolve_api_key", "say_starting_notice", "shown_host", "starting_notice", "wait_for_job"]
