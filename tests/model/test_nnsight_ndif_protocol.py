"""The NDIF mode end to end against a stand-in NDIF server on localhost (no machine here reaches NDIF).

The client side is real: nnsight's RemoteBackend (non-blocking: POST /request, poll GET /response/<id>, download
the result), driven by the backend's own trace bodies. The stand-in does what NDIF does with a request: it
deserialises it with nnsight against its own copy of the model (headscope's modules hidden, as NDIF does not have
them; the request's env applied, e.g. eager attention), runs the rebuilt code, and returns the saved values through
the same status and result protocol. Checked: the numbers equal the local backend's, the job's states reach the
caller while waiting, only small results travel back, failures say what happened, and the API key travels only in a
request header (never in a URL or the payload)."""

import copy
import email.parser
import email.policy
import io
import json
import linecache
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from headscope.backends.base import Placement
from headscope.backends.interventions import InterventionGroup, LogitDiffTask, SourceKind, ValueSource
from headscope.backends.ndif import NdifRun, NdifTarget, RemoteJobError
from headscope.backends.nnsight import NnsightBackend
from headscope.component import Component
from headscope.errors import Cancelled
from headscope.loading import embedded_converted_folder
from headscope.methods import get_method
from headscope.sharing import caller

SECRET = "ndif-protocol-key-9a8b7c6d"


