"""Direct logit attribution and the logit lens on the nnsight backend, written once for its three run modes.

One request (a session holding one trace, then the arithmetic): the trace reads, at one position, the residual
entering block 0, each layer's per-head z (the output projection's input), its attention output before any
post-norm (the projection's output), its MLP output and its output residual; the arithmetic after it calls the
model's own modules (the output projection on one head's slice of z, the post-norms), so no weight is read in a
module's own layout (GPT-2's Conv1D), and only the reductions are saved: remotely only [batch, layer, head, k]-sized
tensors come back. Run here, the trace's small captures are saved and the same arithmetic runs in this process.

The functions below run inside nnsight requests (shipped by value to NDIF): torch and their arguments only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import nnsight
import torch

from headscope.backends.base import DirectLogits, LensLogits

if TYPE_CHECKING:
    from headscope.component import Component

# The functions take the NnsightBackend as `backend` and its input check (`_check_input`) as `check_input` (typed
# Any: headscope.backends.nnsight imports this module, and the package keeps no import circle)
NnsightBackend = Any

# the final and post-sublayer norms of each family nnsight serves (headscope.backends.layouts' family names)
NORM_KINDS = {"GPT-2": "layer_norm", "GPT-NeoX": "layer_norm", "Gemma-2": "gemma_rms_norm"}  # else "rms_norm"


def _eps(module: Any) -> float:
    for name in ("variance_epsilon", "eps"):
        value = getattr(module, name, None)
        if isinstance(value, float | int):
            return float(value)
    raise TypeError(f"The norm {type(module).__name__} states no epsilon.")


def _frozen(kind: str, weight: Any, eps: float, reference: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """delta[..., batch, d_model] through a norm whose scale is that of reference[batch, d_model], without its bias
    (headscope.backends.norms.FrozenNorm, restated with tensors only)."""
    reference = reference.float()
    delta = delta.float()
    if kind == "layer_norm":
        spread = reference.var(dim=-1, keepdim=True, unbiased=False)
        delta = delta - delta.mean(dim=-1, keepdim=True)
    else:
        spread = reference.pow(2).mean(dim=-1, keepdim=True)
    out = delta * torch.rsqrt(spread + eps)
    if weight is None:
        return out
    gain = weight.float().to(out.device)
    return out * (1.0 + gain if kind == "gemma_rms_norm" else gain)


def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


def _capture(model: Any, paths: dict, position: int, n_layers: int) -> tuple:
    """Inside a trace: (embed[b, d], z[L][b, H·dh], attn[L][b, d], mlp[L][b, d], after[L][b, d]) at `position`,
    read in execution order."""
    embed = _first(model.get(paths["block"][0]).input)[:, position]
    zs, attns, mlps, afters = [], [], [], []
    for layer in range(n_layers):
        o_proj = model.get(paths["o_proj"][layer])
        zs.append(o_proj.input[:, position])
        attns.append(_first(o_proj.output)[:, position])
        mlps.append(_first(model.get(paths["mlp"][layer]).output)[:, position])
        afters.append(_first(model.get(paths["block"][layer]).output)[:, position])
    return embed, zs, attns, mlps, afters


def _parts(modules: dict, captures: tuple, kind: str, n_heads: int, d_head: int) -> tuple:
    """(embed[b, d], heads[b, L, H, d], attn_bias[b, L, d], mlps[b, L, d], after[b, L, d]) in float32 from the
    captures, calling each layer's own output projection and post-norms."""
    embed, zs, attns, mlps, afters = captures
    heads_out, biases, mlps_out = [], [], []
    for layer, z in enumerate(zs):
        o_proj = modules["o_proj"][layer]
        param = next(o_proj.parameters())
        z = z.to(device=param.device, dtype=param.dtype)
        batch = z.shape[0]
        masked = torch.zeros(n_heads, batch, n_heads * d_head, dtype=z.dtype, device=z.device)
        for head in range(n_heads):
            cols = slice(head * d_head, (head + 1) * d_head)
            masked[head, :, cols] = z[:, cols]
        bias = o_proj(torch.zeros(1, n_heads * d_head, dtype=z.dtype, device=z.device)).float()  # b_O, or zeros
        raw = o_proj(masked).float() - bias  # [H, b, d]
        post = modules["post_attn"][layer]
        if post is None:
            heads = raw
            constant = bias.expand(batch, -1)
        else:
            weight, eps = post.weight, modules["post_attn_eps"]
            heads = _frozen(kind, weight, eps, attns[layer], raw)
            constant = _frozen(kind, weight, eps, attns[layer], bias.expand(batch, -1))
            if getattr(post, "bias", None) is not None:
                constant = constant + post.bias.float()
        heads_out.append(heads.transpose(0, 1))
        biases.append(constant)
        mlp_post = modules["post_mlp"][layer]
        mlp = mlps[layer]
        mlps_out.append((mlp if mlp_post is None else mlp_post(mlp)).float())
    return (embed.float(), torch.stack(heads_out, 1), torch.stack(biases, 1), torch.stack(mlps_out, 1),
            torch.stack([a.float() for a in afters], 1))


