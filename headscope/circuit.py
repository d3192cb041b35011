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
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from headscope.ablation import attribution_sweep
from headscope.backends.interventions import InterventionGroup, SourceKind, ValueSource
from headscope.circuit_compare import CircuitSet
from headscope.component import Component, every_component
from headscope.engine import (
    METRIC,
    LogitDiffEvaluator,
    ProgressCallback,
    WorkTimer,
    check_method,
    evaluation,
    logit_diff_task,
)
from headscope.errors import InputError
from headscope.results_cache import ResultsCache, load_result, stored_or_computed, stored_results
from headscope.serialize import NOT_STORED, from_payload, json_field, to_payload
from headscope.speculation import Speculation
from headscope.tasks import Dataset, EncodedDataset, prepare_dataset

if TYPE_CHECKING:
    from headscope.backends.base import Backend

CACHE_KIND = "circuit"
ENGINE_VERSION = 1
DEFAULT_THRESHOLD = 80.0
THRESHOLD_RANGE = (0.0, 100.0)


def visiting_order(n_layers: int, n_heads: int) -> list[Component]:
    """The order of one pass: layers from last to first; within a layer the MLP, then heads 0 … H−1."""
    order: list[Component] = []
    for layer in reversed(range(n_layers)):
        order.append(Component.mlp(layer))
        order += [Component(layer, head) for head in range(n_heads)]
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
        return Component(self.layer, self.head)

    @property
    def label(self) -> str:
        return self.component.label


@dataclass(frozen=True)
class Removal(_OfComponent):
    """One removal: the component, and the circuit's LD and score right after it left."""

    ld_after: float
    score_after: float
    pass_number: int = json_field("pass")  # 1-based

    json_derived: ClassVar[dict[str, str]] = {"component": "label"}


@dataclass(frozen=True)
class KeptEffect(_OfComponent):
    """A kept component removed alone from the final circuit: the LD and score of the circuit without it."""

    ld_without: float
    score_without: float

    json_derived: ClassVar[dict[str, str]] = {"component": "label"}


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
    """A found circuit. heads (head components) and mlps (layers) are kept; removals are in the order they happened."""

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
    heads: tuple[Component, ...]
    mlps: tuple[int, ...]
    removals: tuple[Removal, ...] = json_field("removed")
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
    key: dict[str, Any] = field(default_factory=dict, metadata=NOT_STORED)

    json_derived: ClassVar[dict[str, str]] = {"score": "score"}  # for readers of the JSON (the CLI's --json)

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
        for head in self.heads:
            mask[head.layer, head.head] = True
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
        return to_payload(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], key: dict[str, Any] | None = None, cached: bool = True) -> CircuitResult:
        return from_payload(cls, data, key=key or {}, cached=cached)

    def download_json(self) -> str:
        """The circuit for others to use: {"heads": [[L, H], …], "mlps": [L, …], …} (what the compare view reads)."""
        payload = {"heads": [[h.layer, h.head] for h in self.heads], "mlps": list(self.mlps), "model": self.model,
                   "task": self.task, "method": self.method, "threshold": self.threshold, "score": self.score,
                   "clean_ld": self.clean_ld, "passes": self.passes, "estimate": self.estimate,
                   "n_layers": self.n_layers, "n_heads": self.n_heads,
                   "removed": [{"component": r.label, "score_after": r.score_after} for r in self.removals]}
        return json.dumps(payload, indent=1)


# ---------------------------------------------------------------------------------------------------------------
# The search


