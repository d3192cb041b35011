"""The one type that wraps TransformerBridge. Nothing else in headscope touches hooks or bridge internals.

It offers tokenization with BOS handled in one place, plain forward passes, and the primitives the ablation engine,
the pattern view and the head scores are built from: run one block with a head's output replaced, capture only the
activations asked for, read the weights of the OV circuit. Every method that runs the model holds `lock`, so two
browser sessions sharing one loaded model cannot interleave hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from headscope.loading import Placement

# A patch receives the activation and returns the replacement (same shape).
Patch = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ModelInfo:
    """What the UI and the CLI show about a loaded model."""

    name: str
    source: str
    revision: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_mlp: int
    n_ctx: int
    vocab_size: int
    n_params: int
    device: str
    dtype: str
    memory_bytes: int
    load_seconds: float
    bos_token: str | None

    @property
    def heads_per_kv(self) -> int:
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class BlockOutput:
    """One block's output residual `resid[batch, pos, d_model]` and what was captured on the way."""

    resid: torch.Tensor
    z: torch.Tensor | None = None  # z[batch, pos, head, d_head]: per-head attention output before W_O
    mlp_out: torch.Tensor | None = None  # mlp_out[batch, pos, d_model]
    pattern: torch.Tensor | None = None  # pattern[batch, head, dest, src]


@dataclass(frozen=True)
class BlockRun:
    """A run through every block: the final residual `resid[batch, pos, d_model]` and, where asked,
    z[layer][batch, pos, head, d_head] and mlp_out[layer][batch, pos, d_model]."""

    resid: torch.Tensor
    z: tuple[torch.Tensor, ...] = ()
    mlp_out: tuple[torch.Tensor, ...] = ()


