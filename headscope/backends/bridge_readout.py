"""Direct logit attribution and the logit lens on the TransformerLens bridge: one forward with hooks on the bridge's
blocks (input of block 0, each block's output), output projections (z) and MLPs, read at one position, then the
arithmetic of headscope.backends.readout. Weights are TransformerLens' public W_O, b_O, W_U, b_U; the norms
are frozen from the model's own norm modules (their 1-D gains and biases)."""

from __future__ import annotations

from typing import Any

import torch

from headscope.backends.base import DirectLogits, LensLogits
from headscope.backends.norms import FrozenNorm, freeze_norm
from headscope.backends.readout import StreamAt, direct_logits_from, lens_from, split_heads
from headscope.component import Component

# The functions take the BridgeBackend as `backend` (typed Any: headscope.backends.bridge imports this module, and
# the package keeps no import circle, not even under TYPE_CHECKING)
BridgeBackend = Any


def _norm_module(component: Any) -> Any:
    """The transformers norm a bridge component wraps (its gains and biases are 1-D: no layout to get wrong)."""
    return getattr(component, "original_component", component)


def _optional(block: Any, name: str) -> Any | None:
    module = getattr(block, name, None)
    return module if isinstance(module, torch.nn.Module) else None


def bridge_stream(backend: BridgeBackend, tokens: torch.Tensor, position: int) -> StreamAt:
    """The residual stream's parts at `position` of tokens[batch, pos] from one forward, on the fastest checked route
    (the model's own attention kernel where checked at load: a long prompt never materializes every pattern). Plain
    torch hooks on the bridge's blocks, each output projection (its input is z) and each MLP fire on either route."""
    bridge = backend.bridge
    n_layers, n_heads, d_head = backend.info.n_layers, backend.info.n_heads, backend.info.d_head
    device = backend.device
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, value: Any) -> None:
        value = value[0] if isinstance(value, tuple) else value
        seen[name] = value[:, position].detach().float().to(device)  # one device (a model split over GPUs)

    handles = [bridge.blocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: keep("embed", args[0] if args else kwargs["hidden_states"]), with_kwargs=True)]
    for layer in range(n_layers):
        block = bridge.blocks[layer]
        handles += [
            block.attn.o.original_component.register_forward_pre_hook(
                lambda module, args, layer=layer: keep(f"z{layer}", args[0])),
            block.mlp.register_forward_hook(lambda module, args, out, layer=layer: keep(f"mlp{layer}", out)),
            block.register_forward_hook(lambda module, args, out, layer=layer: keep(f"after{layer}", out)),
        ]
    with backend.gate.hold(), torch.inference_mode():
        try:
            backend._normed_final(tokens)
        finally:
            for handle in handles:
                handle.remove()
        heads, biases, mlps = [], [], []
        for layer in range(n_layers):
            block = bridge.blocks[layer]
            attn = block.attn
            z = seen[f"z{layer}"].view(-1, n_heads, d_head)  # [batch, head, d_head]
            head_raw = torch.einsum("bhe,hed->bhd", z, attn.W_O.float().to(device))
            b_o = getattr(attn, "b_O", None)
            b_o = None if b_o is None else b_o.float().to(device)
            post = _optional(block, "ln1_post")
            frozen = None
            if post is not None:
                total = head_raw.sum(1) + (b_o if b_o is not None else 0.0)
                frozen = freeze_norm(_norm_module(post), total)
            layer_heads, layer_bias = split_heads(head_raw, b_o, frozen)
            heads.append(layer_heads)
            biases.append(layer_bias)
            mlp = seen[f"mlp{layer}"]
            mlp_post = _optional(block, "ln2_post")
            if mlp_post is not None:
                weight = next(mlp_post.parameters())
                mlp = mlp_post(mlp.to(device=weight.device, dtype=weight.dtype)).float().to(device)
            mlps.append(mlp)
    return StreamAt(seen["embed"], torch.stack(heads, 1), torch.stack(biases, 1), torch.stack(mlps, 1),
                    torch.stack([seen[f"after{layer}"] for layer in range(n_layers)], 1))


def _final_frozen(backend: BridgeBackend, final: torch.Tensor) -> FrozenNorm:
    return freeze_norm(_norm_module(backend.bridge.ln_final), final)


def bridge_direct_logits(backend: BridgeBackend, tokens: torch.Tensor, position: int, token_ids: torch.Tensor
                         ) -> DirectLogits:
    stream = bridge_stream(backend, tokens, position)
    with backend.gate.hold(), torch.inference_mode():
        ids = token_ids.to(backend.device)
        columns, b_u = backend.unembed_columns(ids)  # [batch, k, d_model], [batch, k]
        normed = backend.final_norm(stream.final.to(backend.dtype)).float()
        model_logits = torch.einsum("bd,bkd->bk", normed, columns.float())
        if b_u is not None:
            model_logits = model_logits + b_u.float()
        out = direct_logits_from(stream, _final_frozen(backend, stream.final), columns, b_u, model_logits,
                                 backend._logit_cap)
    return DirectLogits(*(t.cpu() for t in (out.heads, out.mlps, out.embed, out.bias, out.logits)), out.soft_cap)


def bridge_component_logits(backend: BridgeBackend, tokens: torch.Tensor, position: int, component: Component
                            ) -> torch.Tensor:
    stream = bridge_stream(backend, tokens, position)
    with backend.gate.hold(), torch.inference_mode():
        part = _final_frozen(backend, stream.final).apply(stream.component(component.layer, component.head))
        return (part[0] @ backend.bridge.W_U.float()).cpu()


def bridge_lens(backend: BridgeBackend, tokens: torch.Tensor, position: int, token_ids: torch.Tensor) -> LensLogits:
    stream = bridge_stream(backend, tokens, position)
    rows = torch.cat([stream.embed[:, None], stream.after], 1)  # [batch, layer + 1, d_model]
    with backend.gate.hold(), torch.inference_mode():
        return lens_from(rows.to(backend.dtype), lambda resid: backend.unembed_all(backend.final_norm(resid)),
                         token_ids.to(backend.device))


__all__ = ["bridge_component_logits", "bridge_direct_logits", "bridge_lens", "bridge_stream"]
