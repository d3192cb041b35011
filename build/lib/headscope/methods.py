"""Ablation methods as a small registry: a new method is one entry.

A method turns the corrupted run's activations of one component (a head's z, or an MLP's output) into the values that
replace that component's output in an ablated run. Every method is applied at every position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from headscope.errors import InputError

MethodName = Literal["zero", "mean", "resample"]


class ReplacementBuilder:
    """Builds one component's replacement from the corrupted run, a chunk of prompts at a time (so a large dataset
    never holds every corrupted activation at once). `result()` is broadcastable over the prompts of a run:
    `[1, pos, ...]` (one value per position), `[prompt, pos, ...]` (paired with each clean prompt) or None (zeros)."""

    def add(self, corrupted: torch.Tensor) -> None:
        """corrupted[prompt, pos, ...]: the next chunk of the corrupted prompts' activations."""

    def result(self) -> torch.Tensor | None:
        return None


class _Zeros(ReplacementBuilder):
    pass


class _PositionMean(ReplacementBuilder):
    """The position-wise mean over every corrupted prompt (summed in float64 across chunks: exact to rounding)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, corrupted: torch.Tensor) -> None:
        part = corrupted.double().sum(0, keepdim=True)
        self.total = part if self.total is None else self.total + part
        self.count += corrupted.shape[0]

    def result(self) -> torch.Tensor | None:
        return None if self.total is None else self.total / self.count


class _Paired(ReplacementBuilder):
    """Each clean prompt gets the activation of its own corrupted prompt."""

    def __init__(self) -> None:
        self.parts: list[torch.Tensor] = []

    def add(self, corrupted: torch.Tensor) -> None:
        self.parts.append(corrupted.clone())

    def result(self) -> torch.Tensor | None:
        return torch.cat(self.parts) if self.parts else None


@dataclass(frozen=True)
class AblationMethod:
    """How an ablated component's output is replaced: `builder()` makes the replacement from the corrupted run."""

    name: MethodName
    title: str
    help: str
    needs_corrupted: bool
    pairs_prompts: bool  # the replacement of clean prompt i comes from corrupted prompt i
    builder: Callable[[], ReplacementBuilder]

    def replacement(self, corrupted: torch.Tensor) -> torch.Tensor | None:
        """The replacement from all corrupted activations corrupted[prompt, pos, ...] at once."""
        builder = self.builder()
        builder.add(corrupted)
        value = builder.result()
        return None if value is None else value.to(corrupted.dtype)


ABLATION_METHODS: dict[str, AblationMethod] = {
    method.name: method
    for method in (
        AblationMethod("zero", "Zero", "the output is set to 0", False, False, _Zeros),
        AblationMethod("mean", "Mean",
                       "the output's position-wise mean over the corrupted prompts (the study's choice)",
                       True, False, _PositionMean),
        AblationMethod("resample", "Resample", "the output on the paired corrupted prompt (activation patching)",
                       True, True, _Paired),
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(ABLATION_METHODS)


def get_method(name: str) -> AblationMethod:
    """The method called `name`, or an InputError listing the known ones."""
    try:
        return ABLATION_METHODS[name]
    except KeyError:
        raise InputError(f"Unknown ablation method {name!r}: choose one of {', '.join(METHOD_NAMES)}.") from None


def methods_help() -> str:
    """One line per method, for help texts."""
    return " · ".join(f"{m.name}: {m.help}" for m in ABLATION_METHODS.values())
