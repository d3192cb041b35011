"""Head-type scores over every head: find previous-token, duplicate-token, induction, sequence-member, successor and
copying heads in any model.

Pattern scores follow TransformerLens' head detector (`detect_head`, error measure "mul", nothing excluded):
score = sum(pattern · detection_pattern) / sum(pattern), averaged over sequences. They are computed here in one
forward pass per sequence for all heads, each layer's pattern reduced to its scores as soon as it exists.

Successor and copying scores read each head's effective OV circuit W_U · OV · MLP0(W_E), after the successor-heads
study: on ordinal lists, does the head's output on a member give the largest logit (among the list's members) to the
next member (successor) or to the member itself (copying)?

Results are cached on disk (kind "head-scores") under the model's identity, the score, a hash of its inputs and the
engine version.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from headscope.errors import HeadscopeError, InputError
from headscope.heads import PATTERN_SCORE_NAMES, SCORE_NAMES, SCORE_TITLES, HeadRef, kv_head_of
from headscope.results_cache import ResultsCache
from headscope.tokens import continuation_ids

if TYPE_CHECKING:
    from headscope.backends.base import Backend

CACHE_KIND = "head-scores"
ENGINE_VERSION = "head-scores-1"

# Generated sequences: BOS + R random tokens, repeated once (as in the induction-head literature).
DEFAULT_N_SEQUENCES = 4
DEFAULT_REPEAT_LENGTH = 20
DEFAULT_SEED = 0
_WORD_TOKEN = re.compile(r"^[Ġ▁][A-Za-z]{3,8}$")  # a leading space (byte-level or SentencePiece) + 3–8 letters

# Ordinal lists of the successor-heads study; each member is written with a leading space.
ORDINAL_LISTS: dict[str, tuple[str, ...]] = {
    "numbers 1–200": tuple(str(i) for i in range(1, 201)),
    "number words": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                     "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
                     "twenty"),
    "ordinals": ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"),
    "days": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "months": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December"),
    "letters A–Z": tuple(chr(code) for code in range(ord("A"), ord("Z") + 1)),
}
_MEMBER_CONTEXT = "The"  # members are tokenized after this prefix, as they appear mid-text


@dataclass(frozen=True)
class ListUsage:
    """Whether an ordinal list is usable for a tokenizer: every member (with its leading space) one token."""

    name: str
    members: tuple[str, ...]
    token_ids: tuple[int, ...]  # one per member when usable, else empty
    reason: str = ""  # why not usable

    @property
    def usable(self) -> bool:
        return not self.reason

    def to_json(self) -> dict:
        return {"name": self.name, "usable": self.usable, "members": len(self.members), "reason": self.reason}


@dataclass(frozen=True)
class HeadScores:
    """scores[layer, head] of one score over every head, with what it was computed on."""

    model: str
    score: str
    scores: np.ndarray  # [layer, head] float64
    n_kv_heads: int
    inputs: str  # what was scored, in words
    lists: tuple[ListUsage, ...] = ()  # successor / copying: the lists tried, usable or not
    notes: tuple[str, ...] = ()
    compute_seconds: float = 0.0  # how long the computation took when it ran
    seconds: float = 0.0  # how long this call took (a cache hit is fast)
    cached: bool = False
    key: dict = field(default_factory=dict, compare=False)

    @property
    def title(self) -> str:
        return SCORE_TITLES[self.score]

    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.scores.shape[1])

    def kv_head(self, head: int) -> int:
        return kv_head_of(head, self.n_heads, self.n_kv_heads)

    def top_heads(self, k: int = 8) -> tuple[HeadRef, ...]:
        """The k highest-scoring heads, best first (ties: lower layer, then lower head first)."""
        flat = [(-float(self.scores[layer, head]), layer, head)
                for layer in range(self.n_layers) for head in range(self.n_heads)
                if np.isfinite(self.scores[layer, head])]
        return tuple(HeadRef(layer, head) for _, layer, head in sorted(flat)[:k])

    def rows(self) -> list[dict]:
        """One row per head (layer, head, kv_head, score), best first."""
        order = sorted((-float(self.scores[layer, head]), layer, head)
                       for layer in range(self.n_layers) for head in range(self.n_heads))
        return [{"layer": layer, "head": head, "kv_head": self.kv_head(head), "score": -negative}
                for negative, layer, head in order]

    @property
    def usable_lists(self) -> tuple[str, ...]:
        return tuple(usage.name for usage in self.lists if usage.usable)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "score": self.score,
            "layers": self.n_layers,
            "heads": self.n_heads,
            "scores": [[float(v) for v in row] for row in self.scores],
            "seconds": self.seconds,
            "compute_seconds": self.compute_seconds,
            "cached": self.cached,
            "inputs": self.inputs,
            "lists": [usage.to_json() for usage in self.lists],
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------------------------
# Pattern scores: TransformerLens' head detector, all heads in one forward pass per sequence


def detection_pattern(name: str, tokens: torch.Tensor) -> torch.Tensor:
    """TransformerLens' detection pattern [dest, src] for tokens[1, pos] (the library's own builders)."""
    from transformer_lens import head_detector

    builders = {
        "previous-token": head_detector.get_previous_token_head_detection_pattern,
        "duplicate-token": head_detector.get_duplicate_token_head_detection_pattern,
        "induction": head_detector.get_induction_head_detection_pattern,
    }
    if name not in builders:
        raise InputError(f"Unknown pattern score {name!r}: choose one of {', '.join(builders)}.")
    return builders[name](tokens.cpu())


def pattern_scores_on(model: Backend, name: str, texts: Sequence[str]) -> np.ndarray:
    """scores[layer, head] = mean over texts of sum(pattern · detection) / sum(pattern): detect_head's "mul"."""
    per_text = []
    for text in texts:
        ids = model.input_ids(text)
        check_detector_length(model, len(ids))
        tokens = model.tensor([ids])
        detection = detection_pattern(name, tokens).to(device=tokens.device, dtype=torch.float32)

        def reduce(layer: int, pattern: torch.Tensor, detection: torch.Tensor = detection) -> torch.Tensor:
            heads = pattern[0].float()  # [head, dest, src]
            return ((heads * detection).sum((-2, -1)) / heads.sum((-2, -1))).cpu()

        by_layer = model.reduce_attention_patterns(tokens, reduce)
        per_text.append(torch.stack([by_layer[layer] for layer in range(model.info.n_layers)]))
    return torch.stack(per_text).mean(0).double().numpy()


