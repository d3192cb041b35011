"""The bridge backend's set-up: TransformerLens' TransformerBridge made on first need, or ahead of it on a background
thread, and the model's identity as TransformerLens reads it.

Importing TransformerLens and wrapping the model take longer than loading a small model's weights (≈ 6 s against
≈ 1 s for the embedded model on a 2-core CPU), so the backend serves plain forwards from the model as transformers
loaded it until the bridge is made (`LazyBridge`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from headscope.backends.base import ModelInfo, Placement, resident_bytes
from headscope.errors import ModelLoadError
from headscope.sharing import ModelGate

# What a model's identity must agree on between its config and TransformerLens' reading of it (results depend on it)
IDENTITY_FIELDS = ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model", "d_mlp", "n_ctx", "vocab_size")
SUPPORTED_FAMILIES_HINT = "Llama, Mistral, Qwen2, Gemma, GPT-2, GPT-NeoX/Pythia, Phi, OLMo, …"


class LazyBridge:
    """The TransformerBridge around one model, made once: on first need (`get`, `prepare`) or on a background thread
    (`prepare_in_background`). `make()` wraps the model; `adopt(bridge)` takes it into use (reads the identity, runs
    the load-time checks, which may use `get()` meanwhile). A failure is kept and raised again on every later call."""

    def __init__(self, gate: ModelGate, name: str, make: Callable[[], Any], adopt: Callable[[Any], None]) -> None:
        self.gate = gate
        self.name = name
        self._make = make
        self._adopt = adopt
        self.bridge: Any | None = None  # set but not `ready` only while this very thread runs adopt
        self.ready = False  # the bridge made and adopted
        self.error: ModelLoadError | None = None
        self.thread: threading.Thread | None = None  # the background set-up, once started
        self._thread_lock = threading.Lock()

    def get(self) -> Any:
        """The bridge, made (blocking) if it is not yet."""
        if not self.ready:
            self.prepare()
        return self.bridge

    def prepare(self) -> None:
        """Make the bridge. The import runs outside the gate (other sessions keep using the model meanwhile); wrapping
        the model changes its modules, so it holds the gate."""
        if self.ready:
            return
        if self.error is not None:
            raise self.error
        # a daemon (e.g. Streamlit's script thread): the set-up runs on a thread that is not one, unless this one
        # holds the model (that thread would wait for it: a caller inside a model call sets up here, as before)
        if threading.current_thread().daemon and not self.gate.held_here():
            self._prepare_on_own_thread()
            return
        import transformer_lens.model_bridge  # noqa: F401  (≈ 3 s the first time; no model is touched)

        with self.gate.job(f"TransformerLens' set-up on {self.name} (once per model)"), self.gate.hold():
            if self.bridge is None and self.error is None:
                try:
                    self.bridge = self._make()
                    self._adopt(self.bridge)
                    self.ready = True
                except ModelLoadError as error:
                    self.error = error
                except Exception as error:  # anything else TransformerLens or a check raises: hooks stay off, said
                    self.error = ModelLoadError(
                        f"Setting up TransformerLens' hooks on {self.name} failed: {first_line(error)}. The "
                        "prompt tester still works; for the other pages load the model with the nnsight backend.")
            if self.error is not None:
                raise self.error

    def _prepare_on_own_thread(self) -> None:
        """prepare() asked from a daemon thread (a first page that needs hooks, in Streamlit's script thread): the
        set-up runs on the background thread, which is not a daemon, and this one waits for it. SIGTERM while a
        daemon thread was inside TransformerLens' set-up aborted the process ("terminate called without an active
        exception"): the interpreter's exit killed it in C++; a thread that is not a daemon is waited for."""
        self.prepare_in_background()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self.error is not None:
            raise self.error
        if not self.ready:  # the thread ended without a result (it should not): said, not hidden
            raise ModelLoadError(f"Setting up TransformerLens' hooks on {self.name} stopped without a result.")

    def prepare_in_background(self) -> None:
        with self._thread_lock:  # several sessions may ask at once: one thread
            if self.ready or self.error is not None or self.thread is not None:
                return

            def boot() -> None:
                with contextlib.suppress(ModelLoadError):  # kept in self.error: prepare raises it
                    self.prepare()

            # not a daemon: a process ending meanwhile waits the few seconds for it, instead of being aborted by
            # torch while the thread is in the middle of a forward
            # daemon=False said outright: a thread inherits its starter's flag, and Streamlit's script threads are
            # daemons (the process then aborted, "terminate called without an active exception", on SIGTERM)
            self.thread = threading.Thread(target=boot, name=f"hooks for {self.name}", daemon=False)
            self.thread.start()


def identity_differences(config_read: ModelInfo, bridge_read: ModelInfo) -> list[str]:
    """The identity fields on which the config's reading and TransformerLens' differ, as "field a vs b"."""
    return [f"{field} {getattr(config_read, field)!r} vs {getattr(bridge_read, field)!r}" for field in IDENTITY_FIELDS
            if getattr(config_read, field) != getattr(bridge_read, field)]


def bridge_info(bridge: Any, *, name: str, source: str, revision: str, placement: Placement, n_params: int,
                load_seconds: float, bos_token: str | None, bos_rule: str, backend: str = "bridge") -> ModelInfo:
    """ModelInfo read off a bridge's config; the BOS is the model's policy (headscope.backends.bos), not
    TransformerLens' per-family default."""
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    return ModelInfo(
        name=name,
        source=source,
        revision=revision,
        n_layers=int(cfg.n_layers),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=int(cfg.d_head),
        d_model=int(cfg.d_model),
        d_mlp=int(getattr(cfg, "d_mlp", 0) or 0),
        n_ctx=int(cfg.n_ctx),
        vocab_size=int(cfg.d_vocab),
        n_params=n_params,
        device=placement.device,
        dtype=placement.dtype_name,
        memory_bytes=resident_bytes(bridge),
        load_seconds=load_seconds,
        bos_token=bos_token,
        backend=backend,
        bos_rule=bos_rule,
        architecture=str(getattr(cfg, "architecture", "") or ""),
    )


def architecture(hf_model: Any) -> str:
    """The model's architecture names from its config, else its class name."""
    return ", ".join(getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])


