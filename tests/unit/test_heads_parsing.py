"""Head lists typed as `L.H`: read, checked against the model's shape, presets and the GQA mapping."""

import pytest

from headscope.backends.base import ModelInfo
from headscope.component import Component
from headscope.errors import InputError
from headscope.heads import (
    LLAMA2_7B_PRESETS,
    MAX_SELECTED_HEADS,
    check_heads,
    format_heads,
    kv_head_of,
    model_presets,
    parse_head_list,
    parse_heads,
)


def _info(name="SmolLM2-135M-Instruct", source="embedded", n_layers=30, n_heads=9, n_kv_heads=3) -> ModelInfo:
    return ModelInfo(name=name, source=source, revision="r", n_layers=n_layers, n_heads=n_heads,
                     n_kv_heads=n_kv_heads, d_head=64, d_model=576, d_mlp=1536, n_ctx=8192, vocab_size=49152,
                     n_params=1, device="cpu", dtype="float32", memory_bytes=1, load_seconds=0.0, bos_token="<s>")


SMOL = _info()
LLAMA_CHAT = _info("Llama-2-7b-chat-hf", "meta-llama/Llama-2-7b-chat-hf", 32, 32, 32)


def test_comma_and_space_separated_heads_are_read_in_order_without_duplicates():
    assert parse_head_list("3.24, 5.25") == (Component(3, 24), Component(5, 25))
    assert parse_head_list(" 16.0,20.17 3.24;16.0 ") == (Component(16, 0), Component(20, 17), Component(3, 24))
    assert parse_head_list("(3.24), 5:25") == (Component(3, 24), Component(5, 25))
    assert format_heads(parse_head_list("3.24,5.25")) == "3.24, 5.25"


@pytest.mark.parametrize("text", ["3-24", "3.", ".4", "a.b", "3.24.1", "L3H24", "3.24, x"])
def test_malformed_heads_name_the_bad_item_and_the_syntax(text):
    with pytest.raises(InputError, match=r"Cannot read .* as a head: write each head as layer\.head"):
        parse_head_list(text)


@pytest.mark.parametrize("text", ["", "   ", " , ;"])
def test_an_empty_head_list_is_rejected(text):
    with pytest.raises(InputError, match="No heads given"):
        parse_head_list(text)


def test_out_of_range_head_names_the_model_and_its_ranges():
    with pytest.raises(InputError) as caught:
        parse_heads("31.0", SMOL)
    assert str(caught.value) == ("Head 31.0 is out of range: SmolLM2-135M-Instruct has layers 0–29 and heads 0–8.")
    with pytest.raises(InputError, match=r"Heads 3\.9, 30\.1 are out of range"):
        parse_heads("3.8, 3.9, 30.1", SMOL)


def test_heads_in_range_pass_including_the_edges():
    assert parse_heads("0.0, 29.8", SMOL) == (Component(0, 0), Component(29, 8))
    assert check_heads([(2, 3), Component(2, 3)], SMOL) == (Component(2, 3),)


def test_too_many_heads_are_rejected():
    many = ", ".join(f"{layer}.{head}" for layer in range(30) for head in range(9))
    with pytest.raises(InputError, match=f"at most {MAX_SELECTED_HEADS}"):
        parse_heads(many, SMOL)


def test_kv_head_of_each_query_head_under_gqa():
    assert [kv_head_of(h, 9, 3) for h in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [kv_head_of(h, 4, 2) for h in range(4)] == [0, 0, 1, 1]
    assert [kv_head_of(h, 32, 32) for h in (0, 25)] == [0, 25]  # Llama-2-7B: no GQA


@pytest.mark.parametrize("name,source", [
    ("Llama-2-7b-hf", "meta-llama/Llama-2-7b-hf"),
    ("Llama-2-7b-chat-hf", "meta-llama/Llama-2-7b-chat-hf"),
    ("my-copy", "/models/LLAMA-2-7B-chat"),
])
def test_llama2_7b_base_and_chat_get_the_study_candidates(name, source):
    presets = model_presets(_info(name, source, 32, 32, 32))
    assert presets == LLAMA2_7B_PRESETS
    assert presets[0].heads == (Component(3, 24), Component(5, 25), Component(16, 0), Component(20, 17))
    assert presets[1].heads[4:] == (Component(4, 3), Component(8, 0), Component(22, 25), Component(6, 11))
    assert all(check_heads(p.heads, LLAMA_CHAT) == p.heads for p in presets)


def test_other_models_have_no_published_candidates():
    assert model_presets(SMOL) == ()
    assert model_presets(_info("Llama-2-13b-hf", "meta-llama/Llama-2-13b-hf", 40, 40, 40)) == ()
