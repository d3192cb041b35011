"""Backends: one interface (`base.Backend`), one file per backend. A new backend is one entry in BACKENDS.

- "bridge": TransformerLens' TransformerBridge over a local transformers model (the default);
- "nnsight": nnsight over the same local transformers model;
- "ndif": nnsight running the model remotely on NDIF (no weights on this machine).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headscope.backends.base import Backend, ModelInfo, Placement
from headscope.errors import ModelLoadError

__all__ = ["BACKENDS", "BACKEND_NAMES", "Backend", "BackendSpec", "ModelInfo", "Placement", "check_backend_name",
           "wrap_local_model"]


@dataclass(frozen=True)
class BackendSpec:
    """A backend's name, label for the UI and CLI, and whether its model runs on this machine."""

    name: str
    label: str
    local: bool
    help: str


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("bridge", "TransformerLens (local)", True,
                    "TransformerLens' TransformerBridge over the model, on this machine (the default)"),
        BackendSpec("nnsight", "nnsight (local)", True, "nnsight over the same model, on this machine"),
        BackendSpec("ndif", "NDIF (remote)", False,
                    "nnsight on NDIF's servers: for models that do not fit this machine (needs an NDIF API key)"),
    )
}
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)


def check_backend_name(name: str) -> BackendSpec:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ModelLoadError(f"Unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}.") from None


ProgressCallback = Callable[[str, float], None]


def wrap_local_model(
    backend: str,
    hf_model: Any,
    tokenizer: Any,
    *,
    name: str,
    source: str,
    revision: str,
    placement: Placement,
    n_params: int,
    started: float,
    progress: ProgressCallback | None = None,
    hooks_later: bool = False,
) -> Backend:
    """The requested backend around a transformers model already loaded on this machine.

    hooks_later: the bridge backend may leave TransformerLens' wrapping to first need (BridgeBackend), where the model's
    family reads the same from its config; the app does, so its prompt tester is usable seconds sooner. Otherwise the
    model is wrapped here and a model TransformerLens cannot serve is refused now."""
    if backend == "bridge":
        from headscope.backends.bridge import HOOKS_LATER_FAMILIES, BridgeBackend, config_info

        info = config_info(hf_model, tokenizer, name=name, source=source, revision=revision, placement=placement,
                           n_params=n_params, load_seconds=time.perf_counter() - started)
        model = BridgeBackend(hf_model, tokenizer, info, placement)
        if not (hooks_later and getattr(hf_model.config, "model_type", None) in HOOKS_LATER_FAMILIES):
            if progress is not None:
                progress("Wrapping the model in TransformerLens' TransformerBridge", 0.9)
            model.prepare_hooks()
            model.info = dataclasses.replace(model.info, load_seconds=time.perf_counter() - started)
        return model
    if backend == "nnsight":
        from headscope.backends.nnsight import NnsightBackend

        if progress is not None:
            progress("Wrapping the model in nnsight", 0.9)
        return NnsightBackend.from_local(hf_model, tokenizer, name=name, source=source, revision=revision,
                                         placement=placement, n_params=n_params, started=started)
    raise ModelLoadError(f"The {backend} backend does not run a model loaded on this machine.")
