"""The nnsight backend: nnsight 0.8's `TransformersModel` over a transformers model, here or on NDIF.

Three ways to run the same code:
- "local": nnsight wraps the very transformers model the loader loaded; traces run in this process;
- "simulate": nnsight's dry run of the remote path (`remote="local"`): every trace is serialised as for NDIF (local
  modules hidden) and run in this process. Tests use it to check that every request would travel;
- "ndif": traces are sent to NDIF (`RemoteBackend`, non-blocking) and polled; no weights on this machine.

Every computation is written once, as the body of a trace or session, so the three modes run the same code. A head
is ablated by editing its slice of the output projection's *input* (the per-head z, `o_proj.input` for Llama), never
the attention output after the projection; an MLP by replacing the MLP module's output. Replacement values (mean,
resample) are computed from the corrupted prompts inside the same forward (their rows precede the clean rows), so
remotely only LD values come back. Weights are never read in a module's own layout: OV outputs and the effective
embedding call the model's own modules (GPT-2's Conv1D stores its matrices transposed).

Families with a known layout are served (LAYOUTS); any other is refused at load.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import nnsight
import numpy as np
import torch
from nnsight.intervention.backends.remote import RemoteBackend

from headscope.backends.base import (
    AblationGroups,
    AttributionEffects,
    Backend,
    ConfigDims,
    LogitDiffTask,
    ModelInfo,
    NextTokenSummary,
    Placement,
    config_dims,
    config_model_info,
    resident_bytes,
)
from headscope.errors import HeadscopeError, ModelLoadError
from headscope.memory import block_bytes_per_token, plan_chunks
from headscope.settings import positive_env
from headscope.sharing import GateStatus, current_on_wait, current_owner

if TYPE_CHECKING:
    from headscope.loading import ModelRequest, ProgressCallback
    from headscope.methods import AblationMethod

RunMode = Literal["local", "simulate", "ndif"]
UNEMBED_CHUNK_TOKENS = 512  # positions unembedded at a time (a long prompt never holds [pos, vocab] at once)
REMOTE_MAX_TOKENS = 1 << 16  # tokens (rows × positions) in one NDIF request
NDIF_PROBE_SECONDS = 3.0  # how long the reachability probe waits before saying NDIF is unreachable
NDIF_DEFAULT_TIMEOUT = 30 * 60.0  # seconds to wait for one job (HEADSCOPE_NDIF_TIMEOUT overrides)
NDIF_KEY_URL = "https://login.ndif.us"


class RemoteJobError(HeadscopeError):
    """An NDIF request that could not be sent, failed on the server or did not finish in time."""


# ---------------------------------------------------------------------------------------------------------------
# Layouts: where each family keeps the modules headscope edits and calls


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

    def block(self, layer: int, part: str) -> str:
        return f"{self.layers}.{layer}.{part}"


def _llama_like(family: str, ln2: str = "post_attention_layernorm") -> Layout:
    return Layout(family, "model.layers", "self_attn", "self_attn.o_proj", "mlp", "input_layernorm", ln2,
                  "model.embed_tokens", "model.norm", "lm_head", _values_separate)


LAYOUTS: dict[str, Layout] = {
    "llama": _llama_like("Llama"),
    "mistral": _llama_like("Mistral"),
    "qwen2": _llama_like("Qwen2"),
    "gemma2": _llama_like("Gemma-2", ln2="pre_feedforward_layernorm"),
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


def _check_modules(root: Any, layout: Layout, n_layers: int, name: str) -> None:
    """Every path the layout names exists on the model (real or meta), and the unembedding is a plain Linear."""
    paths = [layout.embed, layout.final_norm, layout.unembed]
    for layer in sorted({0, n_layers - 1}):
        paths += [layout.block(layer, part) for part in (layout.attn, layout.o_proj, layout.mlp, layout.ln1,
                                                          layout.ln2)]
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


# ---------------------------------------------------------------------------------------------------------------
# Computations run inside traces and sessions. They are shipped to NDIF by value (nnsight serialises headscope's
# functions from their source), so they use only torch and their arguments: never the backend object.


def _check_input(ids_in: torch.Tensor, tokens: torch.Tensor) -> None:
    """The forward's input ids are exactly the rows sent: nnsight added no (left) padding."""
    if tuple(ids_in.shape) != tuple(tokens.shape) or not bool((ids_in == tokens.to(ids_in.device)).all()):
        raise RuntimeError(f"nnsight changed the input: sent {tuple(tokens.shape)}, the model got "
                           f"{tuple(ids_in.shape)} (padding?)")


def _soft_cap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


def _param_dtype(module: Any) -> torch.dtype:
    return next(module.parameters()).dtype


def _to_module(x: torch.Tensor, module: Any) -> torch.Tensor:
    """x on the module's device and in its dtype (inputs sent from here are CPU float32; NDIF's model is not)."""
    param = next(module.parameters())
    return x.to(device=param.device, dtype=param.dtype)


def _tile_rows(values: torch.Tensor | None, n_groups: int, n_prompts: int) -> torch.Tensor | None:
    """Replacement values for group-major rows: [1, ...] broadcasts; [prompt, ...] repeats per group."""
    if values is None or values.shape[0] == 1:
        return values
    if values.shape[0] != n_prompts:
        raise ValueError(f"replacement values for {values.shape[0]} prompts, batch has {n_prompts}")
    return values.repeat(n_groups, *([1] * (values.ndim - 1)))


