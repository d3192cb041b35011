"""Backends: one interface (`base.Backend`), one file per backend. A new backend is one entry in BACKENDS.

- "bridge": TransformerLens' TransformerBridge over a local transformers model (the default);
- "nnsight": nnsight over the same local transformers model;
- "ndif": nnsight running the model remotely on NDIF (no weights on this machine).
"""

from __future__ import annotations

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
SUPPORTED_FAMILIES_HINT = "Llama, Mistral, Qwen2, Gemma, GPT-2, GPT-NeoX/Pythia, Phi, OLMo, …"


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
) -> Backend:
    """The requested backend around a transformers model already loaded on this machine."""
    if backend == "bridge":
        from headscope.backends.bridge import BridgeBackend, bridge_info, bridge_supports, wrap_in_bridge

        if progress is not None:
            progress("Wrapping the model in TransformerLens' TransformerBridge", 0.9)
        architecture = ", ".join(getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])
        if not bridge_supports(hf_model.config):
            raise ModelLoadError(
                f"TransformerLens has no adapter for {name}'s architecture ({architecture}): choose a model of a "
                f"family it supports ({SUPPORTED_FAMILIES_HINT}) or the nnsight backend."
            )
        try:
            bridge = wrap_in_bridge(hf_model, tokenizer, name, placement)
        except Exception as error:
            reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
            raise ModelLoadError(
                f"TransformerLens cannot serve {name} (architecture {architecture}): {reason}. Choose a model of a "
                f"family TransformerLens supports ({SUPPORTED_FAMILIES_HINT}) or the nnsight backend."
            ) from error
        info = bridge_info(bridge, name=name, source=source, revision=revision, placement=placement,
                           n_params=n_params, load_seconds=time.perf_counter() - started)
        return BridgeBackend(bridge, info, placement)
    if backend == "nnsight":
        from headscope.backends.nnsight import NnsightBackend

        if progress is not None:
            progress("Wrapping the model in nnsight", 0.9)
        return NnsightBackend.from_local(hf_model, tokenizer, name=name, source=source, revision=revision,
                                         placement=placement, n_params=n_params, started=started)
    raise ModelLoadError(f"The {backend} backend does not run a model loaded on this machine.")
