"""The independent reference for path patching: plain PyTorch hooks on an untouched transformers model, the weights
read raw (Llama-like nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out]), none of headscope's code.

An edge S → R: Δ = (z_S replaced − z_S in the run) · W_O[S]; R's query (key / value) projection reads
ln1(x + Δ) instead of ln1(x) (x: the residual R's block reads), on R's slice only; everything else runs normally.
An edge S → logits: Δ at the last position through the final norm with the run's scale, onto W_U's answer rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Family:
    """Where the reference finds a family's modules, and how it reads their weights."""

    layers: str
    o_proj: str
    ln1: str
    final_norm: str
    conv1d: bool  # GPT-2: weights [in, out], q/k/v fused in c_attn


LLAMA = Family("model.layers", "self_attn.o_proj", "input_layernorm", "model.norm", False)
GPT2 = Family("transformer.h", "attn.c_proj", "ln_1", "transformer.ln_f", True)
FAMILIES = {"llama": LLAMA, "qwen2": LLAMA, "gpt2": GPT2}


def _block(model, family: Family, layer: int):
    return model.get_submodule(f"{family.layers}.{layer}")


def _z(model, family: Family, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """The flat per-head z [batch, pos, n_heads · d_head] entering layer's output projection."""
    got = {}
    o_proj = _block(model, family, layer).get_submodule(family.o_proj)
    handle = o_proj.register_forward_pre_hook(lambda module, args: got.update(z=args[0].detach()))
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        handle.remove()
    return got["z"]


@torch.no_grad()
def sender_write(model, family: Family, run: torch.Tensor, other: torch.Tensor | None, source: str, layer: int,
                 head: int, d_head: int) -> torch.Tensor:
    """Δ[batch, pos, d_model]: the sender's write with its replacement value (zero, mean over `other`, paired
    `other` row) minus its write in the run."""
    cut = slice(head * d_head, (head + 1) * d_head)
    z_run = _z(model, family, run, layer)[..., cut]
    if source == "zero":
        z_new = torch.zeros_like(z_run)
    else:
        z_other = _z(model, family, other, layer)[..., cut]
        z_new = z_other.mean(dim=0, keepdim=True).expand_as(z_run) if source == "mean" else z_other
    weight = _block(model, family, layer).get_submodule(family.o_proj).weight
    w_o = weight[cut, :] if family.conv1d else weight[:, cut].T  # [d_head, d_model]
    return (z_new - z_run) @ w_o


def _projection(model, family: Family, layer: int, kind: str, head: int, n_heads: int, n_kv: int, d_head: int):
    """(module, weight [d_model, width], bias [width] | None, column slice) of one head's (KV group's) projection."""
    block = _block(model, family, layer)
    if family.conv1d:
        module = block.attn.c_attn
        start = ("qkv".index(kind) * n_heads + head) * d_head
        return module, module.weight, module.bias, slice(start, start + d_head)
    module = getattr(block.self_attn, f"{kind}_proj")
    index = head if kind == "q" else head // (n_heads // n_kv)
    return module, module.weight.T, module.bias, slice(index * d_head, (index + 1) * d_head)


@torch.no_grad()
def path_lds(model, family: Family, run: torch.Tensor, answers: torch.Tensor, delta: torch.Tensor, layer: int,
             kind: str, head: int, n_heads: int, n_kv: int, d_head: int) -> torch.Tensor:
    """ld[prompt] with delta[batch, pos, d_model] entering head (layer, head)'s `kind` input only."""
    block = _block(model, family, layer)
    ln1 = block.get_submodule(family.ln1)
    got = {}
    module, weight, bias, cut = _projection(model, family, layer, kind, head, n_heads, n_kv, d_head)

    def keep_input(mod, args, kwargs):
        got["x"] = args[0] if args else kwargs["hidden_states"]

    def patch(mod, args, output):
        moved = ln1(got["x"] + delta) @ weight[:, cut]
        if bias is not None:
            moved = moved + bias[cut]
        output = output.clone()
        output[..., cut] = moved
        return output

    handles = [block.register_forward_pre_hook(keep_input, with_kwargs=True), module.register_forward_hook(patch)]
    try:
        with torch.no_grad():
            logits = model(run).logits[:, -1]
    finally:
        for handle in handles:
            handle.remove()
    return (logits.gather(1, answers[:, :1]) - logits.gather(1, answers[:, 1:])).squeeze(1).double()


@torch.no_grad()
def logit_path_lds(model, family: Family, run: torch.Tensor, answers: torch.Tensor, delta: torch.Tensor
                   ) -> torch.Tensor:
    """ld[prompt] with delta's last position added after the final norm, scaled as the run's final residual."""
    norm = model.get_submodule(family.final_norm)
    got = {}
    handle = norm.register_forward_pre_hook(lambda module, args: got.update(x=args[0][:, -1].detach()))
    try:
        with torch.no_grad():
            model(run)
    finally:
        handle.remove()
    x, d = got["x"], delta[:, -1]
    if family.conv1d:  # LayerNorm
        inverse = torch.rsqrt(x.var(dim=-1, keepdim=True, unbiased=False) + norm.eps)
        normed = (x - x.mean(-1, keepdim=True)) * inverse * norm.weight + norm.bias
        moved = (d - d.mean(-1, keepdim=True)) * inverse * norm.weight
    else:  # RMSNorm
        inverse = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        normed = x * inverse * norm.weight
        moved = d * inverse * norm.weight
    w_u = model.get_output_embeddings().weight  # [vocab, d_model]
    logits = (normed + moved) @ w_u.T
    return (logits.gather(1, answers[:, :1]) - logits.gather(1, answers[:, 1:])).squeeze(1).double()
