"""The TransformerLens backend: TransformerBridge over a local Hugging Face model.

Hooks are the bridge's own hook points (`blocks.L.attn.hook_z` = the output projection's input, per head;
`blocks.L.mlp.hook_out`), and weights are read through TransformerLens' public `W_V`, `W_O`, `b_V`, `b_O`, `W_U`, `b_U`,
which have one layout for every architecture (GPT-2's Conv1D stores its matrices transposed; reading a module's
`weight` directly would silently give wrong numbers there).

The fast path (`block_runner`) runs `bridge.blocks[L]` one at a time. It is offered only when, at load, a short input
run block by block gives the bridge's own full-forward logits; otherwise the engines use the general path.

This module holds the primitives; the backend's other jobs are objects of their own: `bridge_setup.LazyBridge` (the
bridge made on first need or on a thread), `bridge_checks.RouteChecks` (the load-time checks, each fallback with its
reason), `bridge_routes` (the native-attention route and the mid-forward hand-over), `bridge_hooks.module_hooks`,
`bridge_patterns` and `bridge_weights.BridgeView` (the weights as `weights.py` reads them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from headscope.backends import bridge_hooks, weights
from headscope.backends.attention_inputs import AttentionInputs
from headscope.backends.base import (
    AttributionEffects,
    Backend,
    BlockOutput,
    BlockRunner,
    InputEdit,
    LocalModel,
    MlpEdit,
    ModelInfo,
    NextTokenSummary,
    Placement,
    Readout,
    SiteReadings,
    ZEdit,
    check_top1_from,
    config_dims,
    config_model_info,
    resident_bytes,
)
from headscope.backends.bos import BosPolicy, decide_bos
from headscope.backends.bridge_checks import RouteChecks
from headscope.backends.bridge_hooks import apply_mlp_edit, apply_z_edit
from headscope.backends.bridge_patterns import bridge_patterns, native_attention_inputs, native_patterns
from headscope.backends.bridge_routes import LayerTurns, NativeAttention, StopForward
from headscope.backends.bridge_setup import (
    LazyBridge,
    architecture,
    bridge_info,
    identity_differences,
    make_bridge,
)
from headscope.backends.bridge_weights import BridgeView
from headscope.backends.interventions import AblationGroups, EdgeGroups, LogitDiffTask, Site
from headscope.backends.path_runs import HfModules, input_edit_hooks
from headscope.errors import InputError, ModelLoadError
from headscope.memory import block_bytes_per_token, plan_chunks

if TYPE_CHECKING:
    from headscope.engine import WorkTimer
    from headscope.methods import AblationMethod

UNEMBED_CHUNK_TOKENS = 512  # positions unembedded at a time: a long prompt never holds [pos, vocab] at once


class BridgeBackend(Backend):
    """A transformers model and its tokenizer behind TransformerLens' TransformerBridge, with identity and gate.

    The bridge is made on first need (`bridge`), or ahead of it on a background thread (prepare_hooks_in_background):
    importing TransformerLens and wrapping the model take longer than loading a small model's weights (≈ 6 s against
    ≈ 1 s for the embedded model on a 2-core CPU). Until it is made, the plain forwards (next_tokens, last_logits,
    answer_logits) run the model exactly as transformers loaded it, so the prompt tester is usable as soon as the
    weights are in memory. Every hook, weight read and fast path goes through `bridge`, which makes it first.
    """

    name = "bridge"

    def __init__(self, hf_model: Any, tokenizer: Any, info: ModelInfo, placement: Placement, *,
                 check_fast_path: bool = True) -> None:
        super().__init__(tokenizer, info, placement, info.bos_token is not None)
        self._hf_model = hf_model
        self.setup = LazyBridge(self.gate, info.name, self._make_bridge, self._adopt)  # the bridge, made once
        self._served_before_hooks = False  # a plain forward ran before the bridge: its identity may not change
        self._logit_cap = config_dims(hf_model.config).logit_cap
        self._runner: BridgeBlockRunner | None = None
        self._replacement_memo: tuple[Any, Any] | None = None
        self.native = NativeAttention(hf_model)  # the model's own attention kernel for plain forwards
        self.turns = LayerTurns(self.gate, self.native, info.n_layers)  # progress and hand-overs between layers
        self.checks = RouteChecks(self, enabled=check_fast_path)  # which faster routes run, and why not

    # ------------------------------------------------------------------------------------------------ the bridge

    @property
    def bridge(self) -> Any:
        """The TransformerBridge around the model, made (blocking) if it is not yet."""
        return self.setup.get()

    @property
    def hooks_ready(self) -> bool:
        return self.setup.ready

    def prepare_hooks(self) -> None:
        """Make the bridge and check the fast paths against it (LazyBridge.prepare)."""
        self.setup.prepare()

    def prepare_hooks_in_background(self) -> None:
        self.setup.prepare_in_background()

    def _make_bridge(self) -> Any:
        return make_bridge(self._hf_model, self.tokenizer, self.info.name, self.placement)

    def _adopt(self, bridge: Any) -> None:
        """Take the bridge's reading of the model's identity (gate held) and run the load-time route checks."""
        info = self.info
        # TransformerLens' own string APIs (to_tokens, detect_head) follow the model's BOS policy too; headscope
        # itself feeds the bridge explicit token tensors only
        bridge.cfg.default_prepend_bos = self.prepends_bos
        read = bridge_info(bridge, name=info.name, source=info.source, revision=info.revision,
                           placement=self.placement, n_params=info.n_params, load_seconds=info.load_seconds,
                           bos_token=info.bos_token, bos_rule=info.bos_rule)
        cap = max(float(getattr(bridge.cfg, "output_logits_soft_cap", 0) or 0), 0.0)  # TransformerLens: -1 for none
        differences = identity_differences(info, read)
        if cap != self._logit_cap:
            differences.append(f"logit soft-cap {self._logit_cap!r} vs {cap!r}")
        if differences and self._served_before_hooks:
            raise ModelLoadError(
                f"TransformerLens reads {info.name} differently from its config ({'; '.join(differences)}), and "
                "results were already computed from the config's reading: its hooks stay off. Load the model "
                "again from the CLI or restart the app to use the ablation and attention pages."
            )
        self.info = dataclasses.replace(read, memory_bytes=info.memory_bytes, architecture=info.architecture)
        self._logit_cap = cap
        self.native.attach(bridge)
        self._runner = self.checks.at_load(BridgeBlockRunner(self))

    # ------------------------------------------------------------------------------------------------ basics

    @property
    def hf_model(self) -> Any:
        return self._hf_model

    @property
    def block_runner(self) -> BridgeBlockRunner | None:
        self.prepare_hooks()
        return self._runner

    def _soft_cap(self, logits: torch.Tensor) -> torch.Tensor:
        return weights.soft_cap(logits, self._logit_cap)

    def unembed_columns(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W_U[:, ids] as columns[..., d_model] and b_U[ids] (or None), through TransformerLens' public weights."""
        w_u = self.bridge.W_U  # [d_model, vocab]
        columns = w_u.T[token_ids.to(w_u.device)]
        b_u = getattr(self.bridge, "b_U", None)
        bias = b_u[token_ids.to(b_u.device)] if b_u is not None and bool(b_u.any()) else None
        return columns, bias

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        return self.bridge.ln_final(resid)

    def _final_resid(self, tokens: torch.Tensor, hooks: list[tuple[str, Callable]] | None = None) -> torch.Tensor:
        """resid[batch, pos, d_model] entering the final norm, from the bridge's own forward (stopped there)."""
        captured: dict[str, torch.Tensor] = {}

        def capture(resid: torch.Tensor, hook: Any) -> None:
            captured["resid"] = resid
            raise StopForward

        all_hooks = [*(hooks or []), ("ln_final.hook_in", capture)]
        with self.bridge.hooks(fwd_hooks=all_hooks), contextlib.suppress(StopForward):
            self.bridge(tokens)
        return captured["resid"]

    def _answer_from_normed(self, normed_last: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """logits[batch, k] (float32) of ids[batch, k] from final-normed residuals normed_last[batch, d_model]: one
        small matrix product with the columns of the distinct ids (a batched product per row is far slower)."""
        distinct, inverse = torch.unique(ids, return_inverse=True)
        columns, bias = self.unembed_columns(distinct)  # [distinct, d_model]
        # in float32: half-precision logits would round a logit difference by ~0.01
        logits = normed_last.float() @ columns.float().T  # [batch, distinct]
        out = logits.gather(1, inverse.to(logits.device))
        if bias is not None:
            out = out + bias.float()[inverse.to(bias.device)]
        return self._soft_cap(out)

    def answer_from_resid(self, resid_last: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """logits[batch, k] of ids[batch, k] from resid_last[batch, d_model] (before the final norm), float32."""
        return self._answer_from_normed(self.final_norm(resid_last.unsqueeze(1)).squeeze(1), ids)

    # ------------------------------------------------------------------------------------------------ hooks

    # Hooks for one forward: edits and captures of each layer's z and MLP output (written in bridge_hooks.py)
    module_hooks = bridge_hooks.module_hooks

    def _normed_final(self, tokens: torch.Tensor) -> torch.Tensor:
        """normed[batch, pos, d_model] after the final norm, with whatever hooks are registered, on the fastest
        checked route (the model's own attention kernel where checked at load)."""
        with self.native.swapped() as native:
            if native:
                return self.native.final_normed(tokens)
        return self.final_norm(self._final_resid(tokens))

    def _rows_per_chunk(self, seq_len: int, n_rows: int, what: str, per_row_factor: int = 1) -> int:
        """Sequences per forward within the memory budget (per_row_factor: activations kept per row, e.g. 3 with
        gradients)."""
        unit = block_bytes_per_token(self.info, self.dtype, seq_len) * seq_len * per_row_factor
        return plan_chunks(what, n_rows, unit, self.budget_bytes(), target=self.chunk_target()).per_chunk

    # ------------------------------------------------------------------------------------------------ forward
    #
    # Plain forwards (no hooks) run the model's own attention kernel where checked at load, handing the model over
    # between layers to anyone waiting (headscope.backends.bridge_routes: NativeAttention, LayerTurns).

    def unembed_all(self, normed: torch.Tensor) -> torch.Tensor:
        """logits[..., vocab] from final-normed residuals: W_U, or before the bridge is made the model's own output
        layer (the same matrix and bias)."""
        if not self.setup.ready:
            return self._soft_cap(self._hf_model.get_output_embeddings()(normed))
        return weights.normed_logits(normed, *self.family_view.unembedding(None), self._logit_cap)

    def _plain_normed(self, tokens: torch.Tensor, progress: Callable[[float], None] | None = None) -> torch.Tensor:
        """normed[batch, pos, d_model] of a forward with no hooks, on the fastest checked route (before the bridge is
        made: the model as transformers loaded it)."""
        with self.gate.hold():
            if not self.setup.ready:
                self._served_before_hooks = True
                with self.turns.during(progress, hand_over=False):
                    return self.native.final_normed(tokens)
            with self.native.swapped() as native:
                if native:
                    with self.turns.during(progress):
                        return self.native.final_normed(tokens)
                return self.final_norm(self._final_resid(tokens))

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        with self.gate.hold():
            return self.bridge(tokens).float()  # the bridge applies the model's own soft-capping

    @torch.inference_mode()
    def next_tokens(self, tokens: torch.Tensor, position: int,
                    progress: Callable[[float], None] | None = None, lens: Readout | None = None,
                    top1_from: int = 0) -> NextTokenSummary:
        from headscope.backends.bridge_readout import lens_readings, lens_route, resid_hooks

        check_top1_from(top1_from, position)

        top_ids, top_logits, top_logprobs = [], [], []
        logits_at = None
        lens_read = None
        with self.gate.hold():  # one hold: the unembedding follows the forward without queueing again
            blocks, view = lens_route(self) if lens is not None else ((), None)
            with resid_hooks(blocks) if lens is not None else contextlib.nullcontext({}) as seen:
                normed = self._plain_normed(tokens, progress)[0]  # [pos, d_model]
            if lens is not None:
                lens_read = lens_readings(self, view, seen, lens)
            for start in range(top1_from, normed.shape[0], UNEMBED_CHUNK_TOKENS):
                chunk = self.unembed_all(normed[start:start + UNEMBED_CHUNK_TOKENS]).float()
                if start <= position < start + chunk.shape[0]:
                    logits_at = chunk[position - start].clone()
                values, ids = chunk.max(-1)
                top_ids.append(ids)
                top_logits.append(values)
                # log p(top-1) = -log Σ exp(logit - top-1 logit), in place: one pass over [chunk, vocab], no copies
                top_logprobs.append(-chunk.sub_(values[:, None]).exp_().sum(-1).log())
        assert logits_at is not None
        if progress is not None:
            progress(1.0)
        return NextTokenSummary(logits_at.cpu(), torch.cat(top_ids).cpu(), torch.cat(top_logits).cpu(),
                                torch.cat(top_logprobs).cpu(), lens_read, top1_from)

    @torch.inference_mode()
    def last_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        out = []
        rows = self._rows_per_chunk(tokens.shape[1], tokens.shape[0], "A forward pass")
        for start in range(0, tokens.shape[0], rows):
            normed = self._plain_normed(tokens[start:start + rows])[:, -1, :]
            out.append(self.unembed_all(normed).float())
        return torch.cat(out)

    @torch.inference_mode()
    def answer_logits(self, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        out = []
        rows = self._rows_per_chunk(tokens.shape[1], tokens.shape[0], "A forward pass")
        for start in range(0, tokens.shape[0], rows):
            normed = self._plain_normed(tokens[start:start + rows])[:, -1, :]
            columns, bias = self.unembed_columns(ids[start:start + rows].to(normed.device))
            logits = torch.einsum("bd,bkd->bk", normed.to(columns.dtype), columns)
            if bias is not None:
                logits = logits + bias
            out.append(self._soft_cap(logits.float()))
        return torch.cat(out)

    # ------------------------------------------------------------------------------------------------ ablation

    def replacement_values(self, task: LogitDiffTask, method: AblationMethod) -> tuple[list, list]:
        """(z[layer], mlp[layer]): the method's replacements from the corrupted run, z [1|prompt, pos, head, d_head],
        mlp [1|prompt, pos, d_model], or None (zeros), in the model's dtype. The corrupted prompts run in chunks that
        fit the memory budget; the last (tokens, method) is remembered (a circuit search asks many times)."""
        n_layers = self.info.n_layers
        if not method.needs_corrupted or task.corrupted is None:
            return [None] * n_layers, [None] * n_layers
        memo_key = (method.name, tuple(task.corrupted.shape), hash(task.corrupted.cpu().numpy().tobytes()))
        if self._replacement_memo is not None and self._replacement_memo[0] == memo_key:
            return self._replacement_memo[1]
        z_builders = [method.builder() for _ in range(n_layers)]
        mlp_builders = [method.builder() for _ in range(n_layers)]
        rows = self._rows_per_chunk(task.seq_len, task.corrupted.shape[0], "The corrupted run")
        every = range(n_layers)
        for start in range(0, task.corrupted.shape[0], rows):
            captured: dict[str, dict[int, torch.Tensor]] = {}
            with self.gate.hold(), torch.inference_mode(), \
                    self.module_hooks(capture_z=every, capture_mlp=every, captured=captured):
                self._normed_final(task.corrupted[start:start + rows])
            for layer in every:
                z_builders[layer].add(captured["z"][layer])
                mlp_builders[layer].add(captured["mlp"][layer])

        def finish(builder: Any) -> torch.Tensor | None:
            value = builder.result()
            return None if value is None else value.to(self.dtype)

        values = ([finish(b) for b in z_builders], [finish(b) for b in mlp_builders])
        self._replacement_memo = (memo_key, values)
        return values

    @torch.inference_mode()
    def masked_logit_diffs(
        self,
        task: LogitDiffTask,
        method: AblationMethod,
        groups: AblationGroups,
        progress: Callable[[int], None] | None = None,
        *,
        full_forward: bool = False,
        per_prompt: bool = False,
    ) -> np.ndarray:
        z_values, mlp_values = self.replacement_values(task, method)
        n = task.n_prompts
        groups_per_batch = max(1, self._rows_per_chunk(task.seq_len, n * len(groups), "An ablated forward pass") // n)
        weights = task.weights.to(self.device, torch.float32)
        ids = task.answer_ids.to(self.device)
        out = np.zeros((len(groups), n) if per_prompt else len(groups))
        done = 0
        for start in range(0, len(groups), groups_per_batch):
            part = groups.select(slice(start, start + groups_per_batch))
            g = len(part)
            z_edits: dict[int, ZEdit] = {}
            mlp_edits: dict[int, MlpEdit] = {}
            bridge_hooks = []
            for layer in part.layers_touched():
                head_rows = part.heads[:, layer, :].to(self.device).repeat_interleave(n, dim=0)  # [row, head]
                if bool(head_rows.any()):
                    z_edits[layer] = ZEdit(head_rows, _tile(z_values[layer], g, n))
                    bridge_hooks.append((f"blocks.{layer}.attn.hook_z", _z_hook(z_edits[layer])))
                mlp_rows = part.mlps[:, layer].to(self.device).repeat_interleave(n)
                if bool(mlp_rows.any()):
                    mlp_edits[layer] = MlpEdit(mlp_rows, _tile(mlp_values[layer], g, n))
                    bridge_hooks.append((f"blocks.{layer}.mlp.hook_out", _mlp_hook(mlp_edits[layer])))
            tokens = task.clean.repeat(g, 1)
            with self.gate.hold():
                if full_forward:  # the naive reference: the bridge's own forward and hooks, every logit
                    with self.bridge.hooks(fwd_hooks=bridge_hooks):
                        every = self.bridge(tokens)[:, -1, :].float()
                    logits = every.gather(1, ids.repeat(g, 1))
                else:
                    with self.module_hooks(z_edits=z_edits, mlp_edits=mlp_edits):
                        normed = self._normed_final(tokens)[:, -1, :]
                    logits = self._answer_from_normed(normed, ids.repeat(g, 1))
            diff = (logits[:, 0] - logits[:, 1]).view(g, n)
            out[start:start + g] = (diff if per_prompt else (diff * weights).sum(1)).double().cpu().numpy()
            done += g
            if progress is not None:
                progress(done)
        return out

    def edge_logit_diffs(self, task: LogitDiffTask, edges: EdgeGroups, progress: Callable[[int], None] | None = None,
                         *, runner: BlockRunner | None = None, timer: WorkTimer | None = None) -> np.ndarray:
        """Path patching's edges on the wrapped model: the block runner's input edits, in whole forwards with its
        own attention where checked at load (or on the fast path the evaluator hands)."""
        from headscope.backends.path_runs import edge_lds

        return edge_lds(self, task, edges, runner=runner, timer=timer, progress=progress, route=self.native.swapped)

    def attribution_effects(self, task: LogitDiffTask, method: AblationMethod) -> AttributionEffects:
        info = self.info
        z_values, mlp_values = self.replacement_values(task, method)
        head_effect = np.zeros((info.n_layers, info.n_heads))
        mlp_effect = np.zeros(info.n_layers)
        n = task.n_prompts
        rows = self._rows_per_chunk(task.seq_len, n, "The attribution estimate", per_row_factor=3)  # + grads
        clean_ld = 0.0
        weights_all = task.weights.to(self.device, torch.float32)
        every = range(info.n_layers)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            captured: dict[str, dict[int, torch.Tensor]] = {}
            with self.gate.hold(), torch.enable_grad(), \
                    self.module_hooks(capture_z=every, capture_mlp=every, captured=captured, retain_grad=True,
                                       grad_from_embeddings=True):
                normed = self._normed_final(task.clean[start:stop])[:, -1, :]
                logits = self._answer_from_normed(normed, task.answer_ids[start:stop].to(self.device))
                ld = ((logits[:, 0] - logits[:, 1]) * weights_all[start:stop]).sum()
                ld.backward()
            clean_ld += float(ld.detach())
            with torch.no_grad():
                for layer in every:
                    z = captured["z"][layer]
                    target = _rows_of(z_values[layer], start, stop, z)
                    head_effect[layer] += ((target - z.detach()) * z.grad).sum(dim=(0, 1, 3)).double().cpu().numpy()
                    out = captured["mlp"][layer]
                    target = _rows_of(mlp_values[layer], start, stop, out)
                    mlp_effect[layer] += float(((target - out.detach()) * out.grad).sum())
        return AttributionEffects(clean_ld, None, head_effect, mlp_effect)

    # ------------------------------------------------------------------------------------------------ patterns

    @torch.inference_mode()
    def reduce_attention_patterns(
        self,
        tokens: torch.Tensor,
        reduce: Callable[[int, torch.Tensor], Any],
        layers: Iterable[int] | None = None,
        heads: dict[int, Sequence[int]] | None = None,
    ) -> dict[int, Any]:
        wanted = set(range(self.info.n_layers)) if layers is None else {int(layer) for layer in layers}
        if not wanted:
            return {}
        if self.native_patterns:
            return native_patterns(self, tokens, reduce, wanted, heads)
        return bridge_patterns(self, tokens, reduce, wanted, heads)

    @torch.inference_mode()
    def attention_inputs(self, tokens: torch.Tensor, top_layer: int) -> AttentionInputs | None:
        if not self.native_patterns:
            return None
        return native_attention_inputs(self, tokens, top_layer)

    @property
    def native_patterns(self) -> bool:
        """Whether patterns come from the model's own attention (bridge_patterns.native_patterns): checked against
        the bridge's hook_pattern on first use."""
        if self.checks.native_patterns_ok is None:
            self.prepare_hooks()  # the check needs the bridge, and the native forward's own check made with it
            self.checks.native_patterns()
        return bool(self.checks.native_patterns_ok)

    # ------------------------------------------------------------------------------------------------ weights

    @property
    def family_view(self) -> BridgeView:
        """The bridge as headscope.backends.weights reads it (the definitions shared with every backend)."""
        return BridgeView(self.bridge, self.info.n_heads, self.info.n_kv_heads, self._logit_cap, self.device)

    def mlp0_effective_embedding(self, token_ids: torch.Tensor) -> torch.Tensor:
        with self.gate.hold(), torch.inference_mode():
            return weights.effective_embedding(self.family_view, token_ids)

    def ov_outputs(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        with self.gate.hold(), torch.inference_mode():
            return weights.ov_outputs(self.family_view, layer, resid)

    # ------------------------------------------------------------------------------------------------ readouts
    # (headscope.backends.bridge_readout)

    def read_sites(self, tokens: torch.Tensor, position: int, sites: Sequence[Site], readout: Readout
                   ) -> SiteReadings:
        from headscope.backends.bridge_readout import bridge_read_sites

        return bridge_read_sites(self, tokens, position, sites, readout)

    def unembed_logits(self, resid: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        with self.gate.hold(), torch.inference_mode():
            return weights.unembed_logits(self.family_view, resid, token_ids)


def _tile(values: torch.Tensor | None, groups: int, n_prompts: int) -> torch.Tensor | None:
    """Replacement values laid out for group-major rows: [1, ...] stays (broadcast); [prompt, ...] repeats per group."""
    if values is None or values.shape[0] == 1:
        return values
    if values.shape[0] != n_prompts:
        raise ValueError(f"replacement values for {values.shape[0]} prompts, batch has {n_prompts}")
    return values.repeat(groups, *([1] * (values.ndim - 1)))


def _rows_of(values: torch.Tensor | None, start: int, stop: int, like: torch.Tensor) -> torch.Tensor:
    if values is None:
        return torch.zeros_like(like)
    if values.shape[0] == 1:
        return values.expand_as(like)
    return values[start:stop]


def _z_hook(edit: ZEdit) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    return lambda z, hook: apply_z_edit(z, edit)


def _mlp_hook(edit: MlpEdit) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    return lambda out, hook: apply_mlp_edit(out, edit)


class BridgeBlockRunner:
    """The bridge's blocks run one at a time (the fast path)."""

    def __init__(self, backend: BridgeBackend) -> None:
        self.backend = backend
        self.bridge = backend.bridge
        self.last_position_ok = False  # set by the backend's check at load
        self.max_seq_len = attention_span_limit(backend.hf_model.config)
        self.hf_modules: HfModules | None = None

    @property
    def supports_last_position_only(self) -> bool:
        return self.last_position_ok

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        bridge = self.bridge
        resid = bridge.embed(tokens)
        if hasattr(bridge, "pos_embed") and not hasattr(bridge, "rotary_emb"):
            positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
            resid = resid + bridge.pos_embed(positions)
        return resid

    def context(self, resid: torch.Tensor) -> dict[str, Any]:
        if self.max_seq_len is not None and resid.shape[1] > self.max_seq_len:
            raise InputError(
                f"{self.backend.info.name} attends within a window of {self.max_seq_len} positions in some layers "
                f"(sliding window), which the block-by-block fast path does not apply: prompts of {resid.shape[1]} "
                "tokens run on the general path."
            )
        if not hasattr(self.bridge, "rotary_emb"):
            return {}
        positions = torch.arange(resid.shape[1], device=resid.device).unsqueeze(0)
        return {"position_embeddings": self.bridge.rotary_emb(resid, positions)}

    def run_block(
        self,
        layer: int,
        resid: torch.Tensor,
        context: Any,
        *,
        z_edit: ZEdit | None = None,
        mlp_edit: MlpEdit | None = None,
        input_edits: Sequence[InputEdit] = (),
        capture_z: bool = False,
        capture_mlp: bool = False,
        capture_pattern: bool = False,
        last_position_only: bool = False,
    ) -> BlockOutput:
        backend = self.backend
        captured: dict[str, dict[int, torch.Tensor]] = {}
        pattern: dict[str, torch.Tensor] = {}

        def on_pattern(value: torch.Tensor, hook: Any) -> None:
            pattern["pattern"] = value.detach()

        block = self.bridge.blocks[layer]
        hooks = backend.module_hooks(
            z_edits={layer: z_edit} if z_edit is not None else None,
            mlp_edits={layer: mlp_edit} if mlp_edit is not None else None,
            capture_z=[layer] if capture_z else (),
            capture_mlp=[layer] if capture_mlp else (),
            captured=captured,
            cut_last_position=[layer] if last_position_only else (),
        )
        # the bridge's attention only where its pattern is wanted; elsewhere the model's own (checked at load)
        keep = range(backend.info.n_layers) if capture_pattern else [i for i in range(backend.info.n_layers)
                                                                     if i != layer]
        inputs = input_edit_hooks(self._modules(), layer, input_edits) if input_edits else contextlib.nullcontext()
        with hooks, inputs, backend.native.swapped(keep=keep):
            if capture_pattern:
                with self.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", on_pattern)]):
                    out = block(resid, **context)
            else:
                out = block(resid, **context)
        if isinstance(out, tuple):
            out = out[0]
        return BlockOutput(out, captured["z"].get(layer), captured["mlp"].get(layer), pattern.get("pattern"))

    def answer_logits(self, resid_last: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.backend.answer_from_resid(resid_last, ids)

    def _modules(self) -> HfModules:
        """The transformers modules input edits hook (made at first need)."""
        if self.hf_modules is None:
            info = self.backend.info
            self.hf_modules = HfModules(self.backend.hf_model, info.n_heads, info.n_kv_heads, info.d_head)
        return self.hf_modules


def attention_span_limit(config: Any) -> int | None:
    """The longest sequence on which every layer's attention mask is plainly causal, or None (no limit).

    Narrower masks (sliding windows: Gemma-2/3, Mistral, some Qwen2; chunked attention: Llama-4) are built by the
    model's own forward loop, which the block loop bypasses, so beyond this length the fast path would attend too
    far back."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(config, "sliding_window", None)
    chunk = getattr(config, "attention_chunk_size", None)
    types = getattr(config, "layer_types", None)
    limits = []
    if types is None:
        if window and getattr(config, "use_sliding_window", True):
            limits.append(int(window))
    else:
        if window and "sliding_attention" in types:
            limits.append(int(window))
        if chunk and "chunked_attention" in types:
            limits.append(int(chunk))
    return min(limits) if limits else None


# Families whose config reading is the bridge's (tests/model/test_deferred_hooks.py checks each): the app serves their
# plain forwards before the bridge is made. Others (families not checked) are wrapped at load, so nothing is computed
# before TransformerLens has said how it reads them.
HOOKS_LATER_FAMILIES = frozenset({"llama", "mistral", "gemma2", "gpt2"})


def open_local(model: LocalModel) -> BridgeBackend:
    """The bridge backend around a model loaded here (BackendSpec "bridge"). Where model.hooks_later and the family
    reads the same from its config (HOOKS_LATER_FAMILIES), TransformerLens' wrapping is left to first need, so the
    app's prompt tester is usable seconds sooner; otherwise the model is wrapped now and a model TransformerLens
    cannot serve is refused now."""
    hf_model = model.hf_model
    info = config_info(hf_model, model.tokenizer, name=model.name, source=model.source, revision=model.revision,
                       placement=model.placement, n_params=model.n_params,
                       load_seconds=time.perf_counter() - model.started, bos=model.bos)
    backend = BridgeBackend(hf_model, model.tokenizer, info, model.placement)
    if not (model.hooks_later and getattr(hf_model.config, "model_type", None) in HOOKS_LATER_FAMILIES):
        model.report("Wrapping the model in TransformerLens' TransformerBridge", 0.9)
        backend.prepare_hooks()
        backend.info = dataclasses.replace(backend.info, load_seconds=time.perf_counter() - model.started)
    return backend


def config_info(hf_model: Any, tokenizer: Any, *, name: str, source: str, revision: str, placement: Placement,
                n_params: int, load_seconds: float, bos: BosPolicy | None = None) -> ModelInfo:
    """ModelInfo read off a transformers model's config, before any bridge; bos: the model's BOS policy (default:
    decided here from the tokenizer and config, as the loader does)."""
    config = hf_model.config
    bos = bos if bos is not None else decide_bos(tokenizer, config)
    return config_model_info(config, config_dims(config), bos, name=name, source=source, revision=revision,
                             n_params=n_params, device=placement.device, dtype=placement.dtype_name,
                             memory_bytes=resident_bytes(hf_model), load_seconds=load_seconds, backend="bridge",
                             architecture=architecture(hf_model))


__all__ = ["HOOKS_LATER_FAMILIES", "BridgeBackend", "BridgeBlockRunner", "attention_span_limit", "config_info",
           "open_local"]
