"""How the circuit search batches its candidates: a guess of each decision and the window of candidates per batch.

Only the work changes with these choices, never a decision (see headscope.circuit)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from headscope.component import Component
from headscope.errors import InputError

SPECULATIONS: tuple[str, ...] = ("adaptive", "kept", "none")


class Speculation:
    """Guesses each candidate's decision, and chooses how many candidates a batch takes. Never changes a decision.

    Modes: "adaptive" guesses per candidate — from its last score where one is known (a score taken on a nearby
    circuit: an earlier batch of this layer visit, corrected for the wrong guess that ended it, or the previous
    pass), else the majority of the recent decisions on components of its kind (MLPs and heads apart: on the models
    measured most heads go and most MLPs stay). Each guess has a chance q of being right, the recent rate of right
    guesses from the same source (a score, or the majority of MLPs or of heads). The window w minimises the expected
    time per decision: the batch's time per block, c0 + c1·w (fitted to the batches timed so far), over the expected
    number of decisions read off it, Σ_{k ≤ w} Π_{j < k} q_j. "kept" guesses "kept" for every candidate and takes
    the whole layer (the scheme with removals + 1 batches per layer visit); "none" takes one candidate per batch
    (the sequential order, still reusing the residual below)."""

    def __init__(self, mode: str, threshold: float) -> None:
        if mode not in SPECULATIONS:
            raise InputError(f"Unknown speculation {mode!r}: choose one of {', '.join(SPECULATIONS)}.")
        self.mode = mode
        self.threshold = threshold
        self.removal_rate = {"mlp": 0.5, "head": 0.5}  # exponential averages of the decisions, by kind
        self.right_rate = {"mlp": 0.5, "head": 0.5, "score": 0.8}  # ... of the guesses being right, by source
        self.hints: dict[Component, float] = {}  # a score of each candidate on a nearby circuit
        self._fit = np.zeros(5)  # n, Σg, Σt, Σg², Σg·t over timed batches (g groups, t seconds per block)

    def guess(self, component: Component) -> tuple[bool, str]:
        """(guessed removed, the guess's source)."""
        if self.mode != "adaptive":
            return False, "head"
        hint = self.hints.get(component)
        if hint is not None:
            return hint >= self.threshold, "score"
        kind = "mlp" if component.is_mlp else "head"
        return self.removal_rate[kind] > 0.5, kind

    def window(self, candidates: Sequence[Component]) -> int:
        if self.mode == "none":
            return 1
        if self.mode == "kept":
            return len(candidates)
        c0, c1 = self._costs()
        best, best_cost = 1, math.inf
        expected = 0.0  # decisions expected from a window of w
        reach = 1.0  # chance that every guess before the next candidate was right
        for w, component in enumerate(candidates, start=1):
            expected += reach
            reach *= min(max(self.right_rate[self.guess(component)[1]], 0.02), 0.995)
            cost = (c0 + c1 * w) / expected
            if cost < best_cost - 1e-12:
                best, best_cost = w, cost
        return best

    def _costs(self) -> tuple[float, float]:
        """(c0, c1): seconds per block of a batch's fixed part and per group; until two batch sizes are timed, the
        fixed part is taken as one group's worth."""
        n, sg, st, sgg, sgt = self._fit
        if n == 0:
            return 1.0, 1.0
        variance = sgg / n - (sg / n) ** 2
        if variance > 1e-9:
            c1 = (sgt / n - sg / n * st / n) / variance
            c0 = st / n - c1 * sg / n
            if c1 > 0 and c0 >= 0:
                return c0, c1
        per_group = st / (sg + n)
        return per_group, per_group

    def timed(self, groups: int, blocks: int, seconds: float) -> None:
        t = seconds / max(blocks, 1)
        self._fit += np.array([1.0, groups, t, groups * groups, groups * t])

    def decided(self, component: Component, source: str, guessed_removed: bool, removed: bool) -> None:
        kind = "mlp" if component.is_mlp else "head"
        self.removal_rate[kind] = 0.8 * self.removal_rate[kind] + 0.2 * float(removed)
        self.right_rate[source] = 0.8 * self.right_rate[source] + 0.2 * float(guessed_removed == removed)
