"""The weight-based computations, defined once for every family and backend (docs/guide.md, "Successor score"):

- effective embedding: MLP0(W_E[t]) = W_E[t] + ln2_post₀(MLP₀(ln2₀(W_E[t]))) (layer 0's attention left out);
- OV output of head h of a layer: ln1_post(ln1(x) · W_V[kv(h)] (+ b_V[kv(h)]) · W_O[h] + b_O / n_heads), what the
  head writes when it attends fully to a token with residual x (b_O shared equally among the heads; ln1_post, the
  norm after attention where the family has one, applied to the head's output alone);
- unembedding: logits = cap(final_norm(x) · W_U (+ b_U)), soft-capped where the model caps its logits.

Each backend gives a `FamilyView`: the family's pieces in one layout (a block's norms as callables or absent, values
per KV head, each head's output through W_O alone). The bridge's view reads TransformerLens' weights, nnsight's calls
the model's own modules (so fused QKV and Conv1D layouts stay inside them); the arithmetic above lives only here.
These functions run inside nnsight sessions too (dry run, NDIF): they use only torch and the view.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import torch

from headscope.backends.norms import FrozenNorm


class BlockNorm(StrEnum):
    """A block's norms, by the names both TransformerLens' blocks and nnsight's layouts give them."""

    LN1 = "ln1"  # before attention
    LN2 = "ln2"  # before the MLP
    LN1_POST = "ln1_post"  # after attention, before the residual add (Gemma-2)
    LN2_POST = "ln2_post"  # after the MLP, before the residual add (Gemma-2)


class FamilyView(Protocol):
    """A model's pieces as the definitions above read them, in one layout for every family."""

    n_heads: int
    n_kv_heads: int
    logit_cap: float  # 0: no soft-capping

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The embedding of token_ids[n] (with the model's own embedding scale) -> [1, n, d_model]."""

    def norm(self, layer: int, which: BlockNorm, x: torch.Tensor) -> torch.Tensor:
        """The block's norm `which` applied to x[..., d_model], or x itself where the family has no such norm."""

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The block's MLP on x[..., d_model]."""

    def values(self, layer: int, normed: torch.Tensor) -> torch.Tensor:
        """v[n, kv_head, d_head] (b_V included) of normed[n, d_model]."""

    def heads_out(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """out[head, n, d_model]: each head's z[n, head, d_head] through W_O alone (no b_O)."""

    def out_bias(self, layer: int) -> torch.Tensor | None:
        """b_O [d_model] (or broadcastable to it), or None without one."""

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """The final norm of resid[..., d_model]. (Every method takes its input to the model's device and dtype.)"""

    def unembedding(self, token_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W_U's rows [vocab or len(token_ids), d_model] and b_U's entries (None without a bias)."""

    def frozen_final_norm(self, reference: torch.Tensor) -> FrozenNorm:
        """The final norm with the scale of its input reference[..., d_model] (headscope.backends.norms)."""

    def frozen_norm(self, layer: int, which: BlockNorm, reference: torch.Tensor) -> FrozenNorm | None:
        """The block's norm `which` with the scale of its input reference[..., d_model]; None where the family has
        no such norm."""


def soft_cap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """cap · tanh(logits / cap) where the model caps its logits (cap > 0), else the logits."""
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


def effective_embedding(view: FamilyView, token_ids: torch.Tensor) -> torch.Tensor:
    """MLP0(W_E[t]) for token_ids[n] -> [n, d_model]."""
    embedded = view.embed(token_ids)  # [1, n, d_model]
    mlp_out = view.mlp(0, view.norm(0, BlockNorm.LN2, embedded))
    return (embedded + view.norm(0, BlockNorm.LN2_POST, mlp_out)).squeeze(0)


def ov_outputs(view: FamilyView, layer: int, resid: torch.Tensor) -> torch.Tensor:
    """out[head, n, d_model]: what each head of `layer` writes when it attends fully to a token with residual
    resid[n, d_model]."""
    normed = view.norm(layer, BlockNorm.LN1, resid.unsqueeze(0)).squeeze(0)  # [n, d_model]
    values = view.values(layer, normed)  # [n, kv, d_head]
    kv_of_head = torch.arange(view.n_heads, device=values.device) // (view.n_heads // view.n_kv_heads)
    out = view.heads_out(layer, values[:, kv_of_head])  # [head, n, d_model]
    bias = view.out_bias(layer)
    if bias is not None:
        out = out + bias / view.n_heads
    return view.norm(layer, BlockNorm.LN1_POST, out)


def unembed_logits(view: FamilyView, resid: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
    """logits[..., vocab or len(token_ids)] (float32) of residuals resid[..., d_model]."""
    rows, bias = view.unembedding(token_ids)
    return normed_logits(view.final_norm(resid), rows, bias, view.logit_cap)


def normed_logits(normed: torch.Tensor, rows: torch.Tensor, bias: torch.Tensor | None, cap: float) -> torch.Tensor:
    """logits (float32, soft-capped) of final-normed residuals normed[..., d_model] through W_U's rows[k, d_model]
    and b_U's entries bias[k] (or None)."""
    logits = torch.nn.functional.linear(normed.to(device=rows.device, dtype=rows.dtype), rows, bias)
    return soft_cap(logits.float(), cap)


__all__ = ["BlockNorm", "FamilyView", "effective_embedding", "normed_logits", "ov_outputs", "soft_cap",
           "unembed_logits"]
