"""Dataset files: clear errors naming the offending rows, before any model work."""

import itertools
import json

import pytest

from headscope.errors import InputError
from headscope.tasks import TASKS, build_task_dataset, load_dataset_file, load_dataset_text


def test_csv_and_json_give_the_same_dataset(tmp_path):
    rows = [{"prompt": "1 2 3 ", "correct": "4", "incorrect": "3", "corrupted_prompt": "5 1 8 "},
            {"prompt": "2 3 4 ", "correct": "5", "incorrect": "4", "corrupted_prompt": "7 2 9 "}]
    csv_text = "prompt,correct,incorrect,corrupted_prompt\n" + "".join(
        f'"{r["prompt"]}",{r["correct"]},{r["incorrect"]},"{r["corrupted_prompt"]}"\n' for r in rows)
    (tmp_path / "d.csv").write_text(csv_text)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    from_csv, from_json = load_dataset_file(tmp_path / "d.csv"), load_dataset_file(tmp_path / "d.json")
    assert from_csv.items == from_json.items
    assert from_csv.content_hash == from_json.content_hash
    assert from_csv.has_corrupted and len(from_csv) == 2


def test_missing_columns_are_named():
    with pytest.raises(InputError, match=r"missing column.*incorrect"):
        load_dataset_text("prompt,correct\na,b\n", "d.csv")


def test_empty_fields_name_their_rows():
    with pytest.raises(InputError, match="row 2: empty correct"):
        load_dataset_text(json.dumps([{"prompt": "a", "correct": "b", "incorrect": "c"},
                                      {"prompt": "a", "correct": "", "incorrect": "c"}]), "d.json")


def test_corrupted_prompts_for_some_rows_only_are_refused():
    text = json.dumps([{"prompt": "a", "correct": "b", "incorrect": "c", "corrupted_prompt": "x"},
                       {"prompt": "a", "correct": "b", "incorrect": "c"}])
    with pytest.raises(InputError, match="for 1 of 2 rows"):
        load_dataset_text(text, "d.json")


@pytest.mark.parametrize(("text", "name", "message"), [
    ("{not json", "d.json", "not valid JSON"),
    ("[]", "d.json", "no rows"),
    ('{"a": 1}', "d.json", "expected a list of objects"),
    ("prompt,correct,incorrect\n", "d.csv", "no rows"),
    ("x", "d.txt", "use .csv or .json"),
])
def test_malformed_files_are_explained(text, name, message):
    with pytest.raises(InputError, match=message):
        load_dataset_text(text, name)


def test_unreadable_file_is_explained(tmp_path):
    with pytest.raises(InputError, match="Cannot read dataset"):
        load_dataset_file(tmp_path / "nope.csv")


@pytest.mark.parametrize("task", list(TASKS))
def test_task_prompts_answer_with_the_next_member_and_corrupt_the_last(task):
    spec = TASKS[task]
    dataset = build_task_dataset(task, 10, length=4, seed=3)
    for item in dataset.items:
        members = [item.prompt[a:b] for a, b in item.member_spans]
        assert len(members) == 4
        index = [spec.members.index(m) for m in members]
        assert all((b - a) % len(spec.members) == 1 for a, b in itertools.pairwise(index))
        assert item.correct.strip() == spec.members[(index[-1] + 1) % len(spec.members)]
        assert item.incorrect.strip() == members[-1]
        assert item.corrupted_prompt and item.corrupted_prompt != item.prompt


def test_template_prompt_has_the_study_form():
    item = build_task_dataset("template", 1, seed=0).items[0]
    assert item.prompt.count(" done in") == 5 and item.prompt.endswith(" done in")
    assert item.correct.startswith(" ")


def test_bad_task_arguments_are_refused():
    with pytest.raises(InputError, match="Unknown task"):
        build_task_dataset("weeks")
    with pytest.raises(InputError, match="number of prompts"):
        build_task_dataset("digits", 0)
    with pytest.raises(InputError, match="Sequence length"):
        build_task_dataset("days", 4, length=9)
