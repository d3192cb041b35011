"""Sequence-continuation tasks and user datasets, encoded on the model's real input tokens (BOS included).

Built-in tasks follow the sequence-continuation circuit studies on GPT-2 small and Llama-2-7B: each prompt shows
members of an ordered list at a fixed stride (consecutive members; every k-th number for the step task; backwards for
the decreasing task); the correct answer is the next member at that stride, the incorrect one is the last member shown.
A corrupted prompt uses random members of the same type, the last never the successor of the one before it.

Prompts are written in their natural form ("1 2 3 4" -> " 5") and fitted to the tokenizer: where the answer's first
token would be a bare space (Llama-style tokenizers), the space moves into the prompt ("1 2 3 4 " -> "5").
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from headscope.errors import InputError
from headscope.settings import positive_env
from headscope.tokens import continuation_ids, is_whitespace_token, token_text

if TYPE_CHECKING:
    from headscope.backends.base import Backend

DIGITS = [str(i) for i in range(10)]
NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
LETTERS = [chr(code) for code in range(ord("A"), ord("Z") + 1)]
NUMBERS = [str(i) for i in range(100)]
FIBONACCI = ["1", "1", "2", "3", "5", "8", "13", "21", "34", "55", "89", "144", "233", "377", "610", "987"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TEMPLATE_NOUNS = ["Van", "Hat", "Ring", "Desk", "Sun", "Cup", "Door", "Lamp", "Tree", "Book", "Car", "Box", "Pen",
                  "Bed", "Map", "Key", "Shoe", "Fork", "Bell", "Rock"]


STEP_RANGE = (1, 20)  # strides the step task accepts


@dataclass(frozen=True)
class TaskSpec:
    """A built-in task: an ordered list and how a prompt is written from its members at a stride.

    A prompt of `length` members starting at index i shows members[i], members[i + stride], …; the correct answer is
    members[i + length·stride]. `stride` is the default; a task with `adjustable_stride` takes the user's (the step
    task: 2 4 6 8 -> 10 with stride 2)."""

    name: str
    title: str
    members: tuple[str, ...]
    cyclic: bool  # December -> January, Sunday -> Monday
    example: str
    stride: int = 1
    adjustable_stride: bool = False

    def index(self, start: int, k: int, stride: int) -> int | None:
        """The list index of the k-th member of a sequence starting at `start` (None: past the end)."""
        at = start + k * stride
        if self.cyclic:
            return at % len(self.members)
        return at if 0 <= at < len(self.members) else None

    def starts(self, length: int, stride: int) -> list[int]:
        """Start indices whose length + 1 members (the answer included) all exist."""
        return [start for start in range(len(self.members))
                if all(self.index(start, k, stride) is not None for k in range(length + 1))]

    def max_length(self, stride: int) -> int:
        return len(self.members) - 1 if self.cyclic else (len(self.members) - 1) // abs(stride)

    def successors(self, member: str, stride: int) -> set[str]:
        """Every member that follows `member` at this stride (Fibonacci's 1 is followed by 1 and by 2)."""
        out = set()
        for i, m in enumerate(self.members):
            if m == member:
                after = self.index(i, 1, stride)
                if after is not None:
                    out.add(self.members[after])
        return out


TASKS: dict[str, TaskSpec] = {
    "digits": TaskSpec("digits", "Digits", tuple(DIGITS), False, '"1 2 3 4 " -> "5"'),
    "number-words": TaskSpec("number-words", "Number words", tuple(NUMBER_WORDS), False,
                             '"one two three four" -> " five"'),
    "months": TaskSpec("months", "Months", tuple(MONTHS), True, '"January February March April" -> " May"'),
    "days": TaskSpec("days", "Days of the week", tuple(DAYS), True, '"Monday Tuesday Wednesday Thursday" -> " Friday"'),
    "template": TaskSpec("template", "Template (X done in N.)", tuple(str(i) for i in range(1, 10)), False,
                         '"Van done in 1. Hat done in 2. Ring done in 3. Desk done in 4. Sun done in" -> " 5"'),
    "step": TaskSpec("step", "Step-k numbers", tuple(NUMBERS), False, '"2 4 6 8 " -> "10" (step 2)', stride=2,
                     adjustable_stride=True),
    "decreasing": TaskSpec("decreasing", "Decreasing digits", tuple(DIGITS), False, '"9 8 7 6 " -> "5"', stride=-1),
    "fibonacci": TaskSpec("fibonacci", "Fibonacci", tuple(FIBONACCI), False, '"1 1 2 3 " -> "5", "1 2 3 5 " -> "8"'),
    "letters": TaskSpec("letters", "Letters", tuple(LETTERS), False, '"A B C D" -> " E"'),
}


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a dataset, with its answers; member spans locate the sequence members (built-in tasks)."""

    prompt: str
    correct: str
    incorrect: str
    corrupted_prompt: str | None = None
    member_spans: tuple[tuple[int, int], ...] = ()  # character spans of the members shown in `prompt`

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "correct": self.correct, "incorrect": self.incorrect,
                "corrupted_prompt": self.corrupted_prompt}


@dataclass(frozen=True)
class Dataset:
    """Prompts for one run. `content_hash` names the content for result-cache keys."""

    name: str
    items: tuple[PromptItem, ...]
    notes: tuple[str, ...] = ()
    builtin: bool = False  # a built-in task's prompts (fitted to the tokenizer, uneven lengths dropped)

    @property
    def content_hash(self) -> str:
        canonical = json.dumps([item.to_json() for item in self.items], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def has_corrupted(self) -> bool:
        return all(item.corrupted_prompt for item in self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class EncodedDataset:
    """A dataset as token ids: clean[prompt, pos], corrupted[prompt, pos] (or None), answer ids per prompt."""

    dataset: Dataset
    clean: torch.Tensor  # [prompt, pos] long, on the model's device
    corrupted: torch.Tensor | None  # [prompt, pos]
    correct_ids: torch.Tensor  # [prompt]
    incorrect_ids: torch.Tensor  # [prompt]
    token_labels: tuple[str, ...]  # display form of the first prompt's tokens, position by position (BOS included)
    member_positions: tuple[tuple[int, ...], ...]  # per prompt: token positions of the members shown
    warnings: tuple[str, ...] = field(default=())

    @property
    def n_prompts(self) -> int:
        return int(self.clean.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.clean.shape[1])


def task_names() -> list[str]:
    return list(TASKS)


# ---------------------------------------------------------------------------------------------------------------
# Built-in tasks


def _render(task: TaskSpec, shown: Sequence[str], nouns: Sequence[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The natural prompt text for members `shown`, and each member's character span."""
    parts: list[str] = []
    spans = []
    cursor = 0
    for i, member in enumerate(shown):
        prefix = ("" if i == 0 else " ") + f"{nouns[i]} done in " if task.name == "template" else "" if i == 0 else " "
        cursor += len(prefix)
        spans.append((cursor, cursor + len(member)))
        cursor += len(member)
        parts.append(prefix + member)
        if task.name == "template":
            parts.append(".")
            cursor += 1
    if task.name == "template":
        parts.append(f" {nouns[len(shown)]} done in")
    return "".join(parts), tuple(spans)


def _corrupted_members(task: TaskSpec, pool: Sequence[str], length: int, stride: int, rng: random.Random) -> list[str]:
    """Random members; the last is never the successor of the one before it (so the task has no answer)."""
    while True:
        picks = [rng.choice(pool) for _ in range(length)]
        if picks[-1] not in task.successors(picks[-2], stride):
            return picks


def _most_common_shape(words: Sequence[str], model: Backend | None) -> set[str]:
    """Words whose token counts (alone, and after a space) are the most common among `words`: prompts built only
    from them have one token length. Without a model every word is usable."""
    if model is None:
        return set(words)
    shapes = {w: (len(model.encode(w)), len(model.encode(" " + w))) for w in words}
    common = Counter(shapes.values()).most_common(1)[0][0]
    return {w for w, shape in shapes.items() if shape == common}


def _answers_differ(model: Backend | None, item: PromptItem) -> bool:
    """The answer's first-token rule: the correct and incorrect answers, fitted to the tokenizer and tokenized as
    continuations of the prompt, start with different tokens (else their logit difference is always 0; "16" and
    "18" on a tokenizer that splits digits)."""
    if model is None:
        return True
    fitted = fit_to_tokenizer(model, item)
    correct, _ = continuation_ids(model, fitted.prompt, fitted.correct)
    incorrect, _ = continuation_ids(model, fitted.prompt, fitted.incorrect)
    return correct[:1] != incorrect[:1]


def check_task(task_name: str) -> str:
    """The task's name, or an error naming the tasks there are."""
    if task_name not in TASKS:
        raise InputError(f"Unknown task {task_name!r}: choose one of {', '.join(TASKS)}.")
    return task_name


def check_step(task_name: str, step: int | None) -> int:
    """The stride a task runs with: the user's step where the task takes one (the step task), else its own."""
    task = TASKS[task_name]
    if step is None:
        return task.stride
    if not task.adjustable_stride:
        raise InputError(f"A step applies only to the step task, not to {task_name}.")
    low, high = STEP_RANGE
    if not low <= step <= high:
        raise InputError(f"The step must be from {low} to {high}, got {step}.")
    return step


def task_dataset_name(task_name: str, step: int | None = None) -> str:
    """The dataset name results are filed under: the task, with its step where the task takes one ("step-3")."""
    task = TASKS[task_name]
    return f"{task_name}-{check_step(task_name, step)}" if task.adjustable_stride else task_name


def build_task_dataset(
    task_name: str, n_prompts: int = 16, length: int = 4, seed: int = 0, model: Backend | None = None,
    *, step: int | None = None,
) -> Dataset:
    """The task's prompts in natural form. With a model, only members (and template nouns) that tokenize alike are
    used, so that the prompts share one token length, and only sequences whose answers start with different tokens;
    tokenizer fitting happens in encode_dataset. `step`: the stride of the step task (default 2)."""
    check_task(task_name)
    if not 1 <= n_prompts <= 4096:
        raise InputError(f"The number of prompts must be from 1 to 4096, got {n_prompts}.")
    task = TASKS[task_name]
    stride = check_step(task_name, step)
    if not 2 <= length <= task.max_length(stride):
        raise InputError(f"Sequence length for {task_name}{f' with step {stride}' if task.adjustable_stride else ''} "
                         f"must be from 2 to {task.max_length(stride)}, got {length}.")
    rng = random.Random(seed)
    usable = _most_common_shape(task.members, model)
    nouns = sorted(_most_common_shape(TEMPLATE_NOUNS, model)) if task.name == "template" else TEMPLATE_NOUNS
    starts = [start for start in task.starts(length, stride)
              if all(task.members[task.index(start, k, stride)] in usable for k in range(length + 1))]
    if not starts:
        raise InputError(f"No run of {length + 1} {task.title.lower()} tokenizes alike for this model: try a shorter "
                         "sequence length" + (" or another step." if task.adjustable_stride else "."))

    def shown_of(start: int) -> list[str]:
        return [task.members[task.index(start, k, stride)] for k in range(length)]

    def answer_of(start: int) -> str:
        return task.members[task.index(start, length, stride)]

    probe_nouns = TEMPLATE_NOUNS[: length + 1] if task.name == "template" else []
    same_first = [s for s in starts
                  if not _answers_differ(model, PromptItem(_render(task, shown_of(s), probe_nouns)[0],
                                                           " " + answer_of(s), " " + shown_of(s)[-1]))]
    starts = [s for s in starts if s not in same_first]
    if not starts:
        raise InputError(f"Every sequence of {length} {task.title.lower()} has an answer starting with the same token "
                         "as its last member on this tokenizer: try another step or sequence length.")
    rng.shuffle(starts)
    notes = []
    if len(usable) < len(set(task.members)):
        notes.append(f"Members left out because this tokenizer splits them differently: "
                     f"{', '.join(m for m in dict.fromkeys(task.members) if m not in usable)}.")
    if same_first:
        notes.append(f"Left out {len(same_first)} sequence(s) whose answer starts with the same token as their last "
                     "member (their logit difference would always be 0).")
    if len(starts) < n_prompts:
        notes.append(f"{task.title} has {len(starts)} distinct prompts of {length} members; they repeat (with "
                     f"different corrupted prompts) to make {n_prompts}.")
    pool = [m for m in dict.fromkeys(task.members) if m in usable]
    items = []
    for i in range(n_prompts):
        start = starts[i % len(starts)]
        shown = shown_of(start)
        chosen_nouns = rng.sample(list(nouns), length + 1) if task.name == "template" else []
        prompt, spans = _render(task, shown, chosen_nouns)
        corrupted, _ = _render(task, _corrupted_members(task, pool, length, stride, rng), chosen_nouns)
        items.append(PromptItem(
            prompt=prompt,
            correct=" " + answer_of(start),
            incorrect=" " + shown[-1],
            corrupted_prompt=corrupted,
            member_spans=spans,
        ))
    return Dataset(name=task_dataset_name(task_name, stride if task.adjustable_stride else None), items=tuple(items),
                   notes=tuple(notes), builtin=True)


# ---------------------------------------------------------------------------------------------------------------
# User datasets

REQUIRED_COLUMNS = ("prompt", "correct", "incorrect")
DEFAULT_MAX_ROWS = 2_000
DEFAULT_MAX_MB = 5.0
MAX_ROWS_CEILING = 10_000_000  # what the variables may raise the limits to: a dataset read whole into memory
MAX_MB_CEILING = 4_096.0


@dataclass(frozen=True)
class UploadLimits:
    """How large a user dataset may be (rows, bytes): from HEADSCOPE_UPLOAD_MAX_ROWS and HEADSCOPE_UPLOAD_MAX_MB.

    One bound for the app's uploads and the CLI's --dataset, so a file that runs from the command line also runs
    on the page, and no upload can make the server parse or encode an unbounded file."""

    max_rows: int = DEFAULT_MAX_ROWS
    max_bytes: int = int(DEFAULT_MAX_MB * 2**20)

    @classmethod
    def from_env(cls) -> UploadLimits:
        rows = positive_env("HEADSCOPE_UPLOAD_MAX_ROWS", DEFAULT_MAX_ROWS, whole=True, maximum=MAX_ROWS_CEILING)
        megabytes = positive_env("HEADSCOPE_UPLOAD_MAX_MB", DEFAULT_MAX_MB, maximum=MAX_MB_CEILING)
        return cls(int(rows), int(megabytes * 2**20))

    @property
    def max_mb(self) -> float:
        return self.max_bytes / 2**20

    def describe(self) -> str:
        """'at most 2,000 rows and 5 MB'"""
        return f"at most {self.max_rows:,} rows and {_megabytes(self.max_bytes)}"


def _megabytes(n_bytes: float) -> str:
    """'5 MB', '1.5 MB', '3,401 bytes'."""
    value = n_bytes / 2**20
    if value < 0.1:
        return f"{n_bytes:,.0f} bytes"
    return f"{value:.0f} MB" if value >= 10 or value == int(value) else f"{value:.1f} MB"


def load_dataset_bytes(data: bytes, filename: str, limits: UploadLimits | None = None) -> Dataset:
    """A dataset from a file's bytes: empty, oversized, binary and non-UTF-8 files are refused with a message that
    says what is wrong with the file, before anything is parsed."""
    limits = limits or UploadLimits.from_env()
    if not data:
        raise InputError(f"{filename}: the file is empty.")
    if len(data) > limits.max_bytes:
        raise InputError(f"{filename}: the file is {_megabytes(len(data))}, more than the "
                         f"{_megabytes(limits.max_bytes)} a dataset may have here (HEADSCOPE_UPLOAD_MAX_MB): split it "
                         "or keep fewer rows.")
    if b"\x00" in data:
        raise InputError(f"{filename}: this is not a text file (it holds NUL bytes): save the dataset as UTF-8 CSV or "
                         "JSON.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{filename}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start:,}): "
                         "save the dataset as UTF-8 CSV or JSON.") from None
    return load_dataset_text(text, filename, limits)


def load_dataset_text(text: str, filename: str, limits: UploadLimits | None = None) -> Dataset:
    """Parse a CSV or JSON dataset (fields prompt, correct, incorrect, optional corrupted_prompt) of at most
    `limits.max_rows` rows (default: from the environment)."""
    limits = limits or UploadLimits.from_env()
    suffix = Path(filename).suffix.lower()
    if not text.strip():
        raise InputError(f"{filename}: the file is empty.")
    if len(text) > limits.max_bytes:  # characters: a lower bound of the bytes
        raise InputError(f"{filename}: the text is longer than the {_megabytes(limits.max_bytes)} a dataset may have "
                         "here (HEADSCOPE_UPLOAD_MAX_MB): split it or keep fewer rows.")
    if suffix == ".csv":
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
            header = next(csv.reader(io.StringIO(text)), [])
        except csv.Error as error:
            raise InputError(f"{filename}: not valid CSV ({error}).") from error
    elif suffix in (".json", ".jsonl"):
        try:
            data = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines()
                                                                if line.strip()]
        except json.JSONDecodeError as error:
            raise InputError(f"{filename}: not valid JSON ({error.msg} at line {error.lineno}).") from error
        except RecursionError:
            raise InputError(f"{filename}: not valid JSON (nested too deeply).") from None
        if isinstance(data, dict) and isinstance(data.get("prompts"), list):
            data = data["prompts"]
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise InputError(f"{filename}: expected a list of objects with {', '.join(REQUIRED_COLUMNS)}, e.g. "
                             '[{"prompt": "1 2 3 4 ", "correct": "5", "incorrect": "4"}].')
        rows = data
        header = sorted({key for row in rows for key in row})
    else:
        raise InputError(f"{filename}: unsupported file type {suffix or '(none)'}: use .csv or .json.")
    if not rows:
        raise InputError(f"{filename}: the dataset has no rows.")
    if len(rows) > limits.max_rows:
        raise InputError(f"{filename}: {len(rows):,} rows, more than the {limits.max_rows:,} a dataset may have here "
                         "(HEADSCOPE_UPLOAD_MAX_ROWS): keep fewer rows.")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{filename}: missing column(s) {', '.join(missing)}; expected prompt, correct, incorrect "
                         "and optionally corrupted_prompt.")
    items = []
    problems = []
    for number, row in enumerate(rows, start=1):
        values = {key: row.get(key) for key in (*REQUIRED_COLUMNS, "corrupted_prompt")}
        not_text = [key for key in (*REQUIRED_COLUMNS, "corrupted_prompt")
                    if values[key] is not None and not isinstance(values[key], str)]
        if not_text:
            problems.append(f"row {number}: {', '.join(not_text)} must be text in quotes, not "
                            f"{json.dumps(values[not_text[0]])[:40]}")
            continue
        empty = [key for key in REQUIRED_COLUMNS if not values[key]]
        if empty:
            problems.append(f"row {number}: empty {', '.join(empty)}")
            continue
        corrupted = values["corrupted_prompt"]
        items.append(PromptItem(values["prompt"], values["correct"], values["incorrect"], corrupted or None))
    if problems:
        raise InputError(f"{filename}: " + "; ".join(problems[:10]) + (" …" if len(problems) > 10 else ""))
    with_corrupted = sum(1 for item in items if item.corrupted_prompt)
    if 0 < with_corrupted < len(items):
        raise InputError(f"{filename}: corrupted_prompt is given for {with_corrupted} of {len(items)} rows: give it "
                         "for every row or for none.")
    return Dataset(name=Path(filename).name, items=tuple(items))