def check_detector_length(model: Backend, n_tokens: int) -> None:
    """detect_head's own limit: 1 < tokens (BOS included) < context length."""
    if not 1 < n_tokens < model.info.n_ctx:
        raise InputError(
            f"The prompt is {n_tokens} tokens long (BOS included); pattern scores need more than 1 and fewer than "
            f"{model.info.n_ctx} (the model's context length)."
        )


@lru_cache(maxsize=4)
def _word_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Vocabulary entries that are a leading space plus 3–8 ASCII letters: they re-tokenize as themselves."""
    return tuple(sorted(i for token, i in tokenizer.get_vocab().items() if _WORD_TOKEN.match(token)))


def generated_sequences(
    model: Backend,
    n_sequences: int = DEFAULT_N_SEQUENCES,
    repeat_length: int = DEFAULT_REPEAT_LENGTH,
    seed: int = DEFAULT_SEED,
) -> tuple[str, ...]:
    """Texts of `repeat_length` random word tokens repeated twice, each re-tokenizing to exactly those tokens (so
    detect_head, which takes strings, sees the same input). The model adds BOS in front."""
    if not 1 <= n_sequences <= 64 or not 2 <= repeat_length <= 512:
        raise InputError("Generated sequences: use 1–64 sequences of 2–512 random tokens.")
    check_detector_length(model, 2 * repeat_length + (1 if model.prepends_bos else 0))
    pool = _word_token_ids(model.tokenizer)
    if len(pool) < repeat_length:
        raise HeadscopeError(f"{model.info.name}'s vocabulary has only {len(pool)} plain word tokens; generated "
                             "sequences need more: score the pattern scores on a prompt instead.")
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(n_sequences):
        for _attempt in range(100):
            ids = rng.sample(pool, repeat_length) * 2
            text = _round_trip_text(model, ids)
            if text is not None:
                texts.append(text)
                break
        else:
            raise HeadscopeError(f"Could not draw random tokens that re-tokenize to themselves for {model.info.name}: "
                                 "score the pattern scores on a prompt instead.")
    return tuple(texts)


def _round_trip_text(model: Backend, ids: list[int]) -> str | None:
    """A text whose tokens are exactly `ids`, or None. SentencePiece tokenizers add the first word's space
    themselves, so the text without its leading space is tried too."""
    from headscope.tokens import token_text

    joined = "".join(token_text(raw, True) for raw in model.raw_tokens(ids))
    for text in (joined, joined.lstrip(" ")):
        if model.encode(text) == ids:
            return text
    return None


# ---------------------------------------------------------------------------------------------------------------
# Sequence-member score: attention from each member of a task prompt to the member before it


def task_prompts(model: Backend, task: str = "digits", n_prompts: int = 16, length: int = 4, seed: int = 0):
    """The task's distinct prompts, encoded on the model's real input (BOS included), members located."""
    from headscope.tasks import Dataset, build_task_dataset, encode_dataset

    dataset = build_task_dataset(task, n_prompts, length, seed, model=model)
    seen: set[str] = set()
    distinct = []
    for item in dataset.items:
        if item.prompt not in seen:
            seen.add(item.prompt)
            distinct.append(item)
    return encode_dataset(model, Dataset(dataset.name, tuple(distinct), dataset.notes), drop_uneven=True)


def sequence_member_scores(model: Backend, encoded) -> tuple[np.ndarray, int]:
    """scores[layer, head] = mean over prompts p and members i ≥ 1 of pattern[p, dest=pos(member i),
    src=pos(member i−1)]; returns the scores and the number of (member, previous member) pairs."""
    batch, dest, src = [], [], []
    for prompt, positions in enumerate(encoded.member_positions):
        for before, after in pairwise(positions):
            if before >= 0 and after >= 0:
                batch.append(prompt)
                dest.append(after)
                src.append(before)
    if not batch:
        raise InputError("The task prompts hold no consecutive members to score.")
    device = encoded.clean.device
    index = [torch.tensor(values, device=device) for values in (batch, dest, src)]

    def reduce(layer: int, pattern: torch.Tensor) -> torch.Tensor:  # pattern[batch, head, dest, src]
        picked = pattern[index[0], :, index[1], index[2]]  # [pair, head]
        return picked.float().mean(0).cpu()

    by_layer = model.reduce_attention_patterns(encoded.clean, reduce)
    scores = torch.stack([by_layer[layer] for layer in range(model.info.n_layers)]).double().numpy()
    return scores, len(batch)


# ---------------------------------------------------------------------------------------------------------------
# Successor and copying scores: the effective OV circuit on ordinal lists


def list_usage(model: Backend, lists: Mapping[str, Sequence[str]] | None = None) -> tuple[ListUsage, ...]:
    """Each list with its members' token ids, or why it cannot be used (a member that is not one token)."""
    usages = []
    for name, members in (lists or ORDINAL_LISTS).items():
        members = tuple(members)
        if len(members) < 2:
            usages.append(ListUsage(name, members, (), "fewer than two members"))
            continue
        ids, split = [], []
        for member in members:
            member_ids, _ = continuation_ids(model, _MEMBER_CONTEXT, " " + member)
            if len(member_ids) == 1:
                ids.append(member_ids[0])
            else:
                split.append(member)
        if split:
            shown = ", ".join(repr(" " + m) for m in split[:4]) + (" …" if len(split) > 4 else "")
            usages.append(ListUsage(name, members, (), f"{len(split)} of {len(members)} members are several tokens "
                                                       f"for this tokenizer ({shown})"))
        elif len(set(ids)) < len(ids):
            usages.append(ListUsage(name, members, (), "two members share one token"))
        else:
            usages.append(ListUsage(name, members, tuple(ids)))
    return tuple(usages)


