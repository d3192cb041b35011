"""Attention patterns of chosen heads on the real embedded model, and their CSV and offline HTML exports."""

import csv
import io
import re

import numpy as np
import pytest
import torch

from headscope.errors import InputError
from headscope.heads import HeadRef, parse_heads
from headscope.patterns import (
    CSV_COLUMNS,
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


def test_patterns_equal_those_of_the_bridges_own_forward_pass(embedded_model, digits):
    tokens = embedded_model.bridge.to_tokens("1 2 3 4 ")
    _, cache = embedded_model.bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    for index, head in enumerate(digits.heads):
        expected = cache[f"blocks.{head.layer}.attn.hook_pattern"][0, head.head].numpy()
        np.testing.assert_allclose(digits.pattern[index], expected, atol=1e-6)


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
        index = result.heads.index(HeadRef(int(row["layer"]), int(row["head"])))
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
