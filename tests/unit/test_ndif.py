"""NDIF (nnsight, remote) without NDIF: the checks before any job fail within seconds with what to do, a job's state
reaches the caller while waiting, and the API key never leaves memory. No machine here reaches NDIF."""

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import headscope.backends.ndif as ndif_backend
from components.turns import waiting_text
from headscope.backends.ndif import (
    NdifListing,
    NdifRun,
    NdifTarget,
    RemoteJobError,
    RemoteJobState,
    gate_on_state,
    probe_ndif,
    starting_notice,
    wait_for_job,
)
from headscope.errors import Cancelled, ModelLoadError
from headscope.loading import ModelRequest, load_model
from headscope.sharing import caller
from tests.cli_in_process import one_line_error, run_cli
from tests.pinned import cpu_env

SECRET = "ndif-test-key-5f1e2d3c4b5a"
HOSTED = "meta-llama/Llama-2-7b-hf"


@pytest.fixture
def no_saved_key(monkeypatch):
    from nnsight.schema.config import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)


@pytest.fixture
def closed_host():
    """An address on this machine that refuses connections and that nobody else can take while the test runs: a port
    this test holds bound without listening (Linux answers a connection to it with a reset)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


@pytest.fixture(autouse=True)
def never_the_real_ndif(monkeypatch, closed_host):
    """Every test here starts pointed at the closed loopback port, by NDIF_HOST and by nnsight's own configured host
    (its default is the real NDIF, which a machine with internet would reach with the test key); a test that wants
    another host sets it again."""
    from nnsight.schema.config import CONFIG

    monkeypatch.setenv("NDIF_HOST", closed_host)
    monkeypatch.setattr(CONFIG.API, "HOST", closed_host)


@pytest.fixture
def status_server():
    """A stand-in for NDIF's /status endpoint (the part of the protocol the load checks read)."""

    class Status(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"deployments": {
                "a": {"repo_id": HOSTED, "deployment_level": "HOT", "application_state": "RUNNING"},
                "b": {"repo_id": "openai-community/gpt2", "deployment_level": "WARM", "application_state": "RUNNING"},
                "c": {"repo_id": "some/cold-model", "deployment_level": "COLD", "application_state": "RUNNING"},
            }}).encode()
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_no_key_is_refused_before_anything_else(no_saved_key):
    with pytest.raises(ModelLoadError, match=r"NDIF needs an API key.*NDIF_API_KEY"):
        load_model(ModelRequest(HOSTED, backend="ndif"))


@pytest.fixture
def silent_server():
    """A host that accepts connections and never answers (a black hole behind a firewall)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.mark.parametrize("which", ["nnsight's configured host", "refused", "silent"])
def test_an_unreachable_ndif_is_reported_within_seconds(monkeypatch, silent_server, closed_host, which):
    """Never the real NDIF: a machine with internet would send the test key there. Without NDIF_HOST, nnsight's
    configured host is used; here it points at the closed loopback port too."""
    from nnsight.schema.config import CONFIG

    hosts = {"refused": closed_host, "silent": silent_server}
    if which in hosts:
        monkeypatch.setenv("NDIF_HOST", hosts[which])
    else:
        monkeypatch.delenv("NDIF_HOST", raising=False)
        monkeypatch.setattr(CONFIG.API, "HOST", closed_host)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="is not reachable from this machine") as caught:
        load_model(ModelRequest(HOSTED, backend="ndif", api_key=SECRET))
    # the probe gives up after NDIF_PROBE_SECONDS (3 s) on a silent host; 30 s leaves room for a loaded machine while
    # still failing a probe that waits for the system's TCP timeout (minutes)
    assert time.perf_counter() - started < 30
    assert SECRET not in str(caught.value)
    if which != "silent":
        assert closed_host.removeprefix("http://") in str(caught.value)


def test_credentials_in_the_ndif_address_never_reach_a_message(monkeypatch, closed_host):
    monkeypatch.setenv("NDIF_HOST", closed_host.replace("http://", "http://bob:hunter2@"))
    with pytest.raises(ModelLoadError, match="is not reachable from this machine") as caught:
        load_model(ModelRequest(HOSTED, backend="ndif", api_key=SECRET))
    message = str(caught.value)
    assert "hunter2" not in message and "bob" not in message and "127.0.0.1" in message


def test_a_model_ndif_does_not_list_is_refused_with_the_hosted_list(monkeypatch, status_server):
    monkeypatch.setenv("NDIF_HOST", status_server)
    with pytest.raises(ModelLoadError, match=r"does not host mistralai/Mistral-7B-v0\.1") as caught:
        load_model(ModelRequest("mistralai/Mistral-7B-v0.1", backend="ndif", api_key=SECRET))
    message = str(caught.value)
    assert f"Hosted models: {HOSTED}, openai-community/gpt2, some/cold-model (cold)." in message


def test_the_probe_lists_deployed_and_cold_models_apart(status_server):
    listing = probe_ndif(status_server)
    assert listing == NdifListing(deployed=(HOSTED, "openai-community/gpt2"), cold=("some/cold-model",))
    assert listing.is_cold("Some/Cold-Model") and not listing.is_cold(HOSTED) and listing.is_deployed(HOSTED)
    assert not listing.is_deployed("some/cold-model") and not listing.is_cold("some/other")


def test_ndif_runs_hub_models_only(monkeypatch):
    with pytest.raises(ModelLoadError, match="not the embedded model"):
        load_model(ModelRequest("embedded", backend="ndif", api_key=SECRET))


class _Job:
    """The polling side of nnsight's non-blocking RemoteBackend: poll() and the last status seen."""

    def __init__(self, states, result=None, error=None):
        from nnsight.schema.response import Status

        self.job_id = "job-1"
        self.states = [Status(s) for s in states]
        self.status = None
        self.result = result
        self.error = error

    def poll(self):
        if self.states:
            self.status = self.states.pop(0)
            return None
        if self.error is not None:
            raise self.error
        return self.result