def ov_list_scores(model: Backend, usages: Sequence[ListUsage]) -> tuple[np.ndarray, np.ndarray]:
    """(successor[layer, head], copying[layer, head]) over the usable lists.

    For each member t: out = OV_head(MLP0(W_E[t])) (layer 0's attention left out), logits = W_U · final_norm(out)
    restricted to the members of t's list. Successor: fraction of consecutive pairs (a_i, a_i+1), no wrap-around,
    where a_i+1 has the largest logit. Copying: fraction of members whose own logit is the largest."""
    usable = [usage for usage in usages if usage.usable]
    if not usable:
        raise InputError("None of the ordinal lists is usable for this tokenizer (every list has a member that is "
                         "several tokens): successor and copying scores need single-token members.")
    all_ids = torch.tensor([i for usage in usable for i in usage.token_ids], dtype=torch.long, device=model.device)
    spans, start = [], 0
    for usage in usable:
        spans.append((start, start + len(usage.token_ids)))
        start += len(usage.token_ids)
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    successor_hits = np.zeros((n_layers, n_heads))
    copying_hits = np.zeros((n_layers, n_heads))
    effective = model.mlp0_effective_embedding(all_ids)  # [member, d_model]
    for layer in range(n_layers):
        logits = model.ov_unembed_logits(layer, effective, all_ids)  # [head, member, candidate member]
        for begin, end in spans:
            best = logits[:, begin:end, begin:end].argmax(-1).cpu()  # [head, member] index within the list
            positions = torch.arange(end - begin)
            successor_hits[layer] += (best[:, :-1] == positions[1:]).sum(-1).numpy()
            copying_hits[layer] += (best == positions).sum(-1).numpy()
    n_pairs = sum(end - begin - 1 for begin, end in spans)
    n_members = sum(end - begin for begin, end in spans)
    return successor_hits / n_pairs, copying_hits / n_members


