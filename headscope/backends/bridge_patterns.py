"""The bridge backend's two routes to attention patterns: the bridge's own hook_pattern (every head of a read layer
materialized), and the model's own attention kernel (only the chosen heads' [dest, src] recomputed from the query and
key SDPA receives). BridgeBackend checks the second against the first on first use and picks one. `backend` is the
BridgeBackend (its public gate, info, dtype, budget, bridge, native attention and layer turns; typed Any so that this
module does not import the backend's)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from headscope.backends.attention_inputs import AttentionInputs, LayerInputs
from headscope.backends.bridge_routes import StopForward, capturing_sdpa, head_patterns
from headscope.memory import block_bytes_per_token, plan_chunks


def bridge_patterns(backend: Any, tokens: torch.Tensor, reduce: Callable[[int, torch.Tensor], Any],
                    wanted: set[int], heads: dict[int, Sequence[int]] | None) -> dict[int, Any]:
    """Patterns from the bridge's own attention (hook_pattern): every head of a read layer is materialized."""
    batch, seq = int(tokens.shape[0]), int(tokens.shape[1])
    # a layer whose pattern is read materializes scores, softmax and mask [batch, head, dest, src] in float32
    scores = 3 * 4 * batch * backend.info.n_heads * seq * seq
    plan_chunks(f"Attention patterns of {seq:,} tokens", 1,
                scores + block_bytes_per_token(backend.info, backend.dtype, 1) * batch * seq, backend.budget_bytes())
    top = max(wanted)
    reduced: dict[int, Any] = {}

    def on_pattern(pattern: torch.Tensor, hook: Any) -> None:
        layer = int(hook.name.split(".")[1])
        chosen = pattern.detach()
        if heads is not None and layer in heads:
            chosen = chosen[:, list(heads[layer])]
        reduced[layer] = reduce(layer, chosen)

    def stop(resid: torch.Tensor, hook: Any) -> None:
        raise StopForward

    hooks: list[tuple[str, Callable]] = [(f"blocks.{layer}.attn.hook_pattern", on_pattern) for layer in wanted]
    if top + 1 < backend.info.n_layers:
        hooks.append((f"blocks.{top + 1}.hook_in", stop))
    with backend.gate.hold(), backend.bridge.hooks(fwd_hooks=hooks), backend.native.swapped(keep=wanted), \
            contextlib.suppress(StopForward):
        backend.bridge(tokens)
    return reduced

def native_patterns(backend: Any, tokens: torch.Tensor, reduce: Callable[[int, torch.Tensor], Any],
                    wanted: set[int], heads: dict[int, Sequence[int]] | None) -> dict[int, Any]:
    """Patterns from the model's own forward (SDPA everywhere): the chosen heads' softmax(q·k) is recomputed from
    the query and key the attention kernel receives, so only those heads' [dest, src] ever exist; a long prompt
    costs about one plain forward. Checked against hook_pattern on first use."""
    batch, seq = int(tokens.shape[0]), int(tokens.shape[1])
    widest = max(len(heads[layer]) if heads is not None and layer in heads else backend.info.n_heads
                 for layer in wanted)
    plan_chunks(f"Attention patterns of {seq:,} tokens", 1,
                2 * 4 * batch * widest * seq * seq
                + block_bytes_per_token(backend.info, backend.dtype, 1) * batch * seq, backend.budget_bytes())
    reduced: dict[int, Any] = {}

    def capture(layer: int, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                scaling: float | None, causal: bool) -> None:
        chosen = list(heads[layer]) if heads is not None and layer in heads else list(range(backend.info.n_heads))
        reduced[layer] = reduce(layer, head_patterns(query, key, mask, scaling, causal, chosen))

    _native_forward(backend, tokens, wanted, capture)
    return reduced


def native_attention_inputs(backend: Any, tokens: torch.Tensor, top_layer: int) -> AttentionInputs:
    """The query, key and mask of layers 0..top_layer from one forward of the model's own attention (batch 1), kept
    so that any of their heads' patterns is recomputed without another forward."""
    seq = int(tokens.shape[1])
    info = backend.info
    kept_per_token = (top_layer + 1) * (info.n_heads + info.n_kv_heads) * info.d_head * backend.dtype.itemsize
    plan_chunks(f"Attention inputs of {seq:,} tokens", 1,
                kept_per_token * seq + block_bytes_per_token(info, backend.dtype, 1) * seq, backend.budget_bytes())
    layers: dict[int, LayerInputs] = {}

    def capture(layer: int, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                scaling: float | None, causal: bool) -> None:
        layers[layer] = LayerInputs(query[:1].detach(), key[:1].detach(),
                                    None if mask is None else mask[:1].detach(), scaling, bool(causal))

    _native_forward(backend, tokens[:1], set(range(top_layer + 1)), capture)
    return AttentionInputs(layers, top_layer, seq)


def _native_forward(backend: Any, tokens: torch.Tensor, wanted: set[int],
                    capture: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor | None, float | None, bool],
                                      None]) -> None:
    """One forward of the model's own attention up to the highest wanted layer; capture(layer, query, key, mask,
    scaling, causal) for each wanted layer as its attention kernel is called."""
    layer_of = {id(attention.original_component): index for index, (_, _, attention)
                in enumerate(backend.native.slots()) if index in wanted}
    top = max(wanted)
    mine = threading.get_ident()

    def on_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                scaling: float | None, is_causal: bool | None) -> None:
        layer = layer_of.get(id(module))
        if layer is None:
            return
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        capture(layer, query, key, mask, scaling, causal)

    def stop(module: Any, args: tuple) -> None:
        if threading.get_ident() == mine:
            raise StopForward

    slots = backend.native.slots()
    handle = slots[top + 1][0].register_forward_pre_hook(stop) if top + 1 < len(slots) else None
    try:
        with backend.gate.hold(), capturing_sdpa(mine, on_sdpa), backend.native.swapped() as native, \
                backend.turns.during(), contextlib.suppress(StopForward):
            if not native:
                raise RuntimeError("the native attention route is off")
            backend.native.final_normed(tokens)
    finally:
        if handle is not None:
            handle.remove()


__all__ = ["bridge_patterns", "native_attention_inputs", "native_patterns"]