def load_dataset_file(path: str | Path, limits: UploadLimits | None = None) -> Dataset:
    """A dataset file from disk (the CLI's --dataset), under the same limits as an upload; never more than the byte
    limit is read."""
    path = Path(path)
    limits = limits or UploadLimits.from_env()
    try:
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
            raise InputError(f"Cannot read dataset {str(path)!r}: it {what}.")
        with path.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)
    except OSError as error:
        raise InputError(f"Cannot read dataset {str(path)!r}: {error.strerror}.") from error
    return load_dataset_bytes(data, path.name, limits)


# ---------------------------------------------------------------------------------------------------------------
# Encoding on the model's tokens


def fit_to_tokenizer(model: Backend, item: PromptItem) -> PromptItem:
    """Move a leading space from the answers into the prompts where the tokenizer would emit it as its own token."""
    ids, _ = continuation_ids(model, item.prompt, item.correct)
    first = token_text(model.raw_tokens(ids[:1])[0], True) if ids else ""
    if not (item.correct.startswith(" ") and len(ids) > 1 and is_whitespace_token(first)):
        return item
    return replace(
        item,
        prompt=item.prompt + " ",
        correct=item.correct[1:],
        incorrect=item.incorrect[1:] if item.incorrect.startswith(" ") else item.incorrect,
        corrupted_prompt=item.corrupted_prompt + " " if item.corrupted_prompt else None,
    )


