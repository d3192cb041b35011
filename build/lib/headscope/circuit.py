"""Finding the circuit: the study's iterative pruning, exact and fast.

Components: every head (L, H) and every MLP L. A circuit C is scored by 100 · LD(C) / LD_clean, where LD(C) is the
mean logit difference on the clean prompts with every component outside C ablated at once (the method's values: the
position-wise mean over the corrupted prompts by default; zero and resample too). A pass visits the layers from last
to first, within a layer the MLP first, then heads 0 … H−1, and removes a component for good when the circuit without
it still scores ≥ the threshold. Passes repeat until one removes nothing (or stop after one).

Exactly that sequential algorithm, made cheap without changing any decision:

- Reuse below the visited layer. While layer L is visited, the removed set S changes only at layers ≥ L (a pass goes
  down, and has not yet reached the layers below L), so the residual entering L with S applied is fixed. The residual
  entering every layer is computed once per pass (headscope.engine.run_with_ablations with S ablated); a candidate at
  layer L then runs only the blocks from L up (run_joined_groups), ablating S's components from L up and itself.
- Speculative batches. The next w undecided candidates of a layer are evaluated in one batch, each under a guess of
  the decisions before it in the batch (group i ablates S, the earlier candidates guessed "removed", and candidate i).
  Decisions are read in visiting order up to and including the first wrong guess — each of those was computed on the
  circuit the sequential algorithm has at that point — and the rest is re-batched. Guessing "kept" for all is the
  scheme of guessing nothing (batches per layer = removals + 1); the adaptive guess follows the recent decisions
  (on large models most components go, so the guess "removed" saves most batches), and w follows how often the
  guesses have been right. Every choice gives the same decisions; only the work differs.

Without a fast path (nnsight, NDIF) the same candidate groups go through the backend's general path (full forwards).
`plain_circuit` is the plain loop (one full forward per component per pass), kept as the benchmark's baseline.
`estimate_circuit` is an instant, labelled estimate (attribution-ranked greedy pruning) that never replaces the exact
result.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from headscope.ablation import (
    METRIC,
    attribution_sweep,
    check_method,
    chunk_values,
    logit_diff_task,
    prepare_dataset,
    shared_values,
)
from headscope.backends.base import AblationGroups, BlockRunner, LogitDiffTask
from headscope.engine import (
    EntryResiduals,
    ProgressCallback,
    WorkTimer,
    fast_runner,
    run_joined_groups,
    run_with_ablations,
)
from headscope.errors import InputError
from headscope.memory import block_bytes_per_token, element_size, plan_chunks
from headscope.methods import AblationMethod
from headscope.results_cache import ResultsCache
from headscope.tasks import Dataset, EncodedDataset

if TYPE_CHECKING:
    from headscope.backends.base import Backend

CACHE_KIND = "circuit"
ENGINE_VERSION = 1
DEFAULT_THRESHOLD = 80.0
THRESHOLD_RANGE = (0.0, 100.0)
Component = tuple[int, int | None]  # (layer, head), or (layer, None) for that layer's MLP
Speculation = Literal["adaptive", "kept", "none"]
SPECULATIONS: tuple[str, ...] = ("adaptive", "kept", "none")


def component_label(component: Component) -> str:
    """'5.2' for head 2 of layer 5 (as headscope writes heads), 'MLP 5' for layer 5's MLP."""
    layer, head = component
    return f"MLP {layer}" if head is None else f"{layer}.{head}"


def parse_component(text: str) -> Component:
    """The inverse of component_label."""
    text = text.strip()
    if text.upper().startswith("MLP"):
        return int(text[3:].strip()), None
    layer, head = text.split(".")
    return int(layer), int(head)


def visiting_order(n_layers: int, n_heads: int) -> list[Component]:
    """The order of one pass: layers from last to first; within a layer the MLP, then heads 0 … H−1."""
    order: list[Component] = []
    for layer in reversed(range(n_layers)):
        order.append((layer, None))
        order += [(layer, head) for head in range(n_heads)]
    return order


def check_threshold(threshold: float) -> float:
    low, high = THRESHOLD_RANGE
    if not isinstance(threshold, int | float) or not math.isfinite(threshold) or not low <= threshold <= high:
        raise InputError(f"The threshold is a percentage of the clean LD from {low:g} to {high:g}, got {threshold}.")
    return float(threshold)


# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class _OfComponent:
    """A record about one component: head (layer, head) or MLP (layer, None)."""

    layer: int
    head: int | None

    @property
    def component(self) -> Component:
        return (self.layer, self.head)

    @property
    def label(self) -> str:
        return component_label(self.component)


@dataclass(frozen=True)
class Removal(_OfComponent):
    """One removal: the component, and the circuit's LD and score right after it left."""

    ld_after: float
    score_after: float
    pass_number: int  # 1-based


