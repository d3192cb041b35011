"""Head-type scores: equal to TransformerLens' detect_head, the sequence-member definition checked by hand, and the
successor / copying scores on a tiny model whose OV circuit is set to a known map."""

from itertools import pairwise

import numpy as np
import pytest
import torch
from transformer_lens.head_detector import detect_head

from headscope.component import Component
from headscope.errors import InputError
from headscope.loading import ModelRequest, load_model
from headscope.results_cache import ResultsCache
from headscope.scores import (
    CACHE_KIND,
    generated_sequences,
    list_usage,
    score_heads,
    task_prompts,
)

DETECTOR_NAMES = {"previous-token": "previous_token_head", "duplicate-token": "duplicate_token_head",
                  "induction": "induction_head"}


@pytest.fixture
def cache(tmp_path):
    return ResultsCache(tmp_path / "results")


def test_generated_sequences_are_bos_plus_a_repeated_random_run_that_round_trips(embedded_model):
    texts = generated_sequences(embedded_model, n_sequences=3, repeat_length=20)
    assert len(set(texts)) == 3
    for text in texts:
        ids = embedded_model.input_ids(text)
        assert ids == embedded_model.bridge.to_tokens(text)[0].tolist()  # what detect_head will feed the model
        assert ids[0] == embedded_model.tokenizer.bos_token_id and len(ids) == 41
        assert ids[1:21] == ids[21:]
    assert generated_sequences(embedded_model, n_sequences=3, repeat_length=20) == texts  # seeded


@pytest.mark.parametrize("score", list(DETECTOR_NAMES))
def test_pattern_scores_equal_detect_head_on_generated_sequences(embedded_model, cache, score):
    result = score_heads(embedded_model, score, n_sequences=2, cache=cache)
    texts = list(generated_sequences(embedded_model, n_sequences=2))
    expected = detect_head(embedded_model.bridge, texts, DETECTOR_NAMES[score]).numpy()
    assert result.scores.shape == (30, 9)
    np.testing.assert_allclose(result.scores, expected, atol=1e-5, rtol=0)
    assert result.scores.max() > 0.3  # the embedded model has clear heads of each kind on repeated tokens


@pytest.mark.parametrize("score", list(DETECTOR_NAMES))
def test_pattern_scores_equal_detect_head_on_a_users_prompt(embedded_model, cache, score):
    prompt = "The cat sat on the mat. The cat sat on the mat."
    result = score_heads(embedded_model, score, prompt=prompt, cache=cache)
    expected = detect_head(embedded_model.bridge, prompt, DETECTOR_NAMES[score]).numpy()
    np.testing.assert_allclose(result.scores, expected, atol=1e-5, rtol=0)
    assert "detect_head defaults" in result.inputs


