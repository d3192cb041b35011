"""Heads by name: `L.H` lists typed by a user, checked against the model's shape, candidate presets, GQA mapping.

Kept free of torch so that the command line can reject a malformed head list before any model loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headscope.component import Component
from headscope.errors import InputError

if TYPE_CHECKING:
    from headscope.backends.base import ModelInfo

MAX_SELECTED_HEADS = 64  # more would make an unreadable grid (and a slow export)

@dataclass(frozen=True)
class ScoreName:
    """A head-type score as the CLI, the pages and the README name it: its name, title and one-line help."""

    name: str
    title: str
    help: str


SCORES: dict[str, ScoreName] = {
    score.name: score
    for score in (
        ScoreName("previous-token", "Previous-token score", "attention to the position just before (detect_head)"),
        ScoreName("duplicate-token", "Duplicate-token score",
                  "attention to earlier copies of the current token (detect_head)"),
        ScoreName("induction", "Induction score",
                  "attention to the token after an earlier copy of the current token (detect_head)"),
        ScoreName("sequence", "Sequence-member score",
                  "attention each member of a task's sequence pays to the member before it"),
        ScoreName("successor", "Successor score",
                  "how often the head's OV circuit promotes the next member of an ordinal list"),
        ScoreName("copying", "Copying score", "how often the head's OV circuit promotes the member itself"),
    )
}
SCORE_NAMES: tuple[str, ...] = tuple(SCORES)
PATTERN_SCORE_NAMES = ("previous-token", "duplicate-token", "induction")  # detect_head's three detectors
SCORE_TITLES = {name: score.title for name, score in SCORES.items()}


def scores_help() -> str:
    """One line naming every score with its help, for help texts."""
    return " · ".join(f"{s.name}: {s.help}" for s in SCORES.values())


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The key/value head that serves query head `head` under grouped-query attention (itself without GQA)."""
    return head // (n_heads // n_kv_heads)


def parse_head_list(text: str) -> tuple[Component, ...]:
    """`"3.24, 5.25"` -> (Component(3, 24), Component(5, 25)); commas, semicolons or spaces separate heads.

    Only the syntax is checked here (no model needed); duplicates are dropped, the order kept.
    """
    items = [item for item in re.split(r"[,;\s]+", (text or "").strip()) if item]
    if not items:
        raise InputError("No heads given: write them as layer.head, e.g. 3.24, 5.25.")
    heads: list[Component] = []
    bad = []
    for item in items:
        try:
            head = Component.parse(item)
        except ValueError:
            head = None
        if head is None or head.is_mlp:
            bad.append(item)
            continue
        if head not in heads:
            heads.append(head)
    if bad:
        shown = ", ".join(repr(item) for item in bad[:5]) + (" …" if len(bad) > 5 else "")
        raise InputError(f"Cannot read {shown} as a head: write each head as layer.head (e.g. 3.24), "
                         "separated by commas.")
    return tuple(heads)


def check_heads(heads: Iterable[Component | tuple[int, int]], info: ModelInfo) -> tuple[Component, ...]:
    """The heads as Components, after checking each is a head the model has and that there are not too many."""
    refs: list[Component] = []
    for head in heads:
        ref = head if isinstance(head, Component) else Component(int(head[0]), int(head[1]))
        if ref.is_mlp:
            raise InputError(f"{ref.label} is an MLP: pick heads (layer.head).")
        if ref not in refs:
            refs.append(ref)
    if not refs:
        raise InputError("No heads selected: pick a preset or type heads as layer.head, e.g. 3.24, 5.25.")
    outside = [ref for ref in refs if not (0 <= ref.layer < info.n_layers and 0 <= ref.head < info.n_heads)]
    if outside:
        names = ", ".join(ref.label for ref in outside[:8]) + (" …" if len(outside) > 8 else "")
        subject = f"Head {names} is" if len(outside) == 1 else f"Heads {names} are"
        raise InputError(f"{subject} out of range: {info.name} has layers 0–{info.n_layers - 1} and heads "
                         f"0–{info.n_heads - 1}.")
    if len(refs) > MAX_SELECTED_HEADS:
        raise InputError(f"{len(refs)} heads selected; show at most {MAX_SELECTED_HEADS} at a time.")
    return tuple(refs)


def parse_heads(text: str, info: ModelInfo) -> tuple[Component, ...]:
    """A typed head list, read and checked against the model's shape."""
    return check_heads(parse_head_list(text), info)


def format_heads(heads: Iterable[Component]) -> str:
    return ", ".join(h.label for h in heads)


# ---------------------------------------------------------------------------------------------------------------
# Candidate presets


@dataclass(frozen=True)
class HeadPreset:
    """A named head list with where it comes from."""

    name: str
    heads: tuple[Component, ...]
    source: str


_LLAMA2_SEQUENCE = (Component(3, 24), Component(5, 25))
_LLAMA2_SUCCESSOR = (Component(16, 0), Component(20, 17))
_LLAMA2_NEXT_ABLATION = (Component(4, 3), Component(8, 0), Component(22, 25), Component(6, 11))
STUDY = "the sequence-continuation study of Llama-2-7B (digits task, single-head mean ablation)"

LLAMA2_7B_PRESETS = (
    HeadPreset("Study: sequence-detection and successor heads", _LLAMA2_SEQUENCE + _LLAMA2_SUCCESSOR,
               f"(3,24), (5,25) sequence detection; (16,0), (20,17) successor — {STUDY}"),
    HeadPreset("Study: all eight candidates", _LLAMA2_SEQUENCE + _LLAMA2_SUCCESSOR + _LLAMA2_NEXT_ABLATION,
               f"the four above plus (4,3), (8,0), (22,25), (6,11), the next largest ablation effects — {STUDY}"),
)


def is_llama2_7b(info: ModelInfo) -> bool:
    """Llama-2-7B, base or chat, by name or source (hub id or folder)."""
    return any("llama-2-7b" in text.lower() for text in (info.name, info.source))


def model_presets(info: ModelInfo) -> tuple[HeadPreset, ...]:
    """The published candidate heads for this model (empty for models nobody has studied yet)."""
    if is_llama2_7b(info) and info.n_layers == 32 and info.n_heads == 32:
        return LLAMA2_7B_PRESETS
    return ()