class _Scorer:
    """Scores candidate circuits through the engine's evaluator, remembering every set scored (the same set gives
    the same LD) and counting the work: evaluations, batches, group-blocks."""

    def __init__(self, evaluator: LogitDiffEvaluator) -> None:
        self.evaluator = evaluator
        self.n_layers, self.n_heads = evaluator.n_layers, evaluator.n_heads
        self.path = evaluator.path
        self.batches = 0
        self.evaluations = 0
        self.group_blocks = 0
        self.reused = 0
        self.last_batch = 0  # groups the last evaluate() ran (0: every score was known)
        self._known: dict[bytes, float] = {}  # LD by ablated set
        self._base = (torch.zeros(self.n_layers, self.n_heads, dtype=torch.bool),
                      torch.zeros(self.n_layers, dtype=torch.bool))  # the pass's removed set

    def start_pass(self, heads: torch.Tensor, mlps: torch.Tensor) -> None:
        """The removed set at the start of a pass: heads[layer, head], mlps[layer] (bool)."""
        self._base = (heads.clone(), mlps.clone())
        self.evaluator.set_base(self.evaluator.ablating(_components(heads, mlps)))

    def evaluate(self, candidates: _Candidates, join_layers: Sequence[int]) -> np.ndarray:
        """ld[candidate]; every candidate set's components below its join layer must be those of the pass's removed
        set (each group handed to the evaluator carries the candidate's components beyond that set).

        A set scored before is not run again (a pass that follows one ending in removals at high layers scores
        the components below them on the very circuit the earlier pass did)."""
        keys = [candidates.key(g) for g in range(len(candidates))]
        todo = [g for g, key in enumerate(keys) if key not in self._known]
        self.reused += len(keys) - len(todo)
        self.last_batch = len(todo)
        if todo:
            self.batches += 1
            self.evaluations += len(todo)
            joins = [join_layers[g] for g in todo]
            self.group_blocks += self.blocks(joins)
            base_heads, base_mlps = self._base
            groups = [self.evaluator.ablating(_components(candidates.heads[g] & ~base_heads,
                                                          candidates.mlps[g] & ~base_mlps)) for g in todo]
            lds = self.evaluator.evaluate(groups, joins)
            for g, ld in zip(todo, lds, strict=True):
                self._known[keys[g]] = float(ld)
        return np.array([self._known[key] for key in keys])

    def blocks(self, join_layers: Sequence[int]) -> int:
        """Blocks run per prompt for these groups (fast path: a group joining at L runs the blocks from L up)."""
        return self.evaluator.cost(join_layers)


class _Candidates:
    """Candidate removed sets, one per group: heads[group, layer, head] and mlps[group, layer] (bool), each starting
    as the current removed set."""

    def __init__(self, n: int, heads: torch.Tensor, mlps: torch.Tensor) -> None:
        self.heads = heads[None].repeat(n, 1, 1)
        self.mlps = mlps[None].repeat(n, 1)

    def __len__(self) -> int:
        return int(self.heads.shape[0])

    def mark(self, index: int, component: Component) -> None:
        _mark(self.heads[index], self.mlps[index], component)

    def key(self, index: int) -> bytes:
        return self.heads[index].numpy().tobytes() + self.mlps[index].numpy().tobytes()


def _components(heads: torch.Tensor, mlps: torch.Tensor) -> list[Component]:
    """The components masks heads[layer, head], mlps[layer] name."""
    return ([Component(int(layer), int(head)) for layer, head in torch.nonzero(heads).tolist()]
            + [Component.mlp(int(layer)) for layer in torch.nonzero(mlps).flatten().tolist()])


def _mark(heads: torch.Tensor, mlps: torch.Tensor, component: Component) -> None:
    """Set a component in masks heads[layer, head], mlps[layer]."""
    if component.head is None:
        mlps[component.layer] = True
    else:
        heads[component.layer, component.head] = True


def _remaining_units(components: Iterable[Component], n_layers: int) -> float:
    return float(sum(n_layers - c.layer for c in components))