def test_waiting_reports_each_state_and_returns_the_saved_values():
    seen = []
    job = _Job(["RECEIVED", "QUEUED", "QUEUED", "RUNNING"], result={"lds": [1.0, 2.0]})
    assert wait_for_job(job, timeout=30, on_state=seen.append, poll_seconds=0.01) == {"lds": [1.0, 2.0]}
    assert [s.state for s in seen] == ["received", "queued", "queued", "running", "completed"]
    assert all(s.job_id == "job-1" for s in seen)
    assert [s.elapsed for s in seen] == sorted(s.elapsed for s in seen)


def test_a_failed_job_says_so():
    from nnsight.intervention.backends.remote import RemoteError

    job = _Job(["QUEUED"], error=RemoteError("CUDA out of memory"))
    with pytest.raises(RemoteJobError, match="NDIF job job-1 failed: CUDA out of memory"):
        wait_for_job(job, timeout=30, on_state=None, poll_seconds=0.01)


def test_a_job_that_takes_too_long_times_out():
    job = _Job(["QUEUED"] * 1000)
    started = time.perf_counter()
    expected = r"did not finish within 0 s \(last state: queued\).*HEADSCOPE_NDIF_TIMEOUT"
    with pytest.raises(RemoteJobError, match=expected):
        wait_for_job(job, timeout=0.2, on_state=None, poll_seconds=0.01)
    assert time.perf_counter() - started < 20  # the 1,000 queued polls (up to 2 s apart) would take many minutes


def test_the_wait_while_ndif_starts_a_cold_model_is_not_counted_in_the_timeout():
    """A COLD model's first job: PROVISIONING, then DEPLOYING for longer than the job's timeout, then it runs. The
    start is said as "starting the model" and does not trip HEADSCOPE_NDIF_TIMEOUT's limit."""
    seen = []
    job = _Job(["RECEIVED", "PROVISIONING", *["DEPLOYING"] * 8, "QUEUED", "RUNNING"], result={"x": 1})
    assert wait_for_job(job, timeout=0.1, on_state=seen.append, poll_seconds=0.01) == {"x": 1}
    states = [s.state for s in seen]
    assert states == ["received", *["starting the model"] * 9, "queued", "running", "completed"]
    assert seen[-2].elapsed > 0.1  # the job itself was seen past the timeout: only the start made it so


def test_a_model_start_past_its_own_bound_says_ndif_was_starting_it(monkeypatch):
    monkeypatch.setattr(ndif_backend, "NDIF_START_SECONDS", 0.05)
    with pytest.raises(RemoteJobError, match=r"NDIF was still starting the model after \d+ s.*job job-1"):
        wait_for_job(_Job(["PROVISIONING", *["DEPLOYING"] * 1000]), timeout=0.01, on_state=None, poll_seconds=0.01)


def test_a_cold_models_notice_is_said_until_its_first_job_completes():
    cold = NdifRun(NdifTarget("http://127.0.0.1:1", "key", 60.0, cold_repo_id="some/cold-model"))
    model = type("Model", (), {"mode": cold})()
    assert starting_notice(model) == ("NDIF lists some/cold-model as cold (no replica running): its first job waits "
                                      "while NDIF starts the model (seconds for a small model, minutes for a large "
                                      "one); later jobs run at once.")
    assert cold.outputs(_Job(["DEPLOYING"], result={"a": 3}), {}, ("a",)) == (3,)
    assert starting_notice(model) is None
    model.mode = NdifRun(NdifTarget("http://127.0.0.1:1", "key", 60.0))  # a deployed model: nothing to say
    assert starting_notice(model) is None


def test_cancel_stops_waiting():
    job = _Job(["QUEUED"] * 1000)

    def cancel_when_queued(state):
        if state.state == "queued":
            raise Cancelled("stopped by the user")

    with pytest.raises(Cancelled):
        wait_for_job(job, timeout=30, on_state=cancel_when_queued, poll_seconds=0.01)