@dataclass(frozen=True)
class KeptEffect(_OfComponent):
    """A kept component removed alone from the final circuit: the LD and score of the circuit without it."""

    ld_without: float
    score_without: float


@dataclass(frozen=True)
class CircuitSearch:
    """What the search computes (before labels and timing): the clean LD, the removals in order, the circuit's LD,
    the kept components' effects, passes, and the work done (candidate groups scored, batches, group-blocks run)."""

    clean_ld: float
    circuit_ld: float
    removals: tuple[Removal, ...]
    kept_effects: tuple[KeptEffect, ...]
    passes: int
    evaluations: int
    batches: int
    group_blocks: int
    path: str  # "fast", "general", "plain" or "estimate"
    reused: int = 0  # candidate circuits whose score was known from an identical one scored before

    def removed(self) -> set[Component]:
        return {r.component for r in self.removals}


@dataclass(frozen=True)
class CircuitResult:
    """A found circuit. heads[(layer, head)] and mlps[layer] are kept; removals are in the order they happened."""

    model: str
    task: str
    method: str
    threshold: float
    one_pass: bool
    estimate: bool  # True: the attribution-ranked estimate, not the exact search
    n_layers: int
    n_heads: int
    n_prompts: int
    seq_len: int
    clean_ld: float
    circuit_ld: float
    heads: tuple[tuple[int, int], ...]
    mlps: tuple[int, ...]
    removals: tuple[Removal, ...]
    kept_effects: tuple[KeptEffect, ...]
    passes: int
    seconds: float
    evaluations: int = 0
    batches: int = 0
    path: str = "fast"
    backend: str = "bridge"
    token_labels: tuple[str, ...] = ()
    first_prompt: str = ""
    notes: tuple[str, ...] = ()
    cached: bool = False
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """100 · LD(circuit) / LD_clean."""
        return 100.0 * self.circuit_ld / self.clean_ld

    @property
    def n_components(self) -> int:
        return self.n_layers * (self.n_heads + 1)

    @property
    def size(self) -> int:
        return len(self.heads) + len(self.mlps)

    def head_mask(self) -> np.ndarray:
        """kept[layer, head] (bool)."""
        mask = np.zeros((self.n_layers, self.n_heads), dtype=bool)
        for layer, head in self.heads:
            mask[layer, head] = True
        return mask

    def mlp_mask(self) -> np.ndarray:
        mask = np.zeros(self.n_layers, dtype=bool)
        mask[list(self.mlps)] = True
        return mask

    def effect_of(self, component: Component) -> KeptEffect | None:
        return next((e for e in self.kept_effects if e.component == component), None)

    def removal_of(self, component: Component) -> tuple[int, Removal] | None:
        """(1-based step, removal) of a removed component, or None when it is kept."""
        return next(((i, r) for i, r in enumerate(self.removals, 1) if r.component == component), None)

    @property
    def label(self) -> str:
        kind = "estimate" if self.estimate else "exact"
        passes = "one pass" if self.one_pass else "until stable"
        return f"{self.model} · {self.task} · {self.method} · ≥{self.threshold:g}% · {passes} · {kind}"

    def circuit_set(self) -> CircuitSet:
        return CircuitSet(self.label, frozenset(self.heads), frozenset(self.mlps), self.n_layers, self.n_heads)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "method": self.method,
            "threshold": self.threshold,
            "one_pass": self.one_pass,
            "estimate": self.estimate,
            "clean_ld": self.clean_ld,
            "circuit_ld": self.circuit_ld,
            "score": self.score,
            "heads": [list(h) for h in self.heads],
            "mlps": list(self.mlps),
            "removed": [{"component": r.label, "layer": r.layer, "head": r.head, "score_after": r.score_after,
                         "ld_after": r.ld_after, "pass": r.pass_number} for r in self.removals],
            "kept_effects": [{"component": e.label, "layer": e.layer, "head": e.head,
                              "score_without": e.score_without, "ld_without": e.ld_without}
                             for e in self.kept_effects],
            "passes": self.passes,
            "seconds": self.seconds,
            "cached": self.cached,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_prompts": self.n_prompts,
            "seq_len": self.seq_len,
            "evaluations": self.evaluations,
            "batches": self.batches,
            "path": self.path,
            "backend": self.backend,
            "token_labels": list(self.token_labels),
            "first_prompt": self.first_prompt,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], key: dict[str, Any] | None = None, cached: bool = True) -> CircuitResult:
        return cls(
            model=data["model"], task=data["task"], method=data["method"], threshold=float(data["threshold"]),
            one_pass=bool(data["one_pass"]), estimate=bool(data["estimate"]), n_layers=int(data["n_layers"]),
            n_heads=int(data["n_heads"]), n_prompts=int(data["n_prompts"]), seq_len=int(data["seq_len"]),
            clean_ld=float(data["clean_ld"]), circuit_ld=float(data["circuit_ld"]),
            heads=tuple((int(layer), int(head)) for layer, head in data["heads"]),
            mlps=tuple(int(layer) for layer in data["mlps"]),
            removals=tuple(Removal(int(r["layer"]), None if r["head"] is None else int(r["head"]),
                                   float(r["ld_after"]), float(r["score_after"]), int(r["pass"]))
                           for r in data["removed"]),
            kept_effects=tuple(KeptEffect(int(e["layer"]), None if e["head"] is None else int(e["head"]),
                                          float(e["ld_without"]), float(e["score_without"]))
                               for e in data["kept_effects"]),
            passes=int(data["passes"]), seconds=float(data["seconds"]), evaluations=int(data.get("evaluations", 0)),
            batches=int(data.get("batches", 0)), path=data.get("path", ""), backend=data.get("backend", ""),
            token_labels=tuple(data.get("token_labels", ())), first_prompt=data.get("first_prompt", ""),
            notes=tuple(data.get("notes", ())), cached=cached, key=key or {},
        )

    def download_json(self) -> str:
        """The circuit for others to use: {"heads": [[L, H], …], "mlps": [L, …], …} (what the compare view reads)."""
        payload = {"heads": [list(h) for h in self.heads], "mlps": list(self.mlps), "model": self.model,
                   "task": self.task, "method": self.method, "threshold": self.threshold, "score": self.score,
                   "clean_ld": self.clean_ld, "passes": self.passes, "estimate": self.estimate,
                   "n_layers": self.n_layers, "n_heads": self.n_heads,
                   "removed": [{"component": r.label, "score_after": r.score_after} for r in self.removals]}
        return json.dumps(payload, indent=1)


