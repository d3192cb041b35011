"""A prompt's attention inputs kept from one forward: the query and key each layer's attention kernel received (rotary
applied) and its mask. Any head's pattern, or any window of its rows, is then one matmul and a softmax away, with no
other forward: a page showing a long prompt changes its heads or its window for milliseconds instead of a forward
(4,343 tokens on the embedded model: 13 MB per layer against 77 MB per head for a whole pattern)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from headscope.backends.bridge_routes import head_patterns


@dataclass(frozen=True)
class LayerInputs:
    """What one layer's attention kernel got: query[1, head, pos, d_head], key[1, kv_head, pos, d_head], its mask
    (boolean: True attends; additive; or None), scaling and causality."""

    query: torch.Tensor
    key: torch.Tensor
    mask: torch.Tensor | None
    scaling: float | None
    causal: bool


@dataclass(frozen=True)
class AttentionInputs:
    """LayerInputs of layers 0..top_layer of one prompt (batch 1)."""

    layers: dict[int, LayerInputs]
    top_layer: int
    n_tokens: int

    @property
    def nbytes(self) -> int:
        """Bytes held (a mask shared by several layers counted once)."""
        seen: dict[int, int] = {}
        for inputs in self.layers.values():
            for tensor in (inputs.query, inputs.key, inputs.mask):
                if tensor is not None:
                    seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
        return sum(seen.values())

    def rows(self, layer: int, heads: list[int], start: int = 0, stop: int | None = None) -> np.ndarray:
        """pattern[head, dest, src] float32 for dest in [start, stop) and src in [0, stop): the same rows as the whole
        pattern's, each normalized over every source position before it."""
        stop = self.n_tokens if stop is None else stop
        inputs = self.layers[layer]
        mask = None if inputs.mask is None else inputs.mask[..., start:stop, :stop]
        with torch.inference_mode():
            pattern = head_patterns(inputs.query[:, :, start:stop], inputs.key[:, :, :stop], mask, inputs.scaling,
                                    inputs.causal, heads)
        return pattern[0].float().cpu().numpy()
