"""Bridge vs nnsight (local) vs nnsight's dry run of the remote path (remote="local": every request serialised as for
NDIF with local modules hidden, then run here), on the embedded model, to 1e-4 in float32 on every number the pages
show; the ablations also against plain PyTorch hooks on the HF modules."""

import json

import numpy as np
import pytest
import torch

from headscope.ablation import attribution_sweep, exact_sweep, logit_diff_task, prepare_dataset, run_sweep
from headscope.backends.interventions import InterventionGroup, SourceKind, ValueSource
from headscope.component import Component
from headscope.loading import ModelRequest, load_model
from headscope.methods import get_method
from headscope.patterns import compute_patterns
from headscope.predict import analyze_prompt
from headscope.scores import score_heads
from headscope.tasks import build_task_dataset
from tests.cli_in_process import run_cli

TOL = 1e-4
LAYERS = [0, 29]  # the default run checks these layers' heads and MLPs; the slow test every layer


@pytest.fixture(scope="module")
def nnsight_local():
    # pinned: "auto" would be CUDA float16 on a GPU machine, against the bridge's CPU float32 numbers
    return load_model(ModelRequest(device="cpu", dtype="float32", backend="nnsight"))


@pytest.fixture(scope="module")
def nnsight_dry(nnsight_local):
    return nnsight_local.with_mode("simulate")


@pytest.fixture(scope="module")
def nnsight_backends(nnsight_local, nnsight_dry):
    return {"nnsight": nnsight_local, "dry run": nnsight_dry}


@pytest.fixture(scope="module")
def digits(embedded_model):
    return prepare_dataset(embedded_model, build_task_dataset("digits", 4, seed=0, model=embedded_model))


def test_it_wraps_the_loaded_model_and_describes_it_like_the_bridge(embedded_model, nnsight_local):
    a, b = embedded_model.info, nnsight_local.info
    assert b.backend == "nnsight" and b.backend_label == "nnsight (local)"
    for field in ("name", "source", "revision", "n_layers", "n_heads", "n_kv_heads", "d_head", "d_model", "d_mlp",
                  "vocab_size", "n_params", "bos_token", "architecture"):
        assert getattr(a, field) == getattr(b, field), field
    assert nnsight_local.model._module is nnsight_local.hf_model  # nnsight runs the loader's own model object
    assert nnsight_local.block_runner is None  # no fast path: the engines take the general path
    assert nnsight_local.input_ids("1 2 3 4 ") == embedded_model.input_ids("1 2 3 4 ")
    assert nnsight_local.identity["backend"] == "nnsight"


def test_predictions_match(embedded_model, nnsight_backends):
    reference = analyze_prompt(embedded_model, "1 2 3 4 ", "5", "4", top_k=10)
    tokens = embedded_model.tensor([embedded_model.input_ids("The cat sat on the mat. The cat")])
    ref_summary = embedded_model.next_tokens(tokens, 3)
    for name, model in nnsight_backends.items():
        got = analyze_prompt(model, "1 2 3 4 ", "5", "4", top_k=10)
        assert [p.id for p in got.top_k] == [p.id for p in reference.top_k], name
        np.testing.assert_allclose([p.logit for p in got.top_k], [p.logit for p in reference.top_k], atol=TOL)
        np.testing.assert_allclose([p.prob for p in got.top_k], [p.prob for p in reference.top_k], atol=TOL)
        for mine, theirs in ((got.answer, reference.answer), (got.contrast, reference.contrast)):
            assert mine.typed.rank == theirs.typed.rank
            assert mine.typed.logit == pytest.approx(theirs.typed.logit, abs=TOL)
            assert mine.typed.prob == pytest.approx(theirs.typed.prob, abs=TOL)
        assert got.logit_diff == pytest.approx(reference.logit_diff, abs=TOL)
        summary = model.next_tokens(tokens, 3)  # the per-position top-1 the token table shows
        assert torch.equal(summary.top1_id, ref_summary.top1_id), name
        torch.testing.assert_close(summary.top1_logprob, ref_summary.top1_logprob, atol=TOL, rtol=0)
        torch.testing.assert_close(summary.logits_at, ref_summary.logits_at, atol=TOL, rtol=0)


def _layer_groups(n_heads, source):
    """One group per head and per MLP of LAYERS."""
    components = [Component(layer, head) for layer in LAYERS for head in [*range(n_heads), None]]
    return [InterventionGroup.ablating([component], source) for component in components]


