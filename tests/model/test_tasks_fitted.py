"""The rule-sequence tasks fitted to a real tokenizer: one token length, answers that start with different tokens."""

import pytest

from headscope.ablation import prepare_dataset
from headscope.tasks import build_task_dataset


@pytest.mark.parametrize(("task", "step"), [("step", 2), ("step", 3), ("decreasing", None), ("fibonacci", None),
                                            ("letters", None)])
def test_new_tasks_encode_on_the_embedded_tokenizer(embedded_model, task, step):
    dataset = build_task_dataset(task, 12, seed=1, model=embedded_model, step=step)
    encoded = prepare_dataset(embedded_model, dataset)
    assert encoded.n_prompts == 12  # nothing dropped: members were chosen to tokenize alike
    lengths = {len(embedded_model.input_ids(item.prompt)) for item in encoded.dataset.items}
    assert lengths == {encoded.seq_len}
    assert (encoded.correct_ids != encoded.incorrect_ids).all()
    tokenizer = embedded_model.tokenizer
    for item, correct in zip(encoded.dataset.items, encoded.correct_ids.tolist(), strict=True):
        # the answer's first token, read independently: the full text's tokens after the prompt's
        prompt_ids = tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(item.prompt + item.correct, add_special_tokens=False)["input_ids"]
        assert full_ids[: len(prompt_ids)] == prompt_ids and full_ids[len(prompt_ids)] == correct


def test_step_numbers_on_a_digit_splitting_tokenizer_cross_a_decade(embedded_model):
    # SmolLM2 writes numbers digit by digit: "16" and "18" both start with "1", so only sequences whose answer
    # starts a new decade can be told apart by their first token, and only two-digit numbers are used
    dataset = build_task_dataset("step", 32, seed=0, model=embedded_model, step=2)
    for item in dataset.items:
        shown = item.prompt.split()
        assert all(len(number) == 2 for number in shown)
        assert item.correct.strip()[0] != shown[-1][0]
    assert any("same token" in note for note in dataset.notes)
