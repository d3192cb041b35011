"""`read_sites` on the TransformerLens bridge: one forward with plain torch hooks on the bridge's blocks (input of
block 0, each block's output), output projections (their input is z) and MLPs, read at one position; the arithmetic
is headscope.backends.readout's over the bridge's FamilyView (TransformerLens' public weights)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from headscope.backends.base import Readout, SiteReadings
from headscope.backends.interventions import Site, SiteKind
from headscope.backends.layouts import LAYOUTS, LayoutView
from headscope.backends.readout import Captures, check_sites, plain_readout, plain_sites, read_captured

# The functions take the BridgeBackend as `backend` (typed Any: headscope.backends.bridge imports this module, and
# the package keeps no import circle, not even under TYPE_CHECKING)
BridgeBackend = Any


def bridge_captures(backend: BridgeBackend, tokens: torch.Tensor, position: int) -> Captures:
    """The captures at `position` of tokens[batch, pos] from one forward, on the fastest checked route (the model's
    own attention kernel where checked at load: a long prompt never materializes every pattern). The hooks fire on
    either route. Call with the gate held."""
    bridge = backend.bridge
    n_layers = backend.info.n_layers
    device = backend.device
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, value: Any) -> None:
        value = value[0] if isinstance(value, tuple) else value
        seen[name] = value[:, position].detach().to(device)  # one device (a model split over GPUs)

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
    try:
        backend._normed_final(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return Captures(seen["embed"], [seen[f"z{layer}"] for layer in range(n_layers)],
                    [seen[f"mlp{layer}"] for layer in range(n_layers)],
                    [seen[f"after{layer}"] for layer in range(n_layers)])


def bridge_read_sites(backend: BridgeBackend, tokens: torch.Tensor, position: int, sites: Sequence[Site],
                      readout: Readout) -> SiteReadings:
    info = backend.info
    check_sites(sites, info.n_layers, info.n_heads)
    with backend.gate.hold(), torch.inference_mode():
        captures = bridge_captures(backend, tokens, position)
        values, constant, rank, log_norm = read_captured(backend.family_view, captures, plain_sites(sites),
                                                         plain_readout(readout))
    return SiteReadings(tuple(sites), values, constant, rank, log_norm, backend._logit_cap)


# ---------------------------------------------------------------------------------------------------------------
# The logit lens inside next_tokens: the residual at the last position from the prompt tester's own forward


def lens_route(backend: BridgeBackend) -> tuple[Sequence[Any], Any]:
    """(blocks, view): the decoder blocks whose input and outputs are the residual, and the FamilyView the lens is
    read through. Once the bridge is made: its blocks (they run on either route) and its view; before that, on a
    family with a known layout, the model's own layers and modules as transformers loaded them (a LayoutView: the
    lens needs no TransformerLens hook); otherwise the bridge, made now. Call with the gate held."""
    hf = backend.hf_model
    layout = LAYOUTS.get(str(getattr(hf.config, "model_type", "") or ""))
    if backend.hooks_ready or layout is None:
        return backend.bridge.blocks, backend.family_view
    info = backend.info
    view = LayoutView.over(hf.get_submodule, layout, (), info.n_heads, info.n_kv_heads, info.d_head,
                           backend._logit_cap)
    return hf.get_submodule(layout.layers), view


@contextlib.contextmanager
def resid_hooks(blocks: Sequence[Any]) -> Iterator[dict[str, torch.Tensor]]:
    """Plain torch hooks that keep, from the forward this thread runs inside, the last position's residual entering
    block 0 ("embed": after the embeddings, their scale and position embeddings) and after each block (0, 1, …)."""
    seen: dict[str, torch.Tensor] = {}
    # the hooks sit on the shared model: a caller served during a hand-over between layers (LayerTurns) runs the
    # same blocks on its own thread, and must not overwrite this forward's rows
    mine = threading.get_ident()

    def keep(name: str, value: Any) -> None:
        if threading.get_ident() != mine:
            return
        value = value[0] if isinstance(value, tuple) else value
        seen[name] = value[:, -1].detach().clone()  # the row alone: a view would keep the whole [pos, d_model]

    handles = [blocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: keep("embed", args[0] if args else kwargs["hidden_states"]), with_kwargs=True)]
    handles += [block.register_forward_hook(lambda module, args, out, layer=layer: keep(str(layer), out))
                for layer, block in enumerate(blocks)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def lens_readings(backend: BridgeBackend, view: Any, seen: dict[str, torch.Tensor], readout: Readout
                  ) -> SiteReadings:
    """The RESID sites 0..n_layers of resid_hooks' captures through `readout` (read_sites' own arithmetic)."""
    n_layers = backend.info.n_layers
    device = backend.device
    after = [seen[str(layer)].to(device) for layer in range(n_layers)]
    captures = Captures(seen["embed"].to(device), [], [], after)
    sites = [Site(SiteKind.RESID, layer) for layer in range(n_layers + 1)]
    values, constant, rank, log_norm = read_captured(view, captures, plain_sites(sites), plain_readout(readout))
    return SiteReadings(tuple(sites), values, constant, rank, log_norm, backend._logit_cap)


__all__ = ["bridge_captures", "bridge_read_sites", "lens_readings", "lens_route", "resid_hooks"]
