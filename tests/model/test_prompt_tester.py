"""The embedded model's real tokenization and predictions: the traps the prompt tester exists to show."""

import pytest
import torch

from headscope.errors import InputError
from headscope.predict import analyze_prompt
from headscope.tokens import is_whitespace_token, tokenize_prompt


def test_digits_are_split_into_digit_and_space_tokens(embedded_model):
    tokenized = tokenize_prompt(embedded_model, "1 2 3 4")
    assert [t.text for t in tokenized.tokens[1:]] == ["1", " ", "2", " ", "3", " ", "4"]
    assert [t.display for t in tokenized.tokens[1:]] == ["1", "·", "2", "·", "3", "·", "4"]


def test_bos_is_position_zero_and_matches_the_bridge(embedded_model):
    tokenized = tokenize_prompt(embedded_model, "1 2 3 4 ")
    assert tokenized.bos_prepended
    assert tokenized.tokens[0].special and tokenized.tokens[0].id == embedded_model.tokenizer.bos_token_id
    assert tokenized.tokens[0].char_start is None
    # the positions we label are the model's real input, exactly what TransformerLens feeds it
    assert tokenized.ids == embedded_model.bridge.to_tokens("1 2 3 4 ")[0].tolist()


def test_character_spans_point_into_the_prompt(embedded_model):
    prompt = "one two three"
    tokenized = tokenize_prompt(embedded_model, prompt)
    for token in tokenized.tokens[1:]:
        assert prompt[token.char_start : token.char_end].strip() == token.text.strip()


def test_without_trailing_space_the_top_prediction_is_whitespace(embedded_model):
    result = analyze_prompt(embedded_model, "1 2 3 4", answer="5", contrast="4")
    assert is_whitespace_token(result.top_k[0].text)
    assert any("whitespace token" in w for w in result.warnings)


def test_with_trailing_space_the_top_prediction_is_five(embedded_model):
    result = analyze_prompt(embedded_model, "1 2 3 4 ", answer="5", contrast="4")
    assert result.top_k[0].text == "5"
    assert result.answer.typed.rank == 1
    assert result.logit_diff == pytest.approx(result.answer.typed.logit - result.contrast.typed.logit)
    assert result.logit_diff > 0
    assert not any("whitespace token" in w for w in result.warnings)


def test_a_newline_top_prediction_is_not_told_to_add_a_trailing_space(embedded_model):
    # items on separate lines: the next item follows a line break, and the advice says so
    listed = analyze_prompt(embedded_model, "1\n2\n3\n4")
    assert listed.top_k[0].text == "\n"
    (warning,) = [w for w in listed.warnings if "whitespace token" in w]
    assert "line break (not a space)" in warning and "add a trailing space" not in warning
    following = analyze_prompt(embedded_model, "1\n2\n3\n4\n")  # the advice, taken, works
    assert following.top_k[0].text == "5"
    # a finished sentence: a space would not help either, and the warning does not suggest it
    finished = analyze_prompt(embedded_model, "The end.")
    assert finished.top_k[0].text == "\n"
    (warning,) = [w for w in finished.warnings if "whitespace token" in w]
    assert "would not change that" in warning and "add a trailing space" not in warning


def test_answer_with_leading_space_is_reported_with_both_ranks(embedded_model):
    result = analyze_prompt(embedded_model, "1 2 3 4", answer="5")
    typed, alternate = result.answer.typed, result.answer.alternate
    assert typed.text == "5" and alternate.text == " 5"
    assert alternate.multi_token  # ' 5' is a bare space token followed by '5'
    assert alternate.rank == 1  # the space is what the model predicts here
    assert typed.rank > 1
    # the rank is the space's, and the report says so rather than passing it off as the rank of ' 5'
    assert alternate.ranked == "'·' (first of 2)" and typed.ranked == "'5'"
    assert result.answer.to_json()["alternate"]["multi_token"] is True


