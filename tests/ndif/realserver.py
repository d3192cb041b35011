"""Helpers for the tests against NDIF's own server (tests/ndif/serve.sh): the client's environment, headscope's CLI
run as a user runs it, and number-by-number comparison of two JSON results."""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SERVE = HERE / "serve.sh"
TESTBED = Path(os.environ.get("NDIF_TESTBED_DIR", "/tmp/headscope-ndif"))
HOSTED = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded model's converted folder, as NDIF serves it here
TOLERANCE = 1e-4  # of the compared values' scale (float32 on both ends)
TIMING_KEYS = {"seconds", "elapsed", "load_seconds", "wall_seconds", "compute_seconds",
               "evaluations", "batches"}  # times, and the circuit search's evaluations and batches (its cost)


def client_env() -> dict[str, str]:
    out = subprocess.run(["bash", str(SERVE), "env"], check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def api_up(host: str) -> bool:
    port = int(host.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tiny_remote(family: str) -> str:
    """The repo id NDIF serves a tiny family's model under (serve.sh, tests/ndif/tiny_models.py)."""
    return f"headscope-tiny/{family}"


def tiny_local(family: str) -> str:
    """The same model's folder, for the local backends."""
    return str(TESTBED / "tiny" / family)


def run_cli(args: list[str], env_extra: dict[str, str], results: Path,
            timeout: float = 1800) -> subprocess.CompletedProcess:
    """`python -m headscope ARGS` with its own results folder (nothing read from or left in the user's cache)."""
    env = {**os.environ, **env_extra, "HEADSCOPE_RESULTS_DIR": str(results)}
    return subprocess.run([sys.executable, "-m", "headscope", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def cli_json(args: list[str], env_extra: dict[str, str], results: Path) -> dict:
    done = run_cli([*args, "--json"], env_extra, results)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def local_json(args: list[str], results: Path) -> dict:
    """`headscope ARGS --json` on a local backend, run in this process (headscope.cli.main, what `python -m
    headscope` calls): each comparison's two local runs then cost no torch import each, which on this shared
    2-core machine is most of a tiny model's run."""
    from headscope.cli import main

    before = os.environ.get("HEADSCOPE_RESULTS_DIR")
    os.environ["HEADSCOPE_RESULTS_DIR"] = str(results)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, "--json"])
    finally:
        if before is None:
            os.environ.pop("HEADSCOPE_RESULTS_DIR", None)
        else:
            os.environ["HEADSCOPE_RESULTS_DIR"] = before
    assert code == 0, err.getvalue()[-2000:]
    return json.loads(out.getvalue())


def numbers(value, path=""):
    """(path, float) for every number in a JSON value, timings left out."""
    if isinstance(value, dict):
        for key in sorted(value):
            if key not in TIMING_KEYS:
                yield from numbers(value[key], f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def assert_same_numbers(remote: dict, local: dict, what: str) -> int:
    """Every number of `remote` equals `local`'s to TOLERANCE of the values' scale; returns how many were compared."""
    got, want = dict(numbers(remote)), dict(numbers(local))
    assert got.keys() == want.keys(), f"{what}: different fields {sorted(got.keys() ^ want.keys())[:5]}"
    scale = max(1.0, max((abs(v) for v in want.values()), default=1.0))
    worst = max(((abs(got[k] - want[k]), k) for k in want), default=(0.0, ""))
    assert worst[0] <= TOLERANCE * scale, f"{what}: {worst[1]} differs by {worst[0]}"
    assert want, f"{what}: no numbers compared"
    return len(want)


def _without(result: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in result.items() if k not in keys}


def three_ways(command: list[str], ndif: dict, tmp_path: Path, remote_model: str = HOSTED,
               local_model: str = "embedded", backends: tuple[str, ...] = ("nnsight", "bridge")) -> dict:
    """The command on NDIF (a `python -m headscope` process, as a user runs it) and on each local backend (in this
    process): every number equal (the model's name and backend aside). Returns NDIF's result."""
    ignored = ("model", "backend")
    remote = cli_json([*command, "--model", remote_model, "--backend", "nnsight", "--remote"], ndif,
                      tmp_path / "remote")
    for backend in backends:
        local = local_json([*command, "--model", local_model, "--backend", backend], tmp_path / backend)
        assert_same_numbers(_without(remote, ignored), _without(local, ignored),
                            f"{' '.join(command[:1])} on NDIF vs local {backend}")
    return remote


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout[-1000:]
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


def cached_files(results: Path) -> list[Path]:
    return sorted(results.rglob("*.json")) if results.exists() else []