class StandInNdif:
    """Accepts nnsight requests, runs them on `model` (an nnsight TransformersModel) one at a time, serves results."""

    def __init__(self, model, queue_seconds=0.15):
        from nnsight.schema.response import Status

        self.model = model
        self.queue_seconds = queue_seconds
        self.leave_queue = threading.Event()  # set: queued jobs start at once
        self.Status = Status
        self.jobs: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self.payloads: list[bytes] = []
        self.result_sizes: list[int] = []
        self.fail_with: str | None = None
        self.cold_seconds = 0.0  # > 0: the model is COLD, and the next job waits this long while it is started
        self.refuse_with: int | None = None
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _response(self, job_id):
        from nnsight.schema.response import ResponseModel

        job = self.jobs[job_id]
        return ResponseModel(id=job_id, status=job["status"], description=job["description"],
                             data=job.get("url")).model_dump_json()

    def _run(self, job_id, metadata, blob):
        from nnsight.intervention.backends.local import LocalSimulationBackend
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.tracer import _saves, dec, inc

        job = self.jobs[job_id]
        job["status"] = self.Status.QUEUED
        if self.cold_seconds:  # as NDIF's queue does for a model without a replica: provision, deploy, re-queue
            start, self.cold_seconds = self.cold_seconds, 0.0
            job["status"] = self.Status.PROVISIONING
            time.sleep(start / 4)
            job["status"] = self.Status.DEPLOYING
            time.sleep(start * 3 / 4)
            job["status"] = self.Status.QUEUED
        self.leave_queue.wait(self.queue_seconds)
        with self.lock:
            job["status"] = self.Status.RUNNING
            if self.fail_with is not None:
                job["status"], job["description"] = self.Status.ERROR, self.fail_with
                return
            try:
                self.model._remoteable_set_env(metadata.get("env") or {})
                hiding = LocalSimulationBackend(self.model)
                hidden = hiding._hide_local_modules()  # as on NDIF: headscope is not installed there
                try:
                    tracer = RequestModel.deserialize(blob, self.model._remoteable_persistent_objects(),
                                                      compress=metadata["compress"])
                finally:
                    hiding._restore(hidden)
                # deserialize registers the block's source under the client's file name; a real server is another
                # process, here the client's next request would read its functions' source from that entry
                linecache.cache.pop(tracer.info.frame.f_code.co_filename, None)
                inc()
                try:  # the rebuilt functions run with only what was shipped with them as their globals
                    tracer.execute(tracer.info.code)
                    saves = _saves()
                    saved = {k: v for k, v in tracer.info.frame.f_locals.items() if id(v) in saves}
                finally:
                    dec()
            except Exception as error:  # what NDIF reports for a request that fails on its side
                job["status"], job["description"] = self.Status.ERROR, f"{type(error).__name__}: {error}"
                return
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        data = buffer.getvalue()
        if metadata["compress"]:
            import zstandard

            data = zstandard.ZstdCompressor().compress(data)
        self.result_sizes.append(len(data))
        job["result"] = data
        job["url"] = f"{self.host}/result/{job_id}"
        job["status"] = self.Status.COMPLETED

    def _handler(self):
        ndif = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code, body, kind="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.end_headers()
                self.wfile.write(body if isinstance(body, bytes) else body.encode())

            def do_POST(self):
                ndif.requests.append(("POST", self.path, dict(self.headers)))
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if ndif.refuse_with is not None:
                    # NDIF 0.1.2's refusals (ndif/services/api/auth.py): a malformed key is echoed back in the detail
                    detail = (f"Invalid API key format: '{self.headers.get('ndif-api-key')}'. API keys must be in "
                              "the format: xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx." if ndif.refuse_with == 400
                              else "Invalid API key.")
                    self._send(ndif.refuse_with, json.dumps({"detail": detail}))
                    return
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
                parts = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                         for part in message.iter_parts()}
                metadata = json.loads(parts["data"])
                ndif.payloads.append(parts["blob"])
                job_id = uuid.uuid4().hex
                ndif.jobs[job_id] = {"status": ndif.Status.RECEIVED, "description": "", "key": metadata["model_key"]}
                threading.Thread(target=ndif._run, args=(job_id, metadata, parts["blob"]), daemon=True).start()
                self._send(200, ndif._response(job_id))

            def do_GET(self):
                ndif.requests.append(("GET", self.path, dict(self.headers)))
                kind, _, job_id = self.path.strip("/").partition("/")
                if job_id not in ndif.jobs:
                    self._send(404, "{}")
                elif kind == "response":
                    self._send(200, ndif._response(job_id))
                else:
                    self._send(200, ndif.jobs[job_id]["result"], "application/octet-stream")

            def log_message(self, *args):
                pass

        return Handler

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def tiny_pair():
    """A local nnsight backend over a tiny Llama, and a stand-in NDIF serving its own copy of the same weights."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_converted_folder()[0])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0, 0.2)
    placement = Placement("cpu", None, torch.float32)
    local = NnsightBackend.from_local(model, tokenizer, name="tiny", source="tiny", revision="0",
                                      placement=placement, n_params=0, started=0.0)
    server_side = NnsightBackend.from_local(copy.deepcopy(model), tokenizer, name="tiny", source="tiny",
                                            revision="0", placement=placement, n_params=0, started=0.0)
    ndif = StandInNdif(server_side.model)
    client = NnsightBackend.from_local(copy.deepcopy(model), tokenizer, name="tiny", source="tiny", revision="0",
                                       placement=placement, n_params=0, started=0.0)
    remote = NnsightBackend(client.model, tokenizer, client.info, placement, client.layout, client.dims,
                            mode=NdifRun(NdifTarget(ndif.host, "test:tiny", 60.0)), api_key=SECRET)
    yield local, remote, ndif
    ndif.close()


def _task():
    generator = torch.Generator().manual_seed(4)
    clean = torch.randint(0, 1000, (4, 7), generator=generator)
    corrupted = torch.randint(0, 1000, (4, 7), generator=generator)
    answers = torch.randint(0, 1000, (4, 2), generator=generator)
    return LogitDiffTask(clean, corrupted, answers[:, 0], answers[:, 1], torch.full((4,), 0.25))


def test_remote_numbers_equal_local_ones(tiny_pair):
    local, remote, ndif = tiny_pair
    task = _task()
    for method in ("zero", "mean", "resample"):
        source = ValueSource(SourceKind(get_method(method).source))
        groups = [InterventionGroup.ablating([c], source) for c in [Component(1, h) for h in range(4)]
                  + [Component.mlp(1)]]
        np.testing.assert_allclose(remote.logit_diffs(task, groups),
                                   local.logit_diffs(task, groups), atol=1e-5, rtol=0)  # LDs ~1, float32
    torch.testing.assert_close(remote.answer_logits(task.clean, task.answer_ids),
                               local.answer_logits(task.clean, task.answer_ids))
    keep = lambda layer, pattern: pattern[0].clone()  # noqa: E731 (shipped by value to the server)
    mine = remote.reduce_attention_patterns(task.clean[:1], keep, layers=[0, 2], heads={2: [1]})
    theirs = local.reduce_attention_patterns(task.clean[:1], keep, layers=[0, 2], heads={2: [1]})
    for layer in (0, 2):
        torch.testing.assert_close(mine[layer], theirs[layer])
    ids = torch.tensor([5, 9, 40])
    effective = remote.mlp0_effective_embedding(ids)
    torch.testing.assert_close(effective, local.mlp0_effective_embedding(ids))
    torch.testing.assert_close(remote.ov_unembed_logits(1, effective, ids), local.ov_unembed_logits(1, effective, ids))
    effects = remote.attribution_effects(task, get_method("mean"))
    expected = local.attribution_effects(task, get_method("mean"))
    np.testing.assert_allclose(effects.head_effect, expected.head_effect, atol=1e-5, rtol=1e-5)  # 1e-5 of scale
    # only the per-group LD values, logits of a few tokens and chosen patterns came back: every result is small
    assert max(ndif.result_sizes) < 20_000


def test_waiting_shows_the_job_state_and_the_key_travels_only_in_a_header(tiny_pair):
    _local, remote, ndif = tiny_pair
    seen = []
    ndif.requests.clear()
    ndif.queue_seconds = 1.2  # longer than the first poll interval: the caller sees the job queued
    try:
        with caller("session-a", on_wait=seen.append):
            remote.last_logits(_task().clean)
    finally:
        ndif.queue_seconds = 0.15
    states = [status.job for status in seen]
    assert "the NDIF job (queued)" in states and states[-1] == "the NDIF job (completed)"
    assert remote.last_job.state == "completed" and remote.last_job.elapsed >= 1.2
    posts = [headers for method, _path, headers in ndif.requests if method == "POST"]
    assert len(posts) == 1 and posts[0].get("ndif-api-key") == SECRET
    assert all(headers.get("ndif-api-key") == SECRET for method, path, headers in ndif.requests
               if path.startswith("/response"))
    assert not any(SECRET in path for _method, path, _headers in ndif.requests)
    assert not any(SECRET.encode() in payload for payload in ndif.payloads)


def test_a_cold_models_first_job_waits_for_its_start_and_its_timeout_is_not_tripped(tiny_pair):
    """A model NDIF lists COLD: its first job goes through PROVISIONING and DEPLOYING (shown as "starting the model")
    for longer than the job timeout, which counts only the job's own time; the notice said before that job is gone
    after it, and the next job starts at once."""
    from headscope.backends.ndif import starting_notice

    local, remote, ndif = tiny_pair
    cold = NnsightBackend(remote.model, remote.tokenizer, remote.info, remote.placement, remote.layout, remote.dims,
                          mode=NdifRun(NdifTarget(ndif.host, "test:tiny", 0.5, cold_repo_id="test/tiny")),
                          api_key=SECRET)
    assert starting_notice(cold).startswith("NDIF lists test/tiny as cold")
    seen = []
    ndif.cold_seconds = 1.6
    with caller("session-a", on_wait=seen.append):
        logits = cold.last_logits(_task().clean)
    torch.testing.assert_close(logits, local.last_logits(_task().clean))
    states = [status.job for status in seen]
    assert states.count("the NDIF job (starting the model)") >= 2 and states[-1] == "the NDIF job (completed)"
    assert cold.last_job.elapsed >= 1.6 and starting_notice(cold) is None
    seen.clear()
    with caller("session-a", on_wait=seen.append):
        cold.last_logits(_task().clean)
    assert "the NDIF job (starting the model)" not in [status.job for status in seen]


def test_a_failed_or_refused_job_says_what_happened(tiny_pair):
    _local, remote, ndif = tiny_pair
    ndif.fail_with = "CUDA out of memory on the server"
    try:
        with pytest.raises(RemoteJobError, match="failed: CUDA out of memory on the server"):
            remote.last_logits(_task().clean)
    finally:
        ndif.fail_with = None
    for status in (401, 400):  # 400: a malformed key, which NDIF echoes in its answer and headscope leaves out
        ndif.refuse_with = status
        try:
            with pytest.raises(RemoteJobError,
                               match=r"NDIF refused the request.*Invalid API key.*Check the API key") as e:
                remote.last_logits(_task().clean)
            assert SECRET not in str(e.value)
        finally:
            ndif.refuse_with = None
    assert "'<your key>'" in str(e.value)


def test_cancel_while_queued_stops_waiting_and_frees_the_model(tiny_pair):
    _local, remote, ndif = tiny_pair

    def cancel(status):
        if "queued" in status.job:
            raise Cancelled("the user clicked Cancel")

    ndif.queue_seconds = 600  # the job stays queued until the test lets it go
    ndif.requests.clear()
    try:
        with caller("session-a", on_wait=cancel), pytest.raises(Cancelled):
            remote.last_logits(_task().clean)
        # the caller gave up while the job was still queued: it never asked for a result
        assert [job["status"] for job in ndif.jobs.values()].count(ndif.Status.QUEUED) == 1
        assert not any(path.startswith("/result") for _method, path, _headers in ndif.requests)
    finally:
        ndif.queue_seconds = 0.15
        ndif.leave_queue.set()  # the job runs to its end before the next request (one job at a time, as stated)
        while any(job["status"] in (ndif.Status.QUEUED, ndif.Status.RUNNING) for job in ndif.jobs.values()):
            time.sleep(0.01)
        ndif.leave_queue.clear()
    assert not remote.gate.status().busy
    assert remote.last_logits(_task().clean).shape == (4, remote.info.vocab_size)  # the next request runs


def test_path_patching_through_ndif_equals_local_and_returns_only_lds(tiny_pair):
    """Path patching on NDIF (the general path: one session per chunk of edges) = the local backend's hooks, per
    prompt; only the edges' per-prompt LDs, the run's and the logit paths' come back."""
    from headscope.backends.interventions import InterventionGroup, PathEdge, SiteKind, SourceKind, receiver_site

    local, remote, ndif = tiny_pair
    task = _task()
    sender = Component(0, 1)
    edges = [PathEdge(sender, receiver_site(kind, Component(layer, head), 2)) for layer in (1, 2)
             for head in range(4) for kind in (SiteKind.Q_INPUT, SiteKind.K_INPUT)] + [PathEdge(sender, None)]
    n_layers = local.info.n_layers
    groups = [InterventionGroup.nothing()] + [edge.group(SourceKind.PAIRED, n_layers) for edge in edges]
    sent, sizes = remote.requests_sent, len(ndif.result_sizes)
    got = remote.logit_diffs(task, groups, per_prompt=True)
    expected = local.logit_diffs(task, groups, per_prompt=True)
    assert got.shape == expected.shape == (1 + len(edges), 4)
    assert np.abs(expected[1:] - expected[0]).max() > 1e-3  # the paths move the LD (LDs ~1: far above float32 noise)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert remote.requests_sent == sent + 1  # all 17 edges in one request
    # what came back: [edges, prompts] + [prompts] + [senders, prompts] float32 values and their pickling
    assert len(ndif.result_sizes) == sizes + 1 and ndif.result_sizes[-1] < 4_000


