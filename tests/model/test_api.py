"""The Python API on the embedded model: numbers against an untouched transformers copy of the model (its ids built
with the tokenizer alone, BOS prepended by hand), tables against the results they come from, the command line's JSON
from the same results cache, and figures drawn offline."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

import headscope as hs
from headscope.api import Model
from headscope.loading import ModelRequest
from headscope.patterns import external_references

PROMPT = "1 2 3 4 "
BOS_ID = 1  # <|im_start|>: TransformerLens prepends it; the HF tokenizer adds none


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


@pytest.fixture(scope="module")
def model(embedded_model) -> Model:
    return Model(embedded_model, ModelRequest())


@pytest.fixture(scope="module")
def reference():
    """The embedded model's converted folder loaded by plain transformers, eager attention (weights returned)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from headscope.embedded import embedded_converted_folder

    folder = embedded_converted_folder()[0]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    net = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    return tokenizer, net


def _reference_run(reference, prompt: str):
    tokenizer, net = reference
    ids = [BOS_ID, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        out = net(torch.tensor([ids]), output_attentions=True)
    return ids, out.logits[0].numpy(), [a[0].numpy() for a in out.attentions]


def _offline(frame: str) -> str:
    """A drawing is a frame holding its whole page: no script or stylesheet is loaded from anywhere (plotly.js keeps
    CDN addresses as strings for features these figures do not use, so the check is on what the page loads)."""
    match = re.fullmatch(r'<iframe srcdoc="([^"]*)" [^>]*></iframe>', frame, re.DOTALL)
    assert match, frame[:200]
    page = html.unescape(match.group(1))
    assert "<script" in page
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert not re.search(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//", page, re.IGNORECASE)
    return page


def test_tokens_match_an_untouched_copy_and_carry_the_command_lines_fields(model, reference):
    tokens = model.tokens(PROMPT, answer="5", contrast="4", top_k=5)
    ids, logits, _ = _reference_run(reference, PROMPT)
    frame = tokens.to_frame()
    assert list(frame["id"]) == ids and list(frame["position"]) == list(range(len(ids)))
    assert list(frame["top1"].index) == list(range(len(ids)))
    last = logits[-1]
    expected = np.argsort(-last)[:5]
    assert [p.id for p in tokens.top_k] == list(expected)
    scale = float(np.abs(last).max())
    assert [p.logit for p in tokens.top_k] == pytest.approx(last[expected], abs=1e-5 * scale)
    assert tokens.top_k_frame()["text"].iloc[0] == "5"
    assert tokens.logit_diff == pytest.approx(float(last[ids[-2] + 1] - last[ids[-2]]), abs=1e-5 * scale)
    payload = tokens.to_json()
    documented = {"model", "tokens", "top_k", "answer", "logit_diff", "warnings", "position", "contrast", "notes",
                  "backend"}
    assert documented <= set(payload) and payload["backend"] == "bridge"
    assert json.loads(json.dumps(payload)) == payload
    assert "rank 1" in tokens._repr_html_()


def test_patterns_match_eager_attention_and_draw_offline(model, reference):
    heads = [(3, 4), (20, 8), (5, 2)]
    patterns = model.patterns(PROMPT, heads=heads, single=(20, 8))
    _, _, attentions = _reference_run(reference, PROMPT)
    for index, (layer, head) in enumerate(heads):
        np.testing.assert_allclose(patterns.pattern[index], attentions[layer][head], atol=1e-5)  # probabilities
    frame = patterns.to_frame()
    n = len(patterns.tokens)
    assert len(frame) == len(heads) * n * (n + 1) // 2
    row = frame[(frame.layer == 20) & (frame["head"] == 8) & (frame.dest == 8) & (frame.src == 2)]
    assert row["weight"].item() == pytest.approx(attentions[20][8][8, 2], abs=1e-6)
    assert row["dest_token"].item() == "·" and row["src_token"].item() == "·"
    assert patterns.to_json()["heads"] == ["3.4", "20.8", "5.2"]
    page = _offline(patterns._repr_html_())
    assert external_references(page) == [] and "AttentionHeads" in page and "AttentionPattern" in page
    assert patterns.single == 1 and "L20H8" in patterns.html()


def test_the_previous_token_score_on_a_prompt_is_the_share_on_the_diagonal_below(model, reference):
    prompt = "The cat sat on the mat because the cat was tired"
    scores = model.scores("previous-token", prompt=prompt)
    _, _, attentions = _reference_run(reference, prompt)
    for layer in (0, 7, 29):
        for head in (0, 4, 8):
            pattern = attentions[layer][head]
            expected = np.trace(pattern, offset=-1) / pattern.sum()  # detect_head's "mul" with nothing excluded
            assert scores.scores[layer, head] == pytest.approx(expected, abs=1e-5)
    frame = scores.to_frame()
    assert len(frame) == 30 * 9 and frame["score"].is_monotonic_decreasing
    _offline(scores._repr_html_())


def test_a_sweep_of_a_dataframe_is_the_command_lines_from_the_same_cache(model, tmp_path, capsys):
    data = pd.DataFrame({"prompt": ["1 2 3 4 ", "2 3 4 5 ", "3 4 5 6 "], "correct": ["5", "6", "7"],
                         "incorrect": ["4", "5", "6"], "corrupted_prompt": ["7 2 9 1 ", "8 3 1 6 ", "9 1 2 4 "]})
    path = tmp_path / "mine.csv"
    data.to_csv(path, index=False)
    sweep = model.sweep(dataset=data, name="mine.csv", method="zero", estimate=True)
    assert not sweep.cached and sweep.task == "mine.csv"
    frame = sweep.to_frame()
    assert len(frame) == 30 * 9 + 30
    heads = frame[frame["head"].notna()]
    np.testing.assert_array_equal(heads["ablated_ld"].to_numpy().reshape(30, 9), sweep.ablated_ld)
    mlps = frame[frame["head"].isna()]
    np.testing.assert_array_equal(mlps["ablated_ld"].to_numpy(), sweep.mlp_ablated_ld)
    np.testing.assert_allclose(heads["percent_of_clean"], (100 * sweep.ablated_ld / sweep.clean_ld).ravel())
    _offline(sweep._repr_html_())

    again = model.sweep(dataset=path, method="zero", estimate=True)  # the same file: the same cache entry
    assert again.cached and np.array_equal(again.ablated_ld, sweep.ablated_ld)

    from headscope.cli import main

    assert main(["ablate", "--dataset", str(path), "--method", "zero", "--estimate", "--json",
                        "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cached"] is True
    assert printed == again.to_json()


def test_a_circuit_and_a_comparison(model, tmp_path):
    digits = model.circuit(task="digits", n_prompts=4, estimate=True)
    decreasing = model.circuit(task="decreasing", n_prompts=4, estimate=True)
    frame = digits.to_frame()
    assert len(frame) == 30 * 10
    kept = frame[frame.kept]
    assert sorted((int(r.layer), int(r["head"])) for _, r in kept[kept["head"].notna()].iterrows()) \
        == sorted(digits.heads)
    assert sorted(kept[kept["head"].isna()].layer) == sorted(digits.mlps)
    _offline(digits._repr_html_())

    saved = tmp_path / "circuit.json"
    saved.write_text(digits.download_json())
    comparison = hs.compare(digits, decreasing, saved)
    a, b = digits.circuit_set().components, decreasing.circuit_set().components
    jaccard = comparison.to_frame()
    assert jaccard.loc["A", "B"] == pytest.approx(len(a & b) / len(a | b))
    assert jaccard.loc["A", "C"] == 1.0
    assert len(comparison.to_json()["shared"]) == len(a & b)


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: m.sweep(task="digits", dataset="x.csv"), "not both or neither"),
    (lambda m: m.sweep(task="digits", method="half"), "Unknown ablation method 'half'"),
    (lambda m: m.circuit(task="digits", threshold=120), "threshold"),
    (lambda m: m.patterns("1 2", heads=[(30, 0)]), "Head 30.0 is out of range"),
    (lambda m: m.patterns("1 2", heads="3.x"), "3.x"),
    (lambda m: m.tokens(""), "The prompt is empty"),
    (lambda m: m.scores("successor", prompt="x"), "--prompt applies to the pattern scores"),
    (lambda m: m.sweep(dataset=42), "dataset must be"),
])
def test_bad_input_raises_input_error(model, call, message):
    with pytest.raises(hs.InputError, match=message.replace(".", r"\.").replace("(", r"\(")):
        call(model)


def test_loading_a_folder_that_does_not_exist_says_so():
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(hs.HeadscopeError, match="does not exist"):
        hs.load("/no/such/folder")
