"""NDIF's own server (tests/ndif/serve.sh) failing the ways a real one does, end to end through headscope's CLI: each
failure is headscope's one line and a non-zero exit, nothing from the failed job is cached, and the next command
works. Also the job states headscope shows while it waits, and where the API key travels. Marked `ndif`."""

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.ndif.realserver import (
    HOSTED,
    REPO,
    SERVE,
    TESTBED,
    cached_files,
    one_line_error,
    run_cli,
    tiny_remote,
)

pytestmark = pytest.mark.ndif

URL = re.compile(r'(?:GET|POST|PUT|HEAD|DELETE) (\S+)|path=(\S+)|(https?://\S+)')

TINY = tiny_remote("llama")
ABLATE = ["ablate", "--task", "digits", "--n-prompts", "2", "--method", "zero"]

# headscope's CLI in a process that records the states it sees while polling (what the page's wait line and the
# CLI's show) and, when told, stops a server process group once the job runs: argv[1] = JSON {"args", "kill_pgid"}.
WATCHED_CLI = """
import json, os, signal, sys
import headscope.backends.ndif as nb
from headscope.cli import main
spec = json.loads(sys.argv[1])
seen, real = [], nb.wait_for_job
def spy(job, *, timeout, on_state, **kwargs):
    def record(state):
        seen.append(state.state)
        if spec.get("kill_pgid") and state.state != "completed" and "killed" not in seen:
            os.killpg(spec["kill_pgid"], signal.SIGKILL)  # the first unfinished job: its server goes
            seen.append("killed")
        if on_state is not None:
            on_state(state)
    return real(job, timeout=timeout, on_state=record, **kwargs)
nb.wait_for_job = spy
code = main(spec["args"])
print("WATCHED " + json.dumps({"code": code, "states": seen}), file=sys.stderr)
"""

COLD = "headscope-cold/llama"  # serve.sh: downloaded, never deployed by start, so NDIF lists it COLD