def test_reading_sites_through_ndif_equals_local_and_returns_only_the_readout(tiny_pair):
    """read_sites on NDIF (capture and readout in one request) = the local backend's: every head, MLP, bias and
    residual read through the frozen final norm onto two answers (DLA), and the residuals decoded over the whole
    vocabulary reduced to ranks (the logit lens); only [batch, site, k]-sized tensors come back."""
    from headscope.backends.base import ReadNorm, Readout
    from headscope.logit_attribution import DlaSites

    local, remote, ndif = tiny_pair
    task = _task()
    sites = DlaSites(3, 4).all
    readouts = (Readout(ReadNorm.FROZEN, token_ids=task.answer_ids),
                Readout(ReadNorm.DECODE, whole_vocabulary=True, rank_ids=task.answer_ids))
    for readout in readouts:
        sizes = len(ndif.result_sizes)
        got, expected = remote.read_sites(task.clean, -1, sites, readout), local.read_sites(task.clean, -1, sites,
                                                                                             readout)
        for name in ("values", "constant", "rank", "log_norm"):
            if getattr(expected, name) is None:
                assert getattr(got, name) is None
            else:
                torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-5, rtol=1e-5)
        # [4 prompts, 21 sites, 2] values (+ ranks and log-norms) and their pickling, never a [.., d_model] vector
        assert len(ndif.result_sizes) == sizes + 1 and ndif.result_sizes[-1] < 4_000