# ---------------------------------------------------------------------------------------------------------------
# The search


class _Evaluator:
    """Scores candidate circuits: ld[group] for groups that each ablate a set of components."""

    path = "?"

    def __init__(self, model: Backend) -> None:
        self.model = model
        info = model.info
        self.n_layers, self.n_heads = info.n_layers, info.n_heads
        self.batches = 0
        self.evaluations = 0
        self.group_blocks = 0
        self.reused = 0
        self.last_batch = 0  # groups the last evaluate() ran (0: every score was known)
        self._known: dict[bytes, float] = {}  # LD by ablated set: the same set gives the same LD

    def clean_ld(self) -> float:
        raise NotImplementedError

    def start_pass(self, heads: torch.Tensor, mlps: torch.Tensor) -> None:
        """The removed set at the start of a pass: heads[layer, head], mlps[layer] (bool)."""

    def evaluate(self, groups: AblationGroups, join_layers: Sequence[int]) -> np.ndarray:
        """ld[group]; every group's components below its join layer must be those of the pass's removed set.

        A set scored before is not run again (a pass that follows one ending in removals at high layers scores
        the components below them on the very circuit the earlier pass did)."""
        keys = [groups.heads[g].numpy().tobytes() + groups.mlps[g].numpy().tobytes() for g in range(len(groups))]
        todo = [g for g, key in enumerate(keys) if key not in self._known]
        self.reused += len(groups) - len(todo)
        self.last_batch = len(todo)
        if todo:
            self.batches += 1
            self.evaluations += len(todo)
            joins = [join_layers[g] for g in todo]
            self.group_blocks += self.blocks(joins)
            lds = self._evaluate(groups.select(todo), joins)
            for g, ld in zip(todo, lds, strict=True):
                self._known[keys[g]] = float(ld)
        return np.array([self._known[key] for key in keys])

    def blocks(self, join_layers: Sequence[int]) -> int:
        """Blocks run per prompt for these groups (a group joining at L runs the blocks from L up)."""
        return sum(self.n_layers - layer for layer in join_layers)

    def _evaluate(self, groups: AblationGroups, join_layers: Sequence[int]) -> np.ndarray:
        raise NotImplementedError


