"""The nnsight backend: nnsight 0.8's `TransformersModel` over a transformers model, here or on NDIF.

Three ways to run the same code (headscope.backends.ndif's run modes): LOCAL (traces in this process), DRY_RUN
(nnsight's dry run of the remote path, serialised as for NDIF) and NdifRun (sent to NDIF). Every computation is
written once, as the body of a trace or session, so the three modes run the same code. A head is ablated by editing
its slice of the output projection's *input* (the per-head z, `o_proj.input` for Llama); an MLP by replacing the MLP
module's output (headscope.backends.layouts says where each family keeps them). Replacement values (mean, resample)
are computed from the corrupted prompts inside the same forward (their rows precede the clean rows), so remotely only
LD values come back. Weights are never read in a module's own layout: OV outputs and the effective embedding call the
model's own modules (GPT-2's Conv1D stores its matrices transposed).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import nnsight
import numpy as np
import torch

from headscope.backends.base import (
    AttributionEffects,
    Backend,
    ConfigDims,
    LocalModel,
    ModelInfo,
    NextTokenSummary,
    Placement,
    Readout,
    SiteReadings,
    check_top1_from,
    config_dims,
    config_model_info,
    resident_bytes,
)
from headscope.backends.bos import BosPolicy, decide_bos
from headscope.backends.interventions import (
    AblationGroups,
    EdgeGroups,
    LogitDiffTask,
    Site,
    UnsupportedIntervention,
)
from headscope.backends.layouts import Layout, LayoutView, check_modules, layout_for
from headscope.backends.ndif import (
    LOCAL,
    REMOTE_MAX_TOKENS,
    RUN_MODES,
    RemoteJobState,
    RunMode,
    gate_on_state,
    no_key_message,
)
from headscope.backends.weights import effective_embedding, normed_logits, ov_outputs, unembed_logits
from headscope.errors import ModelLoadError
from headscope.memory import block_bytes_per_token, plan_chunks

if TYPE_CHECKING:
    from headscope.engine import WorkTimer
    from headscope.methods import AblationMethod

UNEMBED_CHUNK_TOKENS = 512  # positions unembedded at a time (a long prompt never holds [pos, vocab] at once)


class CorruptedRows(NamedTuple):
    """The corrupted prompts a method needs, sent before the clean rows of one forward, and how many they are."""

    tokens: torch.Tensor  # [n_corrupted, pos] on the CPU
    count: int


class AttributionSums(NamedTuple):
    """What one attribution request returns (as a plain tuple: it travels back from NDIF): the chunk's LD,
    head_effect[layer, head] and mlp_effect[layer]."""

    clean_ld: torch.Tensor
    head_effect: torch.Tensor
    mlp_effect: torch.Tensor


# ---------------------------------------------------------------------------------------------------------------
# Computations run inside traces and sessions. They are shipped to NDIF by value (nnsight serialises headscope's
# functions from their source), so they use only torch and their arguments: never the backend object.


def _check_input(ids_in: torch.Tensor, tokens: torch.Tensor) -> None:
    """The forward's input ids are exactly the rows sent: nnsight added no (left) padding."""
    if tuple(ids_in.shape) != tuple(tokens.shape) or not bool((ids_in == tokens.to(ids_in.device)).all()):
        raise RuntimeError(f"nnsight changed the input: sent {tuple(tokens.shape)}, the model got "
                           f"{tuple(ids_in.shape)} (padding?)")


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


def _weighted_ld(logits: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor | None,
                 n_groups: int) -> torch.Tensor:
    """ld[group] = Σ_prompt weight · (logit[correct] − logit[incorrect]) from last-position logits[row, vocab];
    weights None: ld[group, prompt], each prompt's own difference."""
    picked = logits.float().gather(1, ids.to(logits.device))
    diff = (picked[:, 0] - picked[:, 1]).view(n_groups, -1)
    return diff if weights is None else (diff * weights.to(diff.device)).sum(1)


