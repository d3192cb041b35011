"""The logit lens against a hand loop on an untouched transformers model: the residual after the embeddings and after
each layer (plain forward hooks), through the model's own final norm and lm_head, soft-capped where the family caps;
ranks, probabilities and logit differences per layer, and the first top-1 layer."""

from __future__ import annotations

import json

import pytest
import torch

from headscope.cli import main
from headscope.errors import InputError
from headscope.lens import logit_lens
from tests.cli_in_process import one_line_error
from tests.model.test_architectures import Reference


@torch.no_grad()
def hand_lens(ref: Reference, tokens: torch.Tensor) -> torch.Tensor:
    """logits[row, vocab] at the last position: row 0 after the embeddings, row L + 1 after layer L."""
    layout, hf = ref.layout, ref.hf
    rows: list[torch.Tensor] = []
    blocks = ref.part(layout.blocks)
    handles = [blocks[0].register_forward_pre_hook(
        lambda m, args, kwargs: rows.append((args[0] if args else kwargs["hidden_states"])[0, -1]), with_kwargs=True)]
    handles += [block.register_forward_hook(
        lambda m, args, out: rows.append((out[0] if isinstance(out, tuple) else out)[0, -1])) for block in blocks]
    try:
        own = hf(tokens).logits[0, -1].double()
    finally:
        for handle in handles:
            handle.remove()
    unembed = ref.part(layout.unembed)
    logits = ref.part(layout.final_norm)(torch.stack(rows)) @ unembed.weight.T
    if getattr(unembed, "bias", None) is not None:
        logits = logits + unembed.bias
    cap = getattr(hf.config, "final_logit_softcapping", None)
    logits = (cap * torch.tanh(logits / cap) if cap else logits).double()
    torch.testing.assert_close(logits[-1], own, atol=1e-4, rtol=1e-5)  # the last row is the model's own output
    return logits


def _check(result, logits: torch.Tensor, answer: int, contrast: int | None) -> None:
    assert [row.layer for row in result.layers] == list(range(-1, logits.shape[0] - 1))
    probs = torch.softmax(logits, -1)
    for row, expected in zip(result.layers, logits, strict=True):
        value = expected[answer]
        rank = int((expected > value).sum()) + 1
        assert abs(row.rank - rank) <= int((expected - value).abs().lt(1e-4).sum()) - 1  # ties within rounding
        assert row.prob == pytest.approx(float(probs[row.layer + 1, answer]), abs=1e-6, rel=1e-4)
        if contrast is None:
            assert row.logit_diff is None
        else:
            assert row.logit_diff == pytest.approx(float(value - expected[contrast]), abs=1e-4)
    top1 = [layer for layer, expected in zip(range(-1, logits.shape[0] - 1), logits, strict=True)
            if int(expected.argmax()) == answer]
    assert result.first_top1_layer == (top1[0] if top1 else None)


@pytest.mark.parametrize("family", ["gpt2", "gemma2", pytest.param("neox", marks=pytest.mark.slow),
                                    pytest.param("qwen2", marks=pytest.mark.slow)])
def test_lens_matches_a_hand_loop(family, tiny_family_loader, embedded_tokenizer):
    loaded = tiny_family_loader(family)
    prompt = "1 2 3 4 "
    tokens = torch.tensor([[embedded_tokenizer.bos_token_id,
                            *embedded_tokenizer(prompt, add_special_tokens=False).input_ids]])
    logits = hand_lens(Reference(family, loaded.reference), tokens)
    n_prompt = tokens.shape[1] - 1

    def round_trips(token_id: int) -> bool:  # the token's text, appended to the prompt, tokenizes back to it
        ids = embedded_tokenizer(prompt + embedded_tokenizer.decode([token_id]), add_special_tokens=False).input_ids
        return ids[:n_prompt + 1] == [*tokens[0, 1:].tolist(), token_id]

    # the last layer's best token that round-trips: top-1 there unless the top few do not round-trip
    answer = next(int(i) for i in logits[-1].topk(50).indices if round_trips(int(i)))
    text = embedded_tokenizer.decode([answer])
    contrast = embedded_tokenizer("4", add_special_tokens=False).input_ids[0]
    result = logit_lens(loaded.backend, prompt, text, "4")
    assert result.answer_id == answer and result.contrast_id == contrast
    _check(result, logits, answer, contrast)


