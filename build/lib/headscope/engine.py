"""The exact ablation engine on a backend's fast path (block by block), shared by the sweep and the circuit search.

One pass over the layers. Each group of rows ablates a set of components and *joins* the pass at a layer: below
that layer its residual stream equals a shared entry residual (the clean run's for a single-component sweep, the
current circuit's for a circuit search), so it is not recomputed; from there on the group rides along in one batch
with every group that joined before. At block j the batch holds the groups joined at layers ≤ j, so the model runs
N block calls with large matrix products instead of one partial forward per layer; only the last position's two
answer logits are computed at the end. Groups are cut into chunks whose batch fits the memory budget (the batch grows
as groups join), and the model is held one block call at a time, so other sessions get their turn in between.

Exactness: every row is computed exactly as in a full forward with the same ablations (rows never interact); the
engine is tested against one forward per component and against hand-written PyTorch hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from headscope.backends.base import AblationGroups, BlockRunner, MlpEdit, ZEdit
from headscope.errors import Cancelled, InputError
from headscope.memory import block_bytes_per_token, plan_chunks

if TYPE_CHECKING:
    from headscope.backends.base import Backend
    from headscope.methods import AblationMethod


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
    last block), plus the run's replacement values when the run was the corrupted one."""

    resid: list[torch.Tensor]

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
) -> np.ndarray:
    """ld[group] for groups that each join the pass at join_layers[group] from entries.entering(join_layer) and
    ablate, at every layer from there on, the components groups.heads[group] / groups.mlps[group] name.

    Rows of a group are the P prompts of the entry residual; answer_ids[P, 2] (correct, incorrect) and weights[P]
    (summing to 1) make its LD. Groups are processed in chunks of at most `max_groups` (default: what fits).
    """
    n_layers = model.info.n_layers
    entry0 = entries.entering(0)
    n_prompts, seq_len = int(entry0.shape[0]), int(entry0.shape[1])
    order = sorted(range(len(groups)), key=lambda g: join_layers[g])
    per_chunk = max_groups or groups_per_chunk(model, n_prompts, seq_len, len(groups))
    out = np.zeros(len(groups))
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
                cut = layer == n_layers - 1 and runner.supports_last_position_only
                with model.gate.hold():
                    resid = runner.run_block(layer, resid, context, z_edit=z_edit, mlp_edit=mlp_edit,
                                             last_position_only=cut).resid
                if timer is not None:
                    timer.advance(len(joined), f"layer {layer}: {len(joined)} ablations in flight")
            assert resid is not None
            with model.gate.hold():
                logits = runner.answer_logits(resid[:, -1, :], answer_ids.to(device).repeat(len(joined), 1))
        diff = (logits[:, 0] - logits[:, 1]).view(len(joined), n_prompts)
        lds = (diff * weights).sum(1).double().cpu().numpy()
        for index, group in enumerate(joined):
            out[group] = lds[index]
    return out


def joined_work_units(join_layers: Sequence[int], n_layers: int) -> int:
    """Group-blocks a run_joined_groups call will compute (for progress totals)."""
    return int(sum(n_layers - layer for layer in join_layers))