def _hooked_ld(hf, encoded, heads, mlps, method):
    """Mean LD with heads (slices of o_proj's input, by a pre-hook) and MLPs (by a forward hook) replaced: plain
    PyTorch on the HF modules, corrupted activations from a separate corrupted forward."""
    d_head = hf.config.head_dim
    seen, handles = {}, []
    for layer in {at for at, _ in heads}:
        handles.append(hf.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(
            lambda mod, args, layer=layer: seen.__setitem__(("z", layer), args[0].detach().clone())))
    for layer in mlps:
        handles.append(hf.model.layers[layer].mlp.register_forward_hook(
            lambda mod, args, out, layer=layer: seen.__setitem__(("mlp", layer), out.detach().clone())))
    with torch.no_grad():
        hf(encoded.corrupted)
    for handle in handles:
        handle.remove()

    def value(key):
        return seen[key].mean(0, keepdim=True) if method == "mean" else seen[key]

    def replace_z(args, layer):
        z = args[0].clone()
        for at, head in heads:
            if at == layer:
                cols = slice(head * d_head, (head + 1) * d_head)
                z[..., cols] = value(("z", layer))[..., cols].expand_as(z[..., cols])
        return (z, *args[1:])

    handles = [hf.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(
        lambda mod, args, layer=layer: replace_z(args, layer)) for layer in {at for at, _ in heads}]
    handles += [hf.model.layers[layer].mlp.register_forward_hook(
        lambda mod, args, out, layer=layer: value(("mlp", layer)).expand_as(out).clone()) for layer in mlps]
    with torch.no_grad():
        logits = hf(encoded.clean).logits[:, -1, :]
    for handle in handles:
        handle.remove()
    rows = torch.arange(encoded.n_prompts)
    return float((logits[rows, encoded.correct_ids] - logits[rows, encoded.incorrect_ids]).mean())


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_ablations_match_the_bridge(embedded_model, nnsight_backends, digits, method):
    """Every head and MLP of two layers, each backend's general path (one request for them all) against the
    bridge's; plus a group ablating components of several layers at once (what a circuit search asks)."""
    info = embedded_model.info
    spec = get_method(method)
    task = logit_diff_task(digits, spec)
    source = ValueSource(SourceKind(spec.source))
    groups = _layer_groups(info.n_heads, source)
    circuit = [InterventionGroup.ablating([Component(2, 1), Component(9, 4), Component(9, 5), Component.mlp(5)],
                                          source), InterventionGroup.nothing()]  # several components; nothing
    expected = embedded_model.logit_diffs(task, groups)
    expected_circuit = embedded_model.logit_diffs(task, circuit)
    for name, model in nnsight_backends.items():
        sent = model.requests_sent
        got = model.logit_diffs(task, groups)
        assert model.requests_sent == sent + 1, name  # all 20 ablations in one trace
        np.testing.assert_allclose(got, expected, atol=TOL, rtol=0, err_msg=name)
        np.testing.assert_allclose(model.logit_diffs(task, circuit), expected_circuit, atol=TOL,
                                   rtol=0, err_msg=name)
    assert np.abs(expected - expected_circuit[1]).max() > 0.05  # the ablations move LD (equality is not trivial)


@pytest.mark.parametrize("method", ["mean", "resample"])
def test_ablations_match_plain_hooks(nnsight_backends, embedded_reference, digits, method):
    spec = get_method(method)
    task = logit_diff_task(digits, spec, deduplicate=False)
    hf = embedded_reference  # an untouched transformers copy: no backend's model object, hooked by no library
    source = ValueSource(SourceKind(spec.source))
    groups = [InterventionGroup.ablating(components, source) for components in
              ([Component(5, 2)], [Component.mlp(14)], [Component(2, 1), Component(9, 4), Component.mlp(5)])]
    expected = [_hooked_ld(hf, digits, [(5, 2)], [], method), _hooked_ld(hf, digits, [], [14], method),
                _hooked_ld(hf, digits, [(2, 1), (9, 4)], [5], method)]
    for name, model in nnsight_backends.items():
        np.testing.assert_allclose(model.logit_diffs(task, groups), expected, atol=TOL, rtol=0,
                                   err_msg=name)


def test_attribution_estimate_matches(embedded_model, nnsight_backends, digits):
    for method in ("mean", "resample"):
        reference = attribution_sweep(embedded_model, digits, method)
        for name, model in nnsight_backends.items():
            got = attribution_sweep(model, digits, method)
            np.testing.assert_allclose(got.ablated_ld, reference.ablated_ld, atol=TOL, rtol=0, err_msg=name)
            np.testing.assert_allclose(got.mlp_ablated_ld, reference.mlp_ablated_ld, atol=TOL, rtol=0, err_msg=name)
            assert got.clean_ld == pytest.approx(reference.clean_ld, abs=TOL)
            if reference.corrupt_ld is not None:
                assert got.corrupt_ld == pytest.approx(reference.corrupt_ld, abs=TOL)


