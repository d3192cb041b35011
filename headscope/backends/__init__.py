"""Backends: one interface (`base.Backend`), one module per backend. A new backend is its module plus one entry in
BACKENDS, which carries everything the rest of headscope knows about it: name, label, help text, whether it runs on
this machine, the packages it needs and its factory.

- "bridge": TransformerLens' TransformerBridge over a local transformers model (the default);
- "nnsight": nnsight over the same local transformers model;
- "ndif": nnsight running the model remotely on NDIF (no weights on this machine; opened by loading.load_remote).

This module imports no backend (nor torch): the CLI's option parser and the app's sidebar read BACKENDS before any
model library is loaded, and a factory's module is imported when a model is first opened with it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headscope.errors import ModelLoadError

__all__ = ["BACKENDS", "BACKEND_NAMES", "LOCAL_BACKEND_NAMES", "BackendSpec", "check_backend_name"]


@dataclass(frozen=True)
class BackendSpec:
    """One backend. factory: "module:function" that opens a model loaded on this machine (a base.LocalModel) behind
    this backend; None for a remote backend, which loads no weights here (loading.load_remote opens it)."""

    name: str
    label: str
    local: bool
    help: str
    requires: tuple[str, ...]  # importable packages it needs (the app says which is missing)
    factory: str | None = None

    def opener(self) -> Callable[[Any], Any]:
        """The factory function, its module imported now (first use)."""
        if self.factory is None:
            raise ModelLoadError(f"The {self.label} backend does not run a model loaded on this machine.")
        module, _, function = self.factory.partition(":")
        return getattr(importlib.import_module(module), function)


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("bridge", "TransformerLens (local)", True,
                    "TransformerLens' TransformerBridge over the model, on this machine (the default)",
                    ("transformer_lens",), "headscope.backends.bridge:open_local"),
        BackendSpec("nnsight", "nnsight (local)", True, "nnsight over the same model, on this machine",
                    ("nnsight", "headscope.backends.nnsight"), "headscope.backends.nnsight:open_local"),
        BackendSpec("ndif", "NDIF (remote)", False,
                    "nnsight on NDIF's servers: for models that do not fit this machine (needs an NDIF API key)",
                    ("nnsight", "headscope.backends.nnsight")),
    )
}
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)
LOCAL_BACKEND_NAMES: tuple[str, ...] = tuple(name for name, spec in BACKENDS.items() if spec.local)


def check_backend_name(name: str) -> BackendSpec:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ModelLoadError(f"Unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}.") from None