class _FastEvaluator(_Evaluator):
    """The fast path: residuals entering every layer with the pass's removed set, blocks run from the join layer."""

    path = "fast"

    def __init__(self, model: Backend, runner: BlockRunner, task: LogitDiffTask, method: AblationMethod,
                 timer: WorkTimer, chunk: int | None) -> None:
        super().__init__(model)
        self.runner, self.task, self.method, self.timer = runner, task, method, timer
        self.rows = [torch.arange(task.n_prompts)]  # every prompt at once: decisions need the whole LD
        self.chunk = chunk or self._groups_that_fit(model, task, method)
        shared = shared_values(model, runner, task, method, timer)
        self.values = [chunk_values(model, runner, task, method, rows, shared, timer) for rows in self.rows]
        self.entries: list[EntryResiduals] = []

    @staticmethod
    def _groups_that_fit(model: Backend, task: LogitDiffTask, method: AblationMethod) -> int:
        """Candidate circuits per in-flight batch next to what a pass keeps (the residual entering every layer, and
        paired replacement values for resample); refused before any work when not even one fits."""
        info = model.info
        element = element_size(model.dtype)
        seq = task.seq_len
        kept = (info.n_layers + 1) * seq * info.d_model * element * task.n_prompts
        if method.pairs_prompts:
            kept += info.n_layers * seq * (info.n_heads * info.d_head + info.d_model) * element * task.n_prompts
        per_group = block_bytes_per_token(info, model.dtype, seq) * seq * task.n_prompts
        return plan_chunks("A circuit search", 10**6, per_group, model.budget_bytes(), kept,
                           target=model.chunk_target() + kept).per_chunk

    def start_pass(self, heads: torch.Tensor, mlps: torch.Tensor) -> None:
        ablated = AblationGroups(heads[None].clone(), mlps[None].clone())
        self.entries = []
        for rows, values in zip(self.rows, self.values, strict=True):
            entries, _ = run_with_ablations(self.model, self.runner, self.task.clean[rows], values, ablated=ablated)
            self.entries.append(entries)
            self.timer.advance(self.n_layers, "the residual stream of the current circuit")

    def clean_ld(self) -> float:
        empty = torch.zeros(self.n_layers, self.n_heads, dtype=torch.bool)
        self.start_pass(empty, torch.zeros(self.n_layers, dtype=torch.bool))
        total = 0.0
        for rows, entries in zip(self.rows, self.entries, strict=True):
            final = entries.final
            with self.model.gate.hold(), torch.inference_mode():
                logits = self.runner.answer_logits(final[:, -1, :], self.task.answer_ids[rows].to(final.device))
            weights = self.task.weights[rows].to(logits.device, torch.float32)
            total += float(((logits[:, 0] - logits[:, 1]) * weights).sum().double())
        return total

    def _evaluate(self, groups: AblationGroups, join_layers: Sequence[int]) -> np.ndarray:
        lds = np.zeros(len(groups))
        for rows, entries, values in zip(self.rows, self.entries, self.values, strict=True):
            lds += run_joined_groups(self.model, self.runner, entries, groups, join_layers, values,
                                     self.task.answer_ids[rows], self.task.weights[rows], max_groups=self.chunk,
                                     timer=self.timer)
        return lds


class _GeneralEvaluator(_Evaluator):
    """The general path (every backend, remote ones included): one batched full forward per batch of groups."""

    path = "general"

    def __init__(self, model: Backend, task: LogitDiffTask, method: AblationMethod, timer: WorkTimer) -> None:
        super().__init__(model)
        self.task, self.method, self.timer = task, method, timer

    def clean_ld(self) -> float:
        empty = AblationGroups.empty(1, self.n_layers, self.n_heads)
        return float(self.model.ablated_logit_diffs(self.task, self.method, empty)[0])

    def blocks(self, join_layers: Sequence[int]) -> int:
        return self.n_layers * len(join_layers)  # full forwards

    def _evaluate(self, groups: AblationGroups, join_layers: Sequence[int]) -> np.ndarray:
        done = [0]

        def progress(groups_done: int) -> None:
            self.timer.advance((groups_done - done[0]) * self.n_layers, "full forward passes")
            done[0] = groups_done

        lds = self.model.ablated_logit_diffs(self.task, self.method, groups, progress=progress)
        if done[0] < len(groups):
            self.timer.advance((len(groups) - done[0]) * self.n_layers, "full forward passes")
        return lds


class _Speculation:
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
        kind = "mlp" if component[1] is None else "head"
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
        kind = "mlp" if component[1] is None else "head"
        self.removal_rate[kind] = 0.8 * self.removal_rate[kind] + 0.2 * float(removed)
        self.right_rate[source] = 0.8 * self.right_rate[source] + 0.2 * float(guessed_removed == removed)


def _group_masks(n: int, heads: torch.Tensor, mlps: torch.Tensor) -> AblationGroups:
    return AblationGroups(heads[None].repeat(n, 1, 1), mlps[None].repeat(n, 1))


def _mark(heads: torch.Tensor, mlps: torch.Tensor, component: Component) -> None:
    """Set a component in masks heads[layer, head], mlps[layer]."""
    layer, head = component
    if head is None:
        mlps[layer] = True
    else:
        heads[layer, head] = True


def _set(groups: AblationGroups, index: int, component: Component) -> None:
    _mark(groups.heads[index], groups.mlps[index], component)


def _remaining_units(components: Iterable[Component], n_layers: int) -> float:
    return float(sum(n_layers - layer for layer, _ in components))


