"""Starting a real server (streamlit, `headscope run`) on a port of its own for a test, without the free-port race: a
port found free is released before the server binds it, so another process may take it first. A start counts only
when the server is alive, answers its health check, and its own log names the port (so the answer is not another
server's on a port it took); where the server exited first (the port was taken), another port is tried."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

HEALTHY_WITHIN_S = 180  # a streamlit start imports torch and the app's modules: generous on a loaded machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int, server: subprocess.Popen, log: Path) -> bool:
    try:
        with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as reply:
            return reply.status == 200 and server.poll() is None and f":{port}" in log.read_text(errors="replace")
    except OSError:
        return False


def start_on_port(command: Sequence[str], port: int, env: dict[str, str], log: Path,
                  cwd: Path | None = None) -> subprocess.Popen | None:
    """`command` (which serves on `port`) once healthy; None where it exited first (the port was taken)."""
    with log.open("w") as sink:
        server = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return None
        if _healthy(port, server, log):
            return server
        time.sleep(0.5)
    stop(server)
    raise AssertionError(f"the server did not become healthy within {HEALTHY_WITHIN_S} s; see {log}")


def start_healthy_server(command_for: Callable[[int], Sequence[str]], env: dict[str, str], log: Path,
                         cwd: Path | None = None, attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """A healthy server and its port: `command_for(port)` on a free port, another port where one was taken
    meanwhile (its log says why it exited)."""
    for _ in range(attempts):
        port = free_port()
        server = start_on_port(command_for(port), port, env, log, cwd)
        if server is not None:
            return server, port
    raise AssertionError(f"the server exited before becoming healthy {attempts} times; see {log}:\n"
                         f"{log.read_text(errors='replace')[-2000:]}")


def stop(server: subprocess.Popen, timeout_s: float = 15) -> None:
    server.terminate()
    try:
        server.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)
