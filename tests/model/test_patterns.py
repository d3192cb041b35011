"""Attention patterns of chosen heads on the real embedded model, and their CSV and offline HTML exports."""

import csv
import io
import re

import numpy as np
import pytest
import torch

from headscope.component import Component
from headscope.errors import InputError
from headscope.heads import parse_heads
from headscope.patterns import (
    CSV_COLUMNS,
    MAX_VIEW_TOKENS,
    compute_patterns,
    default_prompt,
    external_references,
    grid_view,
    patterns_csv,
    single_head_view,
    standalone_html,
    view_page,
)
from headscope.tokens import tokenize_prompt

HEADS = "2.1, 4.4, 4.5, 11.1, 17.4"


@pytest.fixture(scope="module")
def digits(embedded_model):
    return compute_patterns(embedded_model, "1 2 3 4 ", parse_heads(HEADS, embedded_model.info))


def test_rows_sum_to_one_and_nothing_attends_to_the_future(digits):
    n_heads, n_dest, n_src = digits.pattern.shape
    assert (n_heads, n_dest, n_src) == (5, 9, 9)
    np.testing.assert_allclose(digits.pattern.sum(-1), 1.0, atol=1e-5)
    assert np.all(digits.pattern >= 0)
    assert np.abs(np.triu(digits.pattern, k=1)).max() == 0.0


def test_patterns_equal_those_of_an_untouched_transformers_model(embedded_reference, embedded_hf_tokenizer, digits):
    """The reference is Hugging Face's own eager attention (output_attentions) on a copy TransformerLens never
    touched, its input built from the HF tokenizer (BOS `<|im_start|>` prepended by hand, as the model input has it).
    Tolerance: weights lie in [0, 1]; float32 softmax differs by a few ulps between kernels and CPUs (1.19e-6 was
    seen on another machine), so 1e-5 absolute."""
    ids = [embedded_hf_tokenizer.bos_token_id, *embedded_hf_tokenizer("1 2 3 4 ", add_special_tokens=False).input_ids]
    assert ids[0] == 1 and len(ids) == 9
    with torch.no_grad():
        attentions = embedded_reference(torch.tensor([ids]), output_attentions=True).attentions
    for index, head in enumerate(digits.heads):
        expected = attentions[head.layer][0, head.head].numpy()
        np.testing.assert_allclose(digits.pattern[index], expected, atol=1e-5, rtol=0)


def test_only_blocks_up_to_the_highest_chosen_layer_run(embedded_model):
    calls = [0] * embedded_model.info.n_layers
    hooks = [block.register_forward_hook(lambda *_, layer=layer: calls.__setitem__(layer, calls[layer] + 1))
             for layer, block in enumerate(embedded_model.bridge.blocks)]
    try:
        compute_patterns(embedded_model, "one two three", [(2, 0), (4, 8)])
    finally:
        for hook in hooks:
            hook.remove()
    assert calls[:5] == [1] * 5
    assert sum(calls[5:]) == 0


def test_token_labels_are_the_real_input_with_bos_and_visible_whitespace(embedded_model, digits):
    expected = tokenize_prompt(embedded_model, "1 2 3 4 ")
    assert digits.labels == tuple(t.display for t in expected.tokens)
    assert digits.labels[0] == "<|im_start|>"
    assert digits.labels[1:] == ("1", "·", "2", "·", "3", "·", "4", "·")


def test_gqa_names_and_rows_say_which_kv_head_serves_each_query_head(digits):
    assert digits.grouped_query
    assert digits.kv_heads == (0, 1, 1, 0, 1)  # 9 query heads over 3 KV heads: heads 3–5 share KV head 1
    assert digits.head_name(1) == "L4H4 (KV 1)"
    assert digits.kv_rows()[2]["query heads sharing this KV head"] == "3–5"


def test_default_prompt_is_a_digits_task_prompt_fitted_to_the_tokenizer(embedded_model):
    assert default_prompt(embedded_model) == "1 2 3 4 "


def test_csv_has_one_row_per_causal_entry_with_the_exact_weights(embedded_model):
    prompt = 'a, "quoted" b'
    result = compute_patterns(embedded_model, prompt, [(3, 4), (5, 1)])
    rows = list(csv.DictReader(io.StringIO(patterns_csv(result))))
    n = len(result.tokens)
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == 2 * n * (n + 1) // 2
    for row in rows:
        index = result.heads.index(Component(int(row["layer"]), int(row["head"])))
        dest, src = int(row["dest"]), int(row["src"])
        assert src <= dest
        assert float(row["weight"]) == pytest.approx(float(result.pattern[index, dest, src]), rel=1e-6, abs=1e-9)
        assert row["dest_token"] == result.labels[dest] and row["src_token"] == result.labels[src]
        assert int(row["kv_head"]) == result.kv_heads[index]
    tokens = {row["src_token"] for row in rows}  # commas and quotes survive the CSV round trip
    assert any("," in token for token in tokens) and any('"' in token for token in tokens)


