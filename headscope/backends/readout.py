"""Reading sites at one position, written once for every backend (`Backend.read_sites`).

A backend captures, in one forward, at one position: the residual entering block 0, each layer's z (the output
projection's input, every head's side by side), each MLP's own output and each block's output residual
(`Captures`). The rest is arithmetic over the model's FamilyView (headscope.backends.weights): each head's output
through W_O alone, b_O, the post-norms where the family has them (Gemma-2: frozen for the heads, as the model applies
it for the MLP), then the readout: the final norm (frozen on the run's own final residual, or recomputed), W_U's rows
(chosen tokens or the whole vocabulary) or the caller's directions. nnsight runs these functions inside its request
(dry run, NDIF), so only the readout's [batch, site, k] comes back; they use torch, the view and FrozenNorm only,
and sites as plain (kind, layer, head) tuples (head −1: none).

With the final norm's scale frozen the path from the residual to the logits is affine: the final residual
x = embed + Σ heads + Σ attention biases + Σ MLPs gives logits = Σ read(part) + constant exactly, constant being the
final norm's bias onto the directions plus b_U. Each part's read is its direct contribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from headscope.backends.base import Readout
from headscope.backends.interventions import Site, SiteKind
from headscope.backends.weights import BlockNorm, normed_logits

DECODE_ROWS_PER_CHUNK = 8  # sites decoded over the whole vocabulary at a time (each a [batch, vocab] block), at least
# ... or as many as fit DECODE_LOGITS_PER_CHUNK logits: each chunk reads all of W_U (113 MB for the embedded model,
# ≈ 0.03 s on this CPU whatever the rows), so one prompt's lens (31 sites) is one pass, not four
DECODE_LOGITS_PER_CHUNK = 1 << 22

PlainSite = tuple[str, int, int]  # (SiteKind value, layer, head or −1)


class Captures(NamedTuple):
    """One forward's captures at one position: embed[b, d] (entering block 0), z[layer][b, head·d_head],
    mlp[layer][b, d] (the MLP module's own output), after[layer][b, d] (each block's output residual)."""

    embed: torch.Tensor
    z: list
    mlp: list
    after: list


class PlainReadout(NamedTuple):
    """A Readout as plain values (shipped into a remote request): norm as a string, the tensors on the CPU."""

    norm: str
    directions: torch.Tensor | None
    token_ids: torch.Tensor | None
    whole_vocabulary: bool
    rank_ids: torch.Tensor | None


def plain_sites(sites: Sequence[Site]) -> list[PlainSite]:
    return [(str(site.kind.value), site.layer, -1 if site.head is None else site.head) for site in sites]


def plain_readout(readout: Readout) -> PlainReadout:
    def cpu(value: torch.Tensor | None) -> torch.Tensor | None:
        return None if value is None else value.detach().cpu()

    return PlainReadout(str(readout.norm.value), cpu(readout.directions), cpu(readout.token_ids),
                        readout.whole_vocabulary, cpu(readout.rank_ids))


def check_sites(sites: Sequence[Site], n_layers: int, n_heads: int) -> None:
    """A clear error for a site read_sites cannot read (an edit-only kind, a layer or head outside the model)."""
    readable = {SiteKind.HEAD_OUT, SiteKind.ATTN_BIAS, SiteKind.MLP_OUT, SiteKind.RESID}
    for site in sites:
        top = n_layers + 1 if site.kind is SiteKind.RESID else n_layers
        if site.kind not in readable:
            raise ValueError(f"read_sites reads {', '.join(sorted(readable))}, not {site.describe()}.")
        if not 0 <= site.layer < top or (site.head is not None and not 0 <= site.head < n_heads):
            raise ValueError(f"{site.describe()} is outside a model of {n_layers} layers of {n_heads} heads.")


# ---------------------------------------------------------------------------------------------------------------
# Inside the request: torch, the view and FrozenNorm only


def _attention_parts(view: Any, layer: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads[head, b, d], bias[b, d]) of one layer, as added to the residual (float32)."""
    n_heads = view.n_heads
    batch = z.shape[0]
    raw = view.heads_out(layer, z.reshape(batch, n_heads, -1)).float()  # [head, b, d]
    bias = view.out_bias(layer)
    constant = torch.zeros(batch, raw.shape[-1], dtype=torch.float32, device=raw.device)
    if bias is not None:
        constant = constant + bias.float().to(raw.device).reshape(-1, raw.shape[-1])
    post = view.frozen_norm(layer, BlockNorm.LN1_POST, raw.sum(0) + constant)
    if post is None:
        return raw, constant
    heads = post.apply(raw)
    constant = post.apply(constant) if bias is not None else constant
    if post.bias is not None:
        constant = constant + post.bias
    return heads, constant


