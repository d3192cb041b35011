"""`read_sites` on the nnsight backend, written once for its three run modes (local, dry run, NDIF).

One request (a session holding one trace, then the arithmetic): the trace captures, at one position, the residual
entering block 0, each layer's z (the output projection's input), its MLP output and its output residual;
headscope.backends.readout's arithmetic runs after it over the model's own modules (a LayoutView), so no weight is
read in a module's own layout (GPT-2's Conv1D) and only the readout's result is saved: remotely only
[batch, site, k]-sized tensors come back. Run here, the trace's small captures are saved and the same arithmetic
runs in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nnsight
import torch

from headscope.backends.base import NextTokenSummary, Readout, SiteReadings
from headscope.backends.interventions import Site, SiteKind
from headscope.backends.readout import (
    Captures,
    PlainReadout,
    check_sites,
    plain_readout,
    plain_sites,
    read_captured,
)

# The functions take the NnsightBackend as `backend` and its input check (`_check_input`) as `check_input` (typed
# Any: headscope.backends.nnsight imports this module, and the package keeps no import circle)
NnsightBackend = Any

def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


def _capture(model: Any, paths: dict, position: int, n_layers: int) -> Captures:
    """Inside a trace: the captures at `position`, read in execution order."""
    embed = _first(model.get(paths["block"][0]).input)[:, position]
    zs, mlps, afters = [], [], []
    for layer in range(n_layers):
        zs.append(model.get(paths["o_proj"][layer]).input[:, position])
        mlps.append(_first(model.get(paths["mlp"][layer]).output)[:, position])
        afters.append(_first(model.get(paths["block"][layer]).output)[:, position])
    return Captures(embed, zs, mlps, afters)


def _paths(backend: NnsightBackend) -> dict:
    layout, n_layers = backend.layout, backend.dims.n_layers
    return {"block": [f"{layout.layers}.{layer}" for layer in range(n_layers)],
            "o_proj": [layout.block(layer, layout.o_proj) for layer in range(n_layers)],
            "mlp": [layout.block(layer, layout.mlp) for layer in range(n_layers)]}


def _read(backend: NnsightBackend, tokens: torch.Tensor, position: int, sites: list, readout: PlainReadout,
          check_input: Any) -> tuple:
    """read_captured after one capturing trace: in one remote request (session) or here."""
    model, n_layers = backend.model, backend.dims.n_layers
    paths = _paths(backend)
    view = backend._family_view(range(n_layers))
    embed_path = backend._path(backend.layout.embed)
    tokens = tokens.cpu()
    if backend.mode.runs_here:
        with backend._running():
            backend.requests_sent += 1
            with model.trace(tokens, use_cache=False, logits_to_keep=1) as tracer:
                check_input(embed_path.input, tokens)
                captures = nnsight.save(_capture(model, paths, position, n_layers))
                tracer.stop()
            with torch.inference_mode():
                return read_captured(view, Captures(*captures), sites, readout)
    with backend._running():
        job = backend._trace_backend()
        with model.session(backend=job):
            with model.trace(tokens, use_cache=False, logits_to_keep=1) as tracer:
                check_input(embed_path.input, tokens)
                captures = _capture(model, paths, position, n_layers)
                tracer.stop()
            out = nnsight.save(read_captured(view, captures, sites, readout))
        (out,) = backend._outputs(job, locals(), "out")
    return out


def _rows_of(value: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    """A per-row readout tensor's rows start:stop (one broadcast row stays as it is)."""
    return value if value is None or value.shape[0] == 1 else value[start:stop]


def nnsight_read_sites(backend: NnsightBackend, tokens: torch.Tensor, position: int, sites: Sequence[Site],
                       readout: Readout, check_input: Any) -> SiteReadings:
    """Backend.read_sites on any run mode: chunks of rows that fit one request (memory here, REMOTE_MAX_TOKENS on
    NDIF), the results joined along the batch."""
    dims = backend.dims
    check_sites(sites, dims.n_layers, dims.n_heads)
    plain, whole = plain_sites(sites), plain_readout(readout)
    rows = backend._rows_per_request(tokens.shape[1], tokens.shape[0], 0, 1, "Reading the residual stream")
    parts = []
    for start in range(0, tokens.shape[0], rows):
        stop = start + rows
        chunk = PlainReadout(whole.norm, _rows_of(whole.directions, start, stop),
                             _rows_of(whole.token_ids, start, stop), whole.whole_vocabulary,
                             _rows_of(whole.rank_ids, start, stop))
        parts.append(_read(backend, tokens[start:stop], position, plain, chunk, check_input))
    joined = [None if values[0] is None else torch.cat(values) for values in zip(*parts, strict=True)]
    return SiteReadings(tuple(sites), *joined, soft_cap=dims.logit_cap)


# ---------------------------------------------------------------------------------------------------------------
# The logit lens inside next_tokens: the same trace as the predictions (on NDIF: one request, not two)


def _resid_capture(model: Any, paths: dict, n_layers: int) -> Captures:
    """Inside a trace: the last position's residual entering block 0 and after each block, in execution order."""
    embed = _first(model.get(paths["block"][0]).input)[:, -1]
    afters = [_first(model.get(paths["block"][layer]).output)[:, -1] for layer in range(n_layers)]
    return Captures(embed, [], [], afters)


def nnsight_next_tokens_with_lens(backend: NnsightBackend, tokens: torch.Tensor, position: int, readout: Readout,
                                  check_input: Any, summarize: Callable[..., tuple], top1_from: int = 0
                                  ) -> NextTokenSummary:
    """Backend.next_tokens with its `lens`: summarize(unembed, normed[pos, d_model], position, cap, top1_from)'s
    predictions (from position `top1_from` on) and the RESID sites 0..n_layers at the last position through
    `readout`, from one trace (read_captured's arithmetic: here after the trace, in the same request's session on a
    dry run or NDIF)."""
    model, dims, layout = backend.model, backend.dims, backend.layout
    paths = _paths(backend)
    view = backend._family_view(())
    embed, final_norm, unembed = (backend._path(p) for p in (layout.embed, layout.final_norm, layout.unembed))
    sites = [Site(SiteKind.RESID, layer) for layer in range(dims.n_layers + 1)]
    plain, whole = plain_sites(sites), plain_readout(readout)
    tokens = tokens.cpu()
    with backend._running():
        if backend.mode.runs_here:
            backend.requests_sent += 1
            with model.trace(tokens, use_cache=False, logits_to_keep=1) as tracer:
                check_input(embed.input, tokens)
                captures = nnsight.save(_resid_capture(model, paths, dims.n_layers))
                summary = nnsight.save(summarize(unembed, final_norm.output[0], position, dims.logit_cap, top1_from))
                tracer.stop()
            read = read_captured(view, Captures(*captures), plain, whole)
        else:
            job = backend._trace_backend()
            with model.session(backend=job):
                with model.trace(tokens, use_cache=False, logits_to_keep=1) as tracer:
                    check_input(embed.input, tokens)
                    captures = _resid_capture(model, paths, dims.n_layers)
                    summary = summarize(unembed, final_norm.output[0], position, dims.logit_cap, top1_from)
                    tracer.stop()
                out = nnsight.save((summary, read_captured(view, captures, plain, whole)))
            ((summary, read),) = backend._outputs(job, locals(), "out")
    return NextTokenSummary(*summary, SiteReadings(tuple(sites), *read, soft_cap=dims.logit_cap), top1_from)


__all__ = ["nnsight_next_tokens_with_lens", "nnsight_read_sites"]
