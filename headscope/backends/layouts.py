"""Family layouts for the nnsight backend: where each transformers family keeps the modules headscope edits and calls.

A head is ablated by editing its slice of the output projection's *input* (the per-head z), never the attention
output after the projection; an MLP by replacing the MLP module's output. Families with a known layout are served
(LAYOUTS); any other is refused at load rather than run with wrong numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from headscope.backends.norms import FrozenNorm, freeze_family_norm
from headscope.backends.weights import BlockNorm
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


def _on_module(x: torch.Tensor, module: Any) -> torch.Tensor:
    """x on the module's device and in its dtype (inputs sent from here are CPU float32; NDIF's model is not)."""
    param = next(module.parameters())
    return x.to(device=param.device, dtype=param.dtype)


@dataclass(frozen=True)
class LayoutView:
    """A model's own modules at a layout's paths, seen as a FamilyView (headscope.backends.weights): `modules` maps
    each path the view reads to its module (a torch module, or an nnsight Envoy inside a session), so fused QKV and
    Conv1D layouts stay inside the modules."""

    layout: Layout
    modules: dict[str, Any]
    n_heads: int
    n_kv_heads: int
    d_head: int
    logit_cap: float

    @classmethod
    def over(cls, module_at: Callable[[str], Any], layout: Layout, layers: Iterable[int], n_heads: int,
             n_kv_heads: int, d_head: int, logit_cap: float) -> LayoutView:
        """The view of the embedding, the final norm, the unembedding and every part of `layers`' blocks."""
        paths = [layout.embed, layout.final_norm, layout.unembed]
        paths += [layout.block(layer, part) for layer in layers for part in layout.block_parts()]
        return cls(layout, {path: module_at(path) for path in paths}, n_heads, n_kv_heads, d_head, logit_cap)

    def _part(self, layer: int, part: str) -> Any:
        return self.modules[self.layout.block(layer, part)]

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        embed = self.modules[self.layout.embed]
        return embed(token_ids.to(embed.weight.device).unsqueeze(0))

    def norm(self, layer: int, which: BlockNorm, x: torch.Tensor) -> torch.Tensor:
        part = getattr(self.layout, str(which))
        if part is None:
            return x
        norm = self._part(layer, part)
        return norm(_on_module(x, norm))

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self._part(layer, self.layout.mlp)(x)

    def values(self, layer: int, normed: torch.Tensor) -> torch.Tensor:
        return self.layout.values(self._part(layer, self.layout.attn), normed, self.n_heads, self.n_kv_heads,
                                  self.d_head)

    def heads_out(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """The output projection's input holds every head's z side by side: each head's output alone is the
        projection of an input that is zero but for that head's slice, less the projection's bias."""
        o_proj = self._part(layer, self.layout.o_proj)
        n, n_heads, d_head = z.shape
        dtype = next(o_proj.parameters()).dtype
        alone = torch.zeros(n_heads, n, n_heads, d_head, dtype=dtype, device=z.device)
        heads = torch.arange(n_heads, device=z.device)
        alone[heads, :, heads] = z.transpose(0, 1).to(dtype)
        return o_proj(alone.view(n_heads, n, n_heads * d_head)) - self.out_bias(layer)

    def out_bias(self, layer: int) -> torch.Tensor:
        """b_O, read as the projection of zeros (zeros where the projection has no bias)."""
        o_proj = self._part(layer, self.layout.o_proj)
        param = next(o_proj.parameters())
        return o_proj(torch.zeros(1, self.n_heads * self.d_head, dtype=param.dtype, device=param.device))

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        norm = self.modules[self.layout.final_norm]
        return norm(_on_module(resid, norm))

    def unembedding(self, token_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        unembed = self.modules[self.layout.unembed]
        rows, bias = unembed.weight, unembed.bias
        if token_ids is not None:
            ids = token_ids.to(rows.device)
            rows, bias = rows[ids], None if bias is None else bias[ids]
        return rows, bias

    def frozen_final_norm(self, reference: torch.Tensor) -> FrozenNorm:
        return freeze_family_norm(self.layout.family, self.modules[self.layout.final_norm], reference)

    def frozen_norm(self, layer: int, which: BlockNorm, reference: torch.Tensor) -> FrozenNorm | None:
        part = getattr(self.layout, str(which))
        return None if part is None else freeze_family_norm(self.layout.family, self._part(layer, part), reference)


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


__all__ = ["LAYOUTS", "Layout", "LayoutView", "check_modules", "layout_for"]
