"""Dataset files: clear errors naming the offending rows, before any model work."""

import json

import pytest

from headscope.errors import InputError
from headscope.tasks import DAYS, MONTHS, NUMBER_WORDS, TASKS, build_task_dataset, load_dataset_file, load_dataset_text


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


def _expected_next(task: str, shown: list[str], step: int) -> str | None:
    """The rule of each task, written out independently of headscope's member lists and strides."""
    if task in ("digits", "template"):
        return str(int(shown[-1]) + 1)
    if task == "step":
        return str(int(shown[-1]) + step)
    if task == "decreasing":
        return str(int(shown[-1]) - 1)
    if task == "fibonacci":
        return str(int(shown[-1]) + int(shown[-2]))
    if task == "letters":
        return chr(ord(shown[-1]) + 1)
    cycle = {"number-words": NUMBER_WORDS, "months": MONTHS, "days": DAYS}[task]
    following = cycle.index(shown[-1]) + 1
    if task == "number-words":
        return cycle[following] if following < len(cycle) else None  # "twenty" has no successor in the list
    return cycle[following % len(cycle)]


def _follows(task: str, before: str, after: str, step: int) -> bool:
    """Whether `after` may come right after `before` in the task's sequences."""
    if task == "fibonacci":
        fib = [1, 1]
        while fib[-1] < 10_000:
            fib.append(fib[-1] + fib[-2])
        return any((fib[i], fib[i + 1]) == (int(before), int(after)) for i in range(len(fib) - 1))
    return _expected_next(task, ["0", before], step) == after


@pytest.mark.parametrize(("task", "step"), [(task, None) for task in TASKS] + [("step", 3), ("step", 1)])
def test_task_prompts_answer_with_the_next_member_and_corrupt_the_last(task, step):
    dataset = build_task_dataset(task, 10, length=4, seed=3, step=step)
    stride = step or 2
    for item in dataset.items:
        members = [item.prompt[a:b] for a, b in item.member_spans]
        assert len(members) == 4
        for i in range(1, 4):
            assert _follows(task, members[i - 1], members[i], stride), (members, item.prompt)
        if task == "fibonacci":
            assert all(int(members[i]) == int(members[i - 1]) + int(members[i - 2]) for i in range(2, 4))
        assert item.correct.strip() == _expected_next(task, members, stride)
        assert item.incorrect.strip() == members[-1]
        corrupted = item.corrupted_prompt.split() if task != "template" else None
        assert item.corrupted_prompt and item.corrupted_prompt != item.prompt
        if corrupted is not None:
            assert len(corrupted) == 4 and not _follows(task, corrupted[-2], corrupted[-1], stride)


def test_new_tasks_have_the_study_examples():
    first = {task: {build_task_dataset(task, 64, length=4, seed=0, step=2 if task == "step" else None).items[i].prompt
                    for i in range(64)} for task in ("step", "decreasing", "fibonacci", "letters")}
    assert "2 4 6 8" in first["step"] and "9 8 7 6" in first["decreasing"]
    assert first["fibonacci"] == {"1 1 2 3", "1 2 3 5", "2 3 5 8", "3 5 8 13", "5 8 13 21", "8 13 21 34",
                                  "13 21 34 55", "21 34 55 89", "34 55 89 144", "55 89 144 233", "89 144 233 377",
                                  "144 233 377 610"}
    assert "A B C D" in first["letters"] and not any("Z" in p.split()[:-1] for p in first["letters"])
    five = build_task_dataset("fibonacci", 64, length=5, seed=0)
    assert any(item.prompt == "1 1 2 3 5" and item.correct == " 8" for item in five.items)


def test_step_is_chosen_by_the_user_and_checked():
    assert build_task_dataset("step", 4, step=3).name == "step-3"
    assert build_task_dataset("step", 4).name == "step-2"  # the default step
    assert build_task_dataset("step", 4).builtin and build_task_dataset("digits", 4).builtin
    assert build_task_dataset("step", 4, step=5).content_hash != build_task_dataset("step", 4, step=6).content_hash
    with pytest.raises(InputError, match="only to the step task"):
        build_task_dataset("digits", 4, step=2)
    with pytest.raises(InputError, match="step must be from 1 to 20"):
        build_task_dataset("step", 4, step=0)
    with pytest.raises(InputError, match="must be from 2 to 4"):
        build_task_dataset("step", 4, length=5, step=20)


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
