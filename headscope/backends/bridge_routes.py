"""The bridge backend's two routes around TransformerLens' own attention, each its own object.

- NativeAttention: plain forwards (no hooks) run the model's own attention kernel (SDPA) instead of the bridge's
  attention, which materializes every [head, dest, src] score to offer hook_pattern: on a 4,000-token prompt that
  costs several times the rest of the forward. It swaps the bridge's attention modules for the model's own for the
  duration of a forward (checked against the bridge's forward at load), and can recompute chosen heads' patterns
  from the query and key that transformers' SDPA function receives (by replacing ALL_ATTENTION_FUNCTIONS["sdpa"]
  while some thread captures).
- LayerTurns: while a plain forward runs, it reports progress per layer and hands the model to waiting callers
  between layers (the re-entrant gate released and re-taken, the attention swap undone meanwhile), so a long prompt
  never blocks the other sessions for its whole forward.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from headscope.sharing import ModelGate

# A plain forward holds the model at least this long before handing it to a waiting caller between layers: a short
# request (the prompt tester's, ~0.2 s here) then runs in one go instead of alternating layer by layer with a sweep,
# and a long prompt lets others in about twice a second.
HAND_OVER_AFTER_SECONDS = 0.25

class StopForward(Exception):
    """Raised from a hook to end a forward pass early (the residual before the final norm captured, or the last
    pattern read)."""


PatternCapture = Callable[[Any, torch.Tensor, torch.Tensor, "torch.Tensor | None", "float | None", "bool | None"], None]
_captures: dict[int, PatternCapture] = {}  # thread id -> what to do with each attention call's query and key
_captures_lock = threading.Lock()


def _sdpa_with_capture(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, *args: Any, **kwargs: Any) -> Any:
    """transformers' own SDPA attention, after handing the query and key to this thread's capture, if any."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    capture = _captures.get(threading.get_ident())
    if capture is not None:
        capture(module, query, key, attention_mask, kwargs.get("scaling"), kwargs.get("is_causal"))
    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


@contextlib.contextmanager
def capturing_sdpa(thread: int, capture: PatternCapture) -> Iterator[None]:
    """Route transformers' "sdpa" attention through _sdpa_with_capture while any thread captures (models of other
    threads pass straight through to the original function)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    with _captures_lock:
        if not _captures:
            ALL_ATTENTION_FUNCTIONS["sdpa"] = _sdpa_with_capture
        _captures[thread] = capture
    try:
        yield
    finally:
        with _captures_lock:
            _captures.pop(thread, None)
            if not _captures:
                del ALL_ATTENTION_FUNCTIONS["sdpa"]


def head_patterns(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float | None,
                  causal: bool, heads: list[int]) -> torch.Tensor:
    """pattern[batch, head, dest, src] of the chosen query heads, from query[batch, head, dest, d_head] and
    key[batch, kv_head, src, d_head] as the attention kernel gets them (rotary applied): softmax in float32 of the
    scaled scores plus the mask (boolean: True attends; additive; or none, then causal), in the query's dtype."""
    groups = query.shape[1] // key.shape[1]
    q = query[:, heads].float()
    k = key[:, [head // groups for head in heads]].float()
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-1, -2)) * scale  # [batch, head, dest, src]
    dest, src = scores.shape[-2:]
    if mask is not None:
        mask = mask[..., :dest, :src]
        if mask.shape[1] != 1 and mask.shape[1] == query.shape[1]:  # a mask per head
            mask = mask[:, heads]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    elif causal and dest > 1:
        future = torch.ones(dest, src, dtype=torch.bool, device=scores.device).triu(1 + src - dest)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(-1).to(query.dtype)


