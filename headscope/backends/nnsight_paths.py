"""Path patching on the nnsight backend as nnsight requests: its dry run and NDIF lower path patching's edges
(EdgeGroups, headscope.backends.interventions) to the general path inside one request per chunk of edges.

One request (a session) per chunk of edges. Its first trace runs the run's prompts and, in the same batch, the
prompts whose sender values replace them (corrupted rows after the run's rows), reading per layer in execution
order: the residual entering each receiver layer (the attention norm's input), each sender layer's per-head z (the
output projection's input) and attention output, and the final norm's input at the last position. The arithmetic
after it calls the model's own modules: each sender's Δ (o_proj on its z slice; Gemma-2's post-attention norm with
the run's scale frozen), each edge's addition proj(ln1(x + Δ)) − proj(ln1(x)) on its receiver's d_head slice (the
attention norm recomputed, as headscope.backends.path_runs and TransformerLens' get_act_patch_direct_path do), and
the direct paths to the logits (final norm frozen). The second trace runs the chunk's edges (edge-major rows, every
prompt each) with those additions on their projections' outputs. Only ld[edge, prompt], the run's per-prompt LD and
the logit paths' LDs are saved: remotely nothing larger comes back. An edge's row equals the run's row below its
receiver's layer, so the run's captured residual is the one its receiver reads.

The functions that run inside requests use torch, their arguments and headscope.backends.norms' frozen norm (the
readout's requests use it too; shipped by value to NDIF).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import nnsight
import numpy as np
import torch

from headscope.backends.interventions import Site, SiteKind, SourceKind, UnsupportedIntervention
from headscope.backends.nnsight_readout import _first
from headscope.backends.norms import freeze_family_norm
from headscope.backends.path_runs import PROJECTIONS

if TYPE_CHECKING:
    from collections.abc import Callable

    from headscope.backends.interventions import EdgeGroups, LogitDiffTask
    from headscope.engine import WorkTimer

_EXECUTION_ORDER = {SiteKind.Q_INPUT: 0, SiteKind.K_INPUT: 1, SiteKind.V_INPUT: 2}  # Llama-like: q, k, v
NnsightBackend = Any  # headscope.backends.nnsight imports this module (no import circle)


# ---------------------------------------------------------------------------------------------------------------
# Inside requests: torch and arguments only


def _capture(model: Any, plan: list, final_path: str, n_run: int) -> tuple:
    """Inside the first trace: (entries{layer: x[P, pos, d]}, z{layer: [rows, pos, H·dh]}, attn{layer: [P, pos, d]},
    final_last[P, d]) from plan = [(layer, ln1 path | None, o_proj path | None)] in layer order."""
    entries, zs, attns = {}, {}, {}
    for layer, ln1_path, o_path in plan:
        if ln1_path is not None:
            entries[layer] = _first(model.get(ln1_path).input)[:n_run]
        if o_path is not None:
            o_proj = model.get(o_path)
            zs[layer] = o_proj.input
            attns[layer] = _first(o_proj.output)[:n_run]
    final_last = _first(model.get(final_path).input)[:n_run, -1]
    return entries, zs, attns, final_last


def _sender_deltas(captured: tuple, senders: list, o_projs: dict, posts: dict, family: str, n_run: int, source: str,
                   n_heads: int, d_head: int) -> torch.Tensor:
    """Δ[sender, P, pos, d_model] (float32): each sender's write with its replacement value minus with the run's
    (source "zero", "mean": position-wise mean of the other rows, "paired": the paired other row)."""
    _, zs, attns, _ = captured
    out = []
    for layer, head in senders:
        z = zs[layer]
        cols = slice(head * d_head, (head + 1) * d_head)
        z_run = z[:n_run, :, cols]
        if source == "zero":
            z_new = torch.zeros_like(z_run)
        elif source == "mean":
            z_new = z[n_run:, :, cols].float().mean(dim=0, keepdim=True).to(z_run.dtype)
        else:
            z_new = z[n_run:, :, cols]
        o_proj = o_projs[layer]
        flat = torch.zeros(*z_run.shape[:2], n_heads * d_head, dtype=z_run.dtype, device=z_run.device)
        flat[..., cols] = z_new - z_run
        write = (o_proj(flat) - o_proj(torch.zeros_like(flat[:1, :1]))).float()
        post = posts[layer]
        if post is not None:
            write = freeze_family_norm(family, post, attns[layer]).apply(write)
        out.append(write)
    return torch.stack(out)


def _answer_lds(normed: torch.Tensor, unembed: Any, ids: torch.Tensor, cap: float) -> torch.Tensor:
    """ld[..., P] (float32, soft-capped logits) from final-normed residuals normed[..., P, d_model]."""
    weight = unembed.weight
    columns = weight[ids.to(weight.device)].float()  # [P, 2, d]
    logits = torch.einsum("...pd,pkd->...pk", normed.float().to(weight.device), columns)
    if unembed.bias is not None:
        logits = logits + unembed.bias[ids.to(weight.device)].float()
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits[..., 0] - logits[..., 1]


def _logit_paths(deltas: torch.Tensor, captured: tuple, final_norm: Any, family: str, unembed: Any, ids: torch.Tensor,
                 cap: float) -> tuple:
    """(run ld[P], ld[sender, P] with each sender's Δ at the last position through the final norm frozen on the
    run's final residual), on the CPU."""
    final_last = captured[3]
    normed = final_norm(final_last).float()
    moved = normed[None] + freeze_family_norm(family, final_norm, final_last).apply(deltas[:, :, -1])
    return (_answer_lds(normed, unembed, ids, cap).detach().cpu(),
            _answer_lds(moved, unembed, ids, cap).detach().cpu())


def _additions(edges: list, captured: tuple, deltas: torch.Tensor, ln1s: dict, projs: dict, d_head: int) -> list:
    """added[P, pos, d_head] per edge (layer, proj key, offset, sender index): its receiver's projection of
    ln1(x + Δ) − ln1(x) on its slice, x the residual entering the receiver's layer in the run."""
    entries = captured[0]
    out = []
    for layer, key, offset, sender in edges:
        x = entries[layer]
        norm, proj = ln1s[layer], projs[key]
        moved = norm(x + deltas[sender].to(x)) - norm(x)
        projected = proj(moved) - proj(torch.zeros_like(moved[:1, :1]))
        out.append(projected[..., offset:offset + d_head])
    return out


def _patch_projection(output: torch.Tensor, rows: list, added: list, n_prompts: int, d_head: int) -> torch.Tensor:
    """output[edge · P + prompt, pos, :] with each (edge slot, offset, addition index) row block's slice moved."""
    out = output.clone()
    for slot, offset, which in rows:
        block = slice(slot * n_prompts, (slot + 1) * n_prompts)
        out[block, :, offset:offset + d_head] = out[block, :, offset:offset + d_head] + added[which].to(out)
    return out


def _edge_lds(logits: torch.Tensor, ids: torch.Tensor, n_edges: int) -> torch.Tensor:
    picked = logits.float().gather(1, ids.to(logits.device).repeat(n_edges, 1))
    return (picked[:, 0] - picked[:, 1]).view(n_edges, -1)


# ---------------------------------------------------------------------------------------------------------------
# The request per chunk


def _source_name(source: SourceKind) -> str:
    return {SourceKind.ZERO: "zero", SourceKind.MEAN: "mean"}.get(source, "paired")


def nnsight_edge_lds(backend: NnsightBackend, task: LogitDiffTask, edges: EdgeGroups, check_input: Any,
                     timer: WorkTimer | None = None, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """ld[group, prompt] (float64) as headscope.backends.path_runs.edge_lds computes it (a group without an edge:
    the run's own LDs), in one nnsight request per chunk of edges (the general path: whole forwards of the model's
    own code)."""
    model, layout, dims = backend.model, backend.layout, backend.dims
    projections = PROJECTIONS.get(layout.family)
    if projections is None:
        raise UnsupportedIntervention(f"Path patching does not know {layout.family}'s projections.")
    n_heads, d_head, n_layers = dims.n_heads, dims.d_head, dims.n_layers
    heads_per_kv = n_heads // dims.n_kv
    run = task.clean.cpu()
    other = None if task.corrupted is None or edges.replacement is SourceKind.ZERO else task.corrupted.cpu()
    if other is not None and other.shape[1] != run.shape[1]:
        raise ValueError(f"the replacement prompts have {other.shape[1]} positions, the run's {run.shape[1]}")
    tokens = run if other is None else torch.cat([run, other])
    n_run, n_prompts = run.shape[0], task.n_prompts
    ids = task.answer_ids.cpu()
    source = _source_name(edges.replacement)
    senders = [(sender.layer, int(sender.head)) for sender in edges.senders]  # type: ignore[arg-type]
    sender_index = {sender: i for i, sender in enumerate(senders)}
    sender_layers = sorted({layer for layer, _ in senders})
    receivers = edges.receivers
    logit_edges = [index for index, edge in enumerate(edges.edges) if edge is not None and edge.receiver is None]
    run_groups = [index for index, edge in enumerate(edges.edges) if edge is None]
    receivers.sort(key=lambda item: item[1].receiver.layer)

    final_path = layout.final_norm
    final_norm, unembed, embed = (backend._path(p) for p in (layout.final_norm, layout.unembed, layout.embed))
    o_projs = {layer: backend._path(layout.block(layer, layout.o_proj)) for layer in sender_layers}
    posts = {layer: None if layout.ln1_post is None else backend._path(layout.block(layer, layout.ln1_post))
             for layer in sender_layers}
    cap = dims.logit_cap

    per_request = backend._rows_per_request(task.seq_len, max(1, len(receivers)), tokens.shape[0], n_prompts,
                                            "The path patching") if receivers else 1
    chunks = [receivers[start:start + per_request] for start in range(0, len(receivers), per_request)] or [[]]
    if timer is not None:
        timer.add_total(len(chunks) * 2 * n_layers + n_layers * len(receivers))
    out = np.zeros((len(edges), n_prompts))
    for number, chunk in enumerate(chunks):
        receiver_layers = sorted({edge.receiver.layer for _, edge in chunk})
        plan = [(layer, layout.block(layer, layout.ln1) if layer in receiver_layers else None,
                 layout.block(layer, layout.o_proj) if layer in sender_layers else None)
                for layer in sorted(set(receiver_layers) | set(sender_layers))]
        ln1s = {layer: backend._path(layout.block(layer, layout.ln1)) for layer in receiver_layers}
        proj_keys: dict[tuple[int, str], int] = {}
        ranks: dict[tuple[int, str], int] = {}  # where each module runs in its block (nnsight reads in order)
        edge_specs, patches = [], {}  # patches[(layer, module path)] = [(slot, offset, addition index)]
        for slot, (_, edge) in enumerate(chunk):
            site: Site = edge.receiver
            name = layout.block(site.layer, projections.module(site.kind))
            key = proj_keys.setdefault((site.layer, name), len(proj_keys))
            offset = projections.offset(site.kind, int(site.head), heads_per_kv, n_heads, d_head)
            sender = sender_index[(edge.sender.layer, int(edge.sender.head))]
            edge_specs.append((site.layer, key, offset, sender))
            rank = min(_EXECUTION_ORDER[site.kind], ranks.get((site.layer, name), 3))
            ranks[(site.layer, name)] = rank
            patches.setdefault((site.layer, name), []).append((slot, offset, slot))
        projs = {key: backend._path(name) for (_, name), key in proj_keys.items()}
        edits = [(name, patches[(layer, name)])
                 for layer, name in sorted(patches, key=lambda item: (item[0], ranks[item], item[1]))]
        n_edges = len(chunk)
        edge_tokens = run.repeat(n_edges, 1)
        # every statement in a session on one line: nnsight 0.8.1 maps a session's later traces to their source
        # lines without counting a statement's continuation lines (WithBlockNotFoundError)
        capture_args = (model, plan, final_path, n_run)
        delta_args = (senders, o_projs, posts, layout.family, n_run, source, n_heads, d_head)
        logit_args = (final_norm, layout.family, unembed, ids, cap)
        with backend._running():
            job = backend._trace_backend()
            with model.session(backend=job):
                with model.trace(tokens, use_cache=False, logits_to_keep=1):
                    check_input(embed.input, tokens)
                    captured = _capture(*capture_args)
                deltas = _sender_deltas(captured, *delta_args)
                run_lds, logit_lds = _logit_paths(deltas, captured, *logit_args)
                lds = torch.zeros(0, n_prompts)
                if n_edges:  # a second forward: the edges' rows with their additions
                    added = _additions(edge_specs, captured, deltas, ln1s, projs, d_head)
                    with model.trace(edge_tokens, use_cache=False, logits_to_keep=1):
                        check_input(embed.input, edge_tokens)
                        for name, rows in edits:
                            proj = model.get(name)
                            proj.output = _patch_projection(proj.output, rows, added, n_prompts, d_head)
                        lds = _edge_lds(model.output.logits[:, -1, :], ids, n_edges).detach().cpu()
                lds = nnsight.save(lds)
                run_lds = nnsight.save(run_lds)
                logit_lds = nnsight.save(logit_lds)
            lds, run_lds, logit_lds = backend._outputs(job, locals(), "lds", "run_lds", "logit_lds")
        for slot, (index, _) in enumerate(chunk):
            out[index] = lds[slot].double().numpy()
        if number == 0:
            for index in run_groups:
                out[index] = run_lds.double().numpy()
            for index in logit_edges:
                sender = edges.edges[index].sender  # type: ignore[union-attr]
                out[index] = logit_lds[sender_index[(sender.layer, int(sender.head))]].double().numpy()
        if timer is not None:
            timer.advance(2 * n_layers + n_layers * n_edges, f"{n_edges} paths in one request")
        if progress is not None:
            progress(sum(len(part) for part in chunks[:number + 1]))
    return out


__all__ = ["nnsight_edge_lds"]
