"""Path patching on a local transformers model: the local backends' lowering of sender-change edits (EdgeGroups,
headscope.backends.interventions) on the bridge and on nnsight's local model.

An edge S → R adds Δ_S, the change of what sender head S writes into the residual (S's z·W_O with its replacement
value minus with the run's value; on Gemma-2 through the post-attention norm with its scale frozen from the run),
to the input of R's query (key / value) projection only: R's query gets proj(norm(x + Δ_S)) − proj(norm(x)) on
R's slice, x being the residual R's block reads in this run, every other reader of S unchanged. The receiver's
changed output then runs through the rest of the model. An edge S → logits adds Δ_S at the last position through
the final norm with its scale frozen from the run, onto the answers' unembedding columns (soft-capping after).

Rows: every edge runs every prompt once (edge-major). Both paths lower an edge to the block runner's input edit
(base.InputEdit, applied by `input_edit_hooks`): the general path runs one hooked forward of the model per chunk of
edges with each receiver layer's edits; the fast path (the evaluator hands its block runner) is the evaluator's
joined-group pass (engine.run_joined_groups): each edge a group starting at its receiver's layer from the run's
stored residual.
Hooks sit on the modules the family layout names (backends/layouts.py), unwrapped from TransformerLens' bridge
components where the bridge wraps them, so the same code serves both local backends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from headscope.backends.base import InputEdit
from headscope.backends.interventions import (
    AblationGroups,
    EdgeGroups,
    LogitDiffTask,
    Site,
    SiteKind,
    SourceKind,
    UnsupportedIntervention,
)
from headscope.backends.layouts import Layout, layout_for
from headscope.backends.norms import freeze_norm
from headscope.component import Component

if TYPE_CHECKING:
    from headscope.backends.base import Backend, BlockRunner
    from headscope.engine import WorkTimer


# ---------------------------------------------------------------------------------------------------------------
# Where each family's query, key and value projections are, and where one head's slice sits in their output


@dataclass(frozen=True)
class Projections:
    """The module (inside a block) computing a site's projection, and the offset of head h's d_head slice in its
    output: separate (Llama-like: q per head, k/v per KV head), GPT-2's c_attn ([q | k | v]), NeoX's per-head
    [q k v]."""

    module: Callable[[SiteKind], str]
    offset: Callable[[SiteKind, int, int, int, int], int]  # (kind, head, heads_per_kv, n_heads, d_head) -> offset


_SEPARATE = Projections(
    lambda kind: {SiteKind.Q_INPUT: "self_attn.q_proj", SiteKind.K_INPUT: "self_attn.k_proj",
                  SiteKind.V_INPUT: "self_attn.v_proj"}[kind],
    lambda kind, head, per_kv, n_heads, d_head: (head if kind is SiteKind.Q_INPUT else head // per_kv) * d_head)
_PART = {SiteKind.Q_INPUT: 0, SiteKind.K_INPUT: 1, SiteKind.V_INPUT: 2}
PROJECTIONS: dict[str, Projections] = {
    "Llama": _SEPARATE, "Mistral": _SEPARATE, "Qwen2": _SEPARATE, "Gemma-2": _SEPARATE,
    "GPT-2": Projections(lambda kind: "attn.c_attn",
                         lambda kind, head, per_kv, n_heads, d_head: (_PART[kind] * n_heads + head) * d_head),
    "GPT-NeoX": Projections(lambda kind: "attention.query_key_value",
                            lambda kind, head, per_kv, n_heads, d_head: (3 * head + _PART[kind]) * d_head),
}


def _plain(module: Any) -> Any:
    """The transformers module itself where TransformerLens' bridge wraps it."""
    return getattr(module, "original_component", None) or module