class NativeAttention:
    """The model's own attention modules in place of the bridge's, where the check at load allowed it (`ok`)."""

    def __init__(self, hf_model: Any) -> None:
        self.hf_model = hf_model
        self.bridge: Any | None = None
        self.ok = False  # set by the check at load (BridgeBackend)
        # the model's attention implementation as the bridge runs it (restored during a hand-over)
        self.bridge_attn_implementation: str | None = None
        self._slots: list[tuple[Any, str, Any]] | None = None

    def attach(self, bridge: Any) -> None:
        """The bridge whose attention modules are swapped (once it is made)."""
        self.bridge = bridge
        self.bridge_attn_implementation = getattr(self.hf_model.config, "_attn_implementation", None)

    def slots(self) -> list[tuple[Any, str, Any]]:
        """(HF decoder layer, attribute name, bridge attention) for each layer, found by identity."""
        if self._slots is None:
            slots = []
            for block in self.bridge.blocks if self.bridge is not None else []:
                layer = getattr(block, "original_component", None)
                name = next((n for n, child in layer.named_children() if child is block.attn), None) if layer else None
                if name is None:
                    slots = []
                    break
                slots.append((layer, name, block.attn))
            self._slots = slots
        return self._slots

    @contextlib.contextmanager
    def swapped(self, keep: Iterable[int] = ()) -> Iterator[bool]:
        """HF's own attention modules (SDPA) in every layer but `keep` for the duration; yields False (nothing
        swapped) where that is not possible or was found to differ from the bridge at load."""
        slots = self.slots() if self.ok else []
        keep = set(keep)
        config = self.hf_model.config
        swapped: list[tuple[Any, str, Any]] = []
        previous = getattr(config, "_attn_implementation", None)
        try:
            if slots:
                for index, (layer, name, attention) in enumerate(slots):
                    if index not in keep:
                        setattr(layer, name, attention.original_component)
                        swapped.append((layer, name, attention))
                config._attn_implementation = "sdpa"
            yield bool(swapped)
        finally:
            if slots:
                config._attn_implementation = previous
            for layer, name, attention in swapped:
                setattr(layer, name, attention)

    def final_normed(self, tokens: torch.Tensor) -> torch.Tensor:
        """normed[batch, pos, d_model]: the final residual after the final norm, from the model's own forward."""
        return self.hf_model.base_model(input_ids=tokens, use_cache=False).last_hidden_state

    @contextlib.contextmanager
    def bridge_restored(self) -> Iterator[None]:
        """The bridge's attention back in every swapped layer for the duration (another caller's turn), then the
        swap as it was."""
        native = [(layer, name, attention) for layer, name, attention in self.slots()
                  if getattr(layer, name) is attention.original_component]
        config = self.hf_model.config
        mine = config._attn_implementation
        for layer, name, attention in native:
            setattr(layer, name, attention)
        config._attn_implementation = self.bridge_attn_implementation
        try:
            yield
        finally:
            config._attn_implementation = mine
            for layer, name, attention in native:
                setattr(layer, name, attention.original_component)


def _ignore_wait(status: object) -> None:
    """An on_wait that never gives up."""


class LayerTurns:
    """Progress per layer and hand-overs between layers during a plain forward (see the module docstring)."""

    def __init__(self, gate: ModelGate, native: NativeAttention, n_layers: int) -> None:
        self.gate = gate
        self.native = native
        self.n_layers = n_layers

    def decoder_layers(self) -> list[Any]:
        """The model's own decoder layers, in order (the bridge's blocks wrap them); [] where none is found."""
        bridge = self.native.bridge
        if bridge is not None:
            return [getattr(block, "original_component", block) for block in bridge.blocks]
        for module in self.native.hf_model.base_model.modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == self.n_layers:
                return list(module)
        return []

    @contextlib.contextmanager
    def during(self, progress: Callable[[float], None] | None = None, hand_over: bool = True) -> Iterator[None]:
        """While a plain forward runs: report progress per layer, and hand the model to waiting callers between
        layers. Before the bridge is made there is no hand-over (hand_over=False): a waiting caller may be the one
        making it, which changes the model's modules, and must not do so in the middle of this forward."""
        handles = []
        # The hooks sit on the shared model: a caller served during a hand-over runs the same blocks, and must not
        # report this caller's progress (into this caller's page) or hand the model over on its behalf.
        mine = threading.get_ident()
        slice_started = [time.perf_counter()]
        n_layers = self.n_layers

        def before_layer(index: int) -> Callable:
            def hook(module: Any, args: tuple) -> None:
                if threading.get_ident() != mine:
                    return
                if progress is not None:
                    progress(index / n_layers)
                if (hand_over and index and time.perf_counter() - slice_started[0] >= HAND_OVER_AFTER_SECONDS
                        and self.gate.has_waiters()):
                    self.hand_over()
                    slice_started[0] = time.perf_counter()
            return hook

        for index, layer in enumerate(self.decoder_layers()):
            handles.append(layer.register_forward_pre_hook(before_layer(index)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def hand_over(self) -> None:
        """Let the callers queued on the gate run, then continue (the native-attention swap undone meanwhile)."""
        interrupted: BaseException | None = None
        with self.native.bridge_restored():
            depth = self.gate.release_all()
            try:
                self.gate.acquire()  # FIFO: the queued callers go first
            except BaseException as error:  # the caller gave up waiting (Give up, a rerun) mid-forward
                # Take the model back regardless before touching it: the holds around this forward release it as the
                # error unwinds them, and the swap must not change the model under another caller.
                interrupted = error
                self.gate.acquire(on_wait=_ignore_wait)
            self.gate.restore_depth(depth)
        if interrupted is not None:
            raise interrupted


__all__ = ["HAND_OVER_AFTER_SECONDS", "LayerTurns", "NativeAttention", "StopForward", "capturing_sdpa",
           "head_patterns"]