def _replacement(method: Any, corrupted: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """The method's replacement from the corrupted rows' activations (None: zeros), in the model's dtype."""
    builder = method.builder()
    builder.add(corrupted.detach())
    value = builder.result()
    return None if value is None else value.to(dtype)


def _edit_rows(current: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    """current[row, ...] where mask is False, values (zeros when None) where it is True (mask broadcasts)."""
    replacement = torch.zeros((), dtype=current.dtype, device=current.device) if values is None else values.to(current)
    return torch.where(mask.to(current.device), replacement, current)


def _ablate_layer_z(z: torch.Tensor, n_corrupted: int, head_rows: torch.Tensor, method: Any, n_heads: int,
                    d_head: int, n_groups: int, n_prompts: int) -> torch.Tensor:
    """z[row, pos, n_heads · d_head] (corrupted rows first) with each clean row's chosen heads replaced."""
    rows, pos, _ = z.shape
    heads = z.view(rows, pos, n_heads, d_head)
    values = None
    if n_corrupted:
        values = _tile_rows(_replacement(method, heads[:n_corrupted], z.dtype), n_groups, n_prompts)
    clean = _edit_rows(heads[n_corrupted:], head_rows[:, None, :, None], values)
    return torch.cat([heads[:n_corrupted], clean]).view(rows, pos, n_heads * d_head)


def _ablate_layer_mlp(out: torch.Tensor, n_corrupted: int, mlp_rows: torch.Tensor, method: Any, n_groups: int,
                      n_prompts: int) -> torch.Tensor:
    values = None
    if n_corrupted:
        values = _tile_rows(_replacement(method, out[:n_corrupted], out.dtype), n_groups, n_prompts)
    clean = _edit_rows(out[n_corrupted:], mlp_rows[:, None, None], values)
    return torch.cat([out[:n_corrupted], clean])


def _weighted_ld(logits: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, n_groups: int) -> torch.Tensor:
    """ld[group] = Σ_prompt weight · (logit[correct] − logit[incorrect]) from last-position logits[row, vocab]."""
    picked = logits.float().gather(1, ids.to(logits.device))
    diff = (picked[:, 0] - picked[:, 1]).view(n_groups, -1)
    return (diff * weights.to(diff.device)).sum(1)


def _unembed(unembed: Any, normed: torch.Tensor, token_ids: torch.Tensor | None, cap: float) -> torch.Tensor:
    """logits (float32) of final-normed residuals through the unembedding: every token, or only token_ids."""
    if token_ids is None:
        logits = unembed(_to_module(normed, unembed))
    else:
        weight = unembed.weight
        ids = token_ids.to(weight.device)
        bias = unembed.bias[ids] if unembed.bias is not None else None
        logits = torch.nn.functional.linear(normed.to(device=weight.device, dtype=weight.dtype), weight[ids], bias)
    return _soft_cap(logits.float(), cap)


def _next_token_summary(unembed: Any, normed: torch.Tensor, position: int, cap: float) -> tuple:
    """(logits_at[vocab], top1_id[pos], top1_logit[pos], top1_logprob[pos]) from normed[pos, d_model], unembedded
    UNEMBED_CHUNK_TOKENS positions at a time."""
    ids, values, logprobs, at = [], [], [], None
    for start in range(0, normed.shape[0], UNEMBED_CHUNK_TOKENS):
        chunk = _unembed(unembed, normed[start:start + UNEMBED_CHUNK_TOKENS], None, cap)
        best, best_id = chunk.max(-1)
        ids.append(best_id)
        values.append(best)
        logprobs.append(best - torch.logsumexp(chunk, -1))
        if start <= position < start + chunk.shape[0]:
            at = chunk[position - start].clone()
    return (at.detach().cpu(), torch.cat(ids).cpu(), torch.cat(values).detach().cpu(),
            torch.cat(logprobs).detach().cpu())


def _effective_embedding(embed: Any, ln2: Any, mlp: Any, token_ids: torch.Tensor) -> torch.Tensor:
    """W_E[t] + MLP0(ln2_0(W_E[t])) -> [n, d_model], through the model's own modules."""
    embedded = embed(token_ids.to(embed.weight.device).unsqueeze(0))  # [1, n, d_model]
    return (embedded + mlp(ln2(embedded))).squeeze(0)


def _ov_outputs(ln1: Any, attn: Any, o_proj: Any, values_of: Callable, resid: torch.Tensor, n_heads: int,
                n_kv: int, d_head: int) -> torch.Tensor:
    """out[head, n, d_model] = o_proj(z with only head h's slice = V[kv(h)] of ln1(resid)) − b_O + b_O / n_heads.

    Calling the model's own modules keeps every family's layout (fused QKV, Conv1D) out of the arithmetic."""
    dtype = _param_dtype(o_proj)
    resid = _to_module(resid, ln1)
    normed = ln1(resid.unsqueeze(0)).squeeze(0)  # [n, d_model]
    values = values_of(attn, normed, n_heads, n_kv, d_head)  # [n, kv, d_head]
    kv_of_head = torch.arange(n_heads, device=values.device) // (n_heads // n_kv)
    per_head = values[:, kv_of_head]  # [n, head, d_head]
    n = resid.shape[0]
    z = torch.zeros(n_heads, n, n_heads, d_head, dtype=dtype, device=values.device)
    heads = torch.arange(n_heads, device=values.device)
    z[heads, :, heads] = per_head.transpose(0, 1)
    bias = o_proj(torch.zeros(1, n_heads * d_head, dtype=dtype, device=values.device))  # b_O (zeros without one)
    return o_proj(z.view(n_heads, n, n_heads * d_head)) - bias + bias / n_heads


# ---------------------------------------------------------------------------------------------------------------
# Remote jobs


@dataclass(frozen=True)
class RemoteJobState:
    """One look at an NDIF job while waiting for it: its id, state (received, queued, running, ...) and seconds
    since it was sent."""

    job_id: str | None
    state: str
    elapsed: float


_STATE_WORDS = {"RECEIVED": "received", "QUEUED": "queued", "PROVISIONING": "starting the model",
                "DEPLOYING": "starting the model", "DISPATCHED": "running", "RUNNING": "running",
                "COMPLETED": "completed", "ERROR": "failed", "LOG": "running"}


def wait_for_job(job: Any, *, timeout: float, on_state: Callable[[RemoteJobState], None] | None,
                 poll_seconds: float = 0.5, started: float | None = None) -> dict:
    """Poll a submitted non-blocking NDIF job (`nnsight`'s RemoteBackend after submit) until its result arrives.

    `on_state` sees the state and elapsed time after every poll and may raise to stop waiting (the job itself keeps
    running on NDIF: nnsight has no cancel call). Raises RemoteJobError when the job fails, when NDIF stops
    answering, or after `timeout` seconds."""
    started = time.perf_counter() if started is None else started
    job_id = getattr(job, "job_id", None)
    interval = poll_seconds
    while True:
        try:
            result = job.poll()
        except Exception as error:  # nnsight's RemoteError (status ERROR), httpx errors
            if type(error).__name__ == "RemoteError":
                raise RemoteJobError(f"The NDIF job {job_id} failed: {error}") from error
            raise RemoteJobError(f"Lost contact with NDIF while waiting for job {job_id}: {error}. The job may "
                                 "still finish there; try again in a moment.") from error
        status = getattr(getattr(job, "status", None), "value", None) or "RECEIVED"
        elapsed = time.perf_counter() - started
        if result is not None:
            if on_state is not None:
                on_state(RemoteJobState(job_id, "completed", elapsed))
            return result
        if on_state is not None:
            on_state(RemoteJobState(job_id, _STATE_WORDS.get(status, status.lower()), elapsed))
        if elapsed > timeout:
            raise RemoteJobError(
                f"The NDIF job {job_id} did not finish within {timeout:.0f} s (last state: "
                f"{_STATE_WORDS.get(status, status.lower())}). NDIF may be busy: try again later, or allow longer "
                "with HEADSCOPE_NDIF_TIMEOUT (seconds)."
            )
        time.sleep(interval)
        interval = min(2.0, interval * 1.5)


def _gate_on_state(state: RemoteJobState) -> None:
    """Show the job's state through the caller's on_wait callback (see headscope.sharing), which may cancel."""
    callback = current_on_wait()
    if callback is not None:
        callback(GateStatus(True, f"the NDIF job ({state.state})", current_owner(), state.elapsed, None, 0))


class _NdifJob(RemoteBackend):
    """nnsight's non-blocking RemoteBackend whose submission errors say what to do (a trace's exit submits)."""

    def submit(self, tracer: Any) -> None:
        try:
            return super().submit(tracer)
        except Exception as error:
            raise _request_error(error, self.host) from error


@dataclass(frozen=True)
class _Remote:
    """Where NDIF is and how long to wait. The API key is held by the backend only (never in here: this is shown
    in reprs)."""

    host: str
    model_key: str
    timeout: float


# ---------------------------------------------------------------------------------------------------------------
# The backend


class NnsightBackend(Backend):
    """A transformers model behind nnsight, run here, in nnsight's remote dry run, or on NDIF."""

    name = "nnsight"

    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo, placement: Placement, layout: Layout,
                 dims: ConfigDims, *, mode: RunMode = "local", remote: _Remote | None = None,
                 api_key: str | None = None, hf_model: Any | None = None) -> None:
        super().__init__(tokenizer, info, placement, tokenizer.bos_token_id is not None)
        self.model = model  # nnsight TransformersModel
        self.layout = layout
        self.dims = dims
        self.mode: RunMode = mode
        self._remote = remote
        self.__api_key = api_key  # name-mangled: kept out of casual attribute dumps; never written anywhere
        self._hf = hf_model
        self.requests_sent = 0  # traces and sessions run (remote: requests)
        self.last_job: RemoteJobState | None = None
        if mode == "ndif" and (remote is None or not api_key):
            raise ModelLoadError("The NDIF backend needs the NDIF host and an API key.")

    def __repr__(self) -> str:
        return f"NnsightBackend({self.info.name!r}, mode={self.mode!r})"

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    def from_local(cls, hf_model: Any, tokenizer: Any, *, name: str, source: str, revision: str,
                   placement: Placement, n_params: int, started: float, mode: RunMode = "local") -> NnsightBackend:
        """nnsight around the transformers model the loader loaded (the same object: no second copy)."""
        from nnsight import TransformersModel

        config = hf_model.config
        layout = layout_for(config, name)
        dims = config_dims(config)
        _check_modules(hf_model, layout, dims.n_layers, name)
        hf_model.eval()
        hf_model.requires_grad_(False)  # attribution asks for gradients of activations, never of weights
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")
        info = config_model_info(config, dims, tokenizer, name=name, source=source, revision=revision,
                                 n_params=n_params, device=placement.device, dtype=placement.dtype_name,
                                 memory_bytes=resident_bytes(hf_model), load_seconds=time.perf_counter() - started,
                                 backend="nnsight")
        return cls(model, tokenizer, info, placement, layout, dims, mode=mode, hf_model=hf_model)

    def with_mode(self, mode: RunMode) -> NnsightBackend:
        """Another backend over the same loaded model, run another way: "simulate" sends every request through
        nnsight's dry run of the remote path (serialised as for NDIF, local modules hidden, run here)."""
        if self._hf is None:
            raise ModelLoadError("Only a model loaded on this machine can be run locally or in the dry run.")
        return NnsightBackend(self.model, self.tokenizer, self.info, self.placement, self.layout, self.dims,
                              mode=mode, remote=self._remote, api_key=self.__api_key, hf_model=self._hf)

    @property
    def hf_model(self) -> Any | None:
        return self._hf

    @property
    def api_key_set(self) -> bool:
        return bool(self.__api_key)

    def use_api_key(self, api_key: str) -> None:
        """Replace the NDIF key (the app's sidebar): kept in memory only."""
        if not api_key:
            raise ModelLoadError(_no_key_message())
        self.__api_key = api_key

    # ------------------------------------------------------------------------------------------------ running

    def _trace_backend(self, attn_implementation: str | None = None) -> Any:
        """The nnsight backend of the next trace or session: None (run here), the dry run, or an NDIF job."""
        self.requests_sent += 1
        if self.mode == "local":
            return None
        if self.mode == "simulate":
            from nnsight.intervention.backends.local import LocalSimulationBackend

            return LocalSimulationBackend(self.model)
        assert self._remote is not None
        env = dict(self.model._remoteable_get_env())
        if attn_implementation is not None:
            env["attn_implementation"] = attn_implementation
        job = _NdifJob(self._remote.model_key, host=self._remote.host, api_key=self.__api_key, env=env,
                       blocking=False)
        job.display.enabled = False  # no status lines on stdout (the CLI's --json owns it)
        return job

    def _outputs(self, job: Any, scope: dict, *names: str) -> tuple:
        """The values a trace saved: from this frame (local, dry run) or from NDIF once the job has finished."""
        if self.mode != "ndif":
            return tuple(scope[name] for name in names)
        assert self._remote is not None
        if getattr(job, "job_id", None) is None:
            raise RemoteJobError("NDIF did not accept the request (no job id came back).")

        def on_state(state: RemoteJobState) -> None:
            self.last_job = state
            _gate_on_state(state)

        result = wait_for_job(job, timeout=self._remote.timeout, on_state=on_state)
        missing = [name for name in names if name not in result]
        if missing:
            raise RemoteJobError(f"The NDIF job {job.job_id} finished without {', '.join(missing)}.")
        return tuple(result[name] for name in names)

    @contextlib.contextmanager
    def _running(self, gradients: bool = False):
        """Hold the model for one request; local runs without autograd unless gradients are asked for. An exception
        from the caller's on_wait (a cancel) passes through unchanged."""
        grad_mode = torch.enable_grad() if gradients else torch.inference_mode()
        with self.gate.hold(), grad_mode:
            yield

    def _path(self, path: str) -> Any:
        return self.model.get(path)

    def _rows_per_request(self, seq_len: int, n_rows: int, fixed_rows: int, rows_per_unit: int, what: str) -> int:
        """Units (of rows_per_unit rows) per trace: within the memory budget here, within REMOTE_MAX_TOKENS on NDIF."""
        if self.mode == "ndif":
            room = max(rows_per_unit, REMOTE_MAX_TOKENS // max(seq_len, 1) - fixed_rows)
            return max(1, min(n_rows, room // rows_per_unit))
        unit = block_bytes_per_token(self.info, self.dtype, seq_len) * seq_len + self.info.vocab_size * 4
        plan = plan_chunks(what, n_rows, unit * rows_per_unit, self.budget_bytes(), fixed_bytes=fixed_rows * unit,
                           target=self.chunk_target() + fixed_rows * unit)
        return plan.per_chunk

    # ------------------------------------------------------------------------------------------------ forward

    def next_tokens(self, tokens: torch.Tensor, position: int,
                    progress: Callable[[float], None] | None = None) -> NextTokenSummary:
        model, layout, cap = self.model, self.layout, self.dims.logit_cap
        embed, final_norm, unembed = (self._path(p) for p in (layout.embed, layout.final_norm, layout.unembed))
        tokens = tokens.cpu()
        with self._running():
            job = self._trace_backend()
            with model.trace(tokens, backend=job, use_cache=False, logits_to_keep=1) as tracer:
                _check_input(embed.input, tokens)
                summary = _next_token_summary(unembed, final_norm.output[0], position, cap)
                summary = nnsight.save(summary)
                tracer.stop()
            (summary,) = self._outputs(job, locals(), "summary")
        return NextTokenSummary(*summary)

    def _last_position_logits(self, tokens: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        model, embed = self.model, self._path(self.layout.embed)
        out = []
        rows = self._rows_per_request(tokens.shape[1], tokens.shape[0], 0, 1, "A forward pass")
        for start in range(0, tokens.shape[0], rows):
            chunk = tokens[start:start + rows].cpu()
            chosen = None if ids is None else ids[start:start + rows].cpu()
            with self._running():
                job = self._trace_backend()
                with model.trace(chunk, backend=job, use_cache=False, logits_to_keep=1):
                    _check_input(embed.input, chunk)
                    logits = model.output.logits[:, -1, :].float()
                    if chosen is not None:
                        logits = logits.gather(1, chosen.to(logits.device))
                    logits = nnsight.save(logits.detach().cpu())
                (logits,) = self._outputs(job, locals(), "logits")
            out.append(logits)
        return torch.cat(out).to(self.device)

    def last_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._last_position_logits(tokens, None)

    def answer_logits(self, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self._last_position_logits(tokens, ids)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        model, embed = self.model, self._path(self.layout.embed)
        tokens = tokens.cpu()
        with self._running():
            job = self._trace_backend()
            with model.trace(tokens, backend=job, use_cache=False):
                _check_input(embed.input, tokens)
                logits = nnsight.save(model.output.logits.float().detach().cpu())
            (logits,) = self._outputs(job, locals(), "logits")
        return logits.to(self.device)

    # ------------------------------------------------------------------------------------------------ ablation

    def _batch(self, task: LogitDiffTask, method: AblationMethod, rows: slice | None = None) -> tuple:
        """(tokens, n_corrupted): the corrupted prompts the method needs (all of them, or the paired ones of `rows`)
        followed by nothing yet; the caller appends the clean rows."""
        if not method.needs_corrupted or task.corrupted is None:
            return task.clean[:0].cpu(), 0
        corrupted = task.corrupted.cpu()
        if method.pairs_prompts and rows is not None:
            corrupted = corrupted[rows]
        return corrupted, int(corrupted.shape[0])

    def ablated_logit_diffs(
        self,
        task: LogitDiffTask,
        method: AblationMethod,
        groups: AblationGroups,
        progress: Callable[[int], None] | None = None,
        *,
        full_forward: bool = False,  # nnsight always runs the model's own forward; the flag changes nothing here
    ) -> np.ndarray:
        model, layout, dims = self.model, self.layout, self.dims
        n = task.n_prompts
        corrupted, n_corrupted = self._batch(task, method)
        per_request = self._rows_per_request(task.seq_len, len(groups), n_corrupted, n, "An ablated forward pass")
        ids = task.answer_ids.cpu()
        weights = task.weights.float().cpu()
        embed = self._path(layout.embed)
        out = np.zeros(len(groups))
        done = 0
        for start in range(0, len(groups), per_request):
            part = groups.select(slice(start, start + per_request))
            g = len(part)
            tokens = torch.cat([corrupted, task.clean.cpu().repeat(g, 1)])
            edits = []  # (o_proj path, head_rows[row, head] | None, mlp path, mlp_rows[row] | None) per layer
            for layer in part.layers_touched():
                head_rows = part.heads[:, layer, :].repeat_interleave(n, dim=0)
                mlp_rows = part.mlps[:, layer].repeat_interleave(n)
                edits.append((layout.block(layer, layout.o_proj), head_rows if bool(head_rows.any()) else None,
                              layout.block(layer, layout.mlp), mlp_rows if bool(mlp_rows.any()) else None))
            answer_ids = ids.repeat(g, 1)
            n_heads, d_head = dims.n_heads, dims.d_head
            with self._running():
                job = self._trace_backend()
                with model.trace(tokens, backend=job, use_cache=False, logits_to_keep=1):
                    _check_input(embed.input, tokens)
                    for o_path, head_rows, mlp_path, mlp_rows in edits:
                        if head_rows is not None:
                            o_proj = model.get(o_path)
                            o_proj.input = _ablate_layer_z(o_proj.input, n_corrupted, head_rows, method, n_heads,
                                                           d_head, g, n)
                        if mlp_rows is not None:
                            mlp = model.get(mlp_path)
                            mlp.output = _ablate_layer_mlp(mlp.output, n_corrupted, mlp_rows, method, g, n)
                    lds = _weighted_ld(model.output.logits[n_corrupted:, -1, :], answer_ids, weights, g)
                    lds = nnsight.save(lds.detach().cpu())
                (lds,) = self._outputs(job, locals(), "lds")
            out[start:start + g] = lds.double().numpy()
            done += g
            if progress is not None:
                progress(done)
        return out

    def attribution_effects(self, task: LogitDiffTask, method: AblationMethod) -> AttributionEffects:
        model, layout, dims = self.model, self.layout, self.dims
        n = task.n_prompts
        n_corrupted_all = self._batch(task, method)[1]
        paired = method.pairs_prompts
        # activations and their gradients: about three times a plain forward
        per_request = max(1, self._rows_per_request(task.seq_len, n, 0 if paired else n_corrupted_all, 1,
                                                    "The attribution estimate") // 3)
        head_effect = np.zeros((dims.n_layers, dims.n_heads))
        mlp_effect = np.zeros(dims.n_layers)
        clean_ld = 0.0
        embed = self._path(layout.embed)
        o_paths = [layout.block(layer, layout.o_proj) for layer in range(dims.n_layers)]
        mlp_paths = [layout.block(layer, layout.mlp) for layer in range(dims.n_layers)]
        n_heads, d_head = dims.n_heads, dims.d_head
        for start in range(0, n, per_request):
            stop = min(n, start + per_request)
            corrupted, n_corrupted = self._batch(task, method, slice(start, stop))
            tokens = torch.cat([corrupted, task.clean[start:stop].cpu()])
            answer_ids = task.answer_ids[start:stop].cpu()
            weights = task.weights[start:stop].float().cpu()
            with self._running(gradients=True):
                job = self._trace_backend()
                with model.trace(tokens, backend=job, use_cache=False, logits_to_keep=1):
                    _check_input(embed.input, tokens)
                    zs, mlps, z_targets, mlp_targets = [], [], [], []
                    for o_path, mlp_path in zip(o_paths, mlp_paths, strict=True):
                        z = model.get(o_path).input
                        z.requires_grad_(True)
                        zs.append(z)
                        z_targets.append(_attribution_target(z, n_corrupted, method, n_heads, d_head))
                        out = model.get(mlp_path).output
                        out.requires_grad_(True)
                        mlps.append(out)
                        mlp_targets.append(_attribution_target(out, n_corrupted, method, None, None))
                    ld = _weighted_ld(model.output.logits[n_corrupted:, -1, :], answer_ids, weights, 1)
                    effects = _attribution_sums(ld, zs, mlps, z_targets, mlp_targets, n_corrupted, n_heads, d_head)
                    effects = nnsight.save(effects)
                (effects,) = self._outputs(job, locals(), "effects")
            chunk_ld, heads, mlp = effects
            clean_ld += float(chunk_ld)
            head_effect += heads.double().numpy()
            mlp_effect += mlp.double().numpy()
        return AttributionEffects(clean_ld, None, head_effect, mlp_effect)

    # ------------------------------------------------------------------------------------------------ patterns

    def reduce_attention_patterns(
        self,
        tokens: torch.Tensor,
        reduce: Callable[[int, torch.Tensor], Any],
        layers: Iterable[int] | None = None,
        heads: dict[int, Sequence[int]] | None = None,
    ) -> dict[int, Any]:
        """Eager attention's weights (the attention module's second output) for the layers asked for; the model is
        switched to eager attention for this request only (sdpa returns no weights)."""
        wanted = sorted(set(range(self.info.n_layers)) if layers is None else {int(layer) for layer in layers})
        if not wanted:
            return {}
        model, layout = self.model, self.layout
        embed = self._path(layout.embed)
        attn_paths = [(layer, layout.block(layer, layout.attn),
                       None if heads is None or layer not in heads else [int(h) for h in heads[layer]])
                      for layer in wanted]
        tokens = tokens.cpu()
        device = self.device  # the caller's tensors (detection patterns, indices) live there; NDIF's GPU does not
        with self._running(), self._eager():
            job = self._trace_backend(attn_implementation="eager")
            with model.trace(tokens, backend=job, use_cache=False, logits_to_keep=1) as tracer:
                _check_input(embed.input, tokens)
                reduced = {}
                for layer, attn_path, chosen in attn_paths:
                    pattern = model.get(attn_path).output[1]
                    if pattern is None:
                        raise RuntimeError("the attention module returned no weights (not eager attention)")
                    if chosen is not None:
                        pattern = pattern[:, chosen]
                    reduced[layer] = reduce(layer, pattern.detach().to(device))
                reduced = nnsight.save(reduced)
                tracer.stop()
            (reduced,) = self._outputs(job, locals(), "reduced")
        return reduced

    @contextlib.contextmanager
    def _eager(self):
        """Eager attention on the local model for one request (restored after); NDIF gets it in the request's env."""
        hf = self._hf
        before = getattr(getattr(hf, "config", None), "_attn_implementation", None)
        if hf is None or before == "eager":
            yield
            return
        hf.set_attn_implementation("eager")
        try:
            yield
        finally:
            hf.set_attn_implementation(before)

    # ------------------------------------------------------------------------------------------------ weights

    def _here(self, compute: Callable[[], Any]) -> Any:
        """Module calls on the local model, no trace needed (the other modes run the same calls in a session)."""
        with self.gate.hold(), torch.inference_mode():
            self.requests_sent += 1
            return compute()

    def mlp0_effective_embedding(self, token_ids: torch.Tensor) -> torch.Tensor:
        layout = self.layout
        embed, ln2, mlp = (self._path(p) for p in (layout.embed, layout.block(0, layout.ln2),
                                                     layout.block(0, layout.mlp)))
        token_ids = token_ids.cpu()
        if self.mode == "local":
            return self._here(lambda: _effective_embedding(embed, ln2, mlp, token_ids))
        model = self.model
        with self._running():
            job = self._trace_backend()
            with model.session(backend=job):
                effective = nnsight.save(_effective_embedding(embed, ln2, mlp, token_ids).detach().cpu())
            (effective,) = self._outputs(job, locals(), "effective")
        return effective.to(self.device)

    def _ov_modules(self, layer: int) -> tuple:
        layout = self.layout
        return (self._path(layout.block(layer, layout.ln1)), self._path(layout.block(layer, layout.attn)),
                self._path(layout.block(layer, layout.o_proj)))

    def ov_outputs(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        dims = self.dims
        ln1, attn, o_proj = self._ov_modules(layer)
        values_of = self.layout.values
        if self.mode == "local":
            return self._here(lambda: _ov_outputs(ln1, attn, o_proj, values_of, resid, dims.n_heads,
                                                            dims.n_kv, dims.d_head))
        resid = resid.cpu()
        model = self.model
        n_heads, n_kv, d_head = dims.n_heads, dims.n_kv, dims.d_head
        with self._running():
            job = self._trace_backend()
            with model.session(backend=job):
                out = _ov_outputs(ln1, attn, o_proj, values_of, resid, n_heads, n_kv, d_head)
                out = nnsight.save(out.detach().cpu())
            (out,) = self._outputs(job, locals(), "out")
        return out.to(self.device)

    def ov_unembed_logits(self, layer: int, resid: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """One request for what each head's OV output unembeds to, restricted to token_ids: remotely only
        [head, n, len(token_ids)] comes back, never the [head, n, d_model] outputs."""
        if self.mode == "local":
            return super().ov_unembed_logits(layer, resid, token_ids)
        dims, layout = self.dims, self.layout
        ln1, attn, o_proj = self._ov_modules(layer)
        final_norm, unembed = self._path(layout.final_norm), self._path(layout.unembed)
        values_of, cap = layout.values, dims.logit_cap
        n_heads, n_kv, d_head = dims.n_heads, dims.n_kv, dims.d_head
        resid, token_ids = resid.cpu(), token_ids.cpu()
        model = self.model
        with self._running():
            job = self._trace_backend()
            with model.session(backend=job):
                out = _ov_outputs(ln1, attn, o_proj, values_of, resid, n_heads, n_kv, d_head)
                logits = nnsight.save(_unembed(unembed, final_norm(out), token_ids, cap).detach().cpu())
            (logits,) = self._outputs(job, locals(), "logits")
        return logits.to(self.device)

    def unembed_logits(self, resid: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        layout, cap = self.layout, self.dims.logit_cap
        final_norm, unembed = self._path(layout.final_norm), self._path(layout.unembed)
        if self.mode == "local":
            return self._here(lambda: _unembed(unembed, final_norm(_to_module(resid, final_norm)),
                                                         token_ids, cap))
        resid = resid.cpu()
        token_ids = None if token_ids is None else token_ids.cpu()
        model = self.model
        with self._running():
            job = self._trace_backend()
            with model.session(backend=job):
                normed = final_norm(_to_module(resid, final_norm))
                logits = nnsight.save(_unembed(unembed, normed, token_ids, cap).detach().cpu())
            (logits,) = self._outputs(job, locals(), "logits")
        return logits.to(self.device)

    def budget_bytes(self) -> int:
        if self.mode == "ndif":
            return 1 << 62  # the activations live on NDIF's machines; requests are capped by REMOTE_MAX_TOKENS
        return super().budget_bytes()


def _attribution_target(act: torch.Tensor, n_corrupted: int, method: Any, n_heads: int | None,
                        d_head: int | None) -> torch.Tensor | None:
    """The replacement an ablation would write over the clean rows of act (None: zeros), detached."""
    if not n_corrupted:
        return None
    corrupted = act[:n_corrupted].detach()
    if n_heads is not None:
        corrupted = corrupted.view(*corrupted.shape[:2], n_heads, d_head)
    value = _replacement(method, corrupted, act.dtype)
    if value is None:
        return None
    return value.reshape(*value.shape[:2], -1) if n_heads is not None else value


def _attribution_sums(ld: torch.Tensor, zs: list, mlps: list, z_targets: list, mlp_targets: list, n_corrupted: int,
                      n_heads: int, d_head: int) -> tuple:
    """(clean LD, head_effect[layer, head], mlp_effect[layer]): Σ (replacement − activation) · ∂LD/∂activation over
    the clean rows, from one backward pass."""
    grads = torch.autograd.grad(ld.sum(), zs + mlps, allow_unused=True)
    head_effect, mlp_effect = [], []
    for layer, z in enumerate(zs):
        grad = grads[layer]
        clean = z[n_corrupted:].detach()
        target = torch.zeros_like(clean) if z_targets[layer] is None else z_targets[layer].to(clean).expand_as(clean)
        grad = torch.zeros_like(clean) if grad is None else grad[n_corrupted:]
        product = ((target - clean) * grad).float().view(*clean.shape[:2], n_heads, d_head)
        head_effect.append(product.sum(dim=(0, 1, 3)))
    for layer, out in enumerate(mlps):
        grad = grads[len(zs) + layer]
        clean = out[n_corrupted:].detach()
        target = torch.zeros_like(clean) if mlp_targets[layer] is None else mlp_targets[layer].to(clean).expand_as(
            clean)
        grad = torch.zeros_like(clean) if grad is None else grad[n_corrupted:]
        mlp_effect.append(((target - clean) * grad).float().sum())
    return (ld.sum().detach().cpu(), torch.stack(head_effect).detach().cpu(), torch.stack(mlp_effect).detach().cpu())


# ---------------------------------------------------------------------------------------------------------------
# NDIF: checks before any job, then a backend over a weightless (meta) model


def _no_key_message() -> str:
    return (f"NDIF needs an API key: get one at {NDIF_KEY_URL}, then enter it in the sidebar or set NDIF_API_KEY "
            "(the CLI reads NDIF_API_KEY). It is kept in memory only.")


def resolve_api_key(given: str | None) -> str:
    """The key to use: the one given (sidebar, argument), else NDIF_API_KEY, else nnsight's own saved login."""
    for candidate in (given, os.environ.get("NDIF_API_KEY")):
        if candidate and candidate.strip():
            return candidate.strip()
    with contextlib.suppress(Exception):
        from nnsight.schema.config import CONFIG

        if CONFIG.API.APIKEY:
            return str(CONFIG.API.APIKEY).strip()
    raise ModelLoadError(_no_key_message())


def ndif_host() -> str:
    """NDIF's API address: NDIF_HOST when set, else nnsight's configured host (https://api.ndif.us)."""
    host = os.environ.get("NDIF_HOST")
    if not host:
        from nnsight.schema.config import CONFIG

        host = CONFIG.API.HOST
    return host.rstrip("/")


def shown_host(host: str) -> str:
    """The host as messages show it: a user name and password in the address (http://user:secret@host) left out."""
    parsed = urlparse(host)
    if parsed.username is None and parsed.password is None:
        return host
    netloc = parsed.hostname or ""
    if parsed.port is not None:
        netloc += f":{parsed.port}"
    return parsed._replace(netloc=netloc).geturl()


def _without_credentials(text: str, host: str) -> str:
    return text.replace(host, shown_host(host)) if host else text


def probe_ndif(host: str, timeout: float = NDIF_PROBE_SECONDS) -> list[str] | None:
    """Ask NDIF's status call within `timeout` seconds. Returns the repo ids NDIF serves now (deployed, not only
    downloaded), or None when the answer holds no list; raises a ModelLoadError when NDIF does not answer at all or
    answers that it is down."""
    import httpx

    parsed = urlparse(host)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ModelLoadError(f"NDIF host {shown_host(host)!r} is not an http(s) address: fix NDIF_HOST (default "
                             "https://api.ndif.us).")
    try:
        response = httpx.get(f"{host}/status", timeout=httpx.Timeout(timeout))
    except httpx.HTTPError as error:
        reason = (f"no answer within {timeout:.0f} s" if isinstance(error, httpx.TimeoutException)
                  else _without_credentials(str(error), host))
        raise ModelLoadError(
            f"NDIF ({shown_host(host)}) is not reachable from this machine ({reason}). Check the network connection "
            "(a proxy or firewall may block it), or see https://discuss.ndif.us for NDIF's status; local backends keep "
            "working."
        ) from None
    if response.status_code >= 500:
        raise ModelLoadError(f"NDIF ({shown_host(host)}) answered that it cannot take requests now (HTTP "
                             f"{response.status_code}): try again later (https://discuss.ndif.us has its status); "
                             "local backends keep working.")
    try:
        deployments = response.json().get("deployments")
    except (ValueError, AttributeError):
        return None
    if not isinstance(deployments, dict):
        return None
    hosted = set()
    for name, value in deployments.items():
        if isinstance(value, dict) and value.get("deployment_level") in ("HOT", "WARM"):
            hosted.add(str(value.get("repo_id", name)))
    return sorted(hosted)


def _request_error(error: Exception, host: str) -> HeadscopeError:
    """nnsight's remote-request failures as messages that say what to do."""
    text = _without_credentials(str(error), host)
    name = type(error).__name__
    if name in ("ConnectError", "ConnectTimeout", "WebSocketAddressException") or isinstance(error, ConnectionError):
        return RemoteJobError(f"NDIF ({shown_host(host)}) is not reachable: {text}. Check the network; local backends "
                              "keep working.")
    if name == "RemoteError":
        lowered = text.lower()
        if "key" in lowered or "401" in text or "403" in text or "unauthor" in lowered:
            return RemoteJobError(f"NDIF refused the request: {text}. Check the API key ({NDIF_KEY_URL}).")
        return RemoteJobError(f"NDIF could not run the request: {text}")
    return RemoteJobError(f"The NDIF request failed: {name}: {text}")


def load_remote(request: ModelRequest, progress: ProgressCallback | None = None) -> NnsightBackend:
    """A model run on NDIF: the key, NDIF's reachability and whether it hosts the model are checked first (each
    failing within seconds with what to do); then only the config and tokenizer are read (from the hub)."""
    from headscope.loading import EMBEDDED, estimate_weight_bytes, hub_reachable, resolve_source

    started = time.perf_counter()
    api_key = resolve_api_key(getattr(request, "api_key", None))
    source = (request.source or "").strip()
    if not source or source.lower() == EMBEDDED:
        raise ModelLoadError("NDIF runs models it hosts (for example meta-llama/Llama-2-7b-hf), not the embedded "
                             "model: give a hub id, or choose a local backend.")
    resolved = resolve_source(source)
    if resolved.kind != "hub":
        raise ModelLoadError(f"NDIF runs models it hosts, by hub id (for example meta-llama/Llama-2-7b-hf); "
                             f"{source!r} is a local folder: choose a local backend for it.")
    host = ndif_host()
    if progress is not None:
        progress(f"Checking that NDIF ({shown_host(host)}) answers", 0.1)
    hosted = probe_ndif(host)
    if hosted is not None and source.lower() not in {h.lower() for h in hosted}:
        listed = ", ".join(hosted) if hosted else "none right now"
        raise ModelLoadError(f"NDIF does not host {source} now. Hosted models: {listed}. Choose one of those, or a "
                             "local backend.")
    if progress is not None:
        progress(f"Reading the config and tokenizer of {source} (no weights)", 0.4)
    from transformers import AutoConfig, AutoTokenizer

    kwargs: dict[str, Any] = {} if hub_reachable() else {"local_files_only": True}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as error:
        raise ModelLoadError(
            f"Could not read the config and tokenizer of {source} from the Hugging Face hub ({error}). NDIF runs "
            "the weights, but headscope needs these two small files here: check the network, or accept the model's "
            "licence on huggingface.co and log in (`huggingface-cli login`) for a gated model."
        ) from error
    layout = layout_for(config, source)
    dims = config_dims(config)
    from nnsight import TransformersModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TransformersModel(source, tokenizer=tokenizer, task="text-generation")
    _check_modules(model._module, layout, dims.n_layers, source)
    try:
        model_key = model.to_model_key()  # asks the hub for the canonical spelling of the id
    except Exception:
        from nnsight.modeling import huggingface

        huggingface._ID_CACHE.setdefault(source, source)  # hub busy: NDIF matches the id as written
        model_key = model.to_model_key()
    dtype_name = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float16")
    dtype_name = dtype_name.removeprefix("torch.")
    n_params, _ = estimate_weight_bytes(config, torch.float32)
    placement = Placement(device="cpu", device_map=None, dtype=torch.float32)
    info = config_model_info(config, dims, tokenizer, name=resolved.name, source=source,
                             revision=str(getattr(config, "_commit_hash", None) or "main"), n_params=n_params,
                             device="NDIF", dtype=dtype_name, memory_bytes=0,
                             load_seconds=time.perf_counter() - started, backend="ndif")
    timeout = positive_env("HEADSCOPE_NDIF_TIMEOUT", NDIF_DEFAULT_TIMEOUT, maximum=7 * 24 * 3600.0)
    backend = NnsightBackend(model, tokenizer, info, placement, layout, dims, mode="ndif",
                             remote=_Remote(host, model_key, timeout), api_key=api_key)
    if progress is not None:
        progress("Ready (runs on NDIF)", 1.0)
    return backend


__all__ = ["LAYOUTS", "Layout", "NnsightBackend", "RemoteJobError", "RemoteJobState", "layout_for", "load_remote",
           "ndif_host", "probe_ndif", "resolve_api_key", "wait_for_job"]