def test_after_a_trailing_space_a_preferred_leading_space_answer_points_at_the_prompt(embedded_model):
    # 'Paris' after 'is ' ranks below ' Paris', which here means a second space: the fix is to drop the prompt's
    # trailing space, where ' Paris' is the model's top prediction
    prompt = "The capital of France is "
    result = analyze_prompt(embedded_model, prompt, answer="Paris")
    assert result.answer.alternate.rank < result.answer.typed.rank
    (warning,) = [w for w in result.warnings if "Paris" in w]  # one warning, the merge said within it
    assert "second space" in warning and "without its trailing whitespace" in warning and "merges" in warning
    taken = analyze_prompt(embedded_model, prompt.rstrip(), answer=" Paris")
    assert taken.answer.typed.rank < result.answer.alternate.rank
    # without the trailing space the old advice stands
    plain = analyze_prompt(embedded_model, prompt.rstrip(), answer="Paris")
    assert plain.answer.alternate.rank < plain.answer.typed.rank
    assert any("check the leading space" in w for w in plain.warnings)


def test_a_whitespace_prediction_inside_the_prompt_is_read_at_the_next_position(embedded_model):
    # after '3' in '1 2 3 4 5 6' the model predicts the space that follows in the prompt: the advice is to read the
    # next position, not to change the prompt's end
    result = analyze_prompt(embedded_model, "1 2 3 4 5 6", position=5)
    assert result.tokenized.tokens[5].text == "3" and is_whitespace_token(result.top_k[0].text)
    (warning,) = [w for w in result.warnings if "whitespace token" in w]
    assert "read position 6" in warning and "trailing" not in warning
    assert analyze_prompt(embedded_model, "1 2 3 4 5 6", position=6).top_k[0].text == "4"


def test_multi_token_answer_warns_and_uses_first_token(embedded_model):
    result = analyze_prompt(embedded_model, "1 2 3 4 ", answer="56")
    assert result.answer.typed.ids[0] == embedded_model.encode("5")[0]
    assert result.answer.typed.multi_token
    assert any("is 2 tokens" in w for w in result.warnings)


def test_top_k_logits_equal_a_direct_transformers_forward(embedded_model, embedded_reference, embedded_hf_tokenizer):
    result = analyze_prompt(embedded_model, "January February March April", top_k=10)
    ids = [embedded_hf_tokenizer.bos_token_id,
           *embedded_hf_tokenizer("January February March April", add_special_tokens=False).input_ids]
    assert list(result.tokenized.ids) == ids  # the input, tokenized here without headscope
    with torch.no_grad():
        logits = embedded_reference(torch.tensor([ids])).logits[0, -1]
    values, ids = logits.topk(10)
    assert [p.id for p in result.top_k] == ids.tolist()
    assert torch.allclose(torch.tensor([p.logit for p in result.top_k]), values, atol=1e-4)
    probs = torch.softmax(logits, -1)[ids]
    assert torch.allclose(torch.tensor([p.prob for p in result.top_k]), probs, atol=1e-5)


def test_any_position_can_be_read(embedded_model):
    result = analyze_prompt(embedded_model, "1 2 3 4 ", position=2)
    assert result.position == 2
    assert result.top_k[0].id == result.top1_per_position[2].id


def test_doubled_bos_is_flagged(embedded_model):
    bos = embedded_model.tokenizer.bos_token
    result = analyze_prompt(embedded_model, f"{bos}1 2 3")
    assert any("BOS is doubled" in w for w in result.warnings)


def test_empty_and_overlong_prompts_are_refused(embedded_model):
    with pytest.raises(InputError, match="empty"):
        analyze_prompt(embedded_model, "")
    with pytest.raises(InputError, match="context length"):
        analyze_prompt(embedded_model, "1 " * (embedded_model.info.n_ctx // 2 + 10))


def test_html_in_prompt_is_kept_as_plain_token_text(embedded_model):
    result = analyze_prompt(embedded_model, "<script>alert(1)</script>")
    assert "".join(t.text for t in result.tokens[1:]) == "<script>alert(1)</script>"
