"""A prompt's patterns are kept per head: a rerun or a change of the head list computes only heads not seen on that
prompt (a 4,402-token prompt's view cost its whole forward again on every head change); values as computed fresh."""

import numpy as np

from headscope.component import Component
from headscope.pattern_memo import PatternMemo
from headscope.patterns import compute_patterns

PROMPT = "one two three four five six"


def test_a_new_head_list_computes_only_the_heads_not_seen(tiny_model):
    memo = PatternMemo(max_bytes=2**30)
    first = memo.patterns(tiny_model, PROMPT, [(1, 2), (0, 1)])
    assert memo.computed_heads == 2
    again = memo.patterns(tiny_model, PROMPT, [(0, 1), (1, 2)])  # the same heads, another order: nothing computed
    assert memo.computed_heads == 2
    np.testing.assert_array_equal(again.pattern[0], first.pattern[1])
    more = memo.patterns(tiny_model, PROMPT, [(0, 1), (2, 3), (1, 2)])  # one head added: one computed
    assert memo.computed_heads == 3
    assert more.heads == (Component(0, 1), Component(2, 3), Component(1, 2))
    fresh = compute_patterns(tiny_model, PROMPT, [(0, 1), (2, 3), (1, 2)])
    np.testing.assert_allclose(more.pattern, fresh.pattern, atol=1e-6)
    assert more.kv_heads == fresh.kv_heads and more.tokens == fresh.tokens
    memo.patterns(tiny_model, PROMPT + " seven", [(0, 1)])  # another prompt is another key
    assert memo.computed_heads == 4


def test_the_memo_stays_within_its_bytes(tiny_model):
    one_head = compute_patterns(tiny_model, PROMPT, [(0, 0)]).pattern[0].nbytes
    memo = PatternMemo(max_bytes=2 * one_head)
    memo.patterns(tiny_model, PROMPT, [(0, 0), (0, 1)])
    memo.patterns(tiny_model, PROMPT, [(0, 2)])  # the least recently used head (0.0) goes
    assert memo._bytes <= 2 * one_head
    memo.patterns(tiny_model, PROMPT, [(0, 1), (0, 2)])
    assert memo.computed_heads == 3
    result = memo.patterns(tiny_model, PROMPT, [(0, 0)])
    assert memo.computed_heads == 4
    np.testing.assert_allclose(result.pattern, compute_patterns(tiny_model, PROMPT, [(0, 0)]).pattern, atol=1e-6)