def _search(
    evaluator: _Evaluator,
    threshold: float,
    one_pass: bool,
    speculation: str,
    timer: WorkTimer,
    clean_ld: float,
) -> CircuitSearch:
    """The sequential algorithm, decisions read off speculative batches (see the module docstring)."""
    n_layers, n_heads = evaluator.n_layers, evaluator.n_heads
    guess = _Speculation(speculation, threshold)
    heads = torch.zeros(n_layers, n_heads, dtype=torch.bool)
    mlps = torch.zeros(n_layers, dtype=torch.bool)
    removed: set[Component] = set()
    removals: list[Removal] = []
    current = 100.0  # the circuit's score
    current_ld = clean_ld
    order = visiting_order(n_layers, n_heads)
    passes = 0
    last_pass_lds: dict[Component, float] = {}
    work_per_unit = 1.0  # group-blocks run per group-block decided, for the time left

    def score(ld: float) -> float:
        return 100.0 * ld / clean_ld

    while True:
        passes += 1
        removed_this_pass = 0
        last_pass_lds = {}
        evaluator.start_pass(heads, mlps)
        pending = [c for c in order if c not in removed]
        decided_units = 0.0
        work_at_start = timer.done
        for layer in reversed(range(n_layers)):
            undecided = [c for c in pending if c[0] == layer]
            later = [c for c in pending if c[0] < layer]
            while undecided:
                remaining = _remaining_units(undecided + later, n_layers) * work_per_unit
                if not one_pass:  # at least one more pass, over the components kept so far
                    remaining += _remaining_units((c for c in order if c not in removed), n_layers)
                timer.total = max(timer.total, timer.done + remaining + n_layers)
                window = undecided[: guess.window(undecided)]
                guessed_by = [guess.guess(c) for c in window]
                guesses = [g for g, _ in guessed_by]
                groups = _group_masks(len(window), heads, mlps)
                for index, component in enumerate(window):
                    for earlier, guessed in zip(window[:index], guesses, strict=False):
                        if guessed:
                            _set(groups, index, earlier)
                    _set(groups, index, component)
                started = time.perf_counter()
                lds = evaluator.evaluate(groups, [layer] * len(window))
                if evaluator.last_batch:
                    guess.timed(evaluator.last_batch, evaluator.blocks([layer]), time.perf_counter() - started)
                decided = 0
                for component, (guessed, source), ld in zip(window, guessed_by, lds, strict=True):
                    decided += 1
                    before = current
                    keep = score(ld) >= threshold
                    last_pass_lds[component] = float(ld)
                    guess.decided(component, source, guessed, keep)
                    guess.hints[component] = score(ld)
                    if keep:
                        removed.add(component)
                        _mark(heads, mlps, component)
                        current_ld, current = float(ld), score(ld)
                        removals.append(Removal(layer, component[1], current_ld, current, passes))
                        removed_this_pass += 1
                    if guessed != keep:
                        # the wrong guess ends the batch; the later candidates' scores were taken with this one
                        # removed (guessed so) or not (guessed kept): correct them by its effect, as hints
                        effect = score(ld) - before
                        for later_c, later_ld in zip(window[decided:], lds[decided:], strict=True):
                            guess.hints[later_c] = score(later_ld) + (effect if keep else -effect)
                        break
                undecided = undecided[decided:]
                decided_units += decided * (n_layers - layer)
                work_per_unit = max(1.0, (timer.done - work_at_start) / max(decided_units, 1.0))
            pending = later
        if one_pass or removed_this_pass == 0:
            break
    kept = [c for c in order if c not in removed]
    effects: list[float] = []
    if removed_this_pass == 0:  # the last pass scored every kept component on the final circuit
        effects = [last_pass_lds[c] for c in kept]
    elif kept:  # one pass that removed something: score the kept components on the final circuit now
        evaluator.start_pass(heads, mlps)
        groups = _group_masks(len(kept), heads, mlps)
        for index, component in enumerate(kept):
            _set(groups, index, component)
        effects = list(evaluator.evaluate(groups, [c[0] for c in kept]))
    kept_effects = tuple(KeptEffect(c[0], c[1], float(ld), score(float(ld))) for c, ld in zip(kept, effects,
                                                                                             strict=True))
    return CircuitSearch(clean_ld, current_ld, tuple(removals), kept_effects, passes, evaluator.evaluations,
                         evaluator.batches, evaluator.group_blocks, evaluator.path, evaluator.reused)


def _check_clean(clean_ld: float) -> None:
    if not clean_ld > 0:
        raise InputError(
            f"The clean logit difference is {clean_ld:.3f} ≤ 0: the model does not prefer the correct answers on "
            "these prompts, so the circuit score 100·LD(C)/LD_clean means nothing. Choose a task the model does "
            "(see the prompt tester) or check the correct and incorrect answers."
        )


