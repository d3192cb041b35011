"""How heads connect: path patching. For a sender head S and a receiver (a later head's query, key or value input,
or the logits), the LD when only the path S → receiver carries S's changed value; every other reader of S sees the
value of the run.

Noise (default, as the ablation page): run the clean prompts; the path carries S's ablated value (zero, mean,
resample). Denoise (TransformerLens' convention): run the corrupted prompts; the path carries S's clean value.
The definition, its reference and its costs are in docs/path-patching.md. This module states the query, checks it,
builds one InterventionGroup per edge (`PathEdge.group`: the sender's change on the receiver's input) and reads
the one evaluator's per-prompt LDs (headscope.engine), caches and reads results; the backends lower the edges
(headscope/backends/path_runs.py, nnsight_paths.py).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch

from headscope.backends.interventions import (
    InterventionGroup,
    LogitDiffTask,
    PathEdge,
    Site,
    SiteKind,
    SourceKind,
    receiver_site,
)
from headscope.component import Component
from headscope.engine import METRIC, Progress, ProgressCallback, check_method, evaluation, logit_diff_task
from headscope.errors import InputError
from headscope.results_cache import ResultsCache, load_result, stored_or_computed
from headscope.serialize import NOT_STORED
from headscope.tasks import Dataset, EncodedDataset, prepare_dataset

if TYPE_CHECKING:
    from headscope.backends.base import Backend
    from headscope.methods import AblationMethod

PathInto = Literal["q", "k", "v"]
PathDirection = Literal["noise", "denoise"]
INTO: tuple[str, ...] = get_args(PathInto)
DIRECTIONS: tuple[str, ...] = get_args(PathDirection)
INTO_SITES: dict[str, SiteKind] = {"q": SiteKind.Q_INPUT, "k": SiteKind.K_INPUT, "v": SiteKind.V_INPUT}
ENGINE_VERSION = 2  # 2: results keep the run's per-prompt LDs (run_prompt_ld)
CACHE_KIND = "paths"
PathProgress = Progress


@dataclass(frozen=True)
class PathQuery:
    """Which paths: exactly one of a sender (→ every later head), a receiver (← every earlier head), or to_logits
    (every head's direct path to the unembedding)."""

    sender: Component | None = None  # fixed sender head (sender view)
    receiver: Component | None = None  # fixed receiver head (receiver view)
    to_logits: bool = False  # receiver is the logits: every head as sender, straight to the unembedding
    into: PathInto = "q"
    direction: PathDirection = "noise"
    method: str = "resample"  # a methods.py registry name (noise only; denoise patches the clean value in)

    @property
    def view(self) -> str:
        """"sender", "receiver" or "logits"."""
        return "sender" if self.sender is not None else "receiver" if self.receiver is not None else "logits"

    @property
    def sender_label(self) -> str:
        return self.sender.label if self.sender is not None else "every head"

    @property
    def receiver_label(self) -> str:
        if self.to_logits:
            return "logits"
        return self.receiver.label if self.receiver is not None else "every later head"

    def check_options(self) -> None:
        """Raises InputError (one line) for options that name no valid query, whatever the model."""
        chosen = sum([self.sender is not None, self.receiver is not None, self.to_logits])
        if chosen != 1:
            raise InputError("Choose exactly one of a sender head, a receiver head, or the logits as receiver.")
        if self.into not in INTO:
            raise InputError(f"Unknown input {self.into!r}: choose one of {', '.join(INTO)}.")
        if self.direction not in DIRECTIONS:
            raise InputError(f"Unknown direction {self.direction!r}: choose one of {', '.join(DIRECTIONS)}.")
        if self.direction == "denoise" and self.method != "resample":
            raise InputError("Denoising patches each sender's clean value into the corrupted run: --method applies "
                             "to noising only (leave it at resample).")

    def check(self, n_layers: int, n_heads: int) -> None:
        """Raises InputError (one line) for a query that names no valid paths on this model."""
        self.check_options()
        for role, head in (("sender", self.sender), ("receiver", self.receiver)):
            if head is None:
                continue
            if head.head is None:
                raise InputError(f"The {role} must be a head (layer.head), not {head.label}.")
            if not head.within(n_layers, n_heads):
                raise InputError(f"No head {head.label}: this model has {n_layers} layers of {n_heads} heads "
                                 f"(0.0 to {n_layers - 1}.{n_heads - 1}).")
        if self.sender is not None and self.sender.layer == n_layers - 1:
            raise InputError(f"Sender {self.sender.label} is in the last layer: no later head reads it (use the "
                             "logits as receiver for its direct effect).")
        if self.receiver is not None and self.receiver.layer == 0:
            raise InputError(f"Receiver {self.receiver.label} is in layer 0: no earlier head writes to it.")


@dataclass(frozen=True)
class PathResult:
    """LDs with one path patched: ld[layer, head] over the partner heads (nan where a head is not a valid partner:
    not later than the sender, not earlier than the receiver), per_prompt_ld[prompt, layer, head] the same per
    prompt (each prompt's own logit difference), to_logits_ld the sender's direct path to the logits (sender view)."""

    model: str
    task: str
    query: PathQuery
    clean_ld: float  # LD of the clean run
    corrupt_ld: float | None  # LD of the corrupted run (the run that denoising patches)
    ld: np.ndarray  # [layer, head]
    per_prompt_ld: np.ndarray  # [prompt, layer, head]
    run_prompt_ld: np.ndarray  # [prompt]: each prompt's LD in the run, nothing patched (from the same evaluation)
    to_logits_ld: float | None
    kv_grouped: bool  # K/V inputs patched per KV group (grouped-query models): every head of a group shows its value
    n_prompts: int
    seconds: float
    cached: bool = False
    key: dict[str, Any] = field(default_factory=dict, metadata=NOT_STORED)

    @property
    def run_ld(self) -> float:
        """The LD of the run the paths are patched into: clean (noise) or corrupted (denoise)."""
        if self.query.direction == "denoise" and self.corrupt_ld is not None:
            return self.corrupt_ld
        return self.clean_ld

    @property
    def cells_per_group(self) -> bool:
        """Whether the grid repeats one KV group's value on each of its query heads: a K/V sender view on a grouped-
        query model (a receiver view's K/V input is the group's too, but its cells are distinct senders)."""
        return self.kv_grouped and self.query.sender is not None

    @property
    def change(self) -> np.ndarray:
        """ld − the run's LD: a path's effect (nan where not a partner)."""
        return self.ld - self.run_ld

    def top_paths(self, k: int = 10) -> list[tuple[Component, float]]:
        """The k partner heads whose path moves the LD most (largest |change|), with their LD."""
        change = np.nan_to_num(np.abs(self.change), nan=-1.0)
        order = np.argsort(-change, axis=None)[:k]
        heads = self.ld.shape[1]
        return [(Component(int(i) // heads, int(i) % heads), float(self.ld.flat[i])) for i in order
                if change.flat[i] >= 0]


def partners(query: PathQuery, n_layers: int, n_heads: int) -> list[Component]:
    """The heads a query's grid holds values for: later heads (sender), earlier heads (receiver), every head
    (logits)."""
    if query.sender is not None:
        layers = range(query.sender.layer + 1, n_layers)
    elif query.receiver is not None:
        layers = range(query.receiver.layer)
    else:
        layers = range(n_layers)
    return [Component(layer, head) for layer in layers for head in range(n_heads)]


def path_key(model: Backend, encoded: EncodedDataset, query: PathQuery) -> dict[str, Any]:
    """Everything that changes a path result."""
    return {
        **model.identity,
        "dataset": encoded.dataset.name,
        "dataset_hash": encoded.dataset.content_hash,
        "n_prompts": encoded.n_prompts,
        "sender": None if query.sender is None else query.sender.label,
        "receiver": "logits" if query.to_logits else None if query.receiver is None else query.receiver.label,
        "into": query.into,
        "direction": query.direction,
        "method": query.method,
        "metric": METRIC,
        "engine": ENGINE_VERSION,
    }


def _source_kind(query: PathQuery) -> SourceKind:
    if query.direction == "denoise":
        return SourceKind.PAIRED
    return check_source(query.method)


def check_source(method: str) -> SourceKind:
    from headscope.methods import get_method

    return SourceKind(get_method(method).source)


@dataclass(frozen=True)
class PathGroups:
    """What the evaluator runs for a query: the task (its clean prompts are the run: the corrupted ones when
    denoising, the replacement values' prompts then the clean ones), the senders' replacement method, the edges and
    their groups (group 0 edits nothing: the run's own LDs)."""

    task: LogitDiffTask
    method: AblationMethod
    edges: tuple[PathEdge, ...]
    groups: tuple[InterventionGroup, ...]


def path_groups(model: Backend, encoded: EncodedDataset, query: PathQuery) -> PathGroups:
    """The query's edges as InterventionGroups, one per edge, after the run: every prompt once (not deduplicated)."""
    info = model.info
    query.check(info.n_layers, info.n_heads)
    source = _source_kind(query)
    method = check_method("resample" if query.direction == "denoise" else query.method, encoded)
    task = logit_diff_task(encoded, method, deduplicate=False)
    if query.direction == "denoise":
        assert task.corrupted is not None
        task = LogitDiffTask(task.corrupted, task.clean, task.correct, task.incorrect, task.weights)
    heads = partners(query, info.n_layers, info.n_heads)
    if query.sender is not None:
        sites = {receiver_site(INTO_SITES[query.into], h, info.heads_per_kv) for h in heads}
        edges = [PathEdge(query.sender, site) for site in sorted(sites, key=_site_order)]
        edges.append(PathEdge(query.sender, None))  # the sender's direct path to the logits
    elif query.receiver is not None:
        site = receiver_site(INTO_SITES[query.into], query.receiver, info.heads_per_kv)
        edges = [PathEdge(h, site) for h in heads]
    else:
        edges = [PathEdge(h, None) for h in heads]
    reference = "clean" if query.direction == "denoise" else "corrupted"
    groups = [InterventionGroup.nothing()] + [edge.group(source, info.n_layers, reference) for edge in edges]
    return PathGroups(task, method, tuple(edges), tuple(groups))


def _site_order(site: Site) -> tuple[int, int]:
    return (site.layer, site.head if site.head is not None else -1)


def _grid(edges: tuple[PathEdge, ...], per_edge: np.ndarray, query: PathQuery, n_layers: int, n_heads: int,
          heads_per_kv: int) -> tuple[np.ndarray, float | None]:
    """per_prompt[prompt, layer, head] (nan off the partners) from per_edge[edge, prompt]; the sender's logits path."""
    n_prompts = per_edge.shape[1]
    grid = np.full((n_prompts, n_layers, n_heads), np.nan)
    to_logits = None
    for index, edge in enumerate(edges):
        values = per_edge[index]
        if query.sender is not None:
            if edge.receiver is None:
                to_logits = float(values.mean())
                continue
            site = edge.receiver
            shared = site.kind is not SiteKind.Q_INPUT and heads_per_kv > 1
            heads = range(site.head, site.head + heads_per_kv) if shared else [site.head]
            for head in heads:
                grid[:, site.layer, head] = values
        else:
            grid[:, edge.sender.layer, edge.sender.head] = values
    return grid, to_logits


def compute_paths(model: Backend, encoded: EncodedDataset, query: PathQuery, *, path: str = "auto",
                  progress: ProgressCallback | None = None,
                  should_cancel: Callable[[], bool] | None = None) -> PathResult:
    """The paths of `query`, computed (no cache): one evaluation of the run and every edge's group. path: "auto"
    (the fast path where the backend has one), "fast" or "general"."""
    from headscope.engine import corrupted_ld

    started = time.perf_counter()
    info = model.info
    planned = path_groups(model, encoded, query)
    with evaluation(model, planned.task, planned.method, label="Path patching", what="The path patching",
                    subject="The path patching", path=path, progress=progress,
                    should_cancel=should_cancel) as evaluator:
        lds = evaluator.evaluate(planned.groups, per_prompt=True)
    run_prompt_ld, per_edge = lds[0], lds[1:]
    run_ld = float(torch.from_numpy(run_prompt_ld).mean())
    ld_grid, to_logits = _grid(planned.edges, per_edge, query, info.n_layers, info.n_heads, info.heads_per_kv)
    corrupt = corrupted_ld(model, encoded)
    clean = run_ld if query.direction == "noise" else _clean_ld(model, encoded)
    if query.direction == "denoise":
        corrupt = run_ld
    return PathResult(
        model=info.name, task=encoded.dataset.name, query=query, clean_ld=clean, corrupt_ld=corrupt,
        ld=_prompt_mean(ld_grid), per_prompt_ld=ld_grid, run_prompt_ld=run_prompt_ld, to_logits_ld=to_logits,
        kv_grouped=query.into != "q" and info.heads_per_kv > 1 and not query.to_logits,
        n_prompts=encoded.n_prompts, seconds=time.perf_counter() - started,
    )


def _prompt_mean(grid: np.ndarray) -> np.ndarray:
    """The mean over prompts of grid[prompt, layer, head], nan where a head holds no value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": the heads that are no partner
        return np.nanmean(grid, axis=0)


def _clean_ld(model: Backend, encoded: EncodedDataset) -> float:
    ids = torch.stack([encoded.correct_ids, encoded.incorrect_ids], dim=1)
    logits = model.answer_logits(encoded.clean, ids)
    return float((logits[:, 0] - logits[:, 1]).double().mean())


def load_paths(model: Backend, encoded: EncodedDataset, query: PathQuery,
               cache: ResultsCache | None = None) -> PathResult | None:
    """The stored result for exactly this query, or None."""
    return load_result(cache, CACHE_KIND, path_key(model, encoded, query), PathResult)


def run_paths(
    model: Backend,
    dataset: Dataset | EncodedDataset,
    query: PathQuery,
    *,
    cache: ResultsCache | None = None,
    use_cache: bool = True,
    path: str = "auto",
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> PathResult:
    """Path patching for `query`: from the results cache when it holds exactly this key, else computed and stored.
    `dataset` may already be encoded for this model."""
    encoded = dataset if isinstance(dataset, EncodedDataset) else prepare_dataset(model, dataset)
    query.check(model.info.n_layers, model.info.n_heads)
    key = path_key(model, encoded, query)

    def compute() -> PathResult:
        result = compute_paths(model, encoded, query, path=path, progress=progress, should_cancel=should_cancel)
        return PathResult(**{**result.__dict__, "key": key})

    return stored_or_computed(cache, CACHE_KIND, key, PathResult, compute, use_cache=use_cache)


__all__ = ["CACHE_KIND", "DIRECTIONS", "INTO", "PathDirection", "PathInto", "PathProgress", "PathQuery",
           "PathResult", "compute_paths", "load_paths", "partners", "path_key", "run_paths"]
