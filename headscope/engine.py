"""The one evaluator every intervention-based analysis calls: "the logit difference with these groups of
components replaced", exactly, on a backend's fast or general path.

`LogitDiffEvaluator` takes a logit-difference task (headscope.backends.base.LogitDiffTask), an ablation method (the
value source) and InterventionGroups (the vocabulary of headscope.backends.base: which sites each group of rows
edits, with what). It picks the path once, plans prompt and group chunks from the memory budget, holds the model
gate (`evaluation`) and reports progress and cancellation itself (`WorkTimer`). Analyses (headscope.ablation,
headscope.circuit, headscope.path_patching) only build groups and read the LDs. Internally the fast path runs the
groups' dense lowering (AblationGroups); the general path hands the groups to the backend's `logit_diffs`. Path
patching's groups (a sender's change into one receiver: SENDER_CHANGE edits) go to the backend's edge lowering
(`edge_logit_diffs`) in one call, with this evaluator's block runner on the fast path.

The fast path: one pass over the layers. Each group of rows *joins* the pass at a layer: below that layer its
residual stream equals a shared entry residual (the run with the evaluator's *base* set ablated: nothing for a sweep,
the current circuit for a circuit search), so it is not recomputed; from there on the group rides along in one batch
with every group that joined before. At block j the batch holds the groups joined at layers ≤ j, so the model runs
N block calls with large matrix products instead of one partial forward per layer; only the last position's two
answer logits are computed at the end. Groups are cut into chunks whose batch fits the memory budget (the batch grows
as groups join), and the model is held one block call at a time, so other sessions get their turn in between.

The general path (every backend, remote ones included): the backend's batched full forwards, one call per join
layer and chunk.

Exactness: every row is computed exactly as in a full forward with the same ablations (rows never interact); the
engine is tested against one forward per component and against hand-written PyTorch hooks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from headscope.backends.base import BlockRunner, InputEdit, MlpEdit, ZEdit
from headscope.backends.interventions import (
    AblationGroups,
    EdgeGroups,
    InterventionGroup,
    LogitDiffTask,
    Site,
    SiteKind,
    SourceKind,
    UnsupportedIntervention,
    ValueSource,
)
from headscope.component import Component
from headscope.errors import Cancelled, InputError
from headscope.memory import block_bytes_per_token, element_size, plan_chunks
from headscope.methods import AblationMethod, get_method

if TYPE_CHECKING:
    from headscope.backends.base import Backend
    from headscope.tasks import EncodedDataset

METRIC = "logit_diff_last_position"
PathChoice = Literal["auto", "fast", "general"]
PATHS: tuple[str, ...] = ("auto", "fast", "general")


@dataclass(frozen=True)
class Progress:
    """Reported while a long computation runs: fraction done, estimated seconds left, what it is doing."""

    fraction: float
    eta_seconds: float | None
    message: str


ProgressCallback = Callable[[Progress], None]


class WorkTimer:
    """Progress with an ETA over units of work; checks for cancellation; tells the model's gate how far it is."""

    def __init__(self, total: float, progress: ProgressCallback | None, should_cancel: Callable[[], bool] | None,
                 model: Backend | None = None, what: str = "The computation") -> None:
        self.total = max(total, 1.0)
        self.done = 0.0
        self.started = time.perf_counter()
        self.progress = progress
        self.should_cancel = should_cancel
        self.model = model
        self.what = what

    def add_total(self, units: float) -> None:
        self.total += units

    def check(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled(f"{self.what} was cancelled.")

    def advance(self, units: float, message: str) -> None:
        self.done += units
        self.check()
        fraction = min(self.done / self.total, 1.0)
        if self.model is not None:
            self.model.gate.report(fraction)
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            eta = elapsed / fraction * (1 - fraction) if fraction > 0 else None
            self.progress(Progress(fraction, eta, message))


@dataclass(frozen=True)
class LayerValues:
    """Per-layer replacement values for a batch of P prompts: z[layer] [1|P, pos, head, d_head] or None (zeros),
    mlp[layer] [1|P, pos, d_model] or None."""

    z: Sequence[torch.Tensor | None]
    mlp: Sequence[torch.Tensor | None]


@dataclass(frozen=True)
class EntryResiduals:
    """The residual entering every layer of one run: resid[layer][P, pos, d_model] for layer 0 … N (N: after the
    last block); or (a mapping) only at the layers a run_joined_groups pass joins at."""

    resid: Sequence[torch.Tensor] | Mapping[int, torch.Tensor]

    def entering(self, layer: int) -> torch.Tensor:
        return self.resid[layer]

    @property
    def final(self) -> torch.Tensor:
        return self.resid[-1]


def fast_runner(model: Backend, seq_len: int, *, required: bool = False) -> BlockRunner | None:
    """The backend's fast path if it offers one that is exact for prompts of seq_len tokens (sliding-window
    attention limits the block loop), else None: the engine then takes the general path. required=True raises
    instead of returning None."""
    runner = model.block_runner
    span = getattr(runner, "max_seq_len", None)
    reason = None
    if runner is None:
        reason = f"The {model.info.backend_label} backend offers no fast path for {model.info.name}."
    elif span is not None and seq_len > span:
        reason = (f"{model.info.name} attends within a sliding window of {span} positions, which the fast path does "
                  f"not apply: these prompts are {seq_len} tokens. Use the general path.")
    if reason is None:
        return runner
    if required:
        raise InputError(reason)
    return None


def run_with_ablations(
    model: Backend,
    runner: BlockRunner,
    tokens: torch.Tensor,
    values: LayerValues,
    ablated: AblationGroups | None = None,
    *,
    method: AblationMethod | None = None,
    keep_entries: bool = True,
) -> tuple[EntryResiduals, LayerValues | None]:
    """Run tokens[P, pos] block by block with one set of components ablated (ablated: one group, or None for a clean
    run), keeping the residual entering each layer. With `method`, the run's own z and MLP outputs are turned into
    replacement values (the corrupted run)."""
    n_layers = model.info.n_layers
    entries: list[torch.Tensor] = []
    z_made: list[torch.Tensor | None] = []
    mlp_made: list[torch.Tensor | None] = []
    with torch.inference_mode():
        with model.gate.hold():
            resid = runner.embed(tokens)
        context = runner.context(resid)
        for layer in range(n_layers):
            if keep_entries:
                entries.append(resid)
            z_edit = mlp_edit = None
            if ablated is not None:
                heads = ablated.heads[0, layer].to(resid.device)
                if bool(heads.any()):
                    z_edit = ZEdit(heads.expand(resid.shape[0], -1), values.z[layer])
                if bool(ablated.mlps[0, layer]):
                    mlp_edit = MlpEdit(torch.ones(resid.shape[0], dtype=torch.bool, device=resid.device),
                                       values.mlp[layer])
            capture = method is not None and method.needs_corrupted
            with model.gate.hold():
                out = runner.run_block(layer, resid, context, z_edit=z_edit, mlp_edit=mlp_edit,
                                       capture_z=capture, capture_mlp=capture)
            if capture:
                assert method is not None
                z_made.append(method.replacement(out.z))
                mlp_made.append(method.replacement(out.mlp_out))
            resid = out.resid
        entries.append(resid)
    made = LayerValues(z_made, mlp_made) if method is not None and method.needs_corrupted else None
    return EntryResiduals(entries if keep_entries else [resid]), made


def _tile_rows(values: torch.Tensor | None, copies: int) -> torch.Tensor | None:
    """[1, ...] broadcasts over any number of rows; [P, ...] repeats once per group."""
    if values is None or values.shape[0] == 1 or copies == 1:
        return values
    return values.repeat(copies, *([1] * (values.ndim - 1)))


def groups_per_chunk(model: Backend, n_prompts: int, seq_len: int, n_groups: int, budget: int | None = None,
                     fixed_bytes: int = 0, what: str = "The ablation") -> int:
    """Groups whose rows fit in one in-flight batch within the memory budget."""
    unit = block_bytes_per_token(model.info, model.dtype, seq_len) * seq_len * n_prompts
    budget = model.budget_bytes() if budget is None else budget
    return plan_chunks(what, n_groups, unit, budget, fixed_bytes, target=model.chunk_target() + fixed_bytes).per_chunk


@dataclass(frozen=True, eq=False)  # holds a tensor: compared by identity
class ReceiverInput:
    """A path group's change at its join layer (path patching's edge S → R): delta[P, pos, d_model] (the sender's
    change, float32) added to what receiver site R's projection reads (Q_INPUT, K_INPUT, V_INPUT; a KV group named
    by its first query head), every other reader of the residual unchanged."""

    site: Site
    delta: torch.Tensor


def receiver_input_edits(model: Backend, receivers: Sequence[ReceiverInput | None], joined: Sequence[int],
                         layer: int, n_prompts: int, like: torch.Tensor, frozen_norm: bool) -> tuple[InputEdit, ...]:
    """The block runner's input edits (one per kind) for the groups in the batch (`joined`, in row order, n_prompts
    rows each; `like`: a tensor of the batch's [rows, pos, d_model] shape and device) whose receiver sits at `layer`:
    the fast path's at its join layer, and the general path's whole forward at every receiver layer."""
    per_kv = model.info.n_heads // model.info.n_kv_heads
    mine = [(slot, receiver) for slot, group in enumerate(joined)
            if (receiver := receivers[group]) is not None and receiver.site.layer == layer]
    edits = []
    for kind in (SiteKind.Q_INPUT, SiteKind.K_INPUT, SiteKind.V_INPUT):
        of_kind = [(slot, receiver) for slot, receiver in mine if receiver.site.kind is kind]
        if not of_kind:
            continue
        per_column = 1 if kind is SiteKind.Q_INPUT else per_kv
        rows = torch.zeros(like.shape[0], model.info.n_heads // per_column, dtype=torch.bool, device=like.device)
        delta = torch.zeros(*like.shape, dtype=of_kind[0][1].delta.dtype, device=like.device)
        for slot, receiver in of_kind:
            assert receiver.site.head is not None
            span = slice(slot * n_prompts, (slot + 1) * n_prompts)
            rows[span, receiver.site.head // per_column] = True
            delta[span] = receiver.delta.to(like.device)
        edits.append(InputEdit(kind, rows, delta, frozen_norm))
    return tuple(edits)


def run_joined_groups(
    model: Backend,
    runner: BlockRunner,
    entries: EntryResiduals,
    groups: AblationGroups,
    join_layers: Sequence[int],
    values: LayerValues,
    answer_ids: torch.Tensor,
    weights: torch.Tensor,
    *,
    max_groups: int | None = None,
    timer: WorkTimer | None = None,
    per_prompt: bool = False,
    receivers: Sequence[ReceiverInput | None] | None = None,
    frozen_receiver_norm: bool = False,
    what: str = "ablations",
) -> np.ndarray:
    """ld[group] for groups that each join the pass at join_layers[group] from entries.entering(join_layer) and
    ablate, at every layer from there on, the components groups.heads[group] / groups.mlps[group] name.

    Rows of a group are the P prompts of the entry residual; answer_ids[P, 2] (correct, incorrect) and weights[P]
    (summing to 1) make its LD. Groups are processed in chunks of at most `max_groups` (default: what fits).
    per_prompt: ld[group, prompt] instead, each prompt's own logit difference (unweighted).
    receivers[group] (path groups, joining at their receiver's layer): that group's receiver reads the residual plus
    its delta at its join layer (the receiver norm recomputed, or frozen with frozen_receiver_norm).
    """
    n_layers = model.info.n_layers
    order = sorted(range(len(groups)), key=lambda g: join_layers[g])
    entry0 = entries.entering(join_layers[order[0]] if order else 0)
    n_prompts, seq_len = int(entry0.shape[0]), int(entry0.shape[1])
    per_chunk = max_groups or groups_per_chunk(model, n_prompts, seq_len, len(groups))
    out = np.zeros((len(groups), n_prompts) if per_prompt else len(groups))
    device = entry0.device
    weights = weights.to(device, torch.float32)
    for start in range(0, len(order), per_chunk):
        chunk = order[start:start + per_chunk]
        first = join_layers[chunk[0]]
        joined: list[int] = []  # groups in the batch, in row order
        resid: torch.Tensor | None = None
        context = None
        with torch.inference_mode():
            for layer in range(first, n_layers):
                joining = [g for g in chunk if join_layers[g] == layer]
                if joining:
                    fresh = entries.entering(layer).repeat(len(joining), 1, 1)
                    resid = fresh if resid is None else torch.cat([resid, fresh])
                    joined += joining
                    if context is None:
                        context = runner.context(resid)
                assert resid is not None
                rows = torch.tensor(joined, dtype=torch.long)
                head_mask = groups.heads[rows, layer]  # [group, head]
                z_edit = mlp_edit = None
                if bool(head_mask.any()):
                    z_edit = ZEdit(head_mask.to(device).repeat_interleave(n_prompts, dim=0),
                                   _tile_rows(values.z[layer], len(joined)))
                mlp_mask = groups.mlps[rows, layer]
                if bool(mlp_mask.any()):
                    mlp_edit = MlpEdit(mlp_mask.to(device).repeat_interleave(n_prompts),
                                       _tile_rows(values.mlp[layer], len(joined)))
                inputs = () if receivers is None or not joining else receiver_input_edits(
                    model, receivers, joined, layer, n_prompts, resid, frozen_receiver_norm)
                cut = layer == n_layers - 1 and runner.supports_last_position_only
                with model.gate.hold():
                    resid = runner.run_block(layer, resid, context, z_edit=z_edit, mlp_edit=mlp_edit,
                                             input_edits=inputs, last_position_only=cut).resid
                if timer is not None:
                    timer.advance(len(joined), f"layer {layer}: {len(joined)} {what} in flight")
            assert resid is not None
            with model.gate.hold():
                logits = runner.answer_logits(resid[:, -1, :], answer_ids.to(device).repeat(len(joined), 1))
        diff = (logits[:, 0] - logits[:, 1]).view(len(joined), n_prompts)
        lds = (diff if per_prompt else (diff * weights).sum(1)).double().cpu().numpy()
        for index, group in enumerate(joined):
            out[group] = lds[index]
    return out


def joined_work_units(join_layers: Sequence[int], n_layers: int) -> int:
    """Group-blocks a run_joined_groups call will compute (for progress totals)."""
    return int(sum(n_layers - layer for layer in join_layers))


# ---------------------------------------------------------------------------------------------------------------
# The task: prompts, answers and the value source, as every analysis hands them to the evaluator


def check_method(method: str, encoded: EncodedDataset) -> AblationMethod:
    """The registered method, after checking the dataset gives what it needs (corrupted prompts)."""
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
    rows: torch.Tensor  # [prompt]: the distinct run each prompt of the encoded dataset is


def _distinct_runs(encoded: EncodedDataset, method: AblationMethod) -> _DistinctRuns:
    parts = [encoded.clean, encoded.correct_ids[:, None], encoded.incorrect_ids[:, None]]
    if method.pairs_prompts and encoded.corrupted is not None:
        parts.append(encoded.corrupted)
    rows = torch.cat([p.to("cpu") for p in parts], dim=1)
    _, inverse, counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
    first = torch.full((len(counts),), rows.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(rows.shape[0]), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return _DistinctRuns(first[order], counts[order].double() / rows.shape[0], rank[inverse])


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


def prompt_rows(encoded: EncodedDataset, method: AblationMethod, deduplicate: bool = True) -> np.ndarray:
    """rows[prompt]: the row of logit_diff_task(encoded, method, deduplicate) that each prompt of the dataset is, so
    per-prompt values of the task (ld[..., row]) expand back to every dataset prompt (ld[..., rows])."""
    if not deduplicate:
        return np.arange(encoded.n_prompts)
    return _distinct_runs(encoded, method).rows.numpy()


def corrupted_ld(model: Backend, encoded: EncodedDataset) -> float | None:
    """Mean LD of the corrupted prompts, each with its row's answers (None without corrupted prompts)."""
    if encoded.corrupted is None:
        return None
    ids = torch.stack([encoded.correct_ids, encoded.incorrect_ids], dim=1)
    logits = model.answer_logits(encoded.corrupted, ids)
    return float((logits[:, 0] - logits[:, 1]).double().mean())


# ---------------------------------------------------------------------------------------------------------------
# Memory: what the fast path keeps per prompt, and how many prompts and groups go in one pass


def _kept_bytes_per_prompt(model: Backend, seq_len: int, method: AblationMethod) -> int:
    """Bytes a pass keeps per prompt: the residual entering every layer, and paired replacement values (resample)."""
    info = model.info
    element = element_size(model.dtype)
    kept = (info.n_layers + 1) * seq_len * info.d_model * element
    if method.pairs_prompts:
        kept += info.n_layers * seq_len * (info.n_heads * info.d_head + info.d_model) * element
    return kept


def prompt_chunks(model: Backend, task: LogitDiffTask, method: AblationMethod, what: str) -> list[torch.Tensor]:
    """Prompts per pass: all at once where their kept residuals (and paired values) fit next to a batch of at
    least a few groups, else in chunks. Raises MemoryRefused when a single prompt does not fit."""
    seq = task.seq_len
    in_flight = block_bytes_per_token(model.info, model.dtype, seq) * seq * 8
    plan = plan_chunks(what, task.n_prompts, _kept_bytes_per_prompt(model, seq, method) + in_flight,
                       model.budget_bytes())
    return [torch.arange(start, min(start + plan.per_chunk, task.n_prompts))
            for start in range(0, task.n_prompts, plan.per_chunk)]


# ---------------------------------------------------------------------------------------------------------------
# Replacement values on the fast path


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


# ---------------------------------------------------------------------------------------------------------------
# The evaluator


class _FastPath:
    """Block by block: entry residuals of the base run per prompt chunk, groups joining at their layer."""

    name = "fast"

    def __init__(self, model: Backend, runner: BlockRunner, task: LogitDiffTask, method: AblationMethod,
                 timer: WorkTimer, chunk: int | None, what: str) -> None:
        self.model, self.runner, self.task, self.method, self.timer = model, runner, task, method, timer
        self.n_layers = model.info.n_layers
        self.rows = prompt_chunks(model, task, method, what)
        largest = len(self.rows[0])
        kept = _kept_bytes_per_prompt(model, task.seq_len, method) * largest
        self.per_chunk = chunk or groups_per_chunk(model, largest, task.seq_len, 10**6, fixed_bytes=kept, what=what)
        self._shared: LayerValues | None = None  # mean values over every corrupted prompt, made on first need
        self._shared_made = False
        self.base: AblationGroups | None = None
        self._keep = len(self.rows) == 1  # one prompt chunk: its values and entries stay between calls
        self._values: dict[int, LayerValues] = {}
        self._entries: dict[int, EntryResiduals] = {}
        self._base_lds: dict[int, np.ndarray] = {}  # per prompt chunk: each prompt's own base LD

    @property
    def setup_units(self) -> float:
        per_chunk = 2 if self.method.pairs_prompts else 1  # (the paired corrupted run and) the base run
        shared = 1 if self.method.needs_corrupted and not self.method.pairs_prompts else 0
        return self.n_layers * (len(self.rows) * per_chunk + shared)

    def cost(self, join_layers: Sequence[int]) -> int:
        return joined_work_units(join_layers, self.n_layers)

    def set_base(self, base: AblationGroups | None) -> None:
        if _same_set(base, self.base):
            return  # the entries (and the base LD) computed already stay valid
        self.base = base
        self._entries.clear()
        self._base_lds.clear()

    def _state(self, index: int) -> tuple[LayerValues, EntryResiduals]:
        rows = self.rows[index]
        values = self._values.get(index)
        if values is None:
            if not self._shared_made:
                self._shared = shared_values(self.model, self.runner, self.task, self.method, self.timer)
                self._shared_made = True
            values = chunk_values(self.model, self.runner, self.task, self.method, rows, self._shared, self.timer)
            if self._keep:
                self._values[index] = values
        entries = self._entries.get(index)
        if entries is None:
            entries, _ = run_with_ablations(self.model, self.runner, self.task.clean[rows], values, self.base)
            self.timer.advance(self.n_layers, "the clean run" if self.base is None else "the base run")
            if self._keep:
                self._entries[index] = entries
            self._base_lds[index] = self._final_lds(entries, rows)
        return values, entries

    def _final_lds(self, entries: EntryResiduals, rows: torch.Tensor) -> np.ndarray:
        final = entries.final
        with self.model.gate.hold(), torch.inference_mode():
            logits = self.runner.answer_logits(final[:, -1, :], self.task.answer_ids[rows].to(final.device))
        return (logits[:, 0] - logits[:, 1]).double().cpu().numpy()

    def base_prompt_lds(self) -> np.ndarray:
        for index in range(len(self.rows)):
            if index not in self._base_lds:
                self._state(index)
        return np.concatenate([self._base_lds[index] for index in range(len(self.rows))])

    def base_ld(self) -> float:
        weights = np.concatenate([self.task.weights[rows].double().cpu().numpy() for rows in self.rows])
        return float(self.base_prompt_lds() @ weights)

    def evaluate(self, groups: AblationGroups, join_layers: Sequence[int], per_prompt: bool = False) -> np.ndarray:
        parts = []
        for index, rows in enumerate(self.rows):
            values, entries = self._state(index)
            parts.append(run_joined_groups(self.model, self.runner, entries, groups, join_layers, values,
                                           self.task.answer_ids[rows], self.task.weights[rows],
                                           max_groups=self.per_chunk, timer=self.timer, per_prompt=per_prompt))
        return np.concatenate(parts, axis=1) if per_prompt else np.sum(parts, axis=0)


class _GeneralPath:
    """The backend's batched full forwards (every group carries its whole set), one call per join layer and chunk."""

    name = "general"

    def __init__(self, model: Backend, task: LogitDiffTask, method: AblationMethod, timer: WorkTimer,
                 chunk: int | None) -> None:
        self.model, self.task, self.method, self.timer, self.chunk = model, task, method, timer, chunk
        self.n_layers = model.info.n_layers
        self.base = InterventionGroup.nothing()

    @property
    def setup_units(self) -> float:
        return float(self.n_layers)

    def cost(self, join_layers: Sequence[int]) -> int:
        return self.n_layers * len(join_layers)  # full forwards

    def set_base(self, base: InterventionGroup | None) -> None:
        self.base = base if base is not None else InterventionGroup.nothing()

    def base_ld(self) -> float:
        ld = float(self.model.logit_diffs(self.task, [self.base])[0])
        self.timer.advance(self.n_layers, "the clean run")
        return ld

    def base_prompt_lds(self) -> np.ndarray:
        lds = self.model.logit_diffs(self.task, [self.base], per_prompt=True)[0]
        self.timer.advance(self.n_layers, "the clean run")
        return np.asarray(lds, dtype=np.float64)

    def evaluate(self, groups: Sequence[InterventionGroup], join_layers: Sequence[int], per_prompt: bool = False
                 ) -> np.ndarray:
        lds = np.zeros((len(groups), self.task.n_prompts) if per_prompt else len(groups))
        for layer in sorted(set(join_layers)):
            positions = [g for g, at in enumerate(join_layers) if at == layer]
            step = self.chunk or len(positions)
            for start in range(0, len(positions), step):
                part = positions[start:start + step]
                lds[part] = self._call([self.base.with_edits_of(groups[g]) for g in part],
                                       f"layer {layer}: full forward passes", per_prompt)
        return lds

    def _call(self, groups: Sequence[InterventionGroup], message: str, per_prompt: bool = False) -> np.ndarray:
        done = [0]

        def progress(groups_done: int) -> None:
            self.timer.advance((groups_done - done[0]) * self.n_layers, message)
            done[0] = groups_done

        lds = self.model.logit_diffs(self.task, groups, progress=progress, per_prompt=per_prompt)
        if done[0] < len(groups):
            self.timer.advance((len(groups) - done[0]) * self.n_layers, message)
        return lds


class LogitDiffEvaluator:
    """ld[group]: the task's LD with each InterventionGroup's edits applied (their value source must be the
    method's).

    `set_base(group)` names edits every following group carries as well (the fast path reuses the residual stream of
    that run below each group's join layer: nothing for a sweep, the current circuit for a circuit search);
    `evaluate(groups, join_layers)` scores groups, each joining at its layer (default: the lowest layer its own edits
    touch); `clean_ld()` is the LD with nothing edited. Work is counted in group-blocks (`cost`, `setup_units`) on
    `timer`, whose total a caller sets or adds to."""

    def __init__(self, model: Backend, task: LogitDiffTask, method: AblationMethod, timer: WorkTimer, *,
                 path: str = "auto", chunk: int | None = None, subject: str = "The ablation") -> None:
        if path not in PATHS:
            raise InputError(f"Unknown path {path!r}: choose one of {', '.join(PATHS)}.")
        self.model, self.task, self.method, self.timer = model, task, method, timer
        info = model.info
        self.n_layers, self.n_heads = info.n_layers, info.n_heads
        self.source = ValueSource(SourceKind(method.source))  # the value source of every edit evaluated here
        runner = fast_runner(model, task.seq_len, required=path == "fast")  # None: no block loop, or prompts
        self._path: _FastPath | _GeneralPath                               # beyond a sliding window
        if runner is not None and path != "general":
            self._path = _FastPath(model, runner, task, method, timer, chunk, subject)
        else:
            self._path = _GeneralPath(model, task, method, timer, chunk)
        self._base_masks: AblationGroups | None = None

    @property
    def path(self) -> str:
        """"fast" or "general": chosen once, for every call."""
        return self._path.name

    @property
    def setup_units(self) -> float:
        """Group-blocks of set-up work (corrupted and base runs) for a progress total."""
        return self._path.setup_units

    def cost(self, join_layers: Sequence[int]) -> int:
        """Group-blocks that groups joining at these layers cost (per prompt)."""
        return self._path.cost(join_layers)

    def ablating(self, components: Iterable[Component]) -> InterventionGroup:
        """A group replacing each component's output by this evaluation's value source (an ablation)."""
        return InterventionGroup.ablating(components, self.source)

    def _masks(self, groups: Sequence[InterventionGroup]) -> AblationGroups:
        """The groups' dense lowering, after checking their value source is this evaluation's."""
        masks, source = AblationGroups.from_groups(groups, self.n_layers, self.n_heads)
        if source is not None and source != self.source.kind:
            raise UnsupportedIntervention(f"These groups take their values from {source}; this evaluation from "
                                          f"{self.source.kind} ({self.method.name} ablation).")
        return masks

    def set_base(self, base: InterventionGroup | None) -> None:
        """base: edits every following group carries (the set shared below every join layer), or None for the
        clean run."""
        if base is not None and not base.edits:
            base = None  # an empty set is the clean run
        masks = None if base is None else self._masks([base])
        self._base_masks = masks
        if isinstance(self._path, _FastPath):
            self._path.set_base(masks)
        else:
            self._path.set_base(base)

    def clean_ld(self) -> float:
        self.set_base(None)
        return self._path.base_ld()

    def base_ld(self) -> float:
        """The LD with the base set ablated."""
        return self._path.base_ld()

    def evaluate(self, groups: Sequence[InterventionGroup], join_layers: Sequence[int] | None = None, *,
                 per_prompt: bool = False) -> np.ndarray:
        """ld[group] (float64), each group's edits applied on top of the base's. Below its join layer a group's own
        edits must be none (default join: the lowest layer they touch). per_prompt: ld[group, prompt], each task
        prompt's own logit difference (its weight not applied; expand to the dataset's prompts with
        `prompt_rows`); `ld[group] = ld[group, :] @ task.weights`. Path groups (sender changes, `PathEdge.group`)
        are evaluated as the backend lowers edges (`_edges`)."""
        if EdgeGroups.applies(groups):
            lds = self._edges(groups)
            return lds if per_prompt else lds @ self.task.weights.double().cpu().numpy()
        own = self._masks(groups)
        if join_layers is None:
            join_layers = own.lowest_layers()
        if isinstance(self._path, _GeneralPath):  # full forwards: the join layers only order the calls
            return self._path.evaluate(groups, join_layers, per_prompt)
        masks = own if self._base_masks is None else own.union(self._base_masks)
        return self._path.evaluate(masks, join_layers, per_prompt)

    def _edges(self, groups: Sequence[InterventionGroup]) -> np.ndarray:
        """ld[group, prompt] of path groups: the backend's edge lowering in one call (the run and the senders'
        replacement runs are captured once for every edge), handed this evaluation's block runner on the fast path."""
        edges = EdgeGroups.from_groups(groups, self.n_layers)
        if edges.replacement != self.source.kind:
            raise UnsupportedIntervention(f"These paths replace their senders by {edges.replacement}; this evaluation "
                                          f"by {self.source.kind} ({self.method.name}).")
        if self._base_masks is not None:
            raise UnsupportedIntervention("Path groups are evaluated on the run itself: no base set.")
        runner = self._path.runner if isinstance(self._path, _FastPath) else None
        return self.model.edge_logit_diffs(self.task, edges, runner=runner, timer=self.timer)

    def evaluate_per_prompt(self, groups: Sequence[InterventionGroup], join_layers: Sequence[int] | None = None
                            ) -> np.ndarray:
        """ld[group, prompt] (float64): `evaluate(..., per_prompt=True)`."""
        return self.evaluate(groups, join_layers, per_prompt=True)

    def clean_prompt_lds(self) -> np.ndarray:
        """ld[prompt] (float64) with nothing edited: each task prompt's own logit difference."""
        self.set_base(None)
        return self._path.base_prompt_lds()


def _same_set(a: AblationGroups | None, b: AblationGroups | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(torch.equal(a.heads, b.heads) and torch.equal(a.mlps, b.mlps))


@contextlib.contextmanager
def evaluation(model: Backend, task: LogitDiffTask, method: AblationMethod, *, label: str, what: str, subject: str,
               path: str = "auto", chunk: int | None = None, progress: ProgressCallback | None = None,
               should_cancel: Callable[[], bool] | None = None) -> Iterator[LogitDiffEvaluator]:
    """An evaluator inside the model gate's job `label` (other sessions see it and wait per chunk), with a timer
    that reports progress and checks cancellation ("`what` was cancelled."); a refusal for memory says "`subject`
    needs at least …"."""
    timer = WorkTimer(0, progress, should_cancel, model, what)
    with model.gate.job(label):
        yield LogitDiffEvaluator(model, task, method, timer, path=path, chunk=chunk, subject=subject)