def _watched(args: list[str], env_extra: dict, results: Path, kill_pgid: int | None = None,
             script: str = WATCHED_CLI) -> tuple[dict, str]:
    env = {**os.environ, **env_extra, "HEADSCOPE_RESULTS_DIR": str(results)}
    done = subprocess.run([sys.executable, "-c", script, json.dumps({"args": args, "kill_pgid": kill_pgid})],
                          capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    lines = done.stderr.strip().splitlines()
    report = json.loads(lines[-1].removeprefix("WATCHED "))
    return report, "\n".join(lines[:-1])


def _extra_api(port: int, min_nnsight: str = "", check_keys: bool = False) -> int:
    """A second NDIF API on the same queue and Ray (serve.sh extra-api), refusing clients below `min_nnsight` or,
    with `check_keys`, checking keys against its accounts database (a local Postgres holding the test bed's key);
    returns its process group id."""
    env = {**os.environ, "NDIF_TESTBED_MIN_NNSIGHT": min_nnsight, "NDIF_TESTBED_AUTH": "1" if check_keys else "0"}
    subprocess.run(["bash", str(SERVE), "extra-api", str(port)], check=True, env=env, timeout=300)
    pid_file = TESTBED / "pids" / f"api-{port}"
    return int(pid_file.read_text())


def _stop_extra_api(port: int, pgid: int, ndif: dict) -> None:
    """Stop the second API; then, when the main API answers 503 "compute backend is reconnecting", restart it. NDIF
    keeps whether Ray is reachable in one Redis flag (`ray:connected`) that every API's dispatcher deletes while it
    (re)connects: a second API stopped at the wrong moment leaves it deleted, and every API refuses every call."""
    import httpx

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    (TESTBED / "pids" / f"api-{port}").unlink(missing_ok=True)
    if httpx.get(f"{ndif['NDIF_HOST']}/status", timeout=30).status_code == 503:
        subprocess.run(["bash", str(SERVE), "restart-api"], check=True, timeout=900)


def _works_after(ndif: dict, results: Path) -> None:
    """The next command on the same results folder runs and caches its result (nothing left over blocks it)."""
    done = run_cli([*ABLATE, "--model", TINY, "--backend", "nnsight", "--remote", "--json"], ndif, results)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["n_prompts"] == 2 and len(cached_files(results)) == 1


def test_job_states_seen_while_waiting(ndif, tmp_path):
    import headscope.backends.ndif as ndif_backend

    # a sweep on the embedded model: its sweep job runs for seconds on the server, so a poll finds it unfinished (a
    # one-forward job can be done by the first poll on a loaded machine, and then "completed" is all there is)
    report, stderr = _watched([*ABLATE, "--model", HOSTED, "--backend", "nnsight", "--remote", "--json"], ndif,
                              tmp_path)
    assert report["code"] == 0, stderr[-2000:]
    states = report["states"]
    assert states[-1] == "completed"
    assert set(states) <= set(ndif_backend._STATE_WORDS.values()), states
    assert {"received", "queued", "running"} & set(states[:-1]), states


def _deployment_level(ndif: dict, repo_id: str) -> str | None:
    import httpx

    listed = httpx.get(f"{ndif['NDIF_HOST']}/status", timeout=60).json()["deployments"].values()
    return next((v.get("deployment_level") for v in listed if v.get("repo_id") == repo_id), None)


def _bounded(command: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """A command in a process group of its own, the whole group killed past `timeout` (subprocess.run's own timeout
    kills only the first process: an eviction's Python, hung in Ray's client connect, would outlive it)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=REPO, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"{' '.join(command[:4])} ran past {timeout:.0f} s: {out[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, "")


def _made_cold(ndif: dict) -> None:
    """The cold model evicted when a replica serves it (an earlier run deployed it), then waited for until NDIF's
    /status, which NDIF caches for 60 s, lists it COLD. Each step bounded: on a loaded machine an eviction once hung
    in Ray's client connect; a second try then went through."""
    if _deployment_level(ndif, COLD) == "COLD":
        return
    for attempt in (1, 2):
        done = _bounded(["bash", str(SERVE), "evict", COLD], timeout=240 if attempt == 1 else 360)
        if done.returncode == 0:
            break
        assert attempt == 1, f"the eviction of {COLD} failed twice: {done.stdout[-2000:]}"
    deadline = time.monotonic() + 240
    while _deployment_level(ndif, COLD) != "COLD":
        assert time.monotonic() < deadline, f"{COLD} is not listed COLD 240 s after its eviction"
        time.sleep(5)


def test_cold_model_first_job_goes_through_deployment(ndif, tmp_path):
    """A model NDIF lists COLD is accepted: the CLI says once, before its first job, that the job waits while NDIF
    starts the model; its progress line (in a terminal, as a user sees it) shows "starting the model" while NDIF
    provisions and deploys it (15-50 s here; after an eviction NDIF's API first sends the job to the evicted replica,
    re-queues it and deploys anew), then the result. The model stays deployed (the next run evicts it first)."""
    import headscope.backends.ndif as ndif_backend

    if _deployment_level(ndif, COLD) is None:
        pytest.skip(f"serve.sh did not register {COLD} (NDIF_TESTBED_TINY=0, or a stack from before it did)")
    _made_cold(ndif)
    tokens = ["tokens", "The capital of France is", "--model", COLD, "--backend", "nnsight", "--remote"]
    env = {**os.environ, **ndif, "HEADSCOPE_RESULTS_DIR": str(tmp_path)}
    # `script` gives the CLI a terminal: its progress line is written only to one (and not with --json)
    command = " ".join(shlex.quote(part) for part in [sys.executable, "-m", "headscope", *tokens])
    done = _bounded(["script", "-qefc", command, "/dev/null"], timeout=600, env=env)
    out = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", done.stdout.replace("\r\n", "\n"))  # the line's clearing codes
    assert done.returncode == 0, out[-3000:]
    notice = out.index(f"NDIF lists {COLD} as cold (no replica running): its first job waits")
    states = re.findall(r"the NDIF job \(([^)]*)\)", out)
    assert "starting the model" in states and states[-1] == "completed", states
    assert notice < out.index("the NDIF job (starting the model)")
    assert set(states) <= set(ndif_backend._STATE_WORDS.values()), states
    assert f"model: {COLD}   backend: NDIF (remote)" in out and "top-10 next tokens at position" in out


def test_model_not_deployed_is_one_line(ndif, tmp_path):
    done = run_cli([*ABLATE, "--model", "HuggingFaceTB/SmolLM2-360M", "--backend", "nnsight", "--remote"], ndif,
                   tmp_path, timeout=300)
    line = one_line_error(done)
    assert "does not host HuggingFaceTB/SmolLM2-360M" in line and HOSTED in line and TINY in line
    assert cached_files(tmp_path) == []
    _works_after(ndif, tmp_path)


def test_job_past_timeout_is_one_line(ndif, tmp_path):
    # the embedded model: a tiny model's job is done by the first poll, which returns its result whatever the time
    done = run_cli([*ABLATE, "--model", HOSTED, "--backend", "nnsight", "--remote"],
                   {**ndif, "HEADSCOPE_NDIF_TIMEOUT": "0.5"}, tmp_path, timeout=300)
    line = one_line_error(done)
    assert "did not finish within" in line and "HEADSCOPE_NDIF_TIMEOUT" in line
    assert cached_files(tmp_path) == []
    _works_after(ndif, tmp_path)


def _client_cache_with_layers(tmp_path: Path, family: str, n_layers: int) -> Path:
    """A client-side Hugging Face cache in which a served model's config says `n_layers` layers: the client then
    builds interventions on layers the server's model does not have (a client and a server that disagree about a
    model, as after an update on one side)."""
    served = Path(ndif_hf_home()) / "hub" / f"models--headscope-tiny--{family}"
    entry = tmp_path / "hf" / "hub" / served.name
    commit = (served / "refs" / "main").read_text()
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in (served / "snapshots" / commit).iterdir():
        if file.name == "config.json":
            config = json.loads(file.read_text())
            config["num_hidden_layers"] = n_layers
            (snapshot / file.name).write_text(json.dumps(config))
        else:
            (snapshot / file.name).symlink_to(file.resolve())
    return tmp_path / "hf"


def ndif_hf_home() -> str:
    return str(TESTBED / "hf")


def test_intervention_raising_on_the_server_is_one_line(ndif, tmp_path):
    hf_home = _client_cache_with_layers(tmp_path, "llama", 3)  # the server's tiny Llama has 2
    done = run_cli(["dla", "--task", "digits", "--n-prompts", "2", "--model", TINY, "--backend", "nnsight",
                    "--remote"], {**ndif, "HF_HOME": str(hf_home)}, tmp_path / "results", timeout=300)
    line = one_line_error(done)
    assert "NDIF job" in line and "failed" in line, line
    assert cached_files(tmp_path / "results") == []
    _works_after(ndif, tmp_path / "results")


def test_server_stopped_mid_job_is_one_line(ndif, tmp_path):
    port = int(ndif["NDIF_HOST"].rsplit(":", 1)[1]) + 60
    pgid = _extra_api(port)
    try:
        report, stderr = _watched([*ABLATE, "--model", HOSTED, "--backend", "nnsight", "--remote"],
                                  {**ndif, "NDIF_HOST": f"http://127.0.0.1:{port}"}, tmp_path, kill_pgid=pgid)
    finally:
        _stop_extra_api(port, pgid, ndif)
    assert report["code"] != 0 and "killed" in report["states"], (report, stderr[-2000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Lost contact with NDIF" in lines[0], stderr[-2000:]
    assert cached_files(tmp_path) == []
    _works_after(ndif, tmp_path)


def test_client_below_servers_minimum_version_is_one_line(ndif, tmp_path):
    port = int(ndif["NDIF_HOST"].rsplit(":", 1)[1]) + 50
    pgid = _extra_api(port, min_nnsight="9.0")
    try:
        done = run_cli([*ABLATE, "--model", TINY, "--backend", "nnsight", "--remote"],
                       {**ndif, "NDIF_HOST": f"http://127.0.0.1:{port}"}, tmp_path, timeout=300)
    finally:
        _stop_extra_api(port, pgid, ndif)
    line = one_line_error(done)
    assert "9.0" in line and "nnsight" in line
    assert cached_files(tmp_path) == []
    _works_after(ndif, tmp_path)


def test_wrong_key_is_one_line(ndif, tmp_path):
    """NDIF checks keys only with its accounts database (NDIF_POSTGRES_URL): a second API with the check on. A key
    it does not know (403) and a malformed one (400, which NDIF echoes in its answer) each give headscope's one line,
    without the key, and cache nothing; the test bed's own key passes the same check."""
    port = int(ndif["NDIF_HOST"].rsplit(":", 1)[1]) + 70
    pgid = _extra_api(port, check_keys=True)
    checked = {**ndif, "NDIF_HOST": f"http://127.0.0.1:{port}"}
    try:
        for key in (str(uuid.uuid4()), "7d2e-not-a-key"):
            done = run_cli([*ABLATE, "--model", TINY, "--backend", "nnsight", "--remote"],
                           {**checked, "NDIF_API_KEY": key}, tmp_path, timeout=300)
            line = one_line_error(done)
            assert "NDIF refused the request" in line and "Check the API key" in line, line
            assert key not in done.stdout + done.stderr
            assert cached_files(tmp_path) == []
        _works_after(checked, tmp_path)
    finally:
        _stop_extra_api(port, pgid, ndif)


def test_the_key_is_never_in_outputs_caches_or_urls(ndif, tmp_path):
    """The key travels in a request header only: not in headscope's output or cache, not in any address the server's
    processes logged (the API's request paths, the object store's request lines). NDIF 0.1.2 itself writes the key
    into its request log lines (`api_key=...`, in the API's and the model actors' logs): its own behaviour,
    documented in docs/ndif-testbed.md, not a URL and not headscope's."""
    key = "4f1c2a7e-key-never-shown-9d3b"
    marker = TESTBED / "logs" / ".before-key-test"
    marker.touch()
    done = run_cli([*ABLATE, "--model", TINY, "--backend", "nnsight", "--remote", "--json"],
                   {**ndif, "NDIF_API_KEY": key}, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert key not in done.stdout and key not in done.stderr
    cached = cached_files(tmp_path)
    assert cached and not any(key in file.read_text() for file in cached)
    written = [file for root in (TESTBED / "logs", TESTBED / "ray" / "session_latest" / "logs")
               for file in root.rglob("*") if file.is_file() and file.stat().st_mtime >= marker.stat().st_mtime]
    addresses = ["".join(groups) for file in written for groups in URL.findall(file.read_text(errors="replace"))]
    assert any("/ndif-results/" in address for address in addresses), "no result download was logged"
    assert not [address for address in addresses if key in address]