def _direct(parts: tuple, final_norm: Any, unembed: Any, kind: str, eps: float, token_ids: torch.Tensor) -> tuple:
    """(heads[b, L, H, k], mlps[b, L, k], embed[b, k], bias[b, k], logits[b, k]) on the CPU: every part through the
    final norm frozen on the final residual, onto the unembedding rows of token_ids[b, k] (pre-cap)."""
    embed, heads, attn_bias, mlps, after = parts
    final = after[:, -1]
    batch, n_layers, n_heads, d_model = heads.shape
    weight = unembed.weight
    columns = weight[token_ids.to(weight.device)].float()  # [b, k, d]
    stacked = torch.cat([embed[None], heads.permute(1, 2, 0, 3).reshape(n_layers * n_heads, batch, d_model),
                         mlps.permute(1, 0, 2), attn_bias.permute(1, 0, 2)])
    normed = _frozen(kind, final_norm.weight, eps, final, stacked.to(columns.device))
    projected = torch.einsum("pbd,bkd->pbk", normed, columns)
    heads_end = 1 + n_layers * n_heads
    mlps_end = heads_end + n_layers
    bias = projected[mlps_end:].sum(0)
    norm_bias = getattr(final_norm, "bias", None)
    if norm_bias is not None:
        bias = bias + torch.einsum("d,bkd->bk", norm_bias.float().to(columns.device), columns)
    b_u = unembed.bias
    if b_u is not None:
        bias = bias + b_u[token_ids.to(b_u.device)].float()
    model_logits = torch.einsum("bd,bkd->bk", final_norm(final.to(weight.dtype)).float(), columns)
    if b_u is not None:
        model_logits = model_logits + b_u[token_ids.to(b_u.device)].float()
    return (projected[1:heads_end].reshape(n_layers, n_heads, batch, -1).permute(2, 0, 1, 3).detach().cpu(),
            projected[heads_end:mlps_end].permute(1, 0, 2).detach().cpu(), projected[0].detach().cpu(),
            bias.detach().cpu(), model_logits.detach().cpu())


def _one_component(parts: tuple, final_norm: Any, unembed: Any, kind: str, eps: float, layer: int,
                   head: int) -> torch.Tensor:
    """logits[vocab] (pre-cap, no bias) of one component's part of prompt 0 (head −1: the layer's MLP)."""
    heads, mlps, after = parts[1], parts[3], parts[4]
    part = mlps[0, layer] if head < 0 else heads[0, layer, head]
    weight = unembed.weight
    normed = _frozen(kind, final_norm.weight, eps, after[:1, -1], part[None].to(weight.device))
    return (normed @ weight.float().T)[0].detach().cpu()


def _lens(parts: tuple, final_norm: Any, unembed: Any, token_ids: torch.Tensor, cap: float) -> tuple:
    """(logits[b, row, k], rank[b, row, k], log_norm[b, row]) of the residual after the embeddings and each layer."""
    embed, after = parts[0], parts[4]
    rows = torch.cat([embed[:, None], after], 1)
    weight = unembed.weight
    logits = final_norm(rows.to(device=weight.device, dtype=weight.dtype)) @ weight.T
    if unembed.bias is not None:
        logits = logits + unembed.bias
    logits = logits.float()
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    ids = token_ids.to(logits.device)
    picked = logits.gather(2, ids[:, None, :].expand(-1, logits.shape[1], -1))
    rank = (logits[:, :, None, :] > picked[..., None]).sum(-1) + 1
    return picked.detach().cpu(), rank.detach().cpu(), torch.logsumexp(logits, -1).detach().cpu()


# ---------------------------------------------------------------------------------------------------------------
# The request, for each readout


def _optional_module(backend: NnsightBackend, layer: int, part: str | None) -> Any:
    """A block's module the family may lack (Gemma-2's post-norms): None where it has none."""
    return None if part is None else backend._path(backend.layout.block(layer, part))