def error_line(error: BaseException) -> str:
    """An exception as a fallback's reason: its type and first line."""
    return f"{type(error).__name__}: {first_line(error)}"


def first_line(error: BaseException) -> str:
    """An exception's first line (at most 300 characters), or its type where it has no message."""
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__


def make_bridge(hf_model: Any, tokenizer: Any, name: str, placement: Placement) -> Any:
    """The TransformerBridge around a loaded model, or a ModelLoadError saying why TransformerLens cannot serve it."""
    family = architecture(hf_model)
    if not bridge_supports(hf_model.config):
        raise ModelLoadError(
            f"TransformerLens has no adapter for {name}'s architecture ({family}): choose a model of a "
            f"family it supports ({SUPPORTED_FAMILIES_HINT}) or the nnsight backend."
        )
    try:
        return wrap_in_bridge(hf_model, tokenizer, name, placement)
    except Exception as error:
        raise ModelLoadError(
            f"TransformerLens cannot serve {name} (architecture {family}): {first_line(error)}. Choose a "
            f"model of a family TransformerLens supports ({SUPPORTED_FAMILIES_HINT}) or the nnsight backend."
        ) from error


def bridge_supports(config: Any) -> bool:
    """Whether TransformerLens has an architecture adapter for a transformers config (its own look-up, read only)."""
    from transformer_lens.model_bridge.sources.transformers import determine_architecture_from_hf_config

    try:
        determine_architecture_from_hf_config(config)
    except ValueError:
        return False
    return True


def wrap_in_bridge(hf_model: Any, tokenizer: Any, name: str, placement: Placement) -> Any:
    """TransformerBridge around an already loaded model (no hub call)."""
    from transformer_lens.model_bridge import TransformerBridge

    with contextlib.redirect_stdout(None):
        bridge = TransformerBridge.boot_transformers(
            name,
            hf_model=hf_model,
            tokenizer=tokenizer,
            device=None if placement.device_map else placement.device,
            dtype=placement.dtype,
        )
    bridge.eval()
    bridge.requires_grad_(False)
    return bridge


__all__ = ["IDENTITY_FIELDS", "SUPPORTED_FAMILIES_HINT", "LazyBridge", "architecture", "bridge_info",
           "bridge_supports", "error_line", "first_line", "identity_differences", "make_bridge", "wrap_in_bridge"]
