"""A norm with its scale frozen: how a change to a norm's input reaches its output when the scale is held at that of
the run's own input.

Direct logit attribution reads each component's output through the final norm, and path patching adds a sender's
change to one head's query/key/value input, both with the norm's scale taken from the unedited run (as
TransformerLens' `get_act_patch_direct_path` and its `hook_scale` do). With the scale frozen a norm is affine, so
contributions add up: for an input x = Σ parts, Σ frozen(part) + bias = norm(x).

The families' norms, as transformers writes them:
- LayerNorm (GPT-2, GPT-NeoX): (x − mean x) / sqrt(var x + eps) · w + b;
- RMSNorm (Llama, Mistral, Qwen2): x / sqrt(mean x² + eps) · w;
- Gemma's RMSNorm: x / sqrt(mean x² + eps) · (1 + w).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch


class NormKind(StrEnum):
    LAYER_NORM = "layer_norm"
    RMS_NORM = "rms_norm"
    GEMMA_RMS_NORM = "gemma_rms_norm"  # scales by (1 + weight)


def norm_kind(module: Any) -> NormKind:
    """The kind of a transformers norm module (by its class: LayerNorm, Gemma's RMSNorm, any other RMSNorm)."""
    if isinstance(module, torch.nn.LayerNorm):
        return NormKind.LAYER_NORM
    name = type(module).__name__
    if "Gemma" in name and "RMSNorm" in name:
        return NormKind.GEMMA_RMS_NORM
    if "RMSNorm" in name:
        return NormKind.RMS_NORM
    raise TypeError(f"headscope does not know the norm {name}: it cannot freeze its scale.")


def norm_eps(module: Any) -> float:
    """A transformers norm's epsilon (variance_epsilon or eps)."""
    for name in ("variance_epsilon", "eps"):
        value = getattr(module, name, None)
        if isinstance(value, float | int):
            return float(value)
    raise TypeError(f"The norm {type(module).__name__} states no epsilon.")


@dataclass(frozen=True)
class FrozenNorm:
    """A norm with the scale of one input x[..., d_model]: `apply(delta)` = the change of its output when delta is
    added to x with the scale held (float32); `bias` is what the norm adds whatever its input (LayerNorm's b, else
    None). inverse_scale[..., 1] = 1 / sqrt(var or mean-square of x + eps)."""

    kind: NormKind
    inverse_scale: torch.Tensor
    gain: torch.Tensor | None  # the multiplier per feature: w, or 1 + w (Gemma); None for none
    bias: torch.Tensor | None

    def apply(self, delta: torch.Tensor) -> torch.Tensor:
        """delta[..., d_model] (broadcast against x's leading shape) through the frozen norm, without its bias."""
        delta = delta.float()
        if self.kind is NormKind.LAYER_NORM:
            delta = delta - delta.mean(dim=-1, keepdim=True)
        out = delta * self.inverse_scale
        return out * self.gain if self.gain is not None else out


def freeze_norm(module: Any, x: torch.Tensor) -> FrozenNorm:
    """The norm `module` (a transformers norm) with the scale of its input x[..., d_model]."""
    return freeze_parts(norm_kind(module), getattr(module, "weight", None), getattr(module, "bias", None),
                        norm_eps(module), x)


# the final and post-sublayer norms of the families the nnsight backend serves (headscope.backends.layouts' family
# names; any other family's are RMSNorms): inside an nnsight session a module is an Envoy, whose class says nothing
FAMILY_NORMS = {"GPT-2": NormKind.LAYER_NORM, "GPT-NeoX": NormKind.LAYER_NORM, "Gemma-2": NormKind.GEMMA_RMS_NORM}


def freeze_family_norm(family: str, module: Any, x: torch.Tensor) -> FrozenNorm:
    """The norm `module` of a model of `family` (also an nnsight Envoy) with the scale of its input x[..., d_model]."""
    return freeze_parts(FAMILY_NORMS.get(family, NormKind.RMS_NORM), getattr(module, "weight", None),
                        getattr(module, "bias", None), norm_eps(module), x)


def freeze_parts(kind: NormKind, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                 x: torch.Tensor) -> FrozenNorm:
    """A norm of `kind` with gain `weight`, `bias` and `eps`, with the scale of its input x[..., d_model]."""
    x = x.float()
    if kind is NormKind.LAYER_NORM:
        spread = x.var(dim=-1, keepdim=True, unbiased=False)
    else:
        spread = x.pow(2).mean(dim=-1, keepdim=True)
    gain = None if weight is None else weight.detach().float().to(x.device)
    if gain is not None and kind is NormKind.GEMMA_RMS_NORM:
        gain = 1.0 + gain
    return FrozenNorm(kind, torch.rsqrt(spread + eps), gain,
                      None if bias is None else bias.detach().float().to(x.device))


__all__ = ["FAMILY_NORMS", "FrozenNorm", "NormKind", "freeze_family_norm", "freeze_norm", "freeze_parts", "norm_eps",
           "norm_kind"]