def site_vectors(view: Any, captures: Captures, sites: list) -> torch.Tensor:
    """vectors[site, b, d] (float32): what each plain site adds to (or, RESID, is of) the residual."""
    layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    out = []
    for kind, layer, head in sites:
        if kind == "resid":
            vector = captures.embed if layer == 0 else captures.after[layer - 1]
        elif kind == "mlp_out":
            vector = view.norm(layer, BlockNorm.LN2_POST, captures.mlp[layer])
        else:
            if layer not in layers:
                layers[layer] = _attention_parts(view, layer, captures.z[layer])
            heads, bias = layers[layer]
            vector = heads[head] if kind == "head_out" else bias
        out.append(vector.float().to(captures.embed.device))
    return torch.stack(out)


def _rows(view: Any, readout: PlainReadout, batch: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(rows, b_U or None, einsum spec of the rows) of the readout: [b, k, d] per row, or [V, d] for every row."""
    if readout.directions is not None:
        rows = readout.directions.float()
        return rows.expand(batch, -1, -1), None, "bkd"
    if readout.whole_vocabulary:
        rows, bias = view.unembedding(None)
        return rows, bias, "kd"
    ids = readout.token_ids
    rows, bias = view.unembedding(ids.reshape(-1))
    rows = rows.reshape(*ids.shape, -1)
    return rows, None if bias is None else bias.reshape(ids.shape), "bkd"


def _frozen_read(view: Any, vectors: torch.Tensor, final: torch.Tensor, readout: PlainReadout) -> tuple:
    batch = final.shape[0]
    frozen = view.frozen_final_norm(final)
    normed = frozen.apply(vectors)  # [site, b, d]
    if readout.directions is None and readout.token_ids is None and not readout.whole_vocabulary:
        return (normed.transpose(0, 1).detach().cpu(),)
    rows, bias, spec = _rows(view, readout, batch)
    rows = rows.float().to(normed.device)
    values = torch.einsum(f"sbd,{spec}->bsk", normed, rows)
    constant = torch.zeros(batch, values.shape[-1], dtype=torch.float32, device=values.device)
    if frozen.bias is not None:
        constant = constant + torch.einsum(f"d,{spec}->{spec[:-1]}", frozen.bias.to(rows.device), rows)
    if bias is not None:
        constant = constant + bias.float().to(constant.device)
    return values.detach().cpu(), constant.detach().cpu()


def _decode(view: Any, vectors: torch.Tensor, readout: PlainReadout) -> tuple:
    """The model's own decoding of each vector (final norm recomputed, W_U, b_U, soft cap); with rank_ids, each
    reduced to those tokens' logits, ranks and the logsumexp, a few sites at a time."""
    batch = vectors.shape[1]
    rows, bias, spec = _rows(view, readout, batch)
    vectors = vectors.to(rows.dtype)
    if spec == "bkd":
        normed = view.final_norm(vectors).float().to(rows.device)
        values = torch.einsum("sbd,bkd->bsk", normed, rows.float())
        if bias is not None:
            values = values + bias.float()[:, None]
        cap = view.logit_cap
        return ((cap * torch.tanh(values / cap) if cap > 0 else values).detach().cpu(),)
    picked, ranks, norms = [], [], []
    per_chunk = max(DECODE_ROWS_PER_CHUNK, DECODE_LOGITS_PER_CHUNK // max(batch * rows.shape[0], 1))
    for start in range(0, vectors.shape[0], per_chunk):
        every = normed_logits(view.final_norm(vectors[start:start + per_chunk]), rows, bias,
                              view.logit_cap).transpose(0, 1)  # [b, s, V]
        if readout.rank_ids is None:
            picked.append(every.detach().cpu())
            continue
        ids = readout.rank_ids.to(every.device)
        chosen = every.gather(2, ids[:, None, :].expand(-1, every.shape[1], -1))  # [b, s, k]
        picked.append(chosen.detach().cpu())
        ranks.append(((every[:, :, None, :] > chosen[..., None]).sum(-1) + 1).detach().cpu())
        norms.append(torch.logsumexp(every, dim=-1).detach().cpu())
    if readout.rank_ids is None:
        return (torch.cat(picked, 1),)
    return torch.cat(picked, 1), None, torch.cat(ranks, 1), torch.cat(norms, 1)


def read_captured(view: Any, captures: Captures, sites: list, readout: PlainReadout) -> tuple:
    """(values, constant, rank, log_norm) of the plain sites through the readout (absent ones None), on the CPU."""
    vectors = site_vectors(view, captures, sites)
    if readout.norm == "decode":
        out = _decode(view, vectors, readout)
    elif readout.norm == "frozen":
        out = _frozen_read(view, vectors, captures.after[-1].float(), readout)
    else:
        values = vectors
        if readout.directions is not None or readout.token_ids is not None or readout.whole_vocabulary:
            rows, _, spec = _rows(view, readout, vectors.shape[1])
            values = torch.einsum(f"sbd,{spec}->sbk", vectors, rows.float().to(vectors.device))
        out = (values.transpose(0, 1).detach().cpu(),)
    return tuple(out) + (None,) * (4 - len(out))


__all__ = ["DECODE_LOGITS_PER_CHUNK", "DECODE_ROWS_PER_CHUNK", "Captures", "PlainReadout", "check_sites",
           "plain_readout", "plain_sites", "read_captured", "site_vectors"]
