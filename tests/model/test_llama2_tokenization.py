"""The study's tokenization on the real Llama-2 tokenizer (tests/data/llama2-tokenizer, offline), loaded as a user's
local folder beside a tiny random Llama: BOS at position 0, digits split, the bare space token, the answer after a
trailing space, and the trap warnings the prompt tester shows for it.

The expected ids are the original SentencePiece tokenizer's (tests/data/llama2-tokenizer/README.md), not headscope's.
"""

from pathlib import Path

import pytest
import torch

from headscope.predict import analyze_prompt
from headscope.tasks import Dataset, PromptItem, build_task_dataset, encode_dataset
from headscope.tokens import continuation_ids, tokenize_prompt

TOKENIZER = Path(__file__).resolve().parents[1] / "data" / "llama2-tokenizer"
BOS, SPACE = 1, 29871  # "<s>", "▁"
STUDY = [BOS, SPACE, 29896, SPACE, 29906, SPACE, 29941, SPACE, 29946]  # "1 2 3 4", README.md's ids
FIVE = 29945


@pytest.fixture(scope="module")
def llama2_folder(tmp_path_factory) -> Path:
    """A tiny random Llama with the real 32,000-token vocabulary, the Llama-2 tokenizer beside it. Its attention and
    MLPs write nothing and its unembedding reads one residual direction that every embedding holds positively, into
    the bare space token only: it predicts "▁" everywhere, as Llama-2 does after "1 2 3 4"."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = LlamaConfig(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 5.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[SPACE, 0] = 10.0
    folder = tmp_path_factory.mktemp("tiny-llama2-tokenizer")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama2(llama2_folder):
    from headscope.loading import ModelRequest, load_model

    return load_model(ModelRequest(str(llama2_folder), device="cpu", dtype="float32"))


def test_the_study_prompt_is_bos_then_split_digits_and_bare_spaces(llama2) -> None:
    tokenized = tokenize_prompt(llama2, "1 2 3 4 ")
    assert tokenized.ids == [*STUDY, SPACE]
    assert tokenized.bos_prepended and tokenized.bos_rule
    first, last = tokenized.tokens[0], tokenized.tokens[-1]
    assert first.special and first.position == 0 and first.char_start is None
    # the prompt's first character is at position 1, not 0: counting without BOS reads one token early
    assert tokenized.tokens[2].text == "1" and tokenized.tokens[2].char_start == 0
    assert last.text == " " and last.display != " " and not last.special  # the bare space, made visible


def test_the_answer_after_a_trailing_space_is_the_digit_alone(llama2) -> None:
    assert continuation_ids(llama2, "1 2 3 4 ", "5") == ([FIVE], False)
    assert continuation_ids(llama2, "1 2 3 4", " 5") == ([SPACE, FIVE], False)  # a space token first, then 5


def test_a_dataset_answer_with_a_leading_space_moves_the_space_into_the_prompt(llama2) -> None:
    dataset = Dataset("study", (PromptItem("1 2 3 4", " 5", " 6", corrupted_prompt="4 3 2 1"),))
    encoded = encode_dataset(llama2, dataset)
    assert encoded.clean[0].tolist() == [*STUDY, SPACE]
    assert encoded.dataset.items[0].prompt == "1 2 3 4 "
    assert encoded.correct_ids.tolist() == [FIVE] and encoded.incorrect_ids.tolist() == [29953]
    assert encoded.token_labels[0] == "<s>" and len(encoded.token_labels) == len(STUDY) + 1


def test_the_digits_task_reads_the_metric_after_the_trailing_space(llama2) -> None:
    encoded = encode_dataset(llama2, build_task_dataset("digits", n_prompts=4, model=llama2), drop_uneven=True)
    for row, ids in enumerate(encoded.clean.tolist()):
        assert ids[0] == BOS and ids[-1] == SPACE
        assert encoded.correct_ids[row].item() != SPACE  # a digit, read at the last position
        # <s> ▁ a ▁ b ▁ c ▁ d ▁: the members are the digits at positions 2, 4, 6, 8 (not the leading "▁", which
        # SentencePiece gives the first digit's character span)
        assert encoded.member_positions[row] == (2, 4, 6, 8)
        assert all(llama2.raw_tokens([ids[p]])[0].isdigit() for p in encoded.member_positions[row])


def test_the_prompt_tester_warns_that_a_space_is_predicted_and_says_what_to_do(llama2) -> None:
    without = analyze_prompt(llama2, "1 2 3 4", answer="5")
    assert without.top_k[0].id == SPACE
    assert any("whitespace token" in w and "add a trailing space" in w for w in without.warnings)
    assert any("BOS" in n and "position 1" in n for n in without.notes)
    with_space = analyze_prompt(llama2, "1 2 3 4 ", answer="5")
    assert any("already ends in whitespace" in w for w in with_space.warnings)
    assert with_space.answer is not None and with_space.answer.typed.ids == (FIVE,)