def _next_token_summary(unembed: Any, normed: torch.Tensor, position: int, cap: float, top1_from: int = 0) -> tuple:
    """(logits_at[vocab], top1_id[i], top1_logit[i], top1_logprob[i]) for positions top1_from + i, from
    normed[pos, d_model], unembedded UNEMBED_CHUNK_TOKENS positions at a time (top1_from ≤ position)."""
    ids, values, logprobs, at = [], [], [], None
    for start in range(top1_from, normed.shape[0], UNEMBED_CHUNK_TOKENS):
        chunk = normed_logits(normed[start:start + UNEMBED_CHUNK_TOKENS], unembed.weight, unembed.bias, cap)
        best, best_id = chunk.max(-1)
        ids.append(best_id)
        values.append(best)
        logprobs.append(best - torch.logsumexp(chunk, -1))
        if start <= position < start + chunk.shape[0]:
            at = chunk[position - start].clone()
    return (at.detach().cpu(), torch.cat(ids).cpu(), torch.cat(values).detach().cpu(),
            torch.cat(logprobs).detach().cpu())


def _ov_unembed(view: LayoutView, layer: int, resid: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """logits[head, n, len(token_ids)] of each head's OV output (one remote request)."""
    return unembed_logits(view, ov_outputs(view, layer, resid), token_ids)


# ---------------------------------------------------------------------------------------------------------------
# The backend


class NnsightBackend(Backend):
    """A transformers model behind nnsight, run here, in nnsight's remote dry run, or on NDIF."""

    name = "nnsight"

    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo, placement: Placement, layout: Layout,
                 dims: ConfigDims, *, mode: RunMode = LOCAL, api_key: str | None = None,
                 hf_model: Any | None = None) -> None:
        super().__init__(tokenizer, info, placement, info.bos_token is not None)
        self.model = model  # nnsight TransformersModel
        self.layout = layout
        self.dims = dims
        self.mode = mode
        self.__api_key = api_key  # name-mangled: kept out of casual attribute dumps; never written anywhere
        self._hf = hf_model
        self.requests_sent = 0  # traces and sessions run (remote: requests)
        self.last_job: RemoteJobState | None = None
        if mode.remote and not api_key:
            raise ModelLoadError("The NDIF backend needs an API key.")

    def __repr__(self) -> str:
        return f"NnsightBackend({self.info.name!r}, mode={self.mode!r})"

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    def from_local(cls, hf_model: Any, tokenizer: Any, *, name: str, source: str, revision: str,
                   placement: Placement, n_params: int, started: float, mode: RunMode = LOCAL,
                   bos: BosPolicy | None = None) -> NnsightBackend:
        """nnsight around the transformers model the loader loaded (the same object: no second copy); bos: the
        model's BOS policy (default: decided from the tokenizer and config, as the loader does)."""
        from nnsight import TransformersModel

        config = hf_model.config
        layout = layout_for(config, name)
        dims = config_dims(config)
        check_modules(hf_model, layout, dims.n_layers, name)
        hf_model.eval()
        hf_model.requires_grad_(False)  # attribution asks for gradients of activations, never of weights
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")
        bos = bos if bos is not None else decide_bos(tokenizer, config)
        info = config_model_info(config, dims, bos, name=name, source=source, revision=revision,
                                 n_params=n_params, device=placement.device, dtype=placement.dtype_name,
                                 memory_bytes=resident_bytes(hf_model), load_seconds=time.perf_counter() - started,
                                 backend="nnsight")
        return cls(model, tokenizer, info, placement, layout, dims, mode=mode, hf_model=hf_model)

    def with_mode(self, mode: RunMode | str) -> NnsightBackend:
        """Another backend over the same loaded model, run another way (a RunMode, or "local" / "simulate"):
        "simulate" (DRY_RUN) sends every request through nnsight's dry run of the remote path (serialised as for
        NDIF, local modules hidden, run here)."""
        if self._hf is None:
            raise ModelLoadError("Only a model loaded on this machine can be run locally or in the dry run.")
        mode = RUN_MODES[mode] if isinstance(mode, str) else mode
        return NnsightBackend(self.model, self.tokenizer, self.info, self.placement, self.layout, self.dims,
                              mode=mode, api_key=self.__api_key, hf_model=self._hf)

    @property
    def hf_model(self) -> Any | None:
        return self._hf

    @property
    def api_key_set(self) -> bool:
        return bool(self.__api_key)

    def use_api_key(self, api_key: str) -> None:
        """Replace the NDIF key (the app's sidebar): kept in memory only."""
        if not api_key:
            raise ModelLoadError(no_key_message())
        self.__api_key = api_key

    # ------------------------------------------------------------------------------------------------ running

    def _trace_backend(self, attn_implementation: str | None = None) -> Any:
        """The nnsight backend of the next trace or session: None (run here), the dry run, or an NDIF job."""
        self.requests_sent += 1
        return self.mode.job(self.model, self.__api_key, attn_implementation)

    def _outputs(self, job: Any, scope: dict, *names: str) -> tuple:
        """The values a trace saved: from this frame (local, dry run) or from NDIF once the job has finished."""

        def on_state(state: RemoteJobState) -> None:
            self.last_job = state
            gate_on_state(state)

        return self.mode.outputs(job, scope, names, on_state)

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
        if self.mode.remote:
            room = max(rows_per_unit, REMOTE_MAX_TOKENS // max(seq_len, 1) - fixed_rows)
            return max(1, min(n_rows, room // rows_per_unit))
        unit = block_bytes_per_token(self.info, self.dtype, seq_len) * seq_len + self.info.vocab_size * 4
        plan = plan_chunks(what, n_rows, unit * rows_per_unit, self.budget_bytes(), fixed_bytes=fixed_rows * unit,
                           target=self.chunk_target() + fixed_rows * unit)
        return plan.per_chunk

    # ------------------------------------------------------------------------------------------------ forward

    def next_tokens(self, tokens: torch.Tensor, position: int,
                    progress: Callable[[float], None] | None = None, lens: Readout | None = None,
                    top1_from: int = 0) -> NextTokenSummary:
        check_top1_from(top1_from, position)
        if lens is not None:
            from headscope.backends.nnsight_readout import nnsight_next_tokens_with_lens

            return nnsight_next_tokens_with_lens(self, tokens, position, lens, _check_input, _next_token_summary,
                                                 top1_from)
        model, layout, cap = self.model, self.layout, self.dims.logit_cap
        embed, final_norm, unembed = (self._path(p) for p in (layout.embed, layout.final_norm, layout.unembed))
        tokens = tokens.cpu()
        with self._running():
            job = self._trace_backend()
            with model.trace(tokens, backend=job, use_cache=False, logits_to_keep=1) as tracer:
                _check_input(embed.input, tokens)
                summary = _next_token_summary(unembed, final_norm.output[0], position, cap, top1_from)
                summary = nnsight.save(summary)
                tracer.stop()
            (summary,) = self._outputs(job, locals(), "summary")
        return NextTokenSummary(*summary, top1_start=top1_from)

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

    def _batch(self, task: LogitDiffTask, method: AblationMethod, rows: slice | None = None) -> CorruptedRows:
        """The corrupted prompts the method needs (all of them, or the paired ones of `rows`); the caller appends
        the clean rows."""
        if not method.needs_corrupted or task.corrupted is None:
            return CorruptedRows(task.clean[:0].cpu(), 0)
        corrupted = task.corrupted.cpu()
        if method.pairs_prompts and rows is not None:
            corrupted = corrupted[rows]
        return CorruptedRows(corrupted, int(corrupted.shape[0]))

    def masked_logit_diffs(
        self,
        task: LogitDiffTask,
        method: AblationMethod,
        groups: AblationGroups,
        progress: Callable[[int], None] | None = None,
        *,
        full_forward: bool = False,  # nnsight always runs the model's own forward; the flag changes nothing here
        per_prompt: bool = False,
    ) -> np.ndarray:
        model, layout, dims = self.model, self.layout, self.dims
        n = task.n_prompts
        corrupted, n_corrupted = self._batch(task, method)
        per_request = self._rows_per_request(task.seq_len, len(groups), n_corrupted, n, "An ablated forward pass")
        ids = task.answer_ids.cpu()
        weights = task.weights.float().cpu()
        row_weights = None if per_prompt else weights  # None: each prompt's own LD
        embed = self._path(layout.embed)
        out = np.zeros((len(groups), n) if per_prompt else len(groups))
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
                    lds = _weighted_ld(model.output.logits[n_corrupted:, -1, :], answer_ids, row_weights, g)
                    lds = nnsight.save(lds.detach().cpu())
                (lds,) = self._outputs(job, locals(), "lds")
            out[start:start + g] = lds.double().numpy()
            done += g
            if progress is not None:
                progress(done)
        return out

    def edge_logit_diffs(self, task: LogitDiffTask, edges: EdgeGroups, progress: Callable[[int], None] | None = None,
                         *, runner: Any = None, timer: WorkTimer | None = None) -> np.ndarray:
        """Path patching's edges: here with hooks on the local model's modules (headscope.backends.path_runs); in the
        dry run and on NDIF as one nnsight request per chunk of edges (headscope.backends.nnsight_paths)."""
        if not self.mode.runs_here:
            if runner is not None:
                raise UnsupportedIntervention("The fast path runs on a model loaded here only.")
            from headscope.backends.nnsight_paths import nnsight_edge_lds

            return nnsight_edge_lds(self, task, edges, _check_input, timer, progress)
        from headscope.backends.path_runs import edge_lds

        return edge_lds(self, task, edges, runner=runner, timer=timer, progress=progress)

    def attribution_effects(self, task: LogitDiffTask, method: AblationMethod) -> AttributionEffects:
        model, layout, dims = self.model, self.layout, self.dims
        n = task.n_prompts
        n_corrupted_all = self._batch(task, method).count
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
            sums = AttributionSums(*effects)
            clean_ld += float(sums.clean_ld)
            head_effect += sums.head_effect.double().numpy()
            mlp_effect += sums.mlp_effect.double().numpy()
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

    def _family_view(self, layers: Iterable[int]) -> LayoutView:
        dims = self.dims
        return LayoutView.over(self._path, self.layout, layers, dims.n_heads, dims.n_kv, dims.d_head, dims.logit_cap)

    def _weights_request(self, compute: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        """compute(*args), one of headscope.backends.weights' definitions over a LayoutView: called on the local
        model, or in one session (dry run, NDIF) from which only its result comes back."""
        if self.mode.runs_here:
            with self.gate.hold(), torch.inference_mode():
                self.requests_sent += 1
                return compute(*args)
        args = tuple(arg.cpu() if isinstance(arg, torch.Tensor) else arg for arg in args)
        model = self.model
        with self._running():
            job = self._trace_backend()
            with model.session(backend=job):
                result = nnsight.save(compute(*args).detach().cpu())
            (result,) = self._outputs(job, locals(), "result")
        return result.to(self.device)

    def mlp0_effective_embedding(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self._weights_request(effective_embedding, self._family_view([0]), token_ids.cpu())

    def ov_outputs(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        return self._weights_request(ov_outputs, self._family_view([layer]), layer, resid)

    def ov_unembed_logits(self, layer: int, resid: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """One request for what each head's OV output unembeds to, restricted to token_ids: remotely only
        [head, n, len(token_ids)] comes back, never the [head, n, d_model] outputs."""
        if self.mode.runs_here:
            return super().ov_unembed_logits(layer, resid, token_ids)
        return self._weights_request(_ov_unembed, self._family_view([layer]), layer, resid, token_ids)

    def unembed_logits(self, resid: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self._weights_request(unembed_logits, self._family_view([]), resid, token_ids)

    # ------------------------------------------------------------------------------------------------ readouts
    # (headscope.backends.nnsight_readout: one request each, reductions inside it)

    def read_sites(self, tokens: torch.Tensor, position: int, sites: Sequence[Site], readout: Readout
                   ) -> SiteReadings:
        from headscope.backends.nnsight_readout import nnsight_read_sites

        return nnsight_read_sites(self, tokens, position, sites, readout, _check_input)

    def budget_bytes(self) -> int:
        if self.mode.remote:
            return 1 << 62  # the activations live on NDIF's machines; requests are capped by REMOTE_MAX_TOKENS
        return super().budget_bytes()


def open_local(model: LocalModel) -> NnsightBackend:
    """The nnsight backend around a model loaded here (BackendSpec "nnsight")."""
    model.report("Wrapping the model in nnsight", 0.9)
    return NnsightBackend.from_local(model.hf_model, model.tokenizer, name=model.name, source=model.source,
                                     revision=model.revision, placement=model.placement, n_params=model.n_params,
                                     started=model.started, bos=model.bos)


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


__all__ = ["AttributionSums", "CorruptedRows", "NnsightBackend", "open_local"]
