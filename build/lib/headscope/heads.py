"""Heads by name: `L.H` lists typed by a user, checked against the model's shape, candidate presets, GQA mapping.

Kept free of torch so that the command line can reject a malformed head list before any model loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headscope.errors import InputError

if TYPE_CHECKING:
    from headscope.backends.base import ModelInfo

MAX_SELECTED_HEADS = 64  # more would make an unreadable grid (and a slow export)

SCORE_NAMES = ("previous-token", "duplicate-token", "induction", "sequence", "successor", "copying")
PATTERN_SCORE_NAMES = ("previous-token", "duplicate-token", "induction")  # detect_head's three detectors
SCORE_TITLES = {
    "previous-token": "Previous-token score",
    "duplicate-token": "Duplicate-token score",
    "induction": "Induction score",
    "sequence": "Sequence-member score",
    "successor": "Successor score",
    "copying": "Copying score",
}

_HEAD = re.compile(r"^\(?\s*(\d+)\s*[.:]\s*(\d+)\s*\)?$")


@dataclass(frozen=True, order=True)
class HeadRef:
    """One attention head, written `layer.head` (0-based, as TransformerLens counts)."""

    layer: int
    head: int

    @property
    def label(self) -> str:
        return f"{self.layer}.{self.head}"

    def __str__(self) -> str:
        return self.label


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The key/value head that serves query head `head` under grouped-query attention (itself without GQA)."""
    return head // (n_heads // n_kv_heads)


def parse_head_list(text: str) -> tuple[HeadRef, ...]:
    """`"3.24, 5.25"` -> (HeadRef(3, 24), HeadRef(5, 25)); commas, semicolons or spaces separate heads.

    Only the syntax is checked here (no model needed); duplicates are dropped, the order kept.
    """
    items = [item for item in re.split(r"[,;\s]+", (text or "").strip()) if item]
    if not items:
        raise InputError("No heads given: write them as layer.head, e.g. 3.24, 5.25.")
    heads: list[HeadRef] = []
    bad = []
    for item in items:
        match = _HEAD.match(item)
        if match is None:
            bad.append(item)
            continue
        head = HeadRef(int(match.group(1)), int(match.group(2)))
        if head not in heads:
            heads.append(head)
    if bad:
        shown = ", ".join(repr(item) for item in bad[:5]) + (" …" if len(bad) > 5 else "")
        raise InputError(f"Cannot read {shown} as a head: write each head as layer.head (e.g. 3.24), "
                         "separated by commas.")
    return tuple(heads)


def check_heads(heads: Iterable[HeadRef | tuple[int, int]], info: ModelInfo) -> tuple[HeadRef, ...]:
    """The heads as HeadRefs, after checking each exists in the model and that there are not too many."""
    refs: list[HeadRef] = []
    for head in heads:
        ref = head if isinstance(head, HeadRef) else HeadRef(int(head[0]), int(head[1]))
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


def parse_heads(text: str, info: ModelInfo) -> tuple[HeadRef, ...]:
    """A typed head list, read and checked against the model's shape."""
    return check_heads(parse_head_list(text), info)


def format_heads(heads: Iterable[HeadRef | tuple[int, int]]) -> str:
    return ", ".join(f"{h[0]}.{h[1]}" if isinstance(h, tuple) else h.label for h in heads)


# ---------------------------------------------------------------------------------------------------------------
# Candidate presets


@dataclass(frozen=True)
class HeadPreset:
    """A named head list with where it comes from."""

    name: str
    heads: tuple[HeadRef, ...]
    source: str


_LLAMA2_SEQUENCE = (HeadRef(3, 24), HeadRef(5, 25))
_LLAMA2_SUCCESSOR = (HeadRef(16, 0), HeadRef(20, 17))
_LLAMA2_NEXT_ABLATION = (HeadRef(4, 3), HeadRef(8, 0), HeadRef(22, 25), HeadRef(6, 11))
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