def test_the_prompt_testers_lens_comes_in_its_predictions_request(tiny_pair):
    """next_tokens with a lens readout: the predictions and the logit lens (the residuals decoded over the whole
    vocabulary, reduced to two tokens' ranks) from one request, equal to the local trace's and to read_sites'."""
    from headscope.backends.base import ReadNorm, Readout
    from headscope.backends.interventions import Site, SiteKind

    local, remote, ndif = tiny_pair
    tokens = _task().clean[:1]
    readout = Readout(ReadNorm.DECODE, whole_vocabulary=True, rank_ids=torch.tensor([[5, 9]]))
    sites = [Site(SiteKind.RESID, layer) for layer in range(3 + 1)]
    expected = local.read_sites(tokens, -1, sites, readout)
    plain = local.next_tokens(tokens, 2)
    sizes = len(ndif.result_sizes)
    for backend in (local, remote):
        got = backend.next_tokens(tokens, 2, lens=readout)
        for name in ("logits_at", "top1_id", "top1_logit", "top1_logprob"):
            torch.testing.assert_close(getattr(got, name), getattr(plain, name), atol=1e-5, rtol=1e-5)
        assert got.lens.sites == tuple(sites)
        for name in ("values", "rank", "log_norm"):
            torch.testing.assert_close(getattr(got.lens, name), getattr(expected, name), atol=1e-5, rtol=1e-5)
    assert len(ndif.result_sizes) == sizes + 1  # one request for both
