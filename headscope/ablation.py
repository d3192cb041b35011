"""Which heads matter for a task: single-component ablation on a logit-difference metric.

Metric: LD = mean over prompts of logit[correct] − logit[incorrect] at the last input position. Per head, the
ablated LD, the study's score 100·LD_ablated/LD_clean, the change from clean and, with corrupted prompts, the
normalized (LD_abl − LD_corr)/(LD_clean − LD_corr). Methods, applied to one head's output (its z, before W_O) at
every position: zero; mean (its position-wise mean over the corrupted prompts, the study's choice); resample (its
value on the paired corrupted prompt: activation patching). The same for each layer's MLP output.

The exact engine stacks the ablations of several heads along the batch and starts from the clean residual stream
entering the ablated layer, so each layer's heads cost one partial forward; only the last position's two answer
logits are computed. `naive_sweep` (one full forward per head) is kept as the reference it is tested against.
`attribution_sweep` estimates all effects from one forward and one backward pass (attribution patching).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import torch

from headscope.backends.interventions import InterventionGroup, SourceKind, ValueSource
from headscope.component import Component, every_component
from headscope.engine import (
    METRIC,
    Progress,
    ProgressCallback,
    WorkTimer,
    check_method,
    corrupted_ld,
    evaluation,
    logit_diff_task,
    prompt_rows,
)
from headscope.errors import InputError
from headscope.methods import METHOD_NAMES
from headscope.results_cache import ResultsCache, load_result, stored_or_computed, stored_results
from headscope.serialize import NOT_STORED, from_payload, to_payload
from headscope.tasks import Dataset, EncodedDataset, prepare_dataset, subset
from headscope.units import UNIT_NAMES as UNIT_NAMES
from headscope.units import get_unit

if TYPE_CHECKING:
    from headscope.backends.base import Backend

METHODS = METHOD_NAMES
ENGINE_VERSION = 3  # 3: exact sweeps keep per-prompt values and name their unit (older entries recompute)
CACHE_KIND = "ablation"
SweepProgress = Progress  # the name pages and the CLI use

@dataclass(frozen=True)
class SweepResult:
    """One sweep. ablated_ld[layer, head] and mlp_ablated_ld[layer] are mean logit differences after ablation."""

    model: str
    task: str
    method: str
    estimate: bool  # True: attribution-patching estimate, not an exact ablation
    n_prompts: int
    seq_len: int
    clean_ld: float
    corrupt_ld: float | None
    ablated_ld: np.ndarray  # [layer, head]
    mlp_ablated_ld: np.ndarray  # [layer]
    seconds: float
    token_labels: tuple[str, ...] = ()
    first_prompt: str = ""
    notes: tuple[str, ...] = ()
    unit: str = "head"  # "kv-group": ablated_ld[layer, kv group], each cell ablating the group's query heads
    # each prompt's own LD (exact sweeps; None for estimates and results stored before they were kept):
    # per_prompt_ld[prompt, layer, head], per_prompt_mlp_ld[prompt, layer], per_prompt_clean_ld[prompt]
    per_prompt_ld: np.ndarray | None = None
    per_prompt_mlp_ld: np.ndarray | None = None
    per_prompt_clean_ld: np.ndarray | None = None
    cached: bool = False
    key: dict[str, Any] = field(default_factory=dict, metadata=NOT_STORED)

    # written beside the fields for readers of the JSON (the CLI's --json)
    json_derived: ClassVar[dict[str, str]] = {"layers": "n_layers", "heads": "n_heads",
                                              "percent_of_clean": "percent_of_clean"}

    @property
    def n_layers(self) -> int:
        return int(self.ablated_ld.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.ablated_ld.shape[1])

    @property
    def caution(self) -> str | None:
        """Why '% of clean' cannot be read as usual here, or None: with a clean LD at or below 0 the model prefers
        the incorrect answer, and the ratio reads upside down (a head that helps the task shows above 100)."""
        if self.clean_ld > 0:
            return None
        return (f"The clean LD is {self.clean_ld:.3f}, at or below 0: the model prefers the incorrect answers on "
                "these prompts, so '% of clean' reads upside down or not at all. Read the change from clean, or keep "
                "only the prompts the model gets right.")

    @property
    def percent_of_clean(self) -> np.ndarray:
        """The study's score: 100 · LD_ablated / LD_clean (100 = no effect)."""
        return 100.0 * self.ablated_ld / self.clean_ld

    @property
    def mlp_percent_of_clean(self) -> np.ndarray:
        return 100.0 * self.mlp_ablated_ld / self.clean_ld

    @property
    def change(self) -> np.ndarray:
        """LD_ablated − LD_clean (0 = no effect; negative = the head helps the task)."""
        return self.ablated_ld - self.clean_ld

    @property
    def normalized(self) -> np.ndarray | None:
        """(LD_abl − LD_corr) / (LD_clean − LD_corr): 1 = no effect, 0 = as bad as the corrupted prompts."""
        if self.corrupt_ld is None or self.clean_ld == self.corrupt_ld:
            return None
        return (self.ablated_ld - self.corrupt_ld) / (self.clean_ld - self.corrupt_ld)

    @property
    def mlp_normalized(self) -> np.ndarray | None:
        if self.corrupt_ld is None or self.clean_ld == self.corrupt_ld:
            return None
        return (self.mlp_ablated_ld - self.corrupt_ld) / (self.clean_ld - self.corrupt_ld)

    @property
    def label(self) -> str:
        kind = "estimate" if self.estimate else "exact"
        unit = " · KV groups" if self.unit == "kv-group" else ""
        return f"{self.task} · {self.method} ablation{unit} · {self.n_prompts} prompts · {kind}"

    def cell_label(self, layer: int, index: int) -> str:
        """A cell as the user reads it: head "5.2", or KV group "5.kv2"."""
        return f"{layer}.kv{index}" if self.unit == "kv-group" else f"{layer}.{index}"

    @property
    def per_prompt_change(self) -> np.ndarray | None:
        """change[prompt, layer, head] = each prompt's ablated LD − its clean LD (None without per-prompt values)."""
        if self.per_prompt_ld is None or self.per_prompt_clean_ld is None:
            return None
        return self.per_prompt_ld - self.per_prompt_clean_ld[:, None, None]

    def top_heads(self, k: int) -> list[Component]:
        """The k heads whose ablation changes LD the most (either sign)."""
        order = np.argsort(-np.abs(self.change), axis=None)[:k]
        return [Component(int(i // self.n_heads), int(i % self.n_heads)) for i in order]

    def to_json(self) -> dict[str, Any]:
        return to_payload(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], key: dict[str, Any], cached: bool = True) -> SweepResult:
        return from_payload(cls, data, key=key, cached=cached)


class SweepNumbers(NamedTuple):
    """What a sweep computes: ablated_ld[layer, head], mlp_ablated_ld[layer], the clean LD and the corrupted LD."""

    ablated_ld: np.ndarray
    mlp_ablated_ld: np.ndarray
    clean_ld: float
    corrupt_ld: float | None


class PromptNumbers(NamedTuple):
    """The same per dataset prompt: ablated_ld[prompt, layer, head], mlp_ablated_ld[prompt, layer], clean_ld[prompt]."""

    ablated_ld: np.ndarray
    mlp_ablated_ld: np.ndarray
    clean_ld: np.ndarray


def _grids(cells: list[Component], lds: np.ndarray, n_layers: int, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """lds[cell, ...] laid out as ablated[layer, cell index, ...] and mlp[layer, ...] (NaN where not swept)."""
    ablated = np.full((n_layers, n_cells, *lds.shape[1:]), np.nan)
    mlp_ablated = np.full((n_layers, *lds.shape[1:]), np.nan)
    for cell, value in zip(cells, lds, strict=True):
        if cell.head is None:
            mlp_ablated[cell.layer] = value
        else:
            ablated[cell.layer, cell.head] = value
    return ablated, mlp_ablated


def _numbers_from(components: list[Component], lds: np.ndarray, n_layers: int, n_heads: int,
                  clean_ld: float, corrupt: float | None) -> SweepNumbers:
    ablated, mlp_ablated = _grids(components, lds, n_layers, n_heads)
    return SweepNumbers(ablated, mlp_ablated, clean_ld, corrupt)


def sweep_cells(n_layers: int, n_heads: int, n_kv_heads: int, unit: str = "head",
                include_mlp: bool = True) -> list[tuple[Component, list[Component]]]:
    """Each cell of a sweep (Component(layer, cell index), or the layer's MLP) with the components it ablates."""
    spec = get_unit(unit)
    width = spec.width(n_heads, n_kv_heads)
    out: list[tuple[Component, list[Component]]] = []
    for cell in every_component(n_layers, spec.cells(n_heads, n_kv_heads), include_mlp):
        if cell.head is None:
            out.append((cell, [cell]))
        else:
            out.append((cell, [Component(cell.layer, cell.head * width + k) for k in range(width)]))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The exact engine


def exact_sweep(model: Backend, encoded: EncodedDataset, method: str, **options: Any) -> SweepNumbers:
    """Exact ablation of every head (and MLP), one at a time: exact_sweep_per_prompt's means (same options)."""
    return exact_sweep_per_prompt(model, encoded, method, **options)[0]


def exact_sweep_per_prompt(
    model: Backend,
    encoded: EncodedDataset,
    method: str,
    *,
    include_mlp: bool = True,
    chunk: int | None = None,
    deduplicate: bool = True,
    path: str = "auto",
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    unit: str = "head",
) -> tuple[SweepNumbers, PromptNumbers]:
    """Exact ablation of every cell (and MLP), one at a time: one group per cell, joining at its layer; the means
    and each dataset prompt's own LDs (a repeated prompt computed once, its values repeated).

    path "auto" takes the backend's fast path (one pass over the layers, headscope.engine) where it offers one, else
    the general path (batched full forwards, one batch per layer); "fast" and "general" force one. `chunk` caps the
    number of ablations in one batch (default: what fits the memory budget). unit "kv-group" ablates each KV
    group's query heads together (ablated_ld[layer, kv group]).
    """
    spec = check_method(method, encoded)
    info = model.info
    task = logit_diff_task(encoded, spec, deduplicate)
    cells = sweep_cells(info.n_layers, info.n_heads, info.n_kv_heads, unit, include_mlp)
    n_cells = get_unit(unit).cells(info.n_heads, info.n_kv_heads)
    source = ValueSource(SourceKind(spec.source))
    groups = [InterventionGroup.ablating(members, source) for _, members in cells]
    with evaluation(model, task, spec, label="an exact ablation sweep", what="The sweep", subject="An exact sweep",
                    path=path, chunk=chunk, progress=progress, should_cancel=should_cancel) as evaluator:
        evaluator.timer.add_total(evaluator.setup_units + evaluator.cost([cell.layer for cell, _ in cells]))
        # each group joins at its cell's layer; ld[group, task prompt]
        per_prompt = evaluator.evaluate_per_prompt(groups)
        clean = evaluator.clean_prompt_lds()  # the fast path computed it on the way
        corrupt = corrupted_ld(model, encoded)
    weights = task.weights.double().cpu().numpy()
    cell_names = [cell for cell, _ in cells]
    numbers = _numbers_from(cell_names, per_prompt @ weights, info.n_layers, n_cells, float(clean @ weights), corrupt)
    rows = prompt_rows(encoded, spec, deduplicate)  # task row of each dataset prompt
    ablated, mlp_ablated = _grids(cell_names, per_prompt[:, rows], info.n_layers, n_cells)
    prompts = PromptNumbers(np.moveaxis(ablated, -1, 0), np.moveaxis(mlp_ablated, -1, 0), clean[rows])
    return numbers, prompts


# ---------------------------------------------------------------------------------------------------------------
# The reference: one full forward per component


def naive_sweep(
    model: Backend,
    encoded: EncodedDataset,
    method: str,
    *,
    include_mlp: bool = True,
    layers: list[int] | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One full forward pass per head and per MLP to the logits of every position, every prompt (no
    deduplication), as a notebook loop or TransformerLens' patching functions run it. Slow; kept as the reference
    and the baseline of the benchmarks.

    `layers` restricts the loop (the other rows stay NaN), so tests can check a sample of a large model.
    """
    spec = check_method(method, encoded)
    info = model.info
    task = logit_diff_task(encoded, spec, deduplicate=False)
    wanted = list(range(info.n_layers)) if layers is None else layers
    components = [c for c in every_component(info.n_layers, info.n_heads, include_mlp) if c.layer in wanted]
    timer = WorkTimer(len(components), progress, None, model, "The naive sweep")
    source = ValueSource(SourceKind(spec.source))
    lds = []
    for component in components:
        group = InterventionGroup.ablating([component], source)
        lds.append(float(model.logit_diffs(task, [group], full_forward=True)[0]))
        timer.advance(1, component.label)
    clean = float(model.logit_diffs(task, [InterventionGroup.nothing()])[0])
    numbers = _numbers_from(components, np.asarray(lds), info.n_layers, info.n_heads, clean, None)
    return numbers.ablated_ld, numbers.mlp_ablated_ld, clean


# ---------------------------------------------------------------------------------------------------------------
# Attribution patching: a first-order estimate from one forward and one backward pass


def attribution_sweep(model: Backend, encoded: EncodedDataset, method: str, unit: str = "head") -> SweepNumbers:
    """Estimate LD_ablated ≈ LD_clean + Σ (replacement − clean) · ∂LD/∂activation for every head and MLP. A KV group's
    estimate is the sum of its heads' (first order: the effects of several edits add)."""
    spec = check_method(method, encoded)
    task = logit_diff_task(encoded, spec, deduplicate=True)
    with model.gate.job("an attribution estimate"):
        effects = model.attribution_effects(task, spec)
        corrupt = corrupted_ld(model, encoded)
    info = model.info
    width = get_unit(unit).width(info.n_heads, info.n_kv_heads)
    head_effect = effects.head_effect.reshape(info.n_layers, -1, width).sum(-1)
    return SweepNumbers(head_effect + effects.clean_ld, effects.mlp_effect + effects.clean_ld,
                        effects.clean_ld, corrupt)


# ---------------------------------------------------------------------------------------------------------------
# Running a sweep the way the app and the CLI do: encode, look in the cache, compute, store.


def filter_correct(model: Backend, encoded: EncodedDataset) -> EncodedDataset:
    """Keep the prompts the model gets right: top-1 is the correct answer and P(correct) > 2·P(incorrect)."""
    logits = model.last_logits(encoded.clean)
    probs = torch.softmax(logits, dim=-1)
    rows = torch.arange(encoded.n_prompts, device=probs.device)
    p_correct = probs[rows, encoded.correct_ids.to(probs.device)]
    p_incorrect = probs[rows, encoded.incorrect_ids.to(probs.device)]
    right = (logits.argmax(-1) == encoded.correct_ids.to(logits.device)) & (p_correct > 2 * p_incorrect)
    keep = [i for i in range(encoded.n_prompts) if bool(right[i])]
    dropped = encoded.n_prompts - len(keep)
    if not keep:
        raise InputError(
            f"The model gets none of the {encoded.n_prompts} prompts right (top-1 correct and P(correct) > "
            "2·P(incorrect)): turn off 'only prompts the model gets right' or choose another task."
        )
    return subset(model, encoded, keep, f"Kept {len(keep)} of {encoded.n_prompts} prompts the model gets right "
                                 f"(top-1 correct, P(correct) > 2·P(incorrect)); dropped {dropped}.")


def sweep_key(model: Backend, encoded: EncodedDataset, method: str, estimate: bool, only_correct: bool,
              unit: str = "head") -> dict:
    """Everything that changes a sweep's result."""
    return {
        **model.identity,
        "dataset": encoded.dataset.name,
        "dataset_hash": encoded.dataset.content_hash,
        "only_correct": only_correct,
        "method": method,
        "metric": METRIC,
        "estimate": estimate,
        "unit": unit,
        "engine": ENGINE_VERSION,
    }


def load_sweep(
    model: Backend,
    encoded: EncodedDataset,
    method: str,
    estimate: bool,
    only_correct: bool,
    cache: ResultsCache | None = None,
    unit: str = "head",
) -> SweepResult | None:
    """The stored sweep for exactly this configuration, or None."""
    return load_result(cache, CACHE_KIND, sweep_key(model, encoded, method, estimate, only_correct, unit),
                       SweepResult)


def run_sweep(
    model: Backend,
    dataset: Dataset | EncodedDataset,
    method: str = "mean",
    *,
    estimate: bool = False,
    only_correct: bool = False,
    cache: ResultsCache | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    unit: str = "head",
) -> SweepResult:
    """A whole sweep: from the results cache when it holds one for exactly this key, else computed and stored.

    `dataset` may already be encoded for this model (the page encodes it to validate it before any run). An exact
    sweep keeps each prompt's own LDs (per_prompt_*); `unit` "kv-group" ablates whole KV groups.
    """
    encoded = dataset if isinstance(dataset, EncodedDataset) else prepare_dataset(model, dataset)
    check_method(method, encoded)
    get_unit(unit)
    key = sweep_key(model, encoded, method, estimate, only_correct, unit)

    def compute() -> SweepResult:
        started = time.perf_counter()
        used = filter_correct(model, encoded) if only_correct else encoded
        prompts: PromptNumbers | None = None
        if estimate:
            numbers = attribution_sweep(model, used, method, unit)
        else:
            numbers, prompts = exact_sweep_per_prompt(model, used, method, progress=progress,
                                                      should_cancel=should_cancel, unit=unit)
        return SweepResult(
            model=model.info.name, task=used.dataset.name, method=method, estimate=estimate,
            n_prompts=used.n_prompts, seq_len=used.seq_len, clean_ld=numbers.clean_ld, corrupt_ld=numbers.corrupt_ld,
            ablated_ld=numbers.ablated_ld, mlp_ablated_ld=numbers.mlp_ablated_ld,
            seconds=time.perf_counter() - started, token_labels=used.token_labels,
            first_prompt=used.dataset.items[0].prompt, notes=(*used.dataset.notes, *used.warnings), unit=unit,
            per_prompt_ld=None if prompts is None else prompts.ablated_ld,
            per_prompt_mlp_ld=None if prompts is None else prompts.mlp_ablated_ld,
            per_prompt_clean_ld=None if prompts is None else prompts.clean_ld, key=key,
        )

    return stored_or_computed(cache, CACHE_KIND, key, SweepResult, compute, use_cache=use_cache)


def cached_sweeps(model: Backend, cache: ResultsCache | None = None) -> list[SweepResult]:
    """Sweeps already on disk for this model (same source, revision, dtype, device), newest first."""
    return stored_results(cache, CACHE_KIND, SweepResult, model.identity)
