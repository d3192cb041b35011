"""The bridge backend's load-time checks: each faster route is compared with TransformerLens' own forward on a short
random input, and kept off where it differs or cannot run, with the reason in ModelInfo.fallbacks (the model card
shows which slower route runs and why) instead of an exception swallowed.

- the fast path: the bridge's blocks run one at a time (BridgeBlockRunner) against the full forward's logits, and its
  cut of the last block to the last position;
- the model's own attention kernel for plain forwards (NativeAttention) against the bridge's logits;
- attention patterns from the model's own kernel against the bridge's hook_pattern (on first use).

`backend` is the BridgeBackend (its public gate, info, tokenizer, device, dtype, bridge, native attention and
unembedding; typed Any so that this module does not import the backend's).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from headscope.backends.bridge_patterns import bridge_patterns, native_patterns
from headscope.backends.bridge_setup import error_line

# The routes a load-time check may keep off (named in ModelInfo.fallbacks with the reason)
FAST_PATH = "Fast path (block-by-block sweeps)"
LAST_POSITION = "Last-position cut of the fast path's last block"
NATIVE_ATTENTION = "Model's own attention kernel for plain forwards"
NATIVE_PATTERNS = "Attention patterns from the model's own kernel"


def _tolerance(dtype: torch.dtype, half: float) -> float:
    return 1e-4 if dtype == torch.float32 else half


class RouteChecks:
    """The outcome of the checks on one model: which faster routes run, how far each was from the reference, and
    why any is off (`fallbacks`, mirrored into backend.info.fallbacks). enabled=False: no faster route is tried."""

    def __init__(self, backend: Any, *, enabled: bool = True) -> None:
        self.backend = backend
        self.enabled = enabled
        self.fallbacks: dict[str, str] = {}  # route -> why a check kept it off
        self.fast_path_error: float | None = None  # the block loop's relative logit difference
        self.pattern_route_error: float | str | None = None  # the pattern check's max difference, or why it failed
        # None: not checked yet (checked on first use, to keep it off the start); without checks: never
        self.native_patterns_ok: bool | None = None if enabled else False

    def fall_back(self, route: str, why: str | None) -> None:
        """Record (why given) or clear (None) that a check kept `route` off."""
        if why is None:
            self.fallbacks.pop(route, None)
        else:
            self.fallbacks[route] = f"{route} off: {why}"
        backend = self.backend
        backend.info = dataclasses.replace(backend.info, fallbacks=tuple(self.fallbacks.values()))

    def at_load(self, runner: Any) -> Any | None:
        """Check the native attention and the block loop (`runner`, a BridgeBlockRunner); returns the runner where
        it reproduces the bridge, else None (general path). A block loop that fails with the model's own attention
        is tried again on the bridge's."""
        if not self.enabled:
            return None
        self.native_attention()
        checked = runner if self.block_loop(runner) else None
        if checked is None and self.backend.native.ok:
            self.backend.native.ok = False
            checked = runner if self.block_loop(runner) else None
            self.native_attention()
        return checked

    def _random_tokens(self, shape: tuple[int, int], seed: int) -> torch.Tensor:
        backend = self.backend
        vocab = min(backend.info.vocab_size, len(backend.tokenizer))
        return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed)).to(backend.device)

    def block_loop(self, runner: Any) -> bool:
        """Whether the block loop reproduces the bridge's own forward on a short input (and, in runner.
        last_position_ok, whether its last-position cut does)."""
        backend = self.backend
        generator = torch.Generator().manual_seed(0)
        vocab = min(backend.info.vocab_size, len(backend.tokenizer))
        tokens = torch.randint(0, vocab, (2, 7), generator=generator).to(backend.device)
        ids = torch.randint(0, vocab, (2, 5), generator=generator).to(backend.device)
        tolerance = _tolerance(backend.dtype, 2e-2)
        last = backend.info.n_layers - 1
        try:
            with backend.gate.hold(), torch.inference_mode():
                reference = backend.bridge(tokens)[:, -1, :].float().gather(1, ids)
                scale = float(reference.abs().max()) or 1.0
                resid = runner.embed(tokens)
                context = runner.context(resid)
                for layer in range(last):
                    resid = runner.run_block(layer, resid, context).resid
                full = runner.run_block(last, resid, context).resid
                mine = runner.answer_logits(full[:, -1, :], ids)
                self.fast_path_error = float((mine - reference).abs().max()) / scale
                if self.fast_path_error > tolerance:
                    self.fall_back(FAST_PATH, f"the block loop's logits differ from the bridge's by "
                                              f"{self.fast_path_error:.2g} (relative; tolerance {tolerance:g})")
                    return False
                try:
                    cut = runner.run_block(last, resid, context, last_position_only=True).resid
                    cut_error = float((runner.answer_logits(cut[:, -1, :], ids) - reference).abs().max()) / scale
                    runner.last_position_ok = cut_error <= tolerance
                    self.fall_back(LAST_POSITION, None if runner.last_position_ok else
                                   f"differs from the full last block by {cut_error:.2g} (relative)")
                except Exception as error:  # TransformerLens' block refused the cut: the whole last block runs
                    runner.last_position_ok = False
                    self.fall_back(LAST_POSITION, error_line(error))
        except Exception as error:  # the block loop cannot run this model: the general path serves it
            self.fall_back(FAST_PATH, error_line(error))
            return False
        self.fall_back(FAST_PATH, None)
        return True

    def native_attention(self) -> None:
        """Enable the native-attention plain forward only where it gives the bridge's logits (within tolerance)."""
        backend = self.backend
        backend.native.ok = True
        tokens = self._random_tokens((2, 11), seed=1)
        try:
            with backend.gate.hold(), torch.inference_mode():
                reference = backend.bridge(tokens).float()
                with backend.native.swapped() as swapped:
                    if not swapped:
                        raise RuntimeError("nothing to swap")
                    mine = backend.unembed_all(backend.native.final_normed(tokens)).float()
            scale = float(reference.abs().max()) or 1.0
            error = float((mine - reference).abs().max()) / scale
            tolerance = _tolerance(backend.dtype, 2e-2)
            ok = error <= tolerance
            why = None if ok else (f"its logits differ from the bridge's by {error:.2g} (relative; tolerance "
                                   f"{tolerance:g})")
        except Exception as failure:  # the swap cannot run this model: the bridge's own attention serves it
            ok, why = False, error_line(failure)
        backend.native.ok = ok
        self.fall_back(NATIVE_ATTENTION, why)

    def native_patterns(self) -> None:
        """Enable the native pattern route only where it gives hook_pattern's patterns (every layer, every head)."""
        backend = self.backend
        self.native_patterns_ok = False
        if not backend.native.ok:
            return
        tokens = self._random_tokens((1, 9), seed=2)
        layers = set(range(backend.info.n_layers))

        def keep(layer: int, pattern: torch.Tensor) -> torch.Tensor:
            return pattern.float().clone()

        try:
            with torch.inference_mode():
                reference = bridge_patterns(backend, tokens, keep, layers, None)
                mine = native_patterns(backend, tokens, keep, layers, None)
            tolerance = 1e-5 if backend.dtype == torch.float32 else 3e-2  # half: the eager reference rounds scores
            if reference.keys() != mine.keys() or any(mine[k].shape != reference[k].shape for k in layers):
                raise RuntimeError("the routes returned different layers or shapes")
            self.pattern_route_error = max(float((mine[k] - reference[k]).abs().max()) for k in layers)
            self.native_patterns_ok = self.pattern_route_error <= tolerance
            self.fall_back(NATIVE_PATTERNS, None if self.native_patterns_ok else
                           f"its patterns differ from hook_pattern's by {self.pattern_route_error:.2g}")
        except Exception as error:  # any failure keeps the bridge's route (hook_pattern), said
            self.pattern_route_error = repr(error)[:300]
            self.native_patterns_ok = False
            self.fall_back(NATIVE_PATTERNS, error_line(error))


__all__ = ["FAST_PATH", "LAST_POSITION", "NATIVE_ATTENTION", "NATIVE_PATTERNS", "RouteChecks"]