def test_the_job_state_reaches_the_callers_on_wait():
    seen = []
    with caller("session-a", on_wait=seen.append):
        gate_on_state(RemoteJobState("job-1", "queued", 12.0))
        gate_on_state(RemoteJobState("job-1", "completed", 13.5))
    assert len(seen) == 2 and seen[0].busy
    # the caller's own job: not "in this session" (a CLI has no session), the time so far
    assert seen[0].describe("session-a") == "the NDIF job (queued), 12 s so far"
    assert waiting_text(seen[0], "") == "Waiting for NDIF: the NDIF job (queued), 12 s so far…"
    assert not seen[1].busy  # the wait is over: the CLI clears its line, the page its notice


@pytest.mark.parametrize(("args", "message"), [
    (["tokens", "x", "--backend", "tl"], "invalid choice: 'tl'"),
    (["tokens", "x", "--remote", "--backend", "bridge"], "--remote runs nnsight on NDIF"),
    (["heads", "--score", "successor", "--remote", "--device", "cpu"], "do not apply with --remote"),
    (["ablate", "--task", "digits", "--remote", "--model", HOSTED], "NDIF needs an API key"),
])
def test_cli_bad_backend_input_exits_2_with_one_line(capsys, no_saved_key, args, message):
    assert message in one_line_error(capsys, args)  # in-process: tests/cli_in_process.py


def test_cli_never_prints_the_key(closed_host, monkeypatch, capsys):
    monkeypatch.setenv("NDIF_API_KEY", SECRET)
    monkeypatch.setenv("NDIF_HOST", closed_host)
    done = run_cli(capsys, ["tokens", "1 2 3 4 ", "--remote", "--model", HOSTED, "--json"])  # in-process
    assert done.returncode == 2
    assert "not reachable" in done.stderr
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize("listed", [HOSTED, "some/cold-model"])
def test_a_deployed_or_cold_model_goes_on_to_read_only_its_config_and_tokenizer(monkeypatch, status_server, listed):
    """Past the NDIF checks, loading needs only the config and tokenizer from the hub (offline here: a clear error).
    A model NDIF lists COLD passes them too: NDIF starts it for its first job."""
    monkeypatch.setenv("NDIF_HOST", status_server)
    with pytest.raises(ModelLoadError, match=f"Could not read the config and tokenizer of {listed}"):
        load_model(ModelRequest(listed, backend="ndif", api_key=SECRET))


def _hub_cache_holding(tiny_model_dir, root, repo_id: str = HOSTED) -> str:
    """A Hugging Face hub cache in which repo_id's config and tokenizer are the tiny model's (no weights: NDIF runs
    those), as a user's cache holds them after a first online load."""
    import shutil
    from pathlib import Path

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(root) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in Path(tiny_model_dir).iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copy(path, snapshot / path.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return str(root)


def test_the_ndif_job_timeout_is_read_from_headscope_ndif_timeout(status_server, tiny_model_dir, tmp_path):
    """Whole loads against the stand-in status endpoint and a hub cache holding the config and tokenizer, in one
    process of its own (the hub cache folder is read when huggingface_hub is imported); the variable is read at
    each load. The offline hub cannot give the id's canonical spelling: each load's fallbacks say so."""
    code = ("import os\n"
            "from headscope.errors import HeadscopeError\n"
            "from headscope.loading import ModelRequest, load_model\n"
            "for value in ('123', '', 'soon'):\n"
            "    os.environ['HEADSCOPE_NDIF_TIMEOUT'] = value\n"
            "    try:\n"
            f"        model = load_model(ModelRequest({HOSTED!r}, backend='ndif', api_key='k'))\n"
            "        print('timeout', model.mode.target.timeout)\n"
            "        print('fallbacks', model.info.fallbacks)\n"
            "    except HeadscopeError as error:\n"
            "        print(error)\n")
    env = cpu_env(HF_HUB_CACHE=_hub_cache_holding(tiny_model_dir, tmp_path / "hub"), NDIF_HOST=status_server)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0::2] == [
        "timeout 123.0", "timeout 1800.0", "HEADSCOPE_NDIF_TIMEOUT must be a number above 0, got 'soon'."]
    for line in lines[1::2]:  # the hub is offline: the id goes to NDIF as written, and the model card says why
        assert line.startswith("fallbacks (\"The hub's spelling of the model id off: OfflineModeIsEnabled"), line
        assert line.endswith(f"NDIF gets '{HOSTED}' as written\",)"), line


def test_the_python_api_says_once_that_a_cold_models_first_job_waits(status_server, tiny_model_dir, tmp_path):
    """hs.load of a model NDIF lists COLD says so on stderr, as the command line does (the stand-in server lists
    some/cold-model COLD; its config and tokenizer come from a hub cache, in a process of its own)."""
    code = ("import headscope as hs\n"
            "model = hs.load('some/cold-model', remote=True, api_key='k')\n"
            "print('loaded', model.info.name)\n")
    env = cpu_env(HF_HUB_CACHE=_hub_cache_holding(tiny_model_dir, tmp_path / "hub", "some/cold-model"),
                  NDIF_HOST=status_server)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("loaded ")
    assert done.stderr.count("NDIF lists some/cold-model as cold (no replica running): its first job waits") == 1
