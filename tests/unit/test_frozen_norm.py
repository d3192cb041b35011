"""A norm with its scale frozen (headscope.backends.norms), checked against transformers' own norm modules."""

import pytest
import torch
from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from headscope.backends.norms import NormKind, freeze_norm, norm_kind


def _norms() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    layer_norm = torch.nn.LayerNorm(16, eps=1e-5)
    rms, gemma = LlamaRMSNorm(16, eps=1e-6), Gemma2RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        for module in (layer_norm, rms, gemma):
            module.weight.copy_(torch.randn(16))
        layer_norm.bias.copy_(torch.randn(16))
    return {"layer_norm": layer_norm, "rms_norm": rms, "gemma_rms_norm": gemma}


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm", "gemma_rms_norm"])
def test_the_input_itself_through_the_frozen_norm_is_the_norm(kind: str) -> None:
    """A norm is scale-invariant, so x through the norm frozen at x's own scale (plus its bias) is norm(x)."""
    module = _norms()[kind]
    x = torch.randn(3, 5, 16) * 4
    frozen = freeze_norm(module, x)
    assert frozen.kind is NormKind(kind) is norm_kind(module)
    out = frozen.apply(x) + (frozen.bias if frozen.bias is not None else 0)
    expected = module(x).detach()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm", "gemma_rms_norm"])
def test_the_frozen_norm_adds_up_and_matches_the_hand_formula(kind: str) -> None:
    module = _norms()[kind]
    x, a, b = torch.randn(4, 16), torch.randn(4, 16), torch.randn(4, 16)
    frozen = freeze_norm(module, x)
    torch.testing.assert_close(frozen.apply(a) + frozen.apply(b), frozen.apply(a + b), rtol=1e-5, atol=1e-5)
    weight = module.weight.detach()
    if kind == "layer_norm":
        scale = (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        hand = (a - a.mean(-1, keepdim=True)) / scale * weight
    else:
        scale = (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
        hand = a / scale * (1 + weight if kind == "gemma_rms_norm" else weight)
    torch.testing.assert_close(frozen.apply(a), hand, rtol=1e-5, atol=1e-5 * hand.abs().max().item())


def test_an_unknown_norm_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="BatchNorm1d"):
        norm_kind(torch.nn.BatchNorm1d(4))
