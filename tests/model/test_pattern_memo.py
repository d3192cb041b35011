"""One forward per prompt serves every head list and window of it (a 4,343-token prompt's view ran a forward on every
head change): the prompt's attention inputs are kept, and every pattern drawn from them is Hugging Face's own."""

import numpy as np
import torch

from headscope.component import Component
from headscope.pattern_memo import PatternMemo

PROMPT = "one two three four five six seven eight nine ten"


def _reference(tiny_model, tiny_reference, prompt: str) -> tuple:
    """[layer][head, dest, src] from an untouched transformers model (eager attention, output_attentions)."""
    ids = tiny_model.input_ids(prompt)
    with torch.inference_mode():
        attentions = tiny_reference(torch.tensor([ids]), output_attentions=True).attentions
    return tuple(layer[0].numpy() for layer in attentions)


def test_one_forward_serves_every_head_list_and_window(tiny_model, tiny_reference):
    reference = _reference(tiny_model, tiny_reference, PROMPT)
    n = reference[0].shape[-1]
    memo = PatternMemo(max_bytes=2**30)
    first = memo.patterns(tiny_model, PROMPT, [(1, 2), (0, 1)])
    assert memo.forwards == 1
    np.testing.assert_allclose(first.pattern, np.stack([reference[1][2], reference[0][1]]), atol=1e-5)
    more = memo.patterns(tiny_model, PROMPT, [(0, 3), (1, 2), (0, 1)])  # a head added below the top: no forward
    assert memo.forwards == 1
    assert more.heads == (Component(0, 3), Component(1, 2), Component(0, 1)) and more.kv_heads == (1, 1, 0)
    np.testing.assert_allclose(more.pattern[0], reference[0][3], atol=1e-5)
    window = memo.window(tiny_model, PROMPT, [(1, 2)], start=3, size=4)  # rows and columns 3..6
    assert memo.forwards == 1
    assert (window.first_position, window.prompt_tokens, len(window.tokens)) == (3, n, 4)
    assert window.tokens == first.tokens[3:7]
    np.testing.assert_allclose(window.pattern[0], reference[1][2][3:7, 3:7], atol=1e-5)
    last = memo.window(tiny_model, PROMPT, [(2, 0)], size=4)  # a higher layer: one forward up to it; the last rows
    assert memo.forwards == 2 and last.first_position == n - 4
    np.testing.assert_allclose(last.pattern[0], reference[2][0][-4:, -4:], atol=1e-5)
    memo.patterns(tiny_model, PROMPT + " eleven", [(0, 1)])  # another prompt is another key
    assert memo.forwards == 3


def test_the_memo_stays_within_its_bytes(tiny_model, tiny_reference):
    memo = PatternMemo(max_bytes=2**30)
    memo.patterns(tiny_model, PROMPT, [(2, 0)])
    one_prompt = memo._bytes
    assert one_prompt > 0
    memo = PatternMemo(max_bytes=one_prompt + one_prompt // 2)
    memo.patterns(tiny_model, PROMPT, [(2, 0)])
    memo.patterns(tiny_model, PROMPT + " eleven", [(2, 0)])  # the first prompt's inputs go
    assert memo._bytes <= memo.max_bytes and memo.forwards == 2
    again = memo.patterns(tiny_model, PROMPT, [(2, 1)])
    assert memo.forwards == 3
    np.testing.assert_allclose(again.pattern[0], _reference(tiny_model, tiny_reference, PROMPT)[2][1], atol=1e-5)


def test_a_backend_without_attention_inputs_keeps_whole_patterns_per_head(tiny_model, tiny_reference, monkeypatch):
    monkeypatch.setattr(tiny_model, "attention_inputs", lambda tokens, top_layer: None)  # e.g. nnsight's
    reference = _reference(tiny_model, tiny_reference, PROMPT)
    memo = PatternMemo(max_bytes=2**30)
    memo.patterns(tiny_model, PROMPT, [(1, 2), (0, 1)])
    assert memo.forwards == 1
    more = memo.window(tiny_model, PROMPT, [(0, 1), (2, 3), (1, 2)], start=2, size=5)  # only 2.3 computed
    assert memo.forwards == 2 and more.first_position == 2
    expected = np.stack([reference[0][1], reference[2][3], reference[1][2]])[:, 2:7, 2:7]
    np.testing.assert_allclose(more.pattern, expected, atol=1e-5)
    memo.patterns(tiny_model, PROMPT, [(2, 3)])  # seen: nothing computed
    assert memo.forwards == 2