def _setup(backend: NnsightBackend) -> tuple[dict, dict, str, float]:
    layout, n_layers = backend.layout, backend.dims.n_layers

    def optional(layer: int, part: str | None) -> Any:
        return None if part is None else backend._path(layout.block(layer, part))

    paths = {"block": [f"{layout.layers}.{layer}" for layer in range(n_layers)],
             "o_proj": [layout.block(layer, layout.o_proj) for layer in range(n_layers)],
             "mlp": [layout.block(layer, layout.mlp) for layer in range(n_layers)]}
    kind = NORM_KINDS.get(layout.family, "rms_norm")
    post_attn = [_optional_module(backend, layer, layout.ln1_post) for layer in range(n_layers)]
    modules = {"o_proj": [backend._path(p) for p in paths["o_proj"]], "post_attn": post_attn,
               "post_mlp": [_optional_module(backend, layer, layout.ln2_post) for layer in range(n_layers)],
               "post_attn_eps": _eps(post_attn[0]) if post_attn[0] is not None else 0.0}
    final_norm = backend._path(layout.final_norm)
    modules["final_norm"] = final_norm
    modules["unembed"] = backend._path(layout.unembed)
    return paths, modules, kind, _eps(final_norm)


def _chunked(backend: NnsightBackend, tokens: torch.Tensor, token_ids: torch.Tensor, run: Any, what: str) -> tuple:
    """run(tokens, token_ids) on chunks of rows that fit one request (memory here, REMOTE_MAX_TOKENS on NDIF), the
    tuples of results joined along the batch."""
    rows = backend._rows_per_request(tokens.shape[1], tokens.shape[0], 0, 1, what)
    parts = [run(tokens[start:start + rows], token_ids[start:start + rows])
             for start in range(0, tokens.shape[0], rows)]
    return tuple(torch.cat(values) for values in zip(*parts, strict=True))


def _run(backend: NnsightBackend, tokens: torch.Tensor, position: int, reduce: Any, check_input: Any) -> Any:
    """reduce(parts) after one capturing trace: in one remote request (session) or here."""
    model, dims = backend.model, backend.dims
    paths, modules, kind, eps = _setup(backend)
    embed_path = backend._path(backend.layout.embed)
    tokens = tokens.cpu()
    n_layers, n_heads, d_head = dims.n_layers, dims.n_heads, dims.d_head
    if backend.mode.runs_here:
        with backend._running():
            backend.requests_sent += 1
            with model.trace(tokens, use_cache=False, logits_to_keep=1) as tracer:
                check_input(embed_path.input, tokens)
                captures = nnsight.save(_capture(model, paths, position, n_layers))
                tracer.stop()
            return reduce(_parts(modules, captures, kind, n_heads, d_head), modules, kind, eps)
    with backend._running():
        job = backend._trace_backend()
        with model.session(backend=job):
            with model.trace(tokens, use_cache=False, logits_to_keep=1) as tracer:
                check_input(embed_path.input, tokens)
                captures = _capture(model, paths, position, n_layers)
                tracer.stop()
            out = nnsight.save(reduce(_parts(modules, captures, kind, n_heads, d_head), modules, kind, eps))
        (out,) = backend._outputs(job, locals(), "out")
    return out


def nnsight_direct_logits(backend: NnsightBackend, tokens: torch.Tensor, position: int, token_ids: torch.Tensor,
                          check_input: Any) -> DirectLogits:
    def run(rows: torch.Tensor, ids: torch.Tensor) -> tuple:
        def reduce(parts: tuple, modules: dict, kind: str, eps: float) -> tuple:
            return _direct(parts, modules["final_norm"], modules["unembed"], kind, eps, ids)

        return _run(backend, rows, position, reduce, check_input)

    heads, mlps, embed, bias, logits = _chunked(backend, tokens, token_ids.cpu(), run, "Direct logit attribution")
    return DirectLogits(heads, mlps, embed, bias, logits, backend.dims.logit_cap)


def nnsight_component_logits(backend: NnsightBackend, tokens: torch.Tensor, position: int, component: Component,
                             check_input: Any) -> torch.Tensor:
    layer, head = component.layer, -1 if component.head is None else component.head

    def reduce(parts: tuple, modules: dict, kind: str, eps: float) -> torch.Tensor:
        return _one_component(parts, modules["final_norm"], modules["unembed"], kind, eps, layer, head)

    return _run(backend, tokens[:1], position, reduce, check_input)


def nnsight_lens(backend: NnsightBackend, tokens: torch.Tensor, position: int, token_ids: torch.Tensor,
                 check_input: Any) -> LensLogits:
    cap = backend.dims.logit_cap

    def run(rows: torch.Tensor, ids: torch.Tensor) -> tuple:
        def reduce(parts: tuple, modules: dict, kind: str, eps: float) -> tuple:
            return _lens(parts, modules["final_norm"], modules["unembed"], ids, cap)

        return _run(backend, rows, position, reduce, check_input)

    return LensLogits(*_chunked(backend, tokens, token_ids.cpu(), run, "The logit lens"))


__all__ = ["nnsight_component_logits", "nnsight_direct_logits", "nnsight_lens"]