def find_circuit(
    model: Backend,
    encoded: EncodedDataset,
    method: str = "mean",
    threshold: float = DEFAULT_THRESHOLD,
    *,
    one_pass: bool = False,
    path: str = "auto",
    speculation: str = "adaptive",
    chunk: int | None = None,
    deduplicate: bool = True,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CircuitSearch:
    """The exact circuit search. path "auto" takes the backend's fast path where it offers one, else the general path;
    "fast" and "general" force one. `speculation` and `chunk` change the work, never the result."""
    threshold = check_threshold(threshold)
    spec = check_method(method, encoded)
    _Speculation(speculation, threshold)  # checks the name before any work
    task = logit_diff_task(encoded, spec, deduplicate)
    runner = fast_runner(model, task.seq_len, required=path == "fast")  # None: general path (no block loop, or
    info = model.info                                                    # prompts beyond a sliding window)
    one_pass_units = _remaining_units(visiting_order(info.n_layers, info.n_heads), info.n_layers)
    timer = WorkTimer(one_pass_units * (1 if one_pass else 1.5) + 3 * info.n_layers, progress, should_cancel, model,
                      "The circuit search")
    with model.gate.job("a circuit search"):
        evaluator: _Evaluator
        if runner is not None and path != "general":
            evaluator = _FastEvaluator(model, runner, task, spec, timer, chunk)
        else:
            evaluator = _GeneralEvaluator(model, task, spec, timer)
        clean_ld = evaluator.clean_ld()
        _check_clean(clean_ld)
        return _search(evaluator, threshold, one_pass, speculation, timer, clean_ld)


# ---------------------------------------------------------------------------------------------------------------
# The plain loop (the benchmark's baseline) and the instant estimate


def plain_circuit(
    model: Backend,
    encoded: EncodedDataset,
    method: str = "mean",
    threshold: float = DEFAULT_THRESHOLD,
    *,
    one_pass: bool = False,
    progress: ProgressCallback | None = None,
) -> CircuitSearch:
    """The sequential algorithm written plainly: one full forward (every prompt) per component per pass."""
    threshold = check_threshold(threshold)
    spec = check_method(method, encoded)
    task = logit_diff_task(encoded, spec, deduplicate=False)
    info = model.info
    n_layers, n_heads = info.n_layers, info.n_heads
    timer = WorkTimer(n_layers * (n_heads + 1), progress, None, model, "The plain loop")
    clean = float(model.ablated_logit_diffs(task, spec, AblationGroups.empty(1, n_layers, n_heads))[0])
    _check_clean(clean)
    removed = AblationGroups.empty(1, n_layers, n_heads)
    removals: list[Removal] = []
    passes = evaluations = 0
    current = clean
    scores: dict[Component, float] = {}
    while True:
        passes += 1
        changed = False
        for component in visiting_order(n_layers, n_heads):
            layer, head = component
            if (removed.mlps[0, layer] if head is None else removed.heads[0, layer, head]):
                continue
            group = AblationGroups(removed.heads.clone(), removed.mlps.clone())
            _set(group, 0, component)
            ld = float(model.ablated_logit_diffs(task, spec, group)[0])
            evaluations += 1
            timer.advance(1, component_label(component))
            scores[component] = ld
            if 100.0 * ld / clean >= threshold:
                removed = group
                current = ld
                removals.append(Removal(layer, head, ld, 100.0 * ld / clean, passes))
                changed = True
        if one_pass or not changed:
            break
    kept = [c for c in visiting_order(n_layers, n_heads) if c not in {r.component for r in removals}]
    effects = []
    for component in kept:
        if changed:  # one pass that removed something: the scores above were taken on earlier circuits
            group = AblationGroups(removed.heads.clone(), removed.mlps.clone())
            _set(group, 0, component)
            scores[component] = float(model.ablated_logit_diffs(task, spec, group)[0])
            evaluations += 1
        effects.append(KeptEffect(component[0], component[1], scores[component], 100.0 * scores[component] / clean))
    return CircuitSearch(clean, current, tuple(removals), tuple(effects), passes, evaluations, evaluations,
                         evaluations * n_layers, "plain")


def estimate_circuit(model: Backend, encoded: EncodedDataset, method: str = "mean",
                     threshold: float = DEFAULT_THRESHOLD) -> CircuitSearch:
    """An instant ESTIMATE, never the exact result: attribution-ranked greedy pruning.

    Attribution patching (one forward and one backward pass) estimates each component's effect e(c) on LD when it
    alone is ablated; effects are taken as additive, LD(C) ≈ LD_clean + Σ_{c ∉ C} e(c). Components are removed in
    order of estimated effect, the least harmful first, while the estimated score stays ≥ the threshold."""
    threshold = check_threshold(threshold)
    numbers = attribution_sweep(model, encoded, method)
    clean = numbers.clean_ld
    _check_clean(clean)
    info = model.info
    order = visiting_order(info.n_layers, info.n_heads)

    def effect(component: Component) -> float:
        layer, head = component
        value = numbers.mlp_ablated_ld[layer] if head is None else numbers.ablated_ld[layer, head]
        return float(value) - clean

    ranked = sorted(order, key=lambda c: -effect(c))  # stable: ties keep the visiting order
    current = clean
    removals = []
    for component in ranked:
        after = current + effect(component)
        if 100.0 * after / clean < threshold:
            break
        current = after
        removals.append(Removal(component[0], component[1], after, 100.0 * after / clean, 1))
    removed = {r.component for r in removals}
    effects = tuple(KeptEffect(c[0], c[1], current + effect(c), 100.0 * (current + effect(c)) / clean)
                    for c in order if c not in removed)
    return CircuitSearch(clean, current, tuple(removals), effects, 1, len(order), 1, 0, "estimate")


# ---------------------------------------------------------------------------------------------------------------
# Running a search the way the app and the CLI do: encode, look in the cache, compute, store.


def circuit_key(model: Backend, encoded: EncodedDataset, method: str, threshold: float, one_pass: bool,
                estimate: bool) -> dict[str, Any]:
    """Everything that changes a circuit (the speculation and chunking do not)."""
    return {
        **model.identity,
        "dataset": encoded.dataset.name,
        "dataset_hash": encoded.dataset.content_hash,
        "method": method,
        "metric": METRIC,
        "threshold": float(threshold),
        "passes": "one" if one_pass else "until-stable",
        "estimate": estimate,
        "engine": ENGINE_VERSION,
    }


def load_circuit(model: Backend, encoded: EncodedDataset, method: str, threshold: float, one_pass: bool,
                 estimate: bool = False, cache: ResultsCache | None = None) -> CircuitResult | None:
    """The stored circuit for exactly this configuration, or None."""
    cache = cache if cache is not None else ResultsCache()
    key = circuit_key(model, encoded, method, check_threshold(threshold), one_pass, estimate)
    stored = cache.load(CACHE_KIND, key)
    return None if stored is None else CircuitResult.from_json(stored, key, cached=True)


def run_circuit(
    model: Backend,
    dataset: Dataset | EncodedDataset,
    method: str = "mean",
    threshold: float = DEFAULT_THRESHOLD,
    *,
    one_pass: bool = False,
    estimate: bool = False,
    cache: ResultsCache | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CircuitResult:
    """A whole search: from the results cache when it holds one for exactly this key, else computed and stored.
    A cancelled search (headscope.errors.Cancelled) stores nothing."""
    threshold = check_threshold(threshold)
    encoded = dataset if isinstance(dataset, EncodedDataset) else prepare_dataset(model, dataset)
    check_method(method, encoded)
    cache = cache if cache is not None else ResultsCache()
    if use_cache:
        stored = load_circuit(model, encoded, method, threshold, one_pass, estimate, cache)
        if stored is not None:
            return stored
    key = circuit_key(model, encoded, method, threshold, one_pass, estimate)
    started = time.perf_counter()
    if estimate:
        search = estimate_circuit(model, encoded, method, threshold)
    else:
        search = find_circuit(model, encoded, method, threshold, one_pass=one_pass, progress=progress,
                              should_cancel=should_cancel)
    info = model.info
    removed = search.removed()
    result = CircuitResult(
        model=info.name, task=encoded.dataset.name, method=method, threshold=threshold, one_pass=one_pass,
        estimate=estimate, n_layers=info.n_layers, n_heads=info.n_heads, n_prompts=encoded.n_prompts,
        seq_len=encoded.seq_len, clean_ld=search.clean_ld, circuit_ld=search.circuit_ld,
        heads=tuple((layer, head) for layer in range(info.n_layers) for head in range(info.n_heads)
                    if (layer, head) not in removed),
        mlps=tuple(layer for layer in range(info.n_layers) if (layer, None) not in removed),
        removals=search.removals, kept_effects=search.kept_effects, passes=search.passes,
        seconds=time.perf_counter() - started, evaluations=search.evaluations, batches=search.batches,
        path=search.path, backend=info.backend, token_labels=encoded.token_labels,
        first_prompt=encoded.dataset.items[0].prompt, notes=(*encoded.dataset.notes, *encoded.warnings), key=key,
    )
    cache.store(CACHE_KIND, key, result.to_json())
    return result


def cached_circuits(cache: ResultsCache | None = None, model: Backend | None = None) -> list[CircuitResult]:
    """Circuits on disk, newest first: every model's, or only this model's (same source, revision, backend, dtype,
    device)."""
    cache = cache if cache is not None else ResultsCache()
    return cache.readable(CACHE_KIND, lambda entry: CircuitResult.from_json(entry.payload, entry.key),
                          model.identity if model is not None else None)


# ---------------------------------------------------------------------------------------------------------------
# Comparing circuits


@dataclass(frozen=True)
class CircuitSet:
    """A circuit as sets of components, from a result or an uploaded JSON: heads {(layer, head)}, mlps {layer}."""

    label: str
    heads: frozenset[tuple[int, int]]
    mlps: frozenset[int]
    n_layers: int
    n_heads: int

    @property
    def components(self) -> frozenset[Component]:
        return frozenset(self.heads) | frozenset((layer, None) for layer in self.mlps)

    def __len__(self) -> int:
        return len(self.heads) + len(self.mlps)


# An uploaded circuit's size bounds (the largest open models have about 126 layers and 128 heads): the comparison grid
# is drawn layer × head, so an unbounded file could tie the server up.
MAX_CIRCUIT_LAYERS = 256
MAX_CIRCUIT_HEADS = 256


def parse_circuit_json(text: str, name: str) -> CircuitSet:
    """A circuit from JSON: {"heads": [[L, H], …], "mlps": [L, …]} (optional "model", "task", "n_layers", "n_heads";
    "mlps" may be left out). Layers and heads are 0-based. Errors say what is wrong, naming the item."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{name}: not valid JSON ({error.msg} at line {error.lineno}).") from error
    if not isinstance(data, dict) or not isinstance(data.get("heads"), list):
        raise InputError(f'{name}: expected an object with "heads": [[layer, head], …] and optionally '
                         '"mlps": [layer, …].')
    heads = set()
    for item in data["heads"]:
        if (not isinstance(item, list | tuple) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item)):
            raise InputError(f"{name}: each head must be [layer, head] with non-negative integers; got "
                             f"{json.dumps(item)[:40]}.")
        heads.add((int(item[0]), int(item[1])))
    mlps_raw = data.get("mlps", [])
    if not isinstance(mlps_raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in mlps_raw):
        raise InputError(f'{name}: "mlps" must be a list of non-negative layer numbers.')
    mlps = {int(v) for v in mlps_raw}
    shape = [data.get("n_layers") or 0, data.get("n_heads") or 0]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape):
        raise InputError(f'{name}: "n_layers" and "n_heads", where given, must be non-negative integers.')
    n_layers = max([layer + 1 for layer, _ in heads] + [layer + 1 for layer in mlps] + [shape[0]])
    n_heads = max([head + 1 for _, head in heads] + [shape[1]])
    if n_layers > MAX_CIRCUIT_LAYERS or n_heads > MAX_CIRCUIT_HEADS:  # a grid this size would tie the server up
        raise InputError(f"{name}: {n_layers:,} layers × {n_heads:,} heads is beyond any model headscope compares "
                         f"(at most {MAX_CIRCUIT_LAYERS} layers × {MAX_CIRCUIT_HEADS} heads): check the file.")
    if not heads and not mlps:
        raise InputError(f"{name}: the circuit holds no component.")
    label = str(data.get("label") or " · ".join(str(data[k]) for k in ("model", "task") if data.get(k)) or name)
    return CircuitSet(f"{label} (uploaded)", frozenset(heads), frozenset(mlps), n_layers, n_heads)


@dataclass(frozen=True)
class CircuitComparison:
    """Overlap of two or more circuits: membership[component] = indices of the circuits holding it, counts, and the
    Jaccard index |A ∩ B| / |A ∪ B| of every pair (heads and MLPs together)."""

    circuits: tuple[CircuitSet, ...]
    membership: dict[Component, frozenset[int]]
    jaccard: np.ndarray  # [circuit, circuit]
    n_layers: int
    n_heads: int

    @property
    def shared(self) -> set[Component]:
        """Components every circuit holds."""
        everyone = frozenset(range(len(self.circuits)))
        return {c for c, holders in self.membership.items() if holders == everyone}

    def only(self, index: int) -> set[Component]:
        return {c for c, holders in self.membership.items() if holders == frozenset({index})}

    def category(self, component: Component) -> str:
        """'shared', 'only A' (the circuit's letter), 'k of N', or '' (in none)."""
        holders = self.membership.get(component, frozenset())
        if not holders:
            return ""
        if len(holders) == len(self.circuits):
            return "shared"
        if len(holders) == 1:
            return f"only {letter(next(iter(holders)))}"
        return f"{len(holders)} of {len(self.circuits)}"

    def counts(self) -> list[dict[str, Any]]:
        """One row per circuit: its size, what it shares with all, what only it holds."""
        shared = self.shared
        return [{"circuit": letter(i), "label": c.label, "heads": len(c.heads), "mlps": len(c.mlps),
                 "components": len(c), "shared with all": len(shared), f"only {letter(i)}": len(self.only(i))}
                for i, c in enumerate(self.circuits)]


def letter(index: int) -> str:
    return chr(ord("A") + index) if index < 26 else f"#{index + 1}"


def compare_circuits(circuits: Sequence[CircuitSet]) -> CircuitComparison:
    if len(circuits) < 2:
        raise InputError("Pick at least two circuits to compare.")
    membership: dict[Component, set[int]] = {}
    for index, circuit in enumerate(circuits):
        for component in circuit.components:
            membership.setdefault(component, set()).add(index)
    jaccard = np.ones((len(circuits), len(circuits)))
    for i, a in enumerate(circuits):
        for j, b in enumerate(circuits):
            union = a.components | b.components
            jaccard[i, j] = len(a.components & b.components) / len(union) if union else 1.0
    return CircuitComparison(tuple(circuits), {c: frozenset(h) for c, h in membership.items()}, jaccard,
                             max(c.n_layers for c in circuits), max(c.n_heads for c in circuits))
