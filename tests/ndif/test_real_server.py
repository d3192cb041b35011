"""headscope's CLI against NDIF's own server (the `ndif` package, started by tests/ndif/serve.sh), compared with the
local nnsight and TransformerLens backends on the same weights.

Marked `ndif` (not in the default run): the server needs its own venv (`tests/ndif/serve.sh install`, ~4.5 min,
~1.7 GB) and starts in 1.5-4 min; each remote command costs seconds to minutes. Run:
    .venv/bin/python -m pytest tests/ndif -m ndif -q
A test bed already up (serve.sh start) is used as it is; otherwise the session starts one and stops it after.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ndif

HERE = Path(__file__).resolve().parent
SERVE = HERE / "serve.sh"
HOSTED = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded model's converted folder, as NDIF serves it here
TOLERANCE = 1e-4
TIMING_KEYS = {"seconds", "elapsed", "load_seconds", "wall_seconds", "compute_seconds"}


def _client_env() -> dict[str, str]:
    out = subprocess.run(["bash", str(SERVE), "env"], check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def _api_up(host: str) -> bool:
    port = int(host.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def ndif() -> dict[str, str]:
    """The client environment of a running local NDIF (started here when none runs)."""
    if not Path(os.environ.get("NDIF_VENV", "/work/venvs/ndif"), "bin", "ndif").exists():
        pytest.skip("no NDIF venv: run tests/ndif/serve.sh install")
    env = _client_env()
    started = False
    if not _api_up(env["NDIF_HOST"]):
        subprocess.run(["bash", str(SERVE), "start"], check=True, timeout=900)
        started = True
    yield env
    if started:
        subprocess.run(["bash", str(SERVE), "stop"], check=False, timeout=120)


def _run(args: list[str], env_extra: dict[str, str], tmp_path: Path,
         timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "HEADSCOPE_RESULTS_DIR": str(tmp_path / "results")}
    return subprocess.run([sys.executable, "-m", "headscope", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _json(args: list[str], env_extra: dict[str, str], tmp_path: Path) -> dict:
    done = _run([*args, "--json"], env_extra, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _numbers(value, path=""):
    """(path, float) for every number in a JSON value, timings left out."""
    if isinstance(value, dict):
        for key in sorted(value):
            if key not in TIMING_KEYS:
                yield from _numbers(value[key], f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def _assert_same_numbers(remote: dict, local: dict, what: str) -> None:
    got, want = dict(_numbers(remote)), dict(_numbers(local))
    assert got.keys() == want.keys(), f"{what}: different fields {sorted(got.keys() ^ want.keys())[:5]}"
    scale = max(1.0, max((abs(v) for v in want.values()), default=1.0))
    worst = max(((abs(got[k] - want[k]), k) for k in want), default=(0.0, ""))
    assert worst[0] <= TOLERANCE * scale, f"{what}: {worst[1]} differs by {worst[0]}"


def _three_ways(command: list[str], ndif: dict, tmp_path: Path) -> None:
    remote = _json([*command, "--model", HOSTED, "--backend", "nnsight", "--remote"], ndif, tmp_path / "remote")
    for backend in ("nnsight", "bridge"):
        local = _json([*command, "--model", "embedded", "--backend", backend], {}, tmp_path / backend)
        _assert_same_numbers({k: v for k, v in remote.items() if k != "model"},
                             {k: v for k, v in local.items() if k != "model"}, f"NDIF vs local {backend}")


def test_tokens_match_local_backends(ndif, tmp_path):
    _three_ways(["tokens", "The capital of France is", "--answer", " Paris", "--top-k", "10"], ndif, tmp_path)


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_ablate_matches_local_backends(ndif, tmp_path, method):
    _three_ways(["ablate", "--task", "digits", "--n-prompts", "4", "--method", method, "--no-cache"], ndif, tmp_path)


@pytest.mark.parametrize("score", ["previous-token", "duplicate-token", "induction", "sequence", "successor",
                                   "copying"])
def test_heads_match_local_backends(ndif, tmp_path, score):
    _three_ways(["heads", "--score", score, "--no-cache"], ndif, tmp_path)


def test_patterns_match_local_backends(ndif, tmp_path):
    command = ["patterns", "--prompt", "When Mary and John went to the store, John gave a drink to", "--heads",
               "3.4,5.1"]
    remote = _run([*command, "--html", str(tmp_path / "r.html"), "--csv", str(tmp_path / "r.csv"), "--model", HOSTED,
                   "--backend", "nnsight", "--remote"], ndif, tmp_path)
    local = _run([*command, "--html", str(tmp_path / "l.html"), "--csv", str(tmp_path / "l.csv"), "--model",
                  "embedded", "--backend", "bridge"], {}, tmp_path)
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr[-2000:] + local.stderr[-2000:]
    rows_r = (tmp_path / "r.csv").read_text().splitlines()
    rows_l = (tmp_path / "l.csv").read_text().splitlines()
    assert len(rows_r) == len(rows_l) > 1
    compared = 0
    for row_r, row_l in zip(rows_r[1:], rows_l[1:], strict=True):
        for a, b in zip(row_r.split(","), row_l.split(","), strict=True):
            try:
                x, y = float(a), float(b)
            except ValueError:
                assert a == b
                continue
            assert abs(x - y) <= TOLERANCE, (row_r, row_l)
            compared += 1
    assert compared >= len(rows_l) - 1  # at least one attention value a row


def test_circuit_matches_local_nnsight(ndif, tmp_path):
    command = ["circuit", "--task", "digits", "--n-prompts", "4", "--method", "zero", "--one-pass", "--no-cache"]
    remote = _json([*command, "--model", HOSTED, "--backend", "nnsight", "--remote"], ndif, tmp_path / "remote")
    local = _json([*command, "--model", "embedded", "--backend", "nnsight"], {}, tmp_path / "local")
    _assert_same_numbers({k: v for k, v in remote.items() if k != "model"},
                         {k: v for k, v in local.items() if k != "model"}, "NDIF vs local nnsight")


# --------------------------------------------------------------------------------------------- the server's errors


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


def test_model_not_deployed_is_one_line(ndif, tmp_path):
    done = _run(["tokens", "Hello", "--model", "HuggingFaceTB/SmolLM2-360M", "--backend", "nnsight", "--remote"],
                ndif, tmp_path, timeout=300)
    line = _one_line_error(done)
    assert "does not host HuggingFaceTB/SmolLM2-360M" in line and HOSTED in line


def test_job_past_timeout_is_one_line(ndif, tmp_path):
    done = _run(["tokens", "Hello there", "--model", HOSTED, "--backend", "nnsight", "--remote"],
                {**ndif, "HEADSCOPE_NDIF_TIMEOUT": "0.5"}, tmp_path, timeout=300)
    line = _one_line_error(done)
    assert "did not finish within" in line and "HEADSCOPE_NDIF_TIMEOUT" in line


def test_client_below_servers_minimum_version_is_one_line(ndif, tmp_path):
    port = int(ndif["NDIF_HOST"].rsplit(":", 1)[1]) + 50
    env = {**os.environ, "NDIF_TESTBED_MIN_NNSIGHT": "9.0"}
    subprocess.run(["bash", str(SERVE), "extra-api", str(port)], check=True, env=env, timeout=300)
    pid_file = Path(os.environ.get("NDIF_TESTBED_DIR", "/tmp/headscope-ndif"), "pids", f"api-{port}")
    try:
        done = _run(["tokens", "Hello", "--model", HOSTED, "--backend", "nnsight", "--remote"],
                    {**ndif, "NDIF_HOST": f"http://127.0.0.1:{port}"}, tmp_path, timeout=300)
    finally:
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()
    line = _one_line_error(done)
    assert "9.0" in line and "nnsight" in line


STATES_SCRIPT = """
import json, sys
import headscope.backends.nnsight as nb
from headscope.cli import main
seen, real = [], nb.wait_for_job
def spy(job, *, timeout, on_state, **kwargs):
    def record(state):
        seen.append(state.state)
        if on_state is not None:
            on_state(state)
    return real(job, timeout=timeout, on_state=record, **kwargs)
nb.wait_for_job = spy
code = main(["tokens", "Hello there", "--model", sys.argv[1], "--backend", "nnsight", "--remote", "--json"])
print(json.dumps({"code": code, "states": seen}), file=sys.stderr)
"""


def test_job_states_seen_while_waiting(ndif, tmp_path):
    """The states headscope shows while it polls (the page's wait line and the CLI's): NDIF's own, in order."""
    import headscope.backends.nnsight as nnsight_backend

    env = {**os.environ, **ndif, "HEADSCOPE_RESULTS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", STATES_SCRIPT, HOSTED], capture_output=True, text=True, env=env,
                          timeout=600)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr[-2000:]
    states = report["states"]
    assert states[-1] == "completed"
    assert set(states) <= set(nnsight_backend._STATE_WORDS.values()), states
    assert {"received", "queued", "running"} & set(states[:-1]), states