# ---------------------------------------------------------------------------------------------------------------
# One entry point, cached


@dataclass(frozen=True)
class _Plan:
    """What a score will be computed on: the cache key's inputs, a description, and the computation."""

    inputs: dict
    description: str
    compute: Callable[[], tuple[np.ndarray, tuple[str, ...]]]
    lists: tuple[ListUsage, ...] = ()


def _content_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class ScoreInputs:
    """What the caller chose to score on; each score reads the part it needs."""

    prompt: str | None
    task: str
    lists: Mapping[str, Sequence[str]] | None
    n_sequences: int
    repeat_length: int
    seed: int


def _pattern_plan(model: Backend, score: str, inputs: ScoreInputs) -> _Plan:
    """detect_head's scores on generated sequences (default) or on the user's prompt."""
    if inputs.prompt is not None:
        if inputs.prompt == "":
            raise InputError("The prompt is empty: give some text to score the heads on.")
        check_detector_length(model, len(model.input_ids(inputs.prompt)))
        texts: tuple[str, ...] = (inputs.prompt,)
        description = f"the prompt {inputs.prompt!r} (detect_head defaults: error measure 'mul', nothing excluded)"
    else:
        texts = generated_sequences(model, inputs.n_sequences, inputs.repeat_length, inputs.seed)
        description = (f"{len(texts)} generated sequences: BOS + {inputs.repeat_length} random word tokens repeated "
                       f"twice (seed {inputs.seed}); mean of the per-sequence scores")
    token_ids = [model.input_ids(text) for text in texts]
    return _Plan(
        inputs={"texts": _content_hash([list(texts), token_ids])},
        description=description,
        compute=lambda: (pattern_scores_on(model, score, texts), ()),
    )


def _no_prompt(score: str, inputs: ScoreInputs, reads: str) -> None:
    if inputs.prompt is not None:
        raise InputError(f"--prompt applies to the pattern scores ({', '.join(PATTERN_SCORE_NAMES)}); the {score} "
                         f"score reads {reads}.")


def _sequence_plan(model: Backend, score: str, inputs: ScoreInputs) -> _Plan:
    """Attention from each member of a task prompt to the member before it."""
    _no_prompt(score, inputs, "the task prompts (choose them with the task).")
    encoded = task_prompts(model, inputs.task)

    def compute_sequence() -> tuple[np.ndarray, tuple[str, ...]]:
        scores, n_pairs = sequence_member_scores(model, encoded)
        return scores, (f"{n_pairs} (member, previous member) pairs",)

    return _Plan(
        inputs={"task": inputs.task, "prompts": encoded.dataset.content_hash,
                "tokens": _content_hash(encoded.clean.tolist()), "members": list(encoded.member_positions)},
        description=(f"{encoded.n_prompts} distinct {inputs.task} prompts of {encoded.seq_len} tokens (BOS "
                     "included): attention from each member to the member before it"),
        compute=compute_sequence,
    )


