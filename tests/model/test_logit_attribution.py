"""Direct logit attribution and what a head writes, against a computation from each family's raw weights.

The reference reads an untouched transformers copy of the model (tests/model/conftest.py) through plain PyTorch hooks
(the residual entering block 0, each output projection's input z, each MLP's output, the final norm's input) and its
raw weights in the family's own storage layout (tests/model/test_architectures.py's LAYOUTS: GPT-2's Conv1D, NeoX's
fused QKV, nn.Linear elsewhere); norms are frozen by hand here. Nothing goes through headscope's or TransformerLens'
code paths except the calls under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headscope.backends.base import ReadNorm, Readout
from headscope.backends.interventions import Site, SiteKind
from headscope.cli import main
from headscope.component import Component
from headscope.errors import InputError
from headscope.logit_attribution import DlaSites, head_writes, ov_view, run_dla
from headscope.results_cache import ResultsCache
from headscope.tasks import Dataset, prepare_dataset
from tests.cli_in_process import one_line_error
from tests.model.reference import assert_same_inputs, digit_items, plain_inputs
from tests.model.test_architectures import Reference

FAMILIES = ("llama", "gpt2", "neox", "qwen2", "gemma2")
SLOW_FAMILIES = {"qwen2"}  # grouped queries as in Llama (which runs by default): in `make test-slow`
LAYER_NORM_FAMILIES = {"gpt2", "neox"}  # LayerNorm (x − mean) / std · w + b; the others RMSNorm (Gemma: · (1 + w))


def _dataset() -> Dataset:
    """Three prompts and the first again: a repeated prompt is computed once and keeps its weight and its rows."""
    return Dataset("dla-digits", digit_items([1, 2, 4, 1], ["3 1 4 2 ", "2 4 1 3 ", "4 2 3 1 ", "3 1 4 2 "]))


def _frozen(family: str, norm: torch.nn.Module, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """delta[..., d] through `norm` with the scale of x[d] (no bias), written out per family."""
    eps = float(getattr(norm, "eps", None) or norm.variance_epsilon)
    x, delta = x.double(), delta.double()
    if family in LAYER_NORM_FAMILIES:
        delta = delta - delta.mean(-1, keepdim=True)
        scale = 1 / torch.sqrt(((x - x.mean()) ** 2).mean() + eps)
    else:
        scale = 1 / torch.sqrt((x ** 2).mean() + eps)
    gain = norm.weight.double() + (1.0 if family == "gemma2" else 0.0)
    return delta * scale * gain


@torch.no_grad()
def reference_dla(family: str, ref: Reference, tokens: torch.Tensor, ids: torch.Tensor) -> dict[str, np.ndarray]:
    """Per prompt, LD contributions at the last position: heads[prompt, layer, head], mlps[prompt, layer],
    embed[prompt], bias[prompt], ld[prompt] (the model's own capped LD), from raw weights and plain hooks."""
    layout, hf, config = ref.layout, ref.hf, ref.hf.config
    n_layers = config.num_hidden_layers
    n_heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    seen: dict[str, torch.Tensor] = {}
    handles = [ref.block(0).register_forward_pre_hook(
        lambda m, args, kwargs: seen.__setitem__("embed", (args[0] if args else kwargs["hidden_states"])[:, -1]),
        with_kwargs=True)]
    for layer in range(n_layers):
        block = ref.block(layer)
        handles.append(ref.part(layout.o_proj, block).register_forward_pre_hook(
            lambda m, args, layer=layer: seen.__setitem__(f"z{layer}", args[0][:, -1])))
        handles.append(ref.part(layout.mlp, block).register_forward_hook(
            lambda m, args, out, layer=layer: seen.__setitem__(f"mlp{layer}", out[:, -1])))
    final_norm = ref.part(layout.final_norm)
    handles.append(final_norm.register_forward_pre_hook(lambda m, args: seen.__setitem__("final", args[0][:, -1])))
    try:
        logits = hf(tokens).logits[:, -1].double()
    finally:
        for handle in handles:
            handle.remove()
    unembed = ref.part(layout.unembed)
    cap = float(getattr(config, "final_logit_softcapping", None) or 0.0)
    out = {name: [] for name in ("heads", "mlps", "embed", "bias", "ld")}
    for row in range(tokens.shape[0]):
        final = seen["final"][row]
        columns = unembed.weight[ids[row]].double()  # [2, d_model]

        def direct(part: torch.Tensor, final=final, columns=columns) -> torch.Tensor:
            return _frozen(family, final_norm, final, part) @ columns.T  # [..., 2]

        heads = torch.zeros(n_layers, n_heads, 2, dtype=torch.float64)
        mlps = torch.zeros(n_layers, 2, dtype=torch.float64)
        bias = torch.zeros(2, dtype=torch.float64)
        rebuilt = seen["embed"][row].double().clone()
        for layer in range(n_layers):
            block = ref.block(layer)
            weights = layout.ov(block, n_heads, n_kv, d_head)
            z = seen[f"z{layer}"][row].view(n_heads, d_head).double()
            written = torch.einsum("he,hed->hd", z, weights.w_o.double())  # [head, d_model]
            b_o = torch.zeros(written.shape[-1], dtype=torch.float64) if weights.b_o is None else weights.b_o.double()
            if layout.post_attn is not None:  # Gemma-2: the heads through the post-attention norm, its scale frozen
                post = ref.part(layout.post_attn, block)
                attn_out = written.sum(0) + b_o
                written, b_o = _frozen(family, post, attn_out, written), _frozen(family, post, attn_out, b_o)
            mlp = ref.norm(layout.post_mlp, block, seen[f"mlp{layer}"][row:row + 1])[0].double()
            heads[layer], mlps[layer] = direct(written), direct(mlp)
            bias += direct(b_o)
            rebuilt += written.sum(0) + b_o + mlp
        assert torch.allclose(rebuilt, final.double(), atol=1e-4 * float(final.abs().max()))  # the reference itself
        embed = direct(seen["embed"][row].double())
        if getattr(final_norm, "bias", None) is not None:
            bias += final_norm.bias.double() @ columns.T
        if getattr(unembed, "bias", None) is not None:
            bias += unembed.bias[ids[row]].double()
        pre_cap = embed + heads.sum((0, 1)) + mlps.sum(0) + bias
        scale = cap * torch.tanh(pre_cap / cap) / pre_cap if cap else torch.ones(2, dtype=torch.float64)
        sign = torch.tensor([1.0, -1.0], dtype=torch.float64) * scale
        out["heads"].append((heads * sign).sum(-1))
        out["mlps"].append((mlps * sign).sum(-1))
        out["embed"].append((embed * sign).sum())
        out["bias"].append((bias * sign).sum())
        out["ld"].append(logits[row, ids[row, 0]] - logits[row, ids[row, 1]])
    return {name: torch.stack(values).numpy() for name, values in out.items()}


def _check_dla(result, expected: dict[str, np.ndarray]) -> None:
    scale = max(float(np.abs(expected["heads"]).max()), abs(result.clean_ld), 1.0)
    atol = 1e-4 * scale
    np.testing.assert_allclose(result.head_dla, expected["heads"].mean(0), atol=atol)
    np.testing.assert_allclose(result.mlp_dla, expected["mlps"].mean(0), atol=atol)
    assert result.embed_dla == pytest.approx(float(expected["embed"].mean()), abs=atol)
    assert result.bias_dla == pytest.approx(float(expected["bias"].mean()), abs=atol)
    assert result.clean_ld == pytest.approx(float(expected["ld"].mean()), abs=atol)  # the model's own LD
    assert result.total == pytest.approx(result.clean_ld, abs=atol)  # the sum check
    assert np.abs(result.head_dla).max() > 10 * atol  # the heads write something visible: the test can fail
    for mine, theirs in (("head_dla", "heads"), ("mlp_dla", "mlps"), ("embed_dla", "embed"), ("bias_dla", "bias"),
                         ("clean_ld", "ld")):  # each prompt's own values, in the dataset's order
        np.testing.assert_allclose(getattr(result, f"per_prompt_{mine}"), expected[theirs], atol=atol)


def _bootstrap(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 95 % percentile bootstrap over the prompts (axis 0), written out here."""
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = np.stack([values[draw].mean(0) for draw in draws])
    return np.quantile(means, 0.025, axis=0), np.quantile(means, 0.975, axis=0)


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW_FAMILIES else f
                                    for f in FAMILIES])
def test_dla_matches_raw_weights_on_every_family(family, tiny_family_loader, embedded_tokenizer, tmp_path):
    """GPT-2's biases (b_O, the final LayerNorm's bias), NeoX's parallel residual, Qwen2's and Llama's grouped
    queries, Gemma-2's post-norms and soft cap: each contribution equals the raw-weight reference, and they sum to
    the clean LD."""
    loaded = tiny_family_loader(family)
    dataset = _dataset()
    encoded = prepare_dataset(loaded.backend, dataset)
    inputs = plain_inputs(embedded_tokenizer, dataset.items)
    assert_same_inputs(encoded, inputs)
    result = run_dla(loaded.backend, encoded, cache=ResultsCache(tmp_path))
    ids = torch.stack([inputs.correct_ids, inputs.incorrect_ids], 1)
    expected = reference_dla(family, Reference(family, loaded.reference), inputs.clean, ids)
    _check_dla(result, expected)
    if family == "gemma2":  # the cap bites on these weights: pre-cap sums would miss the LD
        assert result.soft_cap == 3.0
    if family == "llama":  # the intervals: a bootstrap of the reference's per-prompt values, written in the test
        confidence = result.confidence()
        low, high = _bootstrap(expected["heads"])
        scale = max(float(np.abs(expected["heads"]).max()), 1.0)
        np.testing.assert_allclose(confidence.intervals.low, low, atol=1e-4 * scale)
        np.testing.assert_allclose(confidence.intervals.high, high, atol=1e-4 * scale)
        np.testing.assert_allclose(confidence.intervals.mean, result.head_dla, atol=1e-4 * scale)
    if family == "gpt2":
        assert abs(result.bias_dla) > 1e-3  # GPT-2's biases are attributed, not lost


def test_dla_on_the_embedded_model_and_cache(embedded_model, embedded_reference, embedded_hf_tokenizer, tmp_path):
    dataset = Dataset("dla-digits-embedded", digit_items([1, 4], ["3 1 4 2 ", "6 4 7 5 "]))
    cache = ResultsCache(tmp_path)
    result = run_dla(embedded_model, dataset, cache=cache)
    inputs = plain_inputs(embedded_hf_tokenizer, dataset.items)
    ids = torch.stack([inputs.correct_ids, inputs.incorrect_ids], 1)
    expected = reference_dla("llama", Reference("llama", embedded_reference), inputs.clean, ids)
    _check_dla(result, expected)
    assert result.clean_ld > 1.0 and not result.cached
    again = run_dla(embedded_model, dataset, cache=cache)
    assert again.cached
    np.testing.assert_array_equal(again.head_dla, result.head_dla)
    assert again.total == pytest.approx(result.total)


@pytest.mark.parametrize("family", ["gpt2", "gemma2", pytest.param("qwen2", marks=pytest.mark.slow),
                                    pytest.param("neox", marks=pytest.mark.slow)])
def test_backends_agree(family, tiny_family_loader):
    """The nnsight backend, here and in its dry run of the remote path, gives the bridge's numbers."""
    from headscope.loading import ModelRequest, load_model

    loaded = tiny_family_loader(family)
    nnsight = load_model(ModelRequest(str(loaded.folder), device="cpu", backend="nnsight"))
    bridge = loaded.backend
    tokens = bridge.tensor([bridge.input_ids("1 2 3 4 "), bridge.input_ids("5 6 7 8 ")])
    ids = torch.tensor([[20, 30], [40, 50]])
    every = [Site(SiteKind.RESID, 0), Site(SiteKind.HEAD_OUT, 1, 2), Site(SiteKind.ATTN_BIAS, 1),
             Site(SiteKind.MLP_OUT, 1), Site(SiteKind.RESID, 2)]
    readouts = [Readout(ReadNorm.FROZEN, token_ids=ids), Readout(ReadNorm.NONE),
                Readout(ReadNorm.DECODE, whole_vocabulary=True, rank_ids=ids),
                Readout(ReadNorm.FROZEN, directions=torch.randn(1, 3, bridge.info.d_model, generator=torch.Generator()
                                                                .manual_seed(0)))]
    mine = [bridge.read_sites(tokens, -1, every, readout) for readout in readouts]
    for backend in (nnsight, nnsight.with_mode("simulate")):
        for readout, expected in zip(readouts, mine, strict=True):
            theirs = backend.read_sites(tokens, -1, every, readout)
            for name in ("values", "constant", "rank", "log_norm"):
                if getattr(expected, name) is None:
                    assert getattr(theirs, name) is None
                else:
                    torch.testing.assert_close(getattr(theirs, name), getattr(expected, name), atol=1e-5, rtol=1e-4)
            assert theirs.soft_cap == expected.soft_cap
        head = [Site(SiteKind.HEAD_OUT, 1, 2)]
        whole = Readout(ReadNorm.FROZEN, whole_vocabulary=True)
        torch.testing.assert_close(backend.read_sites(tokens[:1], 3, head, whole).values,
                                   bridge.read_sites(tokens[:1], 3, head, whole).values, atol=1e-5, rtol=1e-4)


def test_reads_of_the_residual_parts_add_up_to_the_models_logits(tiny_family_loader):
    """The frozen readout is affine: the parts' reads plus the constant are the model's own pre-cap logits, and the
    decoding readout of the final residual is the model's own (capped) logits."""
    loaded = tiny_family_loader("gemma2")
    bridge = loaded.backend
    info = bridge.info
    tokens = bridge.tensor([bridge.input_ids("1 2 3 4 "), bridge.input_ids("5 6 7 8 ")])
    ids = torch.tensor([[20, 30], [40, 50]])
    sites = DlaSites(info.n_layers, info.n_heads)
    frozen = bridge.read_sites(tokens, -1, sites.all, Readout(ReadNorm.FROZEN, token_ids=ids))
    parts = [sites.embed, *sites.heads, *sites.mlps, *sites.biases]
    torch.testing.assert_close(frozen.stacked(parts).sum(1) + frozen.constant,
                               frozen.at(sites.final) + frozen.constant, atol=1e-5, rtol=1e-4)
    decoded = bridge.read_sites(tokens, -1, [sites.final], Readout(ReadNorm.DECODE, token_ids=ids))
    torch.testing.assert_close(decoded.values[:, 0], bridge.answer_logits(tokens, ids), atol=1e-5, rtol=1e-4)
    capped = frozen.soft_cap * torch.tanh((frozen.at(sites.final) + frozen.constant) / frozen.soft_cap)
    torch.testing.assert_close(decoded.values[:, 0], capped, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="reads"):
        bridge.read_sites(tokens, -1, [Site(SiteKind.Z, 0, 0)], Readout())


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_head_writes_matches_a_hand_computation(family, tiny_family_loader, embedded_tokenizer):
    """A head's (and an MLP's) output at a middle position through the final norm frozen at that position and W_U."""
    loaded = tiny_family_loader(family)
    ref = Reference(family, loaded.reference)
    layout, config = ref.layout, loaded.reference.config
    prompt, position, component = "1 2 3 4 ", 3, Component(1, 1)
    tokens = torch.tensor([[embedded_tokenizer.bos_token_id, *embedded_tokenizer(prompt, add_special_tokens=False)
                            .input_ids]])
    n_heads = config.num_attention_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    seen = {}
    block = ref.block(1)
    handles = [ref.part(layout.o_proj, block).register_forward_pre_hook(
                   lambda m, args: seen.__setitem__("z", args[0][0, position])),
               ref.part(layout.mlp, block).register_forward_hook(
                   lambda m, args, out: seen.__setitem__("mlp", out[:, position])),
               ref.part(layout.final_norm).register_forward_pre_hook(
                   lambda m, args: seen.__setitem__("final", args[0][0, position]))]
    with torch.no_grad():
        try:
            loaded.reference(tokens)
        finally:
            for handle in handles:
                handle.remove()
        weights = layout.ov(block, n_heads, getattr(config, "num_key_value_heads", None) or n_heads, d_head)
        z = seen["z"].view(n_heads, d_head).double()
        every = torch.einsum("he,hed->hd", z, weights.w_o.double())
        written = every[component.head]
        if layout.post_attn is not None:
            b_o = 0.0 if weights.b_o is None else weights.b_o.double()
            written = _frozen(family, ref.part(layout.post_attn, block), every.sum(0) + b_o, written)
        mlp = ref.norm(layout.post_mlp, block, seen["mlp"])[0].double()
        unembed = ref.part(layout.unembed).weight.double()
        final_norm = ref.part(layout.final_norm)
        expected_head = _frozen(family, final_norm, seen["final"], written) @ unembed.T
        expected_mlp = _frozen(family, final_norm, seen["final"], mlp) @ unembed.T
    for comp, expected in ((component, expected_head), (Component.mlp(1), expected_mlp)):
        writes = head_writes(loaded.backend, prompt, comp, position, k=5)
        assert writes.position == position and writes.component == comp
        top = expected.topk(5)
        assert [e.token_id for e in writes.promoted] == top.indices.tolist()
        np.testing.assert_allclose([e.logit for e in writes.promoted], top.values.numpy(), atol=1e-4)
        bottom = (-expected).topk(5)
        assert [e.token_id for e in writes.suppressed] == bottom.indices.tolist()
        np.testing.assert_allclose([e.logit for e in writes.suppressed], -bottom.values.numpy(), atol=1e-4)


def test_ov_view_matches_the_reference_ov_circuit(tiny_family_loader, embedded_tokenizer):
    loaded = tiny_family_loader("gpt2")
    ref = Reference("gpt2", loaded.reference)
    token_id = embedded_tokenizer("5", add_special_tokens=False).input_ids
    assert len(token_id) == 1
    ids = torch.tensor(token_id)
    out = ref.ov_outputs(1, ref.effective_embedding(ids))[2]  # head 1.2, [1, d_model]
    vocab = torch.arange(len(embedded_tokenizer))
    expected = ref.unembed(out, vocab)[0]
    view = ov_view(loaded.backend, Component(1, 2), "5", k=3)
    assert view.position == -1
    assert [e.token_id for e in view.promoted] == expected.topk(3).indices.tolist()
    assert [e.token_id for e in view.suppressed] == (-expected).topk(3).indices.tolist()
    with pytest.raises(InputError, match="MLP"):
        ov_view(loaded.backend, Component.mlp(1), "5")
    with pytest.raises(InputError, match="not in"):
        head_writes(loaded.backend, "1 2", Component(7, 0), -1)


def test_cli_dla_json_and_bad_input(capsys, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path))
    model = ["--model", str(tiny_model_dir), "--device", "cpu"]
    assert main(["dla", "--task", "digits", "--n-prompts", "3", "--json", *model]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {"model", "task", "clean_ld", "head_dla", "mlp_dla", "embed_dla", "bias_dla", "seconds",
            "cached"} <= payload.keys()
    heads = np.asarray(payload["head_dla"])
    assert heads.shape == (3, 4)
    total = heads.sum() + sum(payload["mlp_dla"]) + payload["embed_dla"] + payload["bias_dla"]
    assert total == pytest.approx(payload["clean_ld"], abs=1e-4 * max(1.0, abs(payload["clean_ld"])))
    assert not any(name.startswith("per_prompt_") for name in payload)
    assert main(["dla", "--task", "digits", "--n-prompts", "3", "--json", "--per-prompt", *model]) == 0
    per_prompt = json.loads(capsys.readouterr().out)
    assert per_prompt["cached"] and np.asarray(per_prompt["per_prompt_head_dla"]).shape == (3, 3, 4)
    np.testing.assert_allclose(np.mean(per_prompt["per_prompt_head_dla"], 0), heads, atol=1e-6)
    assert main(["dla", "--task", "digits", "--n-prompts", "3", "--per-prompt", *model]) == 0
    assert "95% percentile bootstrap over 3 prompts" in capsys.readouterr().out
    assert "--n-prompts" in one_line_error(capsys, ["dla", "--task", "digits", "--n-prompts", "0", *model])
    assert "task" in one_line_error(capsys, ["dla", "--task", "nonsense", *model])
    one_line_error(capsys, ["dla", *model])  # neither --task nor --dataset


def test_python_api_dla_and_lens(tiny_model_dir, tmp_path, monkeypatch):
    import headscope.api as hs

    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path))
    model = hs.load(str(tiny_model_dir), device="cpu")
    dla = model.dla("digits", n_prompts=3)
    frame = dla.to_frame()
    assert len(frame) == 3 * 4 + 3 + 2  # heads, MLPs, the embeddings and the biases
    assert frame["direct_ld"].sum() == pytest.approx(dla.clean_ld, abs=1e-4 * max(1.0, abs(dla.clean_ld)))
    assert dla.to_json()["backend"] == "bridge" and "per_prompt_head_dla" not in dla.to_json()
    assert np.asarray(dla.to_json(per_prompt=True)["per_prompt_head_dla"]).shape == (3, 3, 4)
    assert dla.confidence(k=3).stability.k == 3
    lens = model.lens("1 2 3 4 ", "5", "4")
    assert list(lens.to_frame()["layer"]) == [-1, 0, 1, 2]
    assert lens.layers[-1].logit_diff == pytest.approx(model.tokens("1 2 3 4 ", "5", "4").logit_diff, abs=1e-4)