def test_scores_are_cached_by_model_score_and_inputs(embedded_model, cache):
    calls = []  # a cached result runs no forward pass at all (behaviour, not a duration on this machine)
    hook = embedded_model.bridge.blocks[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        first = score_heads(embedded_model, "previous-token", prompt="one two three four", cache=cache)
        computed = len(calls)
        again = score_heads(embedded_model, "previous-token", prompt="one two three four", cache=cache)
    finally:
        hook.remove()
    assert computed > 0 and len(calls) == computed
    assert not first.cached and again.cached
    np.testing.assert_array_equal(first.scores, again.scores)
    assert again.key == first.key and first.key["score"] == "previous-token"
    assert {"model_source", "model_revision", "dtype", "device", "inputs", "engine"} <= set(first.key)
    other = score_heads(embedded_model, "previous-token", prompt="one two three five", cache=cache, compute=False)
    assert other is None  # another prompt is another key: nothing cached for it
    assert score_heads(embedded_model, "induction", prompt="one two three four", cache=cache, compute=False) is None
    assert len(cache.entries(CACHE_KIND)) == 1


def test_sequence_score_is_attention_from_each_member_to_the_one_before(embedded_model, embedded_reference, cache):
    result = score_heads(embedded_model, "sequence", cache=cache)
    encoded = task_prompts(embedded_model, "digits")
    assert encoded.member_positions[0] == (1, 3, 5, 7)  # '1 2 3 4 ': digits at 1, 3, 5, 7 after BOS
    # by hand, from the attention weights of an untouched transformers copy (eager attention), for a few heads
    with torch.no_grad():
        attentions = embedded_reference(encoded.clean.cpu(), output_attentions=True).attentions
    for layer, head in [(0, 0), (4, 4), (11, 1), (29, 8)]:
        pattern = attentions[layer][:, head]
        values = [float(pattern[p, after, before])
                  for p, positions in enumerate(encoded.member_positions)
                  for before, after in pairwise(positions)]
        assert result.scores[layer, head] == pytest.approx(np.mean(values), abs=1e-5)  # weights in [0, 1], float32
    assert "6 distinct digits prompts" in result.inputs
    assert result.notes == ("18 (member, previous member) pairs",)


def test_successor_lists_usable_for_the_embedded_tokenizer(embedded_model):
    usages = {usage.name: usage for usage in list_usage(embedded_model)}
    assert not usages["numbers 1–200"].usable  # digits are split and a space is its own token
    assert "200 of 200 members are several tokens" in usages["numbers 1–200"].reason
    for name in ("number words", "ordinals", "days", "months", "letters A–Z"):
        assert usages[name].usable, usages[name].reason
        assert len(usages[name].token_ids) == len(usages[name].members)
    assert usages["days"].token_ids[0] == embedded_model.encode(" Monday")[0]


def test_successor_and_copying_scores_on_the_embedded_model_report_their_lists(embedded_model, cache):
    successor = score_heads(embedded_model, "successor", cache=cache)
    copying = score_heads(embedded_model, "copying", cache=cache)
    for result in (successor, copying):
        assert result.scores.shape == (30, 9)
        assert np.all((result.scores >= 0) & (result.scores <= 1))
        assert result.usable_lists == ("number words", "ordinals", "days", "months", "letters A–Z")
    # 19 + 9 + 6 + 11 + 25 = 70 pairs; 20 + 10 + 7 + 12 + 26 = 75 members
    assert np.allclose(successor.scores * 70, np.round(successor.scores * 70))
    assert np.allclose(copying.scores * 75, np.round(copying.scores * 75))
    assert copying.scores.max() > 0.9  # the model has near-perfect copying heads
    assert successor.scores.max() < copying.scores.max()


# ---------------------------------------------------------------------------------------------------------------
# A tiny model with a hand-set OV circuit

MEMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight")
LAYER = 1
SUCCESSOR_HEAD, COPYING_HEAD = 2, 3  # both read KV head 1 (4 query heads over 2 KV heads)


@pytest.fixture(scope="module")
def hand_set_model(tiny_model_dir):
    """A fresh copy of the tiny model: MLP0 adds nothing, every norm weight is 1, the members' embeddings and
    unembeddings are basis vectors e_i; KV head 1 of layer 1 maps e_i -> f_i, head 2 writes f_i -> e_(i+1)
    (successor map) and head 3 writes f_i -> e_i (identity)."""
    model = load_model(ModelRequest(str(tiny_model_dir)))
    bridge, info = model.bridge, model.info
    ids = [model.encode(" " + member)[0] for member in MEMBERS]
    d_head, n = info.d_head, len(MEMBERS)
    with torch.no_grad():
        for param in bridge.parameters():
            if param.ndim == 1:  # Llama's only vectors are RMSNorm weights
                param.fill_(1.0)
        bridge.blocks[0].mlp.out.original_component.weight.zero_()  # MLP0 down-projection
        embed = bridge.embed.original_component.weight
        unembed = bridge.unembed.original_component.weight
        embed[ids] = 0.0
        unembed[ids] = 0.0
        for i, token in enumerate(ids):
            embed[token, i] = 1.0
            unembed[token, i] = 1.0
        kv = SUCCESSOR_HEAD // info.heads_per_kv
        w_v = bridge.blocks[LAYER].attn.v.original_component.weight  # [kv * d_head, d_model]
        w_v[kv * d_head:(kv + 1) * d_head] = 0.0
        for i in range(n):
            w_v[kv * d_head + i, i] = 1.0
        w_o = bridge.blocks[LAYER].attn.o.original_component.weight  # [d_model, head * d_head]
        for head in (SUCCESSOR_HEAD, COPYING_HEAD):
            w_o[:, head * d_head:(head + 1) * d_head] = 0.0
        for i in range(n):
            w_o[(i + 1) % n, SUCCESSOR_HEAD * d_head + i] = 1.0
            w_o[i, COPYING_HEAD * d_head + i] = 1.0
    return model


def test_hand_set_successor_map_scores_one_and_copies_nothing(hand_set_model, cache):
    lists = {"test words": MEMBERS}
    successor = score_heads(hand_set_model, "successor", lists=lists, cache=cache)
    copying = score_heads(hand_set_model, "copying", lists=lists, cache=cache)
    assert successor.scores[LAYER, SUCCESSOR_HEAD] == 1.0
    assert copying.scores[LAYER, SUCCESSOR_HEAD] == 0.0
    assert successor.top_heads(1) == (Component(LAYER, SUCCESSOR_HEAD),)


def test_hand_set_identity_map_copies_everything_and_has_no_successor(hand_set_model, cache):
    lists = {"test words": MEMBERS}
    successor = score_heads(hand_set_model, "successor", lists=lists, cache=cache)
    copying = score_heads(hand_set_model, "copying", lists=lists, cache=cache)
    assert copying.scores[LAYER, COPYING_HEAD] == 1.0
    assert successor.scores[LAYER, COPYING_HEAD] == 0.0
    assert copying.top_heads(1) == (Component(LAYER, COPYING_HEAD),)
    assert [usage.usable for usage in copying.lists] == [True]


def test_ov_scores_need_a_usable_list(tiny_model, cache):
    with pytest.raises(InputError, match="None of the ordinal lists is usable"):
        score_heads(tiny_model, "successor", lists={"split": ("1", "2", "3")}, cache=cache)


def test_bad_score_requests_are_clear_errors(embedded_model, cache):
    with pytest.raises(InputError, match="Unknown score 'bogus'"):
        score_heads(embedded_model, "bogus", cache=cache)
    with pytest.raises(InputError, match="--prompt applies to the pattern scores"):
        score_heads(embedded_model, "sequence", prompt="1 2 3", cache=cache)
    with pytest.raises(InputError, match="empty"):
        score_heads(embedded_model, "induction", prompt="", cache=cache)
    with pytest.raises(InputError, match="Unknown task"):
        score_heads(embedded_model, "sequence", task="colours", cache=cache)