def _ov_plan(model: Backend, score: str, inputs: ScoreInputs) -> _Plan:
    """The effective OV circuit W_U·OV·MLP0(W_E) on the ordinal lists usable for this tokenizer."""
    _no_prompt(score, inputs, "ordinal lists through each head's OV circuit.")
    usages = list_usage(model, inputs.lists)
    usable = [usage.name for usage in usages if usage.usable]

    def compute_ov() -> tuple[np.ndarray, tuple[str, ...]]:
        successor, copying = ov_list_scores(model, usages)
        return (successor if score == "successor" else copying), ()

    what = "consecutive pairs whose successor gets" if score == "successor" else "members whose own token gets"
    return _Plan(
        inputs={"lists": _content_hash([[u.name, list(u.members), list(u.token_ids)] for u in usages])},
        description=(f"effective OV circuit W_U·OV·MLP0(W_E) on the lists {', '.join(usable) or '(none usable)'}: "
                     f"fraction of {what} the largest logit among its list's members"),
        compute=compute_ov,
        lists=usages,
    )


ScoreKind = Literal["pattern", "task", "ov"]


@dataclass(frozen=True)
class HeadScoreSpec:
    """A head-type score: its name and title (headscope.heads), what kind of input it reads, and how it is planned."""

    name: str
    title: str
    kind: ScoreKind
    plan: Callable[[Backend, str, ScoreInputs], _Plan]


_PLANNERS: dict[ScoreKind, Callable[[Backend, str, ScoreInputs], _Plan]] = {
    "pattern": _pattern_plan, "task": _sequence_plan, "ov": _ov_plan,
}
_KINDS: dict[str, ScoreKind] = {"previous-token": "pattern", "duplicate-token": "pattern", "induction": "pattern",
                                "sequence": "task", "successor": "ov", "copying": "ov"}
HEAD_SCORES: dict[str, HeadScoreSpec] = {
    name: HeadScoreSpec(name, SCORE_TITLES[name], _KINDS[name], _PLANNERS[_KINDS[name]]) for name in SCORE_NAMES
}


def _plan(model: Backend, score: str, inputs: ScoreInputs) -> _Plan:
    spec = HEAD_SCORES.get(score)
    if spec is None:
        raise InputError(f"Unknown score {score!r}: choose one of {', '.join(SCORE_NAMES)}.")
    return spec.plan(model, score, inputs)


def cache_key(model: Backend, score: str, plan_inputs: dict) -> dict:
    return {**model.identity, "score": score, "inputs": _content_hash(plan_inputs), "engine": ENGINE_VERSION}


def score_heads(
    model: Backend,
    score: str,
    *,
    prompt: str | None = None,
    task: str = "digits",
    lists: Mapping[str, Sequence[str]] | None = None,
    n_sequences: int = DEFAULT_N_SEQUENCES,
    repeat_length: int = DEFAULT_REPEAT_LENGTH,
    seed: int = DEFAULT_SEED,
    cache: ResultsCache | None = None,
    use_cache: bool = True,
    compute: bool = True,
) -> HeadScores | None:
    """One score over every head, from the results cache when it holds it, else computed (and stored).

    With compute=False only the cache is read (None when the score has not been computed yet): cheap enough to call
    on every page render. `prompt` scores the pattern scores on that prompt instead of generated sequences.
    """
    started = time.perf_counter()
    plan = _plan(model, score, ScoreInputs(prompt, task, lists, n_sequences, repeat_length, seed))
    cache = cache or ResultsCache()
    key = cache_key(model, score, plan.inputs)
    expected_shape = (model.info.n_layers, model.info.n_heads)
    payload = cache.load(CACHE_KIND, key) if use_cache else None
    if payload is not None and np.asarray(payload["scores"]).shape == expected_shape:
        values = np.asarray(payload["scores"], dtype=np.float64)
        notes = tuple(payload.get("notes", ()))
        compute_seconds = float(payload.get("compute_seconds", 0.0))
        cached = True
    elif not compute:
        return None
    else:
        values, notes = plan.compute()
        compute_seconds = time.perf_counter() - started
        cached = False
        cache.store(CACHE_KIND, key, {"scores": values.tolist(), "notes": list(notes),
                                      "compute_seconds": compute_seconds})
    return HeadScores(
        model=model.info.name,
        score=score,
        scores=values,
        n_kv_heads=model.info.n_kv_heads,
        inputs=plan.description,
        lists=plan.lists,
        notes=notes,
        compute_seconds=compute_seconds,
        seconds=time.perf_counter() - started,
        cached=cached,
        key=key,
    )