def test_attention_patterns_match(embedded_model, nnsight_backends):
    prompt = "The cat sat on the mat. The cat sat on the"
    heads = [(0, 1), (5, 3), (20, 8), (5, 0)]
    reference = compute_patterns(embedded_model, prompt, heads)
    for name, model in nnsight_backends.items():
        got = compute_patterns(model, prompt, heads)
        assert [h.label for h in got.heads] == [h.label for h in reference.heads]
        np.testing.assert_allclose(got.pattern, reference.pattern, atol=TOL, rtol=0, err_msg=name)
        assert model.hf_model.config._attn_implementation == "sdpa"  # eager for the pattern request only


@pytest.mark.parametrize("score", ["previous-token", "sequence", "successor", "copying"])
def test_head_scores_match(embedded_model, nnsight_backends, score):
    kwargs = {"n_sequences": 2, "use_cache": False}
    reference = score_heads(embedded_model, score, **kwargs)
    for name, model in nnsight_backends.items():
        got = score_heads(model, score, **kwargs)
        np.testing.assert_allclose(got.scores, reference.scores, atol=TOL, rtol=0, err_msg=name)
    assert reference.scores.std() > 0  # heads differ: a constant answer would not pass by accident


def test_the_api_key_stays_in_memory(nnsight_local, digits, tmp_path, monkeypatch):
    secret = "ndif-secret-key-0123456789"
    request = ModelRequest("meta-llama/Llama-2-7b-hf", backend="ndif", api_key=secret)
    assert secret not in repr(request) and secret not in str(request.key)
    assert request == ModelRequest("meta-llama/Llama-2-7b-hf", backend="ndif")
    assert hash(request) == hash(ModelRequest("meta-llama/Llama-2-7b-hf", backend="ndif"))
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path))
    dry = nnsight_local.with_mode("simulate")
    dry.use_api_key(secret)
    result = run_sweep(dry, digits.dataset, "zero", estimate=True)  # computed and stored in the results cache
    assert result.n_layers == 30
    stored = list(tmp_path.rglob("*"))
    assert any(path.is_file() for path in stored)
    for path in stored:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in repr(dry) and secret not in str(dry.info) and secret not in str(dry.identity)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_full_exact_sweep_matches_the_bridge(embedded_model, nnsight_backends, digits, method):
    """exact_sweep: the bridge's fast path against nnsight's general path (one request per layer) on every layer."""
    reference = exact_sweep(embedded_model, digits, method)
    for name, model in nnsight_backends.items():
        sent = model.requests_sent
        got = exact_sweep(model, digits, method)
        assert model.requests_sent - sent == 30 + 2, name  # clean run, one per layer, corrupted LD
        np.testing.assert_allclose(got.ablated_ld, reference.ablated_ld, atol=TOL, rtol=0, err_msg=name)
        np.testing.assert_allclose(got.mlp_ablated_ld, reference.mlp_ablated_ld, atol=TOL, rtol=0, err_msg=name)
        assert got.clean_ld == pytest.approx(reference.clean_ld, abs=TOL)


def test_cli_tokens_with_the_nnsight_backend(capsys, monkeypatch, cli_shares_the_embedded_model, nnsight_local):
    """In-process (tests/cli_in_process.py), pinned to the CPU as the subprocesses were; the bridge's answer comes
    from the session's embedded model, nnsight's from this module's nnsight copy of it (what --backend asked for
    reaches the load: the answers say which backend gave them)."""
    import headscope.cli as cli

    bridge_or_load = cli.load_for_cli
    monkeypatch.setattr(cli, "load_for_cli", lambda args: nnsight_local if (
        args.model == "embedded" and cli.backend_for(args) == "nnsight") else bridge_or_load(args))

    def cli_json(*args):
        done = run_cli(capsys, [*args, "--device", "cpu", "--json"])
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    nnsight = cli_json("tokens", "1 2 3 4 ", "--answer", "5", "--backend", "nnsight")
    bridge = cli_json("tokens", "1 2 3 4 ", "--answer", "5")
    assert nnsight["backend"] == "nnsight" and bridge["backend"] == "bridge"
    assert [p["id"] for p in nnsight["top_k"]] == [p["id"] for p in bridge["top_k"]]
    np.testing.assert_allclose([p["logit"] for p in nnsight["top_k"]], [p["logit"] for p in bridge["top_k"]],
                               atol=TOL)
    assert nnsight["answer"]["rank"] == bridge["answer"]["rank"] == 1