def _search(
    evaluator: _Scorer,
    threshold: float,
    one_pass: bool,
    speculation: str,
    timer: WorkTimer,
    clean_ld: float,
) -> CircuitSearch:
    """The sequential algorithm, decisions read off speculative batches (see the module docstring)."""
    n_layers, n_heads = evaluator.n_layers, evaluator.n_heads
    guess = Speculation(speculation, threshold)
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
            undecided = [c for c in pending if c.layer == layer]
            later = [c for c in pending if c.layer < layer]
            while undecided:
                remaining = _remaining_units(undecided + later, n_layers) * work_per_unit
                if not one_pass:  # at least one more pass, over the components kept so far
                    remaining += _remaining_units((c for c in order if c not in removed), n_layers)
                timer.total = max(timer.total, timer.done + remaining + n_layers)
                window = undecided[: guess.window(undecided)]
                guessed_by = [guess.guess(c) for c in window]
                guesses = [g for g, _ in guessed_by]
                groups = _Candidates(len(window), heads, mlps)
                for index, component in enumerate(window):
                    for earlier, guessed in zip(window[:index], guesses, strict=False):
                        if guessed:
                            groups.mark(index, earlier)
                    groups.mark(index, component)
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
                        removals.append(Removal(layer, component.head, current_ld, current, passes))
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
        groups = _Candidates(len(kept), heads, mlps)
        for index, component in enumerate(kept):
            groups.mark(index, component)
        effects = list(evaluator.evaluate(groups, [c.layer for c in kept]))
    kept_effects = tuple(KeptEffect(c.layer, c.head, float(ld), score(float(ld)))
                         for c, ld in zip(kept, effects, strict=True))
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
    Speculation(speculation, threshold)  # checks the name before any work
    task = logit_diff_task(encoded, spec, deduplicate)
    info = model.info
    one_pass_units = _remaining_units(visiting_order(info.n_layers, info.n_heads), info.n_layers)
    with evaluation(model, task, spec, label="a circuit search", what="The circuit search",
                    subject="A circuit search", path=path, chunk=chunk,
                    progress=progress, should_cancel=should_cancel) as evaluator:
        evaluator.timer.add_total(one_pass_units * (1 if one_pass else 1.5) + 3 * info.n_layers)
        clean_ld = evaluator.clean_ld()
        _check_clean(clean_ld)
        return _search(_Scorer(evaluator), threshold, one_pass, speculation, evaluator.timer, clean_ld)


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
    source = ValueSource(SourceKind(spec.source))

    def ld_without(components: Iterable[Component]) -> float:
        return float(model.logit_diffs(task, [InterventionGroup.ablating(components, source)])[0])

    clean = ld_without(())
    _check_clean(clean)
    removed: list[Component] = []
    removals: list[Removal] = []
    passes = evaluations = 0
    current = clean
    scores: dict[Component, float] = {}
    while True:
        passes += 1
        changed = False
        for component in visiting_order(n_layers, n_heads):
            if component in removed:
                continue
            ld = ld_without([*removed, component])
            evaluations += 1
            timer.advance(1, component.label)
            scores[component] = ld
            if 100.0 * ld / clean >= threshold:
                removed.append(component)
                current = ld
                removals.append(Removal(component.layer, component.head, ld, 100.0 * ld / clean, passes))
                changed = True
        if one_pass or not changed:
            break
    kept = [c for c in visiting_order(n_layers, n_heads) if c not in {r.component for r in removals}]
    effects = []
    for component in kept:
        if changed:  # one pass that removed something: the scores above were taken on earlier circuits
            scores[component] = ld_without([*removed, component])
            evaluations += 1
        effects.append(KeptEffect(component.layer, component.head, scores[component],
                                  100.0 * scores[component] / clean))
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
        layer, head = component.layer, component.head
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
        removals.append(Removal(component.layer, component.head, after, 100.0 * after / clean, 1))
    removed = {r.component for r in removals}
    effects = tuple(KeptEffect(c.layer, c.head, current + effect(c), 100.0 * (current + effect(c)) / clean)
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
    key = circuit_key(model, encoded, method, check_threshold(threshold), one_pass, estimate)
    return load_result(cache, CACHE_KIND, key, CircuitResult)


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
    key = circuit_key(model, encoded, method, threshold, one_pass, estimate)

    def compute() -> CircuitResult:
        started = time.perf_counter()
        if estimate:
            search = estimate_circuit(model, encoded, method, threshold)
        else:
            search = find_circuit(model, encoded, method, threshold, one_pass=one_pass, progress=progress,
                                  should_cancel=should_cancel)
        info = model.info
        removed = search.removed()
        return CircuitResult(
            model=info.name, task=encoded.dataset.name, method=method, threshold=threshold, one_pass=one_pass,
            estimate=estimate, n_layers=info.n_layers, n_heads=info.n_heads, n_prompts=encoded.n_prompts,
            seq_len=encoded.seq_len, clean_ld=search.clean_ld, circuit_ld=search.circuit_ld,
            heads=tuple(c for c in every_component(info.n_layers, info.n_heads, include_mlp=False)
                        if c not in removed),
            mlps=tuple(layer for layer in range(info.n_layers) if Component.mlp(layer) not in removed),
            removals=search.removals, kept_effects=search.kept_effects, passes=search.passes,
            seconds=time.perf_counter() - started, evaluations=search.evaluations, batches=search.batches,
            path=search.path, backend=info.backend, token_labels=encoded.token_labels,
            first_prompt=encoded.dataset.items[0].prompt, notes=(*encoded.dataset.notes, *encoded.warnings),
            key=key,
        )

    return stored_or_computed(cache, CACHE_KIND, key, CircuitResult, compute, use_cache=use_cache)


def cached_circuits(cache: ResultsCache | None = None, model: Backend | None = None) -> list[CircuitResult]:
    """Circuits on disk, newest first: every model's, or only this model's (same source, revision, backend, dtype,
    device)."""
    return stored_results(cache, CACHE_KIND, CircuitResult, model.identity if model is not None else None)