def _first_token(model: Backend, prompt: str, answer: str, row: int, role: str, warnings: list[str]) -> int:
    ids, _ = continuation_ids(model, prompt, answer)
    if not ids:
        raise InputError(f"Row {row}: the {role} answer {answer!r} has no tokens.")
    if len(ids) > 1 and len(warnings) < 5:
        warnings.append(f"Row {row}: the {role} answer {answer!r} is {len(ids)} tokens; its first token is used.")
    return ids[0]


def _member_positions(model: Backend, prompt: str, spans: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """Token positions (BOS included) of the token that completes each member's last character: the last token whose
    span holds it (SentencePiece gives its inserted leading "▁" the span of the first character, and byte-fallback
    tokens of one character share its span)."""
    if not spans:
        return ()
    _, offsets = model.encode_with_offsets(prompt)
    shift = 1 if model.prepends_bos else 0
    positions = []
    for _, end in spans:
        hits = [i for i, (a, b) in enumerate(offsets) if a < end <= b]
        positions.append(hits[-1] + shift if hits else -1)
    return tuple(positions)


def encode_dataset(
    model: Backend, dataset: Dataset, fit: bool = True, drop_uneven: bool = False
) -> EncodedDataset:
    """Token ids for a run. All prompts (and corrupted prompts) must have one token length.

    Built-in tasks pass drop_uneven=True: prompts whose length differs from the most common one are dropped (their
    members tokenize differently), and the drop is reported. For user datasets a mismatch is an error naming rows.
    """
    items = [fit_to_tokenizer(model, item) if fit else item for item in dataset.items]
    clean_ids = [model.input_ids(item.prompt) for item in items]
    corrupted_ids = [model.input_ids(item.corrupted_prompt) if item.corrupted_prompt else None for item in items]
    lengths = [len(ids) for ids in clean_ids]
    common = Counter(lengths).most_common(1)[0][0]
    uneven = [i for i, ids in enumerate(clean_ids)
              if len(ids) != common or (corrupted_ids[i] is not None and len(corrupted_ids[i]) != common)]
    notes = list(dataset.notes)
    if uneven and not drop_uneven:
        details = []
        for i in uneven[:10]:
            detail = f"row {i + 1} ({lengths[i]} tokens"
            if corrupted_ids[i] is not None and len(corrupted_ids[i]) != lengths[i]:
                detail += f", corrupted {len(corrupted_ids[i])}"
            details.append(detail + ")")
        raise InputError(
            f"Prompts in one run must have equal token length (BOS included); most have {common} tokens, but "
            + ", ".join(details) + (" …" if len(uneven) > 10 else "") + " differ."
        )
    if uneven:
        notes.append(f"Dropped {len(uneven)} prompt(s) whose token length differs from {common}.")
        keep = [i for i in range(len(items)) if i not in set(uneven)]
        items = [items[i] for i in keep]
        clean_ids = [clean_ids[i] for i in keep]
        corrupted_ids = [corrupted_ids[i] for i in keep]
    if not items:
        raise InputError("No prompts are left to run.")
    if model.info.n_ctx < common:
        raise InputError(f"The prompts are {common} tokens long, more than the model's context ({model.info.n_ctx}).")
    warnings: list[str] = []
    correct = [_first_token(model, it.prompt, it.correct, n, "correct", warnings) for n, it in enumerate(items, 1)]
    incorrect = [_first_token(model, it.prompt, it.incorrect, n, "incorrect", warnings)
                 for n, it in enumerate(items, 1)]
    same = [n for n, (c, i) in enumerate(zip(correct, incorrect, strict=True), 1) if c == i]
    if same:
        rows = f"Row {same[0]}" if len(same) == 1 else f"Rows {', '.join(map(str, same[:10]))}"
        raise InputError(f"{rows}: correct and incorrect answers start with the same token, so their logit difference "
                         "is always 0.")
    labels = tuple(t.display for t in _describe(model, clean_ids[0]))
    fitted = Dataset(name=dataset.name, items=tuple(items), notes=tuple(notes), builtin=dataset.builtin)
    has_corrupted = all(ids is not None for ids in corrupted_ids)
    return EncodedDataset(
        dataset=fitted,
        clean=model.tensor(clean_ids),
        corrupted=model.tensor(corrupted_ids) if has_corrupted else None,
        correct_ids=torch.tensor(correct, device=model.device),
        incorrect_ids=torch.tensor(incorrect, device=model.device),
        token_labels=labels,
        member_positions=tuple(_member_positions(model, it.prompt, it.member_spans) for it in items),
        warnings=tuple(warnings),
    )


def _describe(model: Backend, ids: list[int]):
    from headscope.tokens import TokenDescriber

    return TokenDescriber(model).describe(ids)


def subset(model: Backend, encoded: EncodedDataset, keep: Sequence[int], note: str) -> EncodedDataset:
    """The encoded dataset restricted to prompts `keep` (e.g. those the model gets right); its token labels are the
    new first prompt's."""
    index = torch.tensor(list(keep), dtype=torch.long, device=encoded.clean.device)
    items = tuple(encoded.dataset.items[i] for i in keep)
    dataset = Dataset(encoded.dataset.name, items, (*encoded.dataset.notes, note), encoded.dataset.builtin)
    return replace(
        encoded,
        dataset=dataset,
        clean=encoded.clean[index],
        corrupted=encoded.corrupted[index] if encoded.corrupted is not None else None,
        correct_ids=encoded.correct_ids[index],
        incorrect_ids=encoded.incorrect_ids[index],
        member_positions=tuple(encoded.member_positions[i] for i in keep),
        token_labels=tuple(t.display for t in _describe(model, encoded.clean[keep[0]].tolist())),
    )


def prepare_dataset(model: Backend, dataset: Dataset) -> EncodedDataset:
    """Encode for this model; built-in tasks drop prompts of another token length, user datasets must be even."""
    builtin = dataset.builtin or dataset.name in TASKS
    return encode_dataset(model, dataset, fit=builtin, drop_uneven=builtin)
