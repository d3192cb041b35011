"""Family layouts for the nnsight backend: where each transformers family keeps the modules headscope edits and calls.

A head is ablated by editing its slice of the output projection's *input* (the per-head z), never the attention
output after the projection; an MLP by replacing the MLP module's output. Families with a known layout are served
(LAYOUTS); any other is refused at load rather than run with wrong numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from headscope.errors import ModelLoadError


def _values_separate(attn: Any, normed: torch.Tensor, n_heads: int, n_kv: int, d_head: int) -> torch.Tensor:
    """v[..., kv, d_head] from a separate value projection (Llama, Mistral, Qwen2, Gemma-2)."""
    return attn.v_proj(normed).view(*normed.shape[:-1], n_kv, d_head)


def _values_gpt2(attn: Any, normed: torch.Tensor, n_heads: int, n_kv: int, d_head: int) -> torch.Tensor:
    """GPT-2's fused c_attn: q, k, v side by side, each n_heads · d_head wide."""
    width = n_heads * d_head
    return attn.c_attn(normed)[..., 2 * width:3 * width].reshape(*normed.shape[:-1], n_heads, d_head)


def _values_neox(attn: Any, normed: torch.Tensor, n_heads: int, n_kv: int, d_head: int) -> torch.Tensor:
    """GPT-NeoX's query_key_value: per head [q | k | v], so v is the last third of each head's block."""
    fused = attn.query_key_value(normed).view(*normed.shape[:-1], n_heads, 3 * d_head)
    return fused[..., 2 * d_head:]


@dataclass(frozen=True)
class Layout:
    """Module paths of one family (relative to the causal-LM model) and how to read its value vectors."""

    family: str
    layers: str  # the block list, e.g. "model.layers"
    attn: str  # attention module inside a block
    o_proj: str  # output projection inside a block: its input is the per-head z
    mlp: str  # MLP module inside a block
    ln1: str  # norm before attention
    ln2: str  # norm before the MLP
    embed: str  # token embedding (with the model's own scale, Gemma)
    final_norm: str
    unembed: str
    values: Callable[[Any, torch.Tensor, int, int, int], torch.Tensor]
    ln1_post: str | None = None  # norm after attention, before the residual add (Gemma-2), or None
    ln2_post: str | None = None  # norm after the MLP, before the residual add (Gemma-2), or None

    def block(self, layer: int, part: str) -> str:
        return f"{self.layers}.{layer}.{part}"

    def block_parts(self) -> tuple[str, ...]:
        """Every module path inside a block that headscope edits or calls."""
        return tuple(part for part in (self.attn, self.o_proj, self.mlp, self.ln1, self.ln2, self.ln1_post,
                                       self.ln2_post) if part is not None)


def _llama_like(family: str, ln2: str = "post_attention_layernorm", ln1_post: str | None = None,
                ln2_post: str | None = None) -> Layout:
    return Layout(family, "model.layers", "self_attn", "self_attn.o_proj", "mlp", "input_layernorm", ln2,
                  "model.embed_tokens", "model.norm", "lm_head", _values_separate, ln1_post, ln2_post)


LAYOUTS: dict[str, Layout] = {
    "llama": _llama_like("Llama"),
    "mistral": _llama_like("Mistral"),
    "qwen2": _llama_like("Qwen2"),
    # Gemma-2 norms each sublayer's output too: post_attention_layernorm after attention (its ln2 is
    # pre_feedforward_layernorm), post_feedforward_layernorm after the MLP
    "gemma2": _llama_like("Gemma-2", ln2="pre_feedforward_layernorm", ln1_post="post_attention_layernorm",
                          ln2_post="post_feedforward_layernorm"),
    "gpt2": Layout("GPT-2", "transformer.h", "attn", "attn.c_proj", "mlp", "ln_1", "ln_2", "transformer.wte",
                   "transformer.ln_f", "lm_head", _values_gpt2),
    "gpt_neox": Layout("GPT-NeoX", "gpt_neox.layers", "attention", "attention.dense", "mlp", "input_layernorm",
                       "post_attention_layernorm", "gpt_neox.embed_in", "gpt_neox.final_layer_norm", "lm_head",
                       _values_neox),
}


def layout_for(config: Any, name: str) -> Layout:
    """The layout of `config`'s family, or a ModelLoadError naming the families nnsight is served for."""
    model_type = str(getattr(config, "model_type", "") or "")
    layout = LAYOUTS.get(model_type)
    if layout is None:
        families = ", ".join(sorted({layout.family for layout in LAYOUTS.values()}))
        architecture = ", ".join(getattr(config, "architectures", None) or [model_type or "unknown"])
        raise ModelLoadError(
            f"The nnsight backend does not know where {name} (architecture {architecture}, model_type "
            f"{model_type!r}) keeps its per-head attention output, so it would give wrong numbers: it serves "
            f"{families}. Use the TransformerLens backend, or a model of one of those families."
        )
    return layout


def check_modules(root: Any, layout: Layout, n_layers: int, name: str) -> None:
    """Every path the layout names exists on the model (real or meta), and the unembedding is a plain Linear."""
    paths = [layout.embed, layout.final_norm, layout.unembed]
    for layer in sorted({0, n_layers - 1}):
        paths += [layout.block(layer, part) for part in layout.block_parts()]
    for path in paths:
        try:
            root.get_submodule(path)
        except AttributeError:
            raise ModelLoadError(
                f"{name} is a {layout.family} model but has no module {path}: its layout differs from the one the "
                "nnsight backend knows, so it is refused rather than run with wrong numbers. Use the TransformerLens "
                "backend."
            ) from None
    if not isinstance(root.get_submodule(layout.unembed), torch.nn.Linear):
        raise ModelLoadError(f"{name}'s unembedding ({layout.unembed}) is not a Linear layer: the nnsight backend "
                             "cannot read its columns. Use the TransformerLens backend.")


__all__ = ["LAYOUTS", "Layout", "check_modules", "layout_for"]