class HfModules:
    """The modules of one local transformers model that path patching reads and hooks."""

    def __init__(self, hf_model: Any, n_heads: int, n_kv: int, d_head: int) -> None:
        self.hf_model = hf_model
        self.layout: Layout = layout_for(hf_model.config, type(hf_model).__name__)
        projections = PROJECTIONS.get(self.layout.family)
        if projections is None:
            raise UnsupportedIntervention(f"Path patching does not know {self.layout.family}'s projections.")
        self.projections = projections
        self.n_heads, self.n_kv, self.d_head = n_heads, n_kv, d_head
        self.heads_per_kv = n_heads // n_kv
        config = hf_model.config
        self.logit_cap = float(getattr(config, "final_logit_softcapping", None) or 0.0)

    def block(self, layer: int, part: str) -> Any:
        return _plain(self.hf_model.get_submodule(self.layout.block(layer, part)))

    def o_proj(self, layer: int) -> Any:
        return self.block(layer, self.layout.o_proj)

    def ln1(self, layer: int) -> Any:
        return self.block(layer, self.layout.ln1)

    def ln1_called(self, layer: int) -> Any:
        """The attention norm as its block calls it (the bridge's wrapper where it wraps: hooks go there, since a
        wrapper may compute the norm without calling the module it wraps)."""
        return self.hf_model.get_submodule(self.layout.block(layer, self.layout.ln1))

    @property
    def final_norm_called(self) -> Any:
        return self.hf_model.get_submodule(self.layout.final_norm)

    def projection(self, site: Site) -> tuple[Any, int]:
        """The module computing the site's projection and the site's slice offset in its output."""
        assert site.head is not None
        offset = self.projections.offset(site.kind, site.head, self.heads_per_kv, self.n_heads, self.d_head)
        return self.block(site.layer, self.projections.module(site.kind)), offset

    @property
    def final_norm(self) -> Any:
        return _plain(self.hf_model.get_submodule(self.layout.final_norm))

    def answer_logits(self, normed_last: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """logits[batch, k] (float32, soft-capped where the family caps) of ids[batch, k] from final-normed
        residuals normed_last[batch, d_model]."""
        unembed = _plain(self.hf_model.get_submodule(self.layout.unembed))
        columns = unembed.weight[ids.to(unembed.weight.device)].float()  # [batch, k, d_model]
        logits = torch.einsum("bd,bkd->bk", normed_last.float(), columns)
        if getattr(unembed, "bias", None) is not None:
            logits = logits + unembed.bias[ids.to(unembed.bias.device)].float()
        return self.logit_cap * torch.tanh(logits / self.logit_cap) if self.logit_cap > 0 else logits


# ---------------------------------------------------------------------------------------------------------------
# The run and the senders' changes


@dataclass
class RunCapture:
    """What one hooked forward of the run keeps: z[layer][P, pos, head, d_head] at the layers asked for, the
    attention output attn_out[layer][P, pos, d_model] (before a post-norm), the residual entering each layer
    entries[layer] (asked for) and the final residual final[P, pos, d_model]."""

    z: dict[int, torch.Tensor]
    attn_out: dict[int, torch.Tensor]
    entries: dict[int, torch.Tensor]
    final: torch.Tensor | None = None


@contextlib.contextmanager
def _hooks(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def capture_run(modules: HfModules, tokens: torch.Tensor, z_layers: Sequence[int],
                entry_layers: Sequence[int] = ()) -> RunCapture:
    """One forward of tokens[P, pos] keeping per-head z and attention outputs at z_layers, the residual entering
    entry_layers and the final residual."""
    got = RunCapture({}, {}, {})
    handles = []
    n_heads, d_head = modules.n_heads, modules.d_head

    def keep_z(layer: int) -> Callable:
        def hook(module: Any, args: tuple, output: Any) -> None:
            flat = args[0]
            got.z[layer] = flat.view(*flat.shape[:-1], n_heads, d_head).detach()
            got.attn_out[layer] = output.detach()
        return hook

    def keep_entry(layer: int) -> Callable:
        def hook(module: Any, args: tuple) -> None:
            got.entries[layer] = args[0].detach()
        return hook

    def keep_final(module: Any, args: tuple) -> None:
        got.final = args[0].detach()

    for layer in z_layers:
        handles.append(modules.o_proj(layer).register_forward_hook(keep_z(layer)))
    for layer in entry_layers:
        handles.append(modules.ln1_called(layer).register_forward_pre_hook(keep_entry(layer)))
    handles.append(modules.final_norm_called.register_forward_pre_hook(keep_final))
    with _hooks(handles), torch.inference_mode():
        modules.hf_model.base_model(input_ids=tokens, use_cache=False)
    return got


def sender_deltas(modules: HfModules, senders: Sequence[Component], run: RunCapture,
                  other: RunCapture | None, source: SourceKind) -> torch.Tensor:
    """Δ[sender, P, pos, d_model] (float32): what each sender writes with its replacement value minus what it
    writes in the run (o_proj's linear part on that head's z slice; through the post-attention norm with the run's
    scale on Gemma-2)."""
    out = []
    d_head = modules.d_head
    for sender in senders:
        assert sender.head is not None
        z_run = run.z[sender.layer][:, :, sender.head]
        if source is SourceKind.ZERO or other is None:
            z_new = torch.zeros_like(z_run)
        elif source is SourceKind.MEAN:
            z_new = other.z[sender.layer][:, :, sender.head].float().mean(dim=0, keepdim=True).to(z_run.dtype)
        else:
            z_new = other.z[sender.layer][:, :, sender.head]
        o_proj = modules.o_proj(sender.layer)
        flat = torch.zeros(*z_run.shape[:2], modules.n_heads * d_head, dtype=z_run.dtype, device=z_run.device)
        flat[..., sender.head * d_head:(sender.head + 1) * d_head] = z_new - z_run
        with torch.inference_mode():
            write = (o_proj.forward(flat) - o_proj.forward(torch.zeros_like(flat[:1, :1]))).float()
            if modules.layout.ln1_post is not None:
                post = modules.block(sender.layer, modules.layout.ln1_post)
                write = freeze_norm(post, run.attn_out[sender.layer]).apply(write)
        out.append(write)
    return torch.stack(out)


def logit_path_lds(modules: HfModules, run: RunCapture, deltas: torch.Tensor, answer_ids: torch.Tensor
                   ) -> torch.Tensor:
    """ld[sender, P] (float64) with each sender's change added at the last position through the final norm with
    the run's scale frozen: its direct path to the logits."""
    assert run.final is not None
    final_last = run.final[:, -1].float()
    frozen = freeze_norm(modules.final_norm, final_last)
    with torch.inference_mode():
        normed = modules.final_norm.forward(run.final[:, -1:]).squeeze(1).float()
        moved = normed.unsqueeze(0) + frozen.apply(deltas[:, :, -1])  # [sender, P, d_model]
        n_senders, n_prompts = moved.shape[:2]
        logits = modules.answer_logits(moved.reshape(n_senders * n_prompts, -1), answer_ids.repeat(n_senders, 1))
    return (logits[:, 0] - logits[:, 1]).view(n_senders, n_prompts).double()


# ---------------------------------------------------------------------------------------------------------------
# Receivers: the hooked forwards


@dataclass(frozen=True)
class _Row:
    """One edge in the batch: its receiver site and which sender change it carries."""

    site: Site
    delta: int


def projected_change(modules: HfModules, layer: int, module: Any, x: torch.Tensor, delta: torch.Tensor,
                     frozen_norm: bool) -> torch.Tensor:
    """proj(norm(x + Δ)) − proj(norm(x)) for rows x[rows, pos, d_model], Δ[rows, pos, d_model] (float32), with the
    layer's attention norm recomputed (frozen_norm: its scale frozen from x) and `module` the projection: every
    head's slice of what the projection's output would gain."""
    norm = modules.ln1(layer)
    if frozen_norm:
        moved = freeze_norm(norm, x).apply(delta).to(x.dtype)
    else:
        moved = norm.forward(x + delta.to(x.dtype)) - norm.forward(x)
    return module.forward(moved) - module.forward(torch.zeros_like(moved[:1, :1]))


@contextlib.contextmanager
def input_edit_hooks(modules: HfModules, layer: int, edits: Sequence[InputEdit]) -> Iterator[None]:
    """Hooks applying a block runner's input edits (base.InputEdit) at `layer`: the attention norm's input is kept,
    and each edited projection's output gains its selected heads' (KV groups') slices of the change."""
    if not edits:
        yield
        return
    kept: dict[str, torch.Tensor] = {}
    by_module: dict[int, tuple[Any, list[InputEdit]]] = {}
    for edit in edits:
        module, _ = modules.projection(Site(edit.kind, layer, 0))
        by_module.setdefault(id(module), (module, []))[1].append(edit)

    def keep_input(module: Any, args: tuple) -> None:
        kept["x"] = args[0]

    def add(module: Any, mine: list[InputEdit]) -> Callable:
        def hook(mod: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
            out = output.clone()
            d_head = modules.d_head
            for edit in mine:
                selected = edit.rows.to(output.device)
                index = selected.any(dim=1).nonzero().squeeze(1)
                if index.numel() == 0:
                    continue
                projected = projected_change(modules, layer, module, kept["x"][index],
                                             edit.delta.to(output.device)[index], edit.frozen_norm)
                columns = selected[index]
                per_kv = 1 if edit.kind is SiteKind.Q_INPUT else modules.heads_per_kv
                for column in columns.any(dim=0).nonzero().squeeze(1).tolist():
                    _, offset = modules.projection(Site(edit.kind, layer, column * per_kv))
                    hit = columns[:, column].nonzero().squeeze(1)
                    out[index[hit], :, offset:offset + d_head] += projected[hit, :, offset:offset + d_head]
            return out
        return hook

    handles = [modules.ln1_called(layer).register_forward_pre_hook(keep_input)]
    handles += [module.register_forward_hook(add(module, mine)) for module, mine in by_module.values()]
    with _hooks(handles):
        yield


def _edge_chunks(edges: Sequence[tuple[int, _Row]], per_chunk: int) -> list[list[tuple[int, _Row]]]:
    ordered = sorted(edges, key=lambda item: item[1].site.layer)
    return [ordered[start:start + per_chunk] for start in range(0, len(ordered), per_chunk)]


def _general(backend: Backend, modules: HfModules, run: torch.Tensor, answer_ids: torch.Tensor,
             deltas: torch.Tensor, rows: Sequence[_Row], frozen_norm: bool) -> torch.Tensor:
    """ld[edge, P] for a chunk of edges: one whole forward of the model, each receiver layer's input edits (built as
    the fast path builds them, `engine.receiver_input_edits`) applied by the same hooks (`input_edit_hooks`)."""
    from headscope.engine import ReceiverInput, receiver_input_edits

    n, n_prompts = len(rows), int(run.shape[0])
    final: dict[str, torch.Tensor] = {}
    inputs = [ReceiverInput(row.site, deltas[row.delta]) for row in rows]
    like = torch.empty(n * n_prompts, *deltas.shape[2:], device=deltas.device)  # the batch's shape and device

    def keep_final(module: Any, args: tuple) -> None:
        final["resid"] = args[0][:, -1]

    with contextlib.ExitStack() as stack:
        for layer in sorted({row.site.layer for row in rows}):
            edits = receiver_input_edits(backend, inputs, range(n), layer, n_prompts, like, frozen_norm)
            stack.enter_context(input_edit_hooks(modules, layer, edits))
        stack.enter_context(_hooks([modules.final_norm_called.register_forward_pre_hook(keep_final)]))
        stack.enter_context(torch.inference_mode())
        modules.hf_model.base_model(input_ids=run.repeat(n, 1), use_cache=False)
        normed = modules.final_norm.forward(final["resid"].unsqueeze(1)).squeeze(1)
        logits = modules.answer_logits(normed, answer_ids.to(normed.device).repeat(n, 1))
    return (logits[:, 0] - logits[:, 1]).view(n, n_prompts).double()


def _fast(backend: Backend, runner: BlockRunner, task: LogitDiffTask, run: RunCapture, deltas: torch.Tensor,
          receivers: Sequence[tuple[int, _Row]], per_chunk: int, frozen_norm: bool, timer: WorkTimer | None
          ) -> np.ndarray:
    """ld[receiver edge, P]: the one evaluator's joined-group pass, each edge a group joining at its receiver's
    layer from the run's residual there with its sender's change on its receiver's input."""
    from headscope.engine import EntryResiduals, LayerValues, ReceiverInput, run_joined_groups

    n_layers = backend.info.n_layers
    groups = AblationGroups.empty(len(receivers), n_layers, backend.info.n_heads)
    nothing: list[torch.Tensor | None] = [None] * n_layers
    inputs = [ReceiverInput(row.site, deltas[row.delta]) for _, row in receivers]
    weights = torch.full((task.n_prompts,), 1.0 / task.n_prompts)
    return run_joined_groups(backend, runner, EntryResiduals(run.entries), groups,
                             [row.site.layer for _, row in receivers], LayerValues(nothing, nothing),
                             task.answer_ids, weights, max_groups=per_chunk, timer=timer, per_prompt=True,
                             receivers=inputs, frozen_receiver_norm=frozen_norm, what="paths")


def edge_lds(backend: Backend, task: LogitDiffTask, edges: EdgeGroups, *, runner: BlockRunner | None = None,
             timer: WorkTimer | None = None, progress: Callable[[int], None] | None = None,
             frozen_norm: bool = False, route: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
             max_edges: int | None = None) -> np.ndarray:
    """ld[group, prompt] (float64): each edge's LD per prompt with only that path patched, the run's own LDs for a
    group without an edge. task.clean is the run, task.corrupted the prompts the senders' replacement values come
    from (edges.replacement: paired, mean or zero). runner: the fast path (the evaluator's choice), else whole
    forwards, with `route` (the backend's fastest checked way to run the whole model: the bridge's native
    attention); max_edges: at most this many edges per batch (1: one forward per edge, the unbatched reference).
    progress(groups done) is called between whole-forward chunks."""
    from headscope.engine import groups_per_chunk

    hf_model = backend.hf_model
    if hf_model is None:
        raise UnsupportedIntervention(f"Path patching runs on a model loaded here; the {backend.info.backend_label} "
                                      "backend does not offer it yet.")
    info = backend.info
    modules = HfModules(hf_model, info.n_heads, info.n_kv_heads, info.d_head)
    senders = edges.senders
    sender_index = {sender: i for i, sender in enumerate(senders)}
    sender_layers = sorted({sender.layer for sender in senders})
    receivers = [(index, _Row(edge.receiver, sender_index[edge.sender])) for index, edge in edges.receivers
                 if edge.receiver is not None]
    entry_layers = sorted({row.site.layer for _, row in receivers}) if runner is not None else []
    n_layers, n_prompts, seq_len = info.n_layers, task.n_prompts, task.seq_len
    if timer is not None:
        per_edge = [(n_layers - row.site.layer) if runner is not None else n_layers for _, row in receivers]
        timer.add_total(2 * n_layers + sum(per_edge))
    out = np.zeros((len(edges), n_prompts))
    whole = route or contextlib.nullcontext
    other_tokens = None if edges.replacement is SourceKind.ZERO else task.corrupted
    with backend.gate.hold(), whole():
        run = capture_run(modules, task.clean, sender_layers, entry_layers)
        other = None if other_tokens is None or not senders else capture_run(modules, other_tokens, sender_layers)
    if timer is not None:
        timer.advance(2 * n_layers, "the run and its replacement values")
    answer_ids = task.answer_ids
    assert run.final is not None
    with torch.inference_mode():
        normed = modules.final_norm.forward(run.final[:, -1:]).squeeze(1)
        base = modules.answer_logits(normed, answer_ids.to(normed.device))
    run_lds = (base[:, 0] - base[:, 1]).double().cpu().numpy()
    for index, edge in enumerate(edges.edges):
        if edge is None:
            out[index] = run_lds
    if not senders:
        return out
    deltas = sender_deltas(modules, senders, run, other, edges.replacement)
    logit_edges = [index for index, edge in enumerate(edges.edges) if edge is not None and edge.receiver is None]
    if logit_edges:
        lds = logit_path_lds(modules, run, deltas, answer_ids.to(deltas.device))
        for index in logit_edges:
            edge = edges.edges[index]
            assert edge is not None
            out[index] = lds[sender_index[edge.sender]].cpu().numpy()
    if receivers:
        kept = deltas.numel() * deltas.element_size()
        per_chunk = groups_per_chunk(backend, n_prompts, seq_len, len(receivers), fixed_bytes=kept,
                                     what="The path patching")
        per_chunk = min(per_chunk, max_edges or per_chunk)
        if runner is not None:
            lds = _fast(backend, runner, task, run, deltas, receivers, per_chunk, frozen_norm, timer)
            for slot, (index, _) in enumerate(receivers):
                out[index] = lds[slot]
        else:
            done = 0
            for chunk in _edge_chunks(receivers, per_chunk):
                with backend.gate.hold(), whole():
                    lds = _general(backend, modules, task.clean, answer_ids, deltas, [row for _, row in chunk],
                                   frozen_norm)
                if timer is not None:
                    timer.advance(n_layers * len(chunk), "full forward passes")
                for slot, (index, _) in enumerate(chunk):  # rows in chunk order (by receiver layer)
                    out[index] = lds[slot].cpu().numpy()
                done += len(chunk)
                if progress is not None:
                    progress(done)
    return out


__all__ = ["edge_lds"]
