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
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from headscope.backends.base import AblationGroups, BlockRunner, LogitDiffTask
from headscope.engine import (
    LayerValues,
    Progress,
    ProgressCallback,
    WorkTimer,
    fast_runner,
    groups_per_chunk,
    joined_work_units,
    run_joined_groups,
    run_with_ablations,
)
from headscope.errors import InputError
from headscope.memory import block_bytes_per_token, plan_chunks
from headscope.methods import METHOD_NAMES, AblationMethod, get_method
from headscope.results_cache import ResultsCache
from headscope.tasks import TASKS, Dataset, EncodedDataset, encode_dataset, subset

if TYPE_CHECKING:
    from headscope.backends.base import Backend

METHODS = METHOD_NAMES
METRIC = "logit_diff_last_position"
ENGINE_VERSION = 2
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
    cached: bool = False
    key: dict[str, Any] = field(default_factory=dict)

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
        return f"{self.task} · {self.method} ablation · {self.n_prompts} prompts · {kind}"

    def top_heads(self, k: int) -> list[tuple[int, int]]:
        """The k heads whose ablation changes LD the most (either sign)."""
        order = np.argsort(-np.abs(self.change), axis=None)[:k]
        return [(int(i // self.n_heads), int(i % self.n_heads)) for i in order]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "method": self.method,
            "estimate": self.estimate,
            "n_prompts": self.n_prompts,
            "seq_len": self.seq_len,
            "clean_ld": self.clean_ld,
            "corrupt_ld": self.corrupt_ld,
            "layers": self.n_layers,
            "heads": self.n_heads,
            "ablated_ld": self.ablated_ld.tolist(),
            "percent_of_clean": self.percent_of_clean.tolist(),
            "mlp_ablated_ld": self.mlp_ablated_ld.tolist(),
            "seconds": self.seconds,
            "cached": self.cached,
            "token_labels": list(self.token_labels),
            "first_prompt": self.first_prompt,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], key: dict[str, Any], cached: bool = True) -> SweepResult:
        return cls(
            model=data["model"], task=data["task"], method=data["method"], estimate=bool(data["estimate"]),
            n_prompts=int(data["n_prompts"]), seq_len=int(data["seq_len"]), clean_ld=float(data["clean_ld"]),
            corrupt_ld=None if data["corrupt_ld"] is None else float(data["corrupt_ld"]),
            ablated_ld=np.asarray(data["ablated_ld"], dtype=float),
            mlp_ablated_ld=np.asarray(data["mlp_ablated_ld"], dtype=float), seconds=float(data["seconds"]),
            token_labels=tuple(data.get("token_labels", ())), first_prompt=data.get("first_prompt", ""),
            notes=tuple(data.get("notes", ())), cached=cached, key=key,
        )


class SweepNumbers(NamedTuple):
    """What a sweep computes: ablated_ld[layer, head], mlp_ablated_ld[layer], the clean LD and the corrupted LD."""

    ablated_ld: np.ndarray
    mlp_ablated_ld: np.ndarray
    clean_ld: float
    corrupt_ld: float | None


def check_method(method: str, encoded: EncodedDataset) -> AblationMethod:
    spec = get_method(method)
    if spec.needs_corrupted and encoded.corrupted is None:
        raise InputError(
            f"{method} ablation needs corrupted prompts: add a corrupted_prompt column to the dataset, or use zero."
        )
    return spec


@dataclass(frozen=True)
class _DistinctRuns:
    """Identical runs give identical results: the distinct (prompt, answers[, paired corrupted]) rows, weighted by
    how often each occurs, so repeated prompts (tasks with few distinct members) are computed once. Exact."""

    index: torch.Tensor  # rows of the encoded dataset kept
    weights: torch.Tensor  # [distinct] count / n_prompts


def _distinct_runs(encoded: EncodedDataset, method: AblationMethod) -> _DistinctRuns:
    parts = [encoded.clean, encoded.correct_ids[:, None], encoded.incorrect_ids[:, None]]
    if method.pairs_prompts and encoded.corrupted is not None:
        parts.append(encoded.corrupted)
    rows = torch.cat([p.to("cpu") for p in parts], dim=1)
    _, inverse, counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
    first = torch.full((len(counts),), rows.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(rows.shape[0]), reduce="amin")
    order = torch.argsort(first)
    return _DistinctRuns(first[order], counts[order].double() / rows.shape[0])


def logit_diff_task(encoded: EncodedDataset, method: AblationMethod, deduplicate: bool = True) -> LogitDiffTask:
    """The encoded dataset as a backend task: distinct runs weighted by their counts (deduplicate), or every prompt.

    Mean ablation averages over every corrupted prompt; resample keeps each distinct run's paired corrupted prompt."""
    if deduplicate:
        runs = _distinct_runs(encoded, method)
        index, weights = runs.index, runs.weights.to(torch.float32)
    else:
        index = torch.arange(encoded.n_prompts)
        weights = torch.full((encoded.n_prompts,), 1.0 / encoded.n_prompts)
    device = encoded.clean.device
    index = index.to(device)
    corrupted = None
    if encoded.corrupted is not None:
        corrupted = encoded.corrupted[index] if method.pairs_prompts else encoded.corrupted
    return LogitDiffTask(encoded.clean[index], corrupted, encoded.correct_ids[index].to(device),
                         encoded.incorrect_ids[index].to(device), weights)


def corrupted_ld(model: Backend, encoded: EncodedDataset) -> float | None:
    """Mean LD of the corrupted prompts, each with its row's answers (None without corrupted prompts)."""
    if encoded.corrupted is None:
        return None
    ids = torch.stack([encoded.correct_ids, encoded.incorrect_ids], dim=1)
    logits = model.answer_logits(encoded.corrupted, ids)
    return float((logits[:, 0] - logits[:, 1]).double().mean())


def sweep_components(n_layers: int, n_heads: int, include_mlp: bool) -> list[tuple[int, int | None]]:
    """Every head (layer, head) and, with include_mlp, every MLP (layer, None), layer by layer."""
    out: list[tuple[int, int | None]] = []
    for layer in range(n_layers):
        out += [(layer, head) for head in range(n_heads)]
        if include_mlp:
            out.append((layer, None))
    return out


def _numbers_from(components: list[tuple[int, int | None]], lds: np.ndarray, n_layers: int, n_heads: int,
                  clean_ld: float, corrupt: float | None) -> SweepNumbers:
    ablated = np.full((n_layers, n_heads), np.nan)
    mlp_ablated = np.full(n_layers, np.nan)
    for (layer, head), value in zip(components, lds, strict=True):
        if head is None:
            mlp_ablated[layer] = value
        else:
            ablated[layer, head] = value
    return SweepNumbers(ablated, mlp_ablated, clean_ld, corrupt)


# ---------------------------------------------------------------------------------------------------------------
# The exact engine


def exact_sweep(
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
) -> SweepNumbers:
    """Exact ablation of every head (and MLP), one at a time.

    path "auto" takes the backend's fast path (one pass over the layers, headscope.engine) where it offers one, else
    the general path (batched full forwards, one batch per layer); "fast" and "general" force one. `chunk` caps the
    number of ablations in one batch (default: what fits the memory budget).
    """
    spec = check_method(method, encoded)
    info = model.info
    task = logit_diff_task(encoded, spec, deduplicate)
    components = sweep_components(info.n_layers, info.n_heads, include_mlp)
    runner = fast_runner(model, task.seq_len, required=path == "fast")
    with model.gate.job("an exact ablation sweep"):
        if runner is not None and path != "general":
            lds, clean_ld = _fast_sweep(model, runner, task, spec, components, chunk, progress, should_cancel)
        else:
            lds, clean_ld = _general_sweep(model, task, spec, components, chunk, progress, should_cancel)
        corrupt = corrupted_ld(model, encoded)
    return _numbers_from(components, lds, info.n_layers, info.n_heads, clean_ld, corrupt)


def _fast_sweep(
    model: Backend,
    runner: BlockRunner,
    task: LogitDiffTask,
    method: AblationMethod,
    components: list[tuple[int, int | None]],
    chunk: int | None,
    progress: ProgressCallback | None,
    should_cancel: Callable[[], bool] | None,
) -> tuple[np.ndarray, float]:
    info = model.info
    n_layers = info.n_layers
    groups = AblationGroups.single_components(components, n_layers, info.n_heads)
    join = [layer for layer, _ in components]
    chunks = prompt_chunks(model, task, method, len(components))
    timer = WorkTimer(0, progress, should_cancel, model, "The sweep")
    for _ in chunks:
        timer.add_total(joined_work_units(join, n_layers) + (2 if method.needs_corrupted else 1) * n_layers)
    shared = shared_values(model, runner, task, method, timer)
    lds = np.zeros(len(components))
    clean_ld = 0.0
    for rows in chunks:
        clean = task.clean[rows]
        values = chunk_values(model, runner, task, method, rows, shared, timer)
        entries, _ = run_with_ablations(model, runner, clean, values)
        timer.advance(n_layers, "the clean run")
        ids = task.answer_ids[rows]
        weights = task.weights[rows]
        with model.gate.hold(), torch.inference_mode():
            logits = runner.answer_logits(entries.final[:, -1, :], ids.to(entries.final.device))
        clean_ld += float(((logits[:, 0] - logits[:, 1]) * weights.to(logits.device)).sum())
        lds += run_joined_groups(model, runner, entries, groups, join, values, ids, weights, max_groups=chunk,
                                 timer=timer)
    return lds, clean_ld


def prompt_chunks(model: Backend, task: LogitDiffTask, method: AblationMethod, n_groups: int) -> list[torch.Tensor]:
    """Prompts per pass: all at once where the stored residuals (and paired values) fit next to a batch of at least
    a few ablations, else in chunks. Raises MemoryRefused when a single prompt does not fit."""
    info = model.info
    element = torch.tensor([], dtype=model.dtype).element_size()
    seq = task.seq_len
    stored = (info.n_layers + 1) * seq * info.d_model * element
    if method.pairs_prompts:
        stored += info.n_layers * seq * (info.n_heads * info.d_head + info.d_model) * element
    in_flight = block_bytes_per_token(info, model.dtype, seq) * seq * min(n_groups, 8)
    plan = plan_chunks("An exact sweep", task.n_prompts, stored + in_flight, model.budget_bytes())
    return [torch.arange(start, min(start + plan.per_chunk, task.n_prompts))
            for start in range(0, task.n_prompts, plan.per_chunk)]


def chunk_values(model: Backend, runner: BlockRunner, task: LogitDiffTask, method: AblationMethod,
                 rows: torch.Tensor, shared: LayerValues | None, timer: WorkTimer) -> LayerValues:
    """The replacement values for the prompts `rows`: paired ones from their own corrupted run (resample), else the
    shared ones (mean), else zeros."""
    n_layers = model.info.n_layers
    values = shared
    if method.pairs_prompts and task.corrupted is not None:
        _, values = run_with_ablations(model, runner, task.corrupted[rows], LayerValues([], []), method=method,
                                       keep_entries=False)
        timer.advance(n_layers, "the corrupted run")
    return values or LayerValues([None] * n_layers, [None] * n_layers)


def shared_values(model: Backend, runner: BlockRunner, task: LogitDiffTask, method: AblationMethod,
                  timer: WorkTimer) -> LayerValues | None:
    """Replacement values over every corrupted prompt (mean ablation), streamed in chunks that fit memory; None
    for methods whose values are not shared by every prompt (zero, resample)."""
    if not method.needs_corrupted or method.pairs_prompts:
        return None
    assert task.corrupted is not None
    n_layers = model.info.n_layers
    z_builders = [method.builder() for _ in range(n_layers)]
    mlp_builders = [method.builder() for _ in range(n_layers)]
    rows = groups_per_chunk(model, 1, task.seq_len, task.corrupted.shape[0], what="The corrupted run")
    for start in range(0, task.corrupted.shape[0], rows):
        tokens = task.corrupted[start:start + rows]
        with torch.inference_mode():
            with model.gate.hold():
                resid = runner.embed(tokens)
            context = runner.context(resid)
            for layer in range(n_layers):
                with model.gate.hold():
                    out = runner.run_block(layer, resid, context, capture_z=True, capture_mlp=True)
                z_builders[layer].add(out.z)
                mlp_builders[layer].add(out.mlp_out)
                resid = out.resid
        timer.advance(n_layers * tokens.shape[0] / task.corrupted.shape[0], "the corrupted run")

    def finish(builder: Any) -> torch.Tensor | None:
        value = builder.result()
        return None if value is None else value.to(model.dtype)

    return LayerValues([finish(b) for b in z_builders], [finish(b) for b in mlp_builders])


def _general_sweep(
    model: Backend,
    task: LogitDiffTask,
    method: AblationMethod,
    components: list[tuple[int, int | None]],
    chunk: int | None,
    progress: ProgressCallback | None,
    should_cancel: Callable[[], bool] | None,
) -> tuple[np.ndarray, float]:
    """One backend call per layer (its heads and MLP as groups of one batch), plus one for the clean LD."""
    info = model.info
    timer = WorkTimer(len(components) + 1, progress, should_cancel, model, "The sweep")
    clean = model.ablated_logit_diffs(task, method, AblationGroups.empty(1, info.n_layers, info.n_heads))
    timer.advance(1, "the clean run")
    lds = np.zeros(len(components))
    for layer in range(info.n_layers):
        positions = [i for i, (at, _) in enumerate(components) if at == layer]
        for start in range(0, len(positions), chunk or len(positions)):
            part = positions[start:start + (chunk or len(positions))]
            groups = AblationGroups.single_components([components[i] for i in part], info.n_layers, info.n_heads)
            lds[part] = model.ablated_logit_diffs(task, method, groups)
            timer.advance(len(part), f"layer {layer}")
    return lds, float(clean[0])


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
    components = [c for c in sweep_components(info.n_layers, info.n_heads, include_mlp) if c[0] in wanted]
    timer = WorkTimer(len(components), progress, None, model, "The naive sweep")
    lds = []
    for component in components:
        groups = AblationGroups.single_components([component], info.n_layers, info.n_heads)
        lds.append(float(model.ablated_logit_diffs(task, spec, groups, full_forward=True)[0]))
        timer.advance(1, f"{component}")
    clean = float(model.ablated_logit_diffs(task, spec, AblationGroups.empty(1, info.n_layers, info.n_heads))[0])
    numbers = _numbers_from(components, np.asarray(lds), info.n_layers, info.n_heads, clean, None)
    return numbers.ablated_ld, numbers.mlp_ablated_ld, clean


# ---------------------------------------------------------------------------------------------------------------
# Attribution patching: a first-order estimate from one forward and one backward pass


def attribution_sweep(model: Backend, encoded: EncodedDataset, method: str) -> SweepNumbers:
    """Estimate LD_ablated ≈ LD_clean + Σ (replacement − clean) · ∂LD/∂activation for every head and MLP."""
    spec = check_method(method, encoded)
    task = logit_diff_task(encoded, spec, deduplicate=True)
    with model.gate.job("an attribution estimate"):
        effects = model.attribution_effects(task, spec)
        corrupt = corrupted_ld(model, encoded)
    return SweepNumbers(effects.head_effect + effects.clean_ld, effects.mlp_effect + effects.clean_ld,
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


def sweep_key(model: Backend, encoded: EncodedDataset, method: str, estimate: bool, only_correct: bool) -> dict:
    """Everything that changes a sweep's result."""
    return {
        **model.identity,
        "dataset": encoded.dataset.name,
        "dataset_hash": encoded.dataset.content_hash,
        "only_correct": only_correct,
        "method": method,
        "metric": METRIC,
        "estimate": estimate,
        "engine": ENGINE_VERSION,
    }


def prepare_dataset(model: Backend, dataset: Dataset) -> EncodedDataset:
    """Encode for this model; built-in tasks drop prompts of another token length, user datasets must be even."""
    builtin = dataset.builtin or dataset.name in TASKS
    return encode_dataset(model, dataset, fit=builtin, drop_uneven=builtin)


def load_sweep(
    model: Backend,
    encoded: EncodedDataset,
    method: str,
    estimate: bool,
    only_correct: bool,
    cache: ResultsCache | None = None,
) -> SweepResult | None:
    """The stored sweep for exactly this configuration, or None."""
    cache = cache if cache is not None else ResultsCache()
    key = sweep_key(model, encoded, method, estimate, only_correct)
    stored = cache.load(CACHE_KIND, key)
    return None if stored is None else SweepResult.from_json(stored, key, cached=True)


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
) -> SweepResult:
    """A whole sweep: from the results cache when it holds one for exactly this key, else computed and stored.

    `dataset` may already be encoded for this model (the page encodes it to validate it before any run).
    """
    encoded = dataset if isinstance(dataset, EncodedDataset) else prepare_dataset(model, dataset)
    check_method(method, encoded)
    cache = cache if cache is not None else ResultsCache()
    if use_cache:
        stored = load_sweep(model, encoded, method, estimate, only_correct, cache)
        if stored is not None:
            return stored
    key = sweep_key(model, encoded, method, estimate, only_correct)
    started = time.perf_counter()
    if only_correct:
        encoded = filter_correct(model, encoded)
    if estimate:
        ablated, mlp_ablated, clean_ld, corrupt_ld = attribution_sweep(model, encoded, method)
    else:
        ablated, mlp_ablated, clean_ld, corrupt_ld = exact_sweep(
            model, encoded, method, progress=progress, should_cancel=should_cancel
        )
    result = SweepResult(
        model=model.info.name,
        task=encoded.dataset.name,
        method=method,
        estimate=estimate,
        n_prompts=encoded.n_prompts,
        seq_len=encoded.seq_len,
        clean_ld=clean_ld,
        corrupt_ld=corrupt_ld,
        ablated_ld=ablated,
        mlp_ablated_ld=mlp_ablated,
        seconds=time.perf_counter() - started,
        token_labels=encoded.token_labels,
        first_prompt=encoded.dataset.items[0].prompt,
        notes=(*encoded.dataset.notes, *encoded.warnings),
        key=key,
    )
    cache.store(CACHE_KIND, key, result.to_json())
    return result


def cached_sweeps(model: Backend, cache: ResultsCache | None = None) -> list[SweepResult]:
    """Sweeps already on disk for this model (same source, revision, dtype, device), newest first."""
    cache = cache if cache is not None else ResultsCache()
    return cache.readable(CACHE_KIND, lambda entry: SweepResult.from_json(entry.payload, entry.key), model.identity)

