"""The bridge backend's hooks for one forward: edits and captures of each layer's per-head z and MLP output.

Plain torch hooks on each layer's output projection (its input is z, per head: [batch, pos, n_heads · d_head],
head-major in every transformers family) and on the MLP module (its output). They fire the same whether the bridge's
attention or the model's own runs, so hooked runs can use the model's own attention kernel too (NativeAttention).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from headscope.backends.base import MlpEdit, ZEdit


@contextlib.contextmanager
def module_hooks(
    backend: Any,
    *,
    z_edits: dict[int, ZEdit] | None = None,
    mlp_edits: dict[int, MlpEdit] | None = None,
    capture_z: Iterable[int] = (),
    capture_mlp: Iterable[int] = (),
    captured: dict[str, dict[int, torch.Tensor]] | None = None,
    retain_grad: bool = False,
    grad_from_embeddings: bool = False,
    cut_last_position: Iterable[int] = (),
) -> Iterator[None]:
    """Hooks for one forward: edits, captures (into captured["z"][layer], captured["mlp"][layer]), gradients
    retained on them, embeddings made to require grad, and the output projection and MLP of some layers cut to
    the last position. `backend`: the BridgeBackend (its bridge, model and info), whose method this is."""
    z_edits, mlp_edits = z_edits or {}, mlp_edits or {}
    bridge, n_heads, d_head = backend.bridge, backend.info.n_heads, backend.info.d_head
    capture_z, capture_mlp, cut = set(capture_z), set(capture_mlp), set(cut_last_position)
    store = captured if captured is not None else {}
    store.setdefault("z", {})
    store.setdefault("mlp", {})
    handles = []

    def edited(kind: str, layer: int, act: torch.Tensor, edits: dict, apply: Callable, capture: set[int]
               ) -> torch.Tensor:
        """act with this layer's edit applied (its values cut to the last position where the layer is cut),
        its gradient retained and captured, as asked."""
        if layer in edits:
            edit = edits[layer]
            if layer in cut and edit.values is not None:
                edit = dataclasses.replace(edit, values=edit.values[:, -1:])
            act = apply(act, edit)
        if retain_grad and act.requires_grad:
            act.retain_grad()
        if layer in capture:
            store[kind][layer] = act
        return act

    def z_hook(layer: int) -> Callable:
        def hook(module: Any, args: tuple) -> tuple:
            flat = args[0]
            if layer in cut:  # contiguous: a strided [batch, 1, ·] input would run as batch tiny products
                flat = flat[:, -1:].contiguous()
            z = edited("z", layer, flat.view(*flat.shape[:-1], n_heads, d_head), z_edits, apply_z_edit,
                       capture_z)
            return (z.reshape(flat.shape), *args[1:])
        return hook

    def mlp_pre(module: Any, args: tuple) -> tuple:
        return (args[0][:, -1:].contiguous(), *args[1:])

    def mlp_hook(layer: int) -> Callable:
        def hook(module: Any, args: tuple, output: Any) -> Any:
            out = output[0] if isinstance(output, tuple) else output
            out = edited("mlp", layer, out, mlp_edits, apply_mlp_edit, capture_mlp)
            return (out, *output[1:]) if isinstance(output, tuple) else out
        return hook

    try:
        if grad_from_embeddings:
            embeddings = backend.hf_model.get_input_embeddings()
            handles.append(embeddings.register_forward_hook(
                lambda module, args, output: output.detach().requires_grad_(True)))
        for layer in set(z_edits) | capture_z | cut:
            handles.append(bridge.blocks[layer].attn.o.original_component.register_forward_pre_hook(
                z_hook(layer)))
        for layer in cut:
            handles.append(bridge.blocks[layer].mlp.register_forward_pre_hook(mlp_pre))
        for layer in set(mlp_edits) | capture_mlp:
            handles.append(bridge.blocks[layer].mlp.register_forward_hook(mlp_hook(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def apply_z_edit(z: torch.Tensor, edit: ZEdit) -> torch.Tensor:
    """z[batch, pos, head, d_head] with the edited heads replaced (zeros where values is None)."""
    mask = edit.rows.to(z.device)[:, None, :, None]
    values = torch.zeros((), dtype=z.dtype, device=z.device) if edit.values is None else edit.values.to(z)
    return torch.where(mask, values, z)


def apply_mlp_edit(out: torch.Tensor, edit: MlpEdit) -> torch.Tensor:
    mask = edit.rows.to(out.device)[:, None, None]
    values = torch.zeros((), dtype=out.dtype, device=out.device) if edit.values is None else edit.values.to(out)
    return torch.where(mask, values, out)


__all__ = ["apply_mlp_edit", "apply_z_edit", "module_hooks"]
