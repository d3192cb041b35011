"""The bridge backend's FamilyView (headscope.backends.weights): TransformerLens' blocks and its public weights
`W_V`, `b_V`, `W_O`, `b_O`, `W_U`, `b_U`, which have one layout for every architecture (GPT-2's Conv1D stores its
matrices transposed; reading a module's `weight` directly would silently give wrong numbers there)."""

from __future__ import annotations

from typing import Any

import torch

from headscope.backends.norms import FrozenNorm, freeze_norm
from headscope.backends.weights import BlockNorm


def block_norm(block: Any, name: str, x: torch.Tensor) -> torch.Tensor:
    """A block's norm `name` ("ln1", "ln2", or the post-norms "ln1_post", "ln2_post") applied to x, or x itself where
    the architecture has no such norm (pre-norms are absent in OLMo-2, post-norms in most families)."""
    norm = getattr(block, name, None)
    return norm(_onto(norm, x)) if isinstance(norm, torch.nn.Module) else x


def _onto(module: Any, x: torch.Tensor) -> torch.Tensor:
    """x on the module's device (a model split over GPUs keeps each block where accelerate put it)."""
    param = next(module.parameters(), None)
    return x if param is None else x.to(param.device)


class BridgeView:
    """A TransformerBridge seen as a FamilyView."""

    def __init__(self, bridge: Any, n_heads: int, n_kv_heads: int, logit_cap: float, device: torch.device) -> None:
        self.bridge = bridge
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.logit_cap = logit_cap
        self.device = device

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.bridge.embed(token_ids.to(self.device).unsqueeze(0))

    def norm(self, layer: int, which: BlockNorm, x: torch.Tensor) -> torch.Tensor:
        return block_norm(self.bridge.blocks[layer], str(which), x)

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.bridge.blocks[layer].mlp(x)

    def values(self, layer: int, normed: torch.Tensor) -> torch.Tensor:
        attn = self.bridge.blocks[layer].attn
        w_v = attn.W_V  # [kv, d_model, d_head]
        values = torch.einsum("nd,kde->nke", normed.to(w_v.dtype), w_v)
        b_v = getattr(attn, "b_V", None)  # [kv, d_head]
        return values if b_v is None else values + b_v

    def heads_out(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        w_o = self.bridge.blocks[layer].attn.W_O  # [head, d_head, d_model]
        return torch.einsum("nhe,hed->hnd", z.to(w_o.device), w_o)

    def out_bias(self, layer: int) -> torch.Tensor | None:
        return getattr(self.bridge.blocks[layer].attn, "b_O", None)

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        return self.bridge.ln_final(_onto(self.bridge.ln_final, resid))

    def unembedding(self, token_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = self.bridge.W_U.T  # [vocab, d_model]
        bias = getattr(self.bridge, "b_U", None)
        if token_ids is not None:
            rows = rows[token_ids.to(rows.device)]
            bias = None if bias is None else bias[token_ids.to(bias.device)]
        return rows, bias

    def frozen_final_norm(self, reference: torch.Tensor) -> FrozenNorm:
        return freeze_norm(_wrapped(self.bridge.ln_final), reference)

    def frozen_norm(self, layer: int, which: BlockNorm, reference: torch.Tensor) -> FrozenNorm | None:
        norm = getattr(self.bridge.blocks[layer], str(which), None)
        return freeze_norm(_wrapped(norm), reference) if isinstance(norm, torch.nn.Module) else None


def _wrapped(component: Any) -> Any:
    """The transformers norm a bridge component wraps: its class names its kind, and a norm's gain and bias are 1-D
    (no layout to get wrong)."""
    return getattr(component, "original_component", component)


__all__ = ["BridgeView", "block_norm"]