def test_lens_on_the_embedded_model(embedded_model, embedded_reference, embedded_hf_tokenizer):
    """SmolLM2 on '1 2 3 4 ': '5' becomes top-1 in a late layer and stays the model's own top-1."""
    prompt = "1 2 3 4 "
    tokens = torch.tensor([[1, *embedded_hf_tokenizer(prompt, add_special_tokens=False).input_ids]])
    logits = hand_lens(Reference("llama", embedded_reference), tokens)
    five = embedded_hf_tokenizer("5", add_special_tokens=False).input_ids[0]
    result = logit_lens(embedded_model, prompt, "5")
    _check(result, logits, five, None)
    assert result.layers[-1].rank == 1 and result.first_top1_layer is not None and result.first_top1_layer > 10
    with pytest.raises(InputError, match="empty"):
        logit_lens(embedded_model, prompt, "")


def test_cli_lens_json_and_bad_input(capsys, tiny_model_dir):
    model = ["--model", str(tiny_model_dir), "--device", "cpu"]
    assert main(["lens", "1 2 3 4 ", "--answer", "5", "--contrast", "4", "--json", *model]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {"answer", "contrast", "layers", "first_top1_layer"} <= payload.keys()
    assert len(payload["layers"]) == 3 + 1  # the embeddings and three layers
    assert {"layer", "rank", "prob", "logit_diff"} == payload["layers"][0].keys()
    assert "empty" in one_line_error(capsys, ["lens", "", "--answer", "5", *model])
    assert "empty" in one_line_error(capsys, ["lens", "1 2", "--answer", "", *model])
    one_line_error(capsys, ["lens", "1 2", *model])  # --answer is required


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_the_prompt_testers_lens_comes_from_its_own_forward(family, tiny_family_loader, embedded_tokenizer):
    """analyze_prompt(lens=True) reads the lens from next_tokens' forward: before TransformerLens is set up (the
    model's own layers) and after (the bridge's blocks), equal to logit_lens (read_sites' forward) and to the hand
    loop on the untouched model; the prediction itself is the same as without the lens."""
    from headscope.backends.bridge import HOOKS_LATER_FAMILIES
    from headscope.backends.layouts import LAYOUTS
    from headscope.loading import ModelRequest, load_model
    from headscope.predict import analyze_prompt

    # every family served before TransformerLens is set up has a layout: its lens never waits for the set-up
    assert set(HOOKS_LATER_FAMILIES) <= set(LAYOUTS)
    loaded = tiny_family_loader(family)
    prompt = "1 2 3 4 "
    tokens = torch.tensor([[embedded_tokenizer.bos_token_id,
                            *embedded_tokenizer(prompt, add_special_tokens=False).input_ids]])
    logits = hand_lens(Reference(family, loaded.reference), tokens)
    answer = int(logits[-1].argmax())
    contrast = embedded_tokenizer("4", add_special_tokens=False).input_ids[0]
    separate = logit_lens(loaded.backend, prompt, embedded_tokenizer.decode([answer]), "4")
    model = load_model(ModelRequest(str(loaded.folder), device="cpu"), hooks_later=True)
    for route in ("the model's own layers", "the bridge's blocks"):
        if route == "the bridge's blocks":
            model.prepare_hooks()
        assert model.hooks_ready == (route == "the bridge's blocks")
        fused = analyze_prompt(model, prompt, embedded_tokenizer.decode([answer]), "4", lens=True)
        assert fused.lens is not None and fused.lens.answer_id == answer and fused.lens.contrast_id == contrast
        _check(fused.lens, logits, answer, contrast)
        for ours, theirs in zip(fused.lens.layers, separate.layers, strict=True):
            assert (ours.layer, ours.rank) == (theirs.layer, theirs.rank)
            assert ours.prob == pytest.approx(theirs.prob, abs=1e-6, rel=1e-4)
            assert ours.logit_diff == pytest.approx(theirs.logit_diff, abs=1e-4)
        plain = analyze_prompt(model, prompt, embedded_tokenizer.decode([answer]), "4")
        assert plain.lens is None
        assert [p.id for p in plain.top1_per_position] == [p.id for p in fused.top1_per_position]
        assert fused.top_k[0].logit == pytest.approx(plain.top_k[0].logit, abs=1e-5, rel=1e-5)  # float32: its scale
