"""The arithmetic of direct logit attribution and the logit lens once a backend has read the residual stream's parts
at one position (torch only, shared by the backends).

With the final norm's scale frozen (headscope.backends.norms) the path from the residual to the logits is affine, so
the final residual x = embed + Σ heads + Σ attention biases + Σ MLPs gives logits = Σ frozen(part)·W_U + frozen bias
+ b_U exactly: each part's term is its direct contribution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from headscope.backends.base import DirectLogits, LensLogits
from headscope.backends.norms import FrozenNorm

LENS_ROWS_PER_CHUNK = 8  # residual rows unembedded at a time (each is a [vocab] row per prompt)


@dataclass(frozen=True)
class StreamAt:
    """The residual stream's parts at one position, as added to the residual (float32):
    embed[batch, d_model] (entering block 0), heads[batch, layer, head, d_model], attn_bias[batch, layer, d_model]
    (what a layer's attention adds whatever its heads do: b_O, through a frozen post-attention norm where the family
    has one), mlps[batch, layer, d_model], after[batch, layer, d_model] (the residual after each layer; the last row
    enters the final norm)."""

    embed: torch.Tensor
    heads: torch.Tensor
    attn_bias: torch.Tensor
    mlps: torch.Tensor
    after: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        return self.after[:, -1]

    @property
    def parts_sum(self) -> torch.Tensor:
        """[batch, d_model]: embed + every head, bias and MLP (equals `final` up to rounding)."""
        return self.embed + self.heads.sum(dim=(1, 2)) + self.attn_bias.sum(dim=1) + self.mlps.sum(dim=1)

    def component(self, layer: int, head: int | None) -> torch.Tensor:
        """[batch, d_model]: one head's or (head None) one MLP's part."""
        return self.mlps[:, layer] if head is None else self.heads[:, layer, head]


def split_heads(head_raw: torch.Tensor, bias: torch.Tensor | None, post_norm: FrozenNorm | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads[batch, head, d_model], attn_bias[batch, d_model]) of one layer from each head's z·W_O
    head_raw[batch, head, d_model] and the output bias b_O[d_model] (or None): through the post-attention norm with
    its scale frozen (Gemma-2) where post_norm is given (its own bias, if any, joins the bias)."""
    batch, _, d_model = head_raw.shape
    constant = torch.zeros(batch, d_model, dtype=torch.float32, device=head_raw.device)
    if bias is not None:
        constant = constant + bias.float()
    if post_norm is None:
        return head_raw.float(), constant
    # the frozen scale is inverse_scale[batch, 1]: the head axis goes first so that it broadcasts
    heads = post_norm.apply(head_raw.transpose(0, 1)).transpose(0, 1)
    attn_bias = post_norm.apply(constant) if bias is not None else constant
    if post_norm.bias is not None:
        attn_bias = attn_bias + post_norm.bias
    return heads, attn_bias


def direct_logits_from(stream: StreamAt, final_norm: FrozenNorm, columns: torch.Tensor, b_u: torch.Tensor | None,
                       model_logits: torch.Tensor, soft_cap: float) -> DirectLogits:
    """DirectLogits from the stream's parts, the final norm frozen on stream.final (inverse_scale[batch, 1]), the
    unembedding columns[batch, k, d_model] and b_U[batch, k] (or None) of the chosen tokens, and the model's own
    pre-cap logits model_logits[batch, k]."""
    batch, n_layers, n_heads, d_model = stream.heads.shape
    parts = torch.cat([
        stream.embed[None],
        stream.heads.permute(1, 2, 0, 3).reshape(n_layers * n_heads, batch, d_model),
        stream.mlps.permute(1, 0, 2),
        stream.attn_bias.permute(1, 0, 2),
    ])  # [part, batch, d_model]
    columns = columns.float()
    projected = torch.einsum("pbd,bkd->pbk", final_norm.apply(parts), columns)
    heads_end, mlps_end = 1 + n_layers * n_heads, 1 + n_layers * n_heads + n_layers
    bias = projected[mlps_end:].sum(0)
    if final_norm.bias is not None:
        bias = bias + torch.einsum("d,bkd->bk", final_norm.bias.float(), columns)
    if b_u is not None:
        bias = bias + b_u.float()
    return DirectLogits(
        heads=projected[1:heads_end].reshape(n_layers, n_heads, batch, -1).permute(2, 0, 1, 3).contiguous(),
        mlps=projected[heads_end:mlps_end].permute(1, 0, 2).contiguous(),
        embed=projected[0],
        bias=bias,
        logits=model_logits.float(),
        soft_cap=soft_cap,
    )


def lens_from(rows: torch.Tensor, unembed: Callable[[torch.Tensor], torch.Tensor], token_ids: torch.Tensor
              ) -> LensLogits:
    """LensLogits from residual rows[batch, row, d_model]; unembed(resid[..., d_model]) -> capped logits[..., vocab]
    (the final norm recomputed); token_ids[batch, k]. Unembedded a few rows at a time."""
    logits, ranks, norms = [], [], []
    ids = token_ids.to(rows.device)
    for start in range(0, rows.shape[1], LENS_ROWS_PER_CHUNK):
        every = unembed(rows[:, start:start + LENS_ROWS_PER_CHUNK]).float()  # [batch, r, vocab]
        picked = every.gather(2, ids[:, None, :].expand(-1, every.shape[1], -1))  # [batch, r, k]
        logits.append(picked)
        ranks.append((every[:, :, None, :] > picked[..., None]).sum(-1) + 1)
        norms.append(torch.logsumexp(every, dim=-1))
    return LensLogits(torch.cat(logits, 1).cpu(), torch.cat(ranks, 1).cpu(), torch.cat(norms, 1).cpu())


__all__ = ["LENS_ROWS_PER_CHUNK", "StreamAt", "direct_logits_from", "lens_from", "split_heads"]