class ModelAdapter:
    """A loaded model: TransformerBridge plus its tokenizer, identity and a lock."""

    def __init__(
        self,
        bridge: Any,
        source: str,
        name: str,
        revision: str,
        placement: Placement,
        n_params: int,
        load_seconds: float,
    ) -> None:
        self.bridge = bridge
        self.lock = threading.RLock()
        self.tokenizer = bridge.tokenizer
        self.placement = placement
        cfg = bridge.cfg
        n_heads = int(cfg.n_heads)
        n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
        unique = {id(t): t for t in list(bridge.parameters()) + list(bridge.buffers())}.values()
        bos_id = self.tokenizer.bos_token_id
        self.prepends_bos = bool(getattr(cfg, "default_prepend_bos", True)) and bos_id is not None
        self.info = ModelInfo(
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
            dtype=str(placement.dtype).removeprefix("torch."),
            memory_bytes=sum(t.numel() * t.element_size() for t in unique),
            load_seconds=load_seconds,
            bos_token=self.tokenizer.bos_token if self.prepends_bos else None,
        )

    # ------------------------------------------------------------------------------------------------ identity

    @property
    def identity(self) -> dict[str, str]:
        """Everything about the model that changes a result: part of every results-cache key."""
        return {
            "model_source": self.info.source,
            "model_revision": self.info.revision,
            "dtype": self.info.dtype,
            "device": self.placement.device if not self.placement.device_map else "multi-gpu",
        }

    @property
    def device(self) -> torch.device:
        return torch.device(self.placement.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.placement.dtype

    # ------------------------------------------------------------------------------------------------ tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with no special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character spans of `text` (no special tokens)."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]

    def input_ids(self, text: str) -> list[int]:
        """The model's real input for a prompt: BOS first where the model expects it, exactly as the bridge does."""
        return ([self.tokenizer.bos_token_id] if self.prepends_bos else []) + self.encode(text)

    def raw_tokens(self, ids: Iterable[int]) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens([int(i) for i in ids]))

    def special_ids(self) -> set[int]:
        return set(self.tokenizer.all_special_ids)

    def tensor(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """tokens[batch, pos] on the model's input device."""
        return torch.tensor([list(r) for r in rows], dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------------------------------------ forward

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """logits[batch, pos, vocab] in float32 from the bridge's full forward pass."""
        with self.lock:
            return self.bridge(tokens).float()

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """resid[batch, pos, d_model] entering block 0."""
        resid = self.bridge.embed(tokens)
        if hasattr(self.bridge, "pos_embed") and not hasattr(self.bridge, "rotary_emb"):
            positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
            resid = resid + self.bridge.pos_embed(positions)
        return resid

    def block_kwargs(self, resid: torch.Tensor) -> dict[str, Any]:
        """What every block needs besides the residual (rotary cos/sin); computed once per sequence length."""
        if not hasattr(self.bridge, "rotary_emb"):
            return {}
        positions = torch.arange(resid.shape[1], device=resid.device).unsqueeze(0)
        return {"position_embeddings": self.bridge.rotary_emb(resid, positions)}

    def run_block(
        self,
        layer: int,
        resid: torch.Tensor,
        kwargs: dict[str, Any],
        *,
        patch_z: Patch | None = None,
        patch_mlp: Patch | None = None,
        capture_z: bool = False,
        capture_mlp: bool = False,
        capture_pattern: bool = False,
        retain_grad: bool = False,
    ) -> BlockOutput:
        """Run block `layer` on `resid`, optionally replacing or capturing the per-head z or the MLP output."""
        captured: dict[str, torch.Tensor] = {}
        hooks = []

        def on_z(z: torch.Tensor, hook: Any) -> torch.Tensor:
            if patch_z is not None:
                z = patch_z(z)
            if retain_grad and z.requires_grad:
                z.retain_grad()
            captured["z"] = z
            return z

        def on_mlp(out: torch.Tensor, hook: Any) -> torch.Tensor:
            if patch_mlp is not None:
                out = patch_mlp(out)
            if retain_grad and out.requires_grad:
                out.retain_grad()
            captured["mlp"] = out
            return out

        def on_pattern(pattern: torch.Tensor, hook: Any) -> None:
            captured["pattern"] = pattern.detach()

        if patch_z is not None or capture_z:
            hooks.append((f"blocks.{layer}.attn.hook_z", on_z))
        if patch_mlp is not None or capture_mlp:
            hooks.append((f"blocks.{layer}.mlp.hook_out", on_mlp))
        if capture_pattern:
            hooks.append((f"blocks.{layer}.attn.hook_pattern", on_pattern))
        with self.lock:
            if hooks:
                with self.bridge.hooks(fwd_hooks=hooks):
                    out = self.bridge.blocks[layer](resid, **kwargs)
            else:
                out = self.bridge.blocks[layer](resid, **kwargs)
        if isinstance(out, tuple):
            out = out[0]
        return BlockOutput(out, captured.get("z"), captured.get("mlp"), captured.get("pattern"))

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        return self.bridge.ln_final(resid)

    def logits_of(self, resid_last: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Logits of chosen tokens from final-position residuals: resid_last[batch, d_model], token_ids[batch, k]
        -> logits[batch, k] (float32). Avoids the full unembedding, which costs as much as several blocks."""
        normed = self.final_norm(resid_last.unsqueeze(1)).squeeze(1)
        weight = self.bridge.unembed.original_component.weight
        bias = getattr(self.bridge.unembed.original_component, "bias", None)
        columns = weight[token_ids.to(weight.device)]  # [batch, k, d_model]
        out = torch.einsum("bd,bkd->bk", normed.to(columns.device), columns)
        if bias is not None:
            out = out + bias[token_ids.to(bias.device)]
        return out.float()

    @torch.inference_mode()
    def run_blocks(self, tokens: torch.Tensor, capture_z: bool = False, capture_mlp: bool = False) -> BlockRun:
        """Run every block and keep only what is asked for (never a full activation cache)."""
        with self.lock:
            resid = self.embed(tokens)
            kwargs = self.block_kwargs(resid)
            z_all, mlp_all = [], []
            for layer in range(self.info.n_layers):
                out = self.run_block(layer, resid, kwargs, capture_z=capture_z, capture_mlp=capture_mlp)
                resid = out.resid
                if capture_z:
                    z_all.append(out.z)
                if capture_mlp:
                    mlp_all.append(out.mlp_out)
        return BlockRun(resid, tuple(z_all), tuple(mlp_all))

    @torch.inference_mode()
    def reduce_attention_patterns(
        self, tokens: torch.Tensor, reduce: Callable[[int, torch.Tensor], Any], layers: Iterable[int] | None = None
    ) -> dict[int, Any]:
        """reduce(layer, pattern[batch, head, dest, src]) for each layer asked for (all when None), called as soon as
        the layer has run; only the reductions are kept, so scoring every head of a long prompt holds one layer's
        pattern at a time. Blocks above the highest layer asked for are not run."""
        wanted = set(range(self.info.n_layers)) if layers is None else set(layers)
        if not wanted:
            return {}
        reduced: dict[int, Any] = {}
        with self.lock:
            resid = self.embed(tokens)
            kwargs = self.block_kwargs(resid)
            for layer in range(max(wanted) + 1):
                out = self.run_block(layer, resid, kwargs, capture_pattern=layer in wanted)
                resid = out.resid
                if layer in wanted:
                    reduced[layer] = reduce(layer, out.pattern)
        return reduced

    @torch.inference_mode()
    def logits_with_patches(
        self,
        tokens: torch.Tensor,
        z_patches: dict[int, Patch] | None = None,
        mlp_patches: dict[int, Patch] | None = None,
    ) -> torch.Tensor:
        """Full forward through the bridge (its own forward, not the block loop) with z or MLP outputs replaced.

        This is the plain, one-forward-per-intervention path: the reference the batched engine is tested against.
        """
        hooks = [(f"blocks.{layer}.attn.hook_z", _as_hook(fn)) for layer, fn in (z_patches or {}).items()]
        hooks += [(f"blocks.{layer}.mlp.hook_out", _as_hook(fn)) for layer, fn in (mlp_patches or {}).items()]
        with self.lock, self.bridge.hooks(fwd_hooks=hooks):
            return self.bridge(tokens).float()

    # ------------------------------------------------------------------------------------------------ weights

    def embedding_rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """W_E[ids] -> [n, d_model]."""
        return self.bridge.embed(token_ids.to(self.device).unsqueeze(0)).squeeze(0)

    def mlp0_effective_embedding(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The effective token embedding of the successor-heads study: W_E[t] + MLP0(ln2_0(W_E[t])) -> [n, d_model].

        Layer 0's attention is left out, as in that study: MLP0 acts as an extended embedding.
        """
        with self.lock, torch.inference_mode():
            embedded = self.embedding_rows(token_ids).unsqueeze(0)  # [1, n, d_model]
            block = self.bridge.blocks[0]
            return (embedded + block.mlp(block.ln2(embedded))).squeeze(0)

    def ov_outputs(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """What each head of `layer` writes when it attends fully to a token with residual `resid[n, d_model]`:
        out[head, n, d_model] = ln1(resid) · W_V[kv(head)] · W_O[head] (value and output biases included)."""
        with self.lock, torch.inference_mode():
            block = self.bridge.blocks[layer]
            normed = block.ln1(resid.unsqueeze(0)).squeeze(0)  # [n, d_model]
            v_proj = block.attn.v.original_component
            o_proj = block.attn.o.original_component
            values = v_proj(normed).view(normed.shape[0], self.info.n_kv_heads, self.info.d_head)  # [n, kv, d_head]
            w_o = o_proj.weight.view(self.info.d_model, self.info.n_heads, self.info.d_head)  # [d_model, head, d_head]
            kv_of_head = torch.arange(self.info.n_heads, device=values.device) // self.info.heads_per_kv
            per_head = values[:, kv_of_head, :]  # [n, head, d_head]
            out = torch.einsum("nhe,dhe->hnd", per_head, w_o.to(per_head.device))
            if getattr(o_proj, "bias", None) is not None:
                out = out + o_proj.bias / self.info.n_heads
            return out

    def unembed_logits(self, resid: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """logits[..., vocab or len(token_ids)] of residual vectors through the final norm and W_U."""
        with self.lock, torch.inference_mode():
            normed = self.final_norm(resid)
            weight = self.bridge.unembed.original_component.weight
            bias = getattr(self.bridge.unembed.original_component, "bias", None)
            if token_ids is not None:
                weight = weight[token_ids.to(weight.device)]
                bias = bias[token_ids.to(weight.device)] if bias is not None else None
            out = normed.to(weight.device) @ weight.T
            return (out + bias if bias is not None else out).float()


def _as_hook(fn: Patch) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    return lambda activation, hook: fn(activation)