def test_standalone_html_is_offline_escaped_and_inlines_circuitsvis_once(embedded_model):
    hostile = "</script><script>alert(1)</script> <!-- <b>x</b>"
    result = compute_patterns(embedded_model, hostile, [(3, 4), (5, 1), (17, 4)])
    page = standalone_html(result, single_index=1)
    assert page.startswith("<!doctype html>")
    assert external_references(page) == []
    assert "unpkg.com" not in page and "http://" not in page.split("<script", 1)[0]
    assert page.count("var CircuitsVis=") == 1  # one bundle for the grid and the single-head view together
    assert page.count("CircuitsVis.render(") == 2
    assert page.count('<script type="module">') == 1
    assert "<script>alert(1)" not in page and "<b>x</b>" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the prompt line, escaped
    render_calls = page[page.index("CircuitsVis.render("):page.rindex("</script>")]
    assert '"\\u003c/"' in render_calls  # the token '</' as JSON: labels inside the script cannot close it
    assert "<" not in render_calls
    assert "L5H1 (KV 0)" in page and "<th>KV head</th>" in page


def test_external_references_are_detected():
    assert external_references('<script src="https://unpkg.com/x.js"></script>')
    assert external_references('<link rel="stylesheet" href="https://cdn.example/x.css">')
    assert external_references('<script type="module">import {a} from "https://unpkg.com/circuitsvis/x.js"</script>')
    assert external_references("<style>@import url('https://fonts.example/x.css');</style>")
    assert external_references("<p>see https://example.org</p>") == []


def test_views_share_one_bundle_and_each_renders_into_its_own_element(digits):
    grid, single = grid_view(digits), single_head_view(digits, 0)
    assert grid.element_id != single.element_id
    assert "CircuitsVis.AttentionHeads" in grid.render_call
    assert "CircuitsVis.AttentionPattern" in single.render_call
    page = view_page([grid])
    assert re.search(rf'<div id="{grid.element_id}"[^>]*></div>', page)
    assert page.count("var CircuitsVis=") == 1
    with pytest.raises(InputError):
        single_head_view(digits, 5)


def test_bad_input_gives_clear_errors(embedded_model):
    with pytest.raises(InputError, match="empty"):
        compute_patterns(embedded_model, "", [(0, 0)])
    with pytest.raises(InputError, match=r"Head 30\.0 is out of range"):
        compute_patterns(embedded_model, "1 2 3", [(30, 0)])
    with pytest.raises(InputError, match="No heads selected"):
        compute_patterns(embedded_model, "1 2 3", [])


def test_patterns_on_the_tiny_gqa_model(tiny_model):
    result = compute_patterns(tiny_model, "Monday Tuesday", [(0, 0), (2, 3)])
    assert result.kv_heads == (0, 1)  # 4 query heads over 2 KV heads
    assert result.pattern.shape == (2, 3, 3)
    np.testing.assert_allclose(result.pattern.sum(-1), 1.0, atol=1e-5)
    assert torch.triu(torch.from_numpy(result.pattern), diagonal=1).abs().max() == 0


def test_a_long_prompt_keeps_only_the_chosen_heads_and_is_drawn_as_a_window(embedded_model, monkeypatch):
    """~600 tokens within a 40 MiB activation budget: materializing every head of a layer (the bridge's
    hook_pattern) would need more, so only the chosen heads' patterns may exist. The numbers still equal the bridge's
    own hook_pattern, and the drawn window is an exact slice of them with positions counted in the whole prompt."""
    prompt = "The cat sat on the mat while the dog slept by the door. " * 45
    heads = [(3, 4), (17, 2)]
    monkeypatch.setenv("HEADSCOPE_MEMORY_BUDGET_MB", "40")
    result = compute_patterns(embedded_model, prompt, heads)
    monkeypatch.delenv("HEADSCOPE_MEMORY_BUDGET_MB")
    n = len(result.tokens)
    assert 500 < n < 800 and result.pattern.shape == (2, n, n)
    tokens = embedded_model.bridge.to_tokens(prompt)
    assert tokens.shape[1] == n
    _, cache = embedded_model.bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    for index, (layer, head) in enumerate(heads):
        np.testing.assert_allclose(result.pattern[index], cache[f"blocks.{layer}.attn.hook_pattern"][0, head].numpy(),
                                   atol=1e-5)

    window = result.window()  # the last MAX_VIEW_TOKENS positions by default
    assert window.is_window and window.prompt_tokens == n and len(window.tokens) == MAX_VIEW_TOKENS
    assert (window.first_position, window.last_position) == (n - MAX_VIEW_TOKENS, n - 1)
    np.testing.assert_array_equal(window.pattern, result.pattern[:, n - MAX_VIEW_TOKENS:, n - MAX_VIEW_TOKENS:])
    assert window.outside_share() == pytest.approx(
        1 - result.pattern[:, n - MAX_VIEW_TOKENS:, n - MAX_VIEW_TOKENS:].sum(-1).mean(), abs=1e-5)  # float32 sums
    assert 0 < window.outside_share() < 1
    moved = result.window(10**6)  # clamped to the last window
    assert moved.first_position == n - MAX_VIEW_TOKENS
    early = result.window(5)
    assert early.first_position == 5 and early.tokens == result.tokens[5:5 + MAX_VIEW_TOKENS]
    rows = list(csv.DictReader(io.StringIO(patterns_csv(early))))
    first = next(row for row in rows if row["dest"] == "7" and row["src"] == "6" and row["head"] == "4")
    assert float(first["weight"]) == pytest.approx(float(result.pattern[0, 7, 6]), abs=1e-6)
    assert first["dest_token"] == result.tokens[7].display
    assert "Positions 5–204 of a" in standalone_html(early)
    short = compute_patterns(embedded_model, "1 2 3 4 ", heads)
    assert short.window() is short and not short.is_window
