"""The TransformerLens backend: TransformerBridge over a local Hugging Face model.

Hooks are the bridge's own hook points (`blocks.L.attn.hook_z` = the output projection's input, per head;
`blocks.L.mlp.hook_out`), and weights are read through TransformerLens' public `W_V`, `W_O`, `b_V`, `b_O`, `W_U`, `b_U`,
which have one layout for every architecture (GPT-2's Conv1D stores its matrices transposed; reading a module's
`weight` directly would silently give wrong numbers there).

The fast path (`block_runner`) runs `bridge.blocks[L]` one at a time. It is offered only when, at load, a short input
run block by block gives the bridge's own full-forward logits; otherwise the engines use the general path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from headscope.backends.base import (
    AblationGroups,
    AttributionEffects,
    Backend,
    BlockOutput,
    DirectLogits,
    LensLogits,
    LocalModel,
    LogitDiffTask,
    MlpEdit,
    ModelInfo,
    NextTokenSummary,
    Placement,
    ZEdit,
    config_dims,
    config_model_info,
    resident_bytes,
)
from headscope.backends.bos import BosPolicy, decide_bos
from headscope.backends.bridge_patterns import bridge_patterns, native_patterns
from headscope.backends.bridge_routes import (  # noqa: F401  (HAND_OVER_AFTER_SECONDS: re-exported for tests)
    HAND_OVER_AFTER_SECONDS,
    LayerTurns,
    NativeAttention,
    StopForward,
)
from headscope.component import Component
from headscope.errors import InputError, ModelLoadError
from headscope.memory import block_bytes_per_token, plan_chunks

if TYPE_CHECKING:
    from headscope.methods import AblationMethod

UNEMBED_CHUNK_TOKENS = 512  # positions unembedded at a time: a long prompt never holds [pos, vocab] at once
# The routes a load-time check may keep off (named in ModelInfo.fallbacks with the reason)
FAST_PATH = "Fast path (block-by-block sweeps)"
LAST_POSITION = "Last-position cut of the fast path's last block"
NATIVE_ATTENTION = "Model's own attention kernel for plain forwards"
NATIVE_PATTERNS = "Attention patterns from the model's own kernel"


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
        self._bridge: Any | None = None
        self._ready = False  # the bridge made and its fast paths checked
        self._boot_error: ModelLoadError | None = None
        self._booting: threading.Thread | None = None
        self._booting_lock = threading.Lock()
        self._served_before_hooks = False  # a plain forward ran before the bridge: its identity may not change
        self._check_fast_path = check_fast_path
        self._logit_cap = config_dims(hf_model.config).logit_cap
        self._runner: BridgeBlockRunner | None = None
        self._replacement_memo: tuple[Any, Any] | None = None
        self.native = NativeAttention(hf_model)  # the model's own attention kernel for plain forwards
        self.turns = LayerTurns(self.gate, self.native, info.n_layers)  # progress and hand-overs between layers
        # None: not checked yet (checked on first use, to keep it off the start); without fast paths: never
        self._native_patterns_ok: bool | None = None if check_fast_path else False
        self.pattern_route_error: float | str | None = None  # the check's max difference, or why it failed
        self.fast_path_error: float | None = None
        self._fallbacks: dict[str, str] = {}  # route -> why a load-time check kept it off (ModelInfo.fallbacks)

    # ------------------------------------------------------------------------------------------------ the bridge

    @property
    def bridge(self) -> Any:
        """The TransformerBridge around the model, made (blocking) if it is not yet."""
        if not self._ready:
            self.prepare_hooks()
        return self._bridge

    @property
    def hooks_ready(self) -> bool:
        return self._ready

    def prepare_hooks(self) -> None:
        """Make the bridge and check the fast paths against it. The import runs outside the gate (other sessions keep
        using the model meanwhile); wrapping the model changes its modules, so it holds the gate. A failure is kept
        and raised again on every later call."""
        if self._ready:
            return
        if self._boot_error is not None:
            raise self._boot_error
        import transformer_lens.model_bridge  # noqa: F401  (≈ 3 s the first time; no model is touched)

        with self.gate.job(f"TransformerLens' set-up on {self.info.name} (once per model)"), self.gate.hold():
            # _bridge is set but not ready only while this very thread runs _boot (its checks use `bridge`)
            if self._bridge is None and self._boot_error is None:
                try:
                    self._boot()
                except ModelLoadError as error:
                    self._boot_error = error
                except Exception as error:  # anything else TransformerLens or a check raises: hooks stay off
                    self._boot_error = ModelLoadError(
                        f"Setting up TransformerLens' hooks on {self.info.name} failed: {_first_line(error)}. The "
                        "prompt tester still works; for the other pages load the model with the nnsight backend.")
            if self._boot_error is not None:
                raise self._boot_error

    def prepare_hooks_in_background(self) -> None:
        with self._booting_lock:  # several sessions may ask at once: one thread
            if self._ready or self._boot_error is not None or self._booting is not None:
                return

            def boot() -> None:
                with contextlib.suppress(ModelLoadError):  # kept in _boot_error: prepare_hooks raises it
                    self.prepare_hooks()

            # not a daemon: a process ending meanwhile waits the few seconds for it, instead of being aborted by
            # torch while the thread is in the middle of a forward
            # daemon=False said outright: a thread inherits its starter's flag, and Streamlit's script threads are
            # daemons (the process then aborted, "terminate called without an active exception", on SIGTERM)
            self._booting = threading.Thread(target=boot, name=f"hooks for {self.info.name}", daemon=False)
            self._booting.start()

    def _boot(self) -> None:
        """Wrap the model (gate held), take the bridge's reading of the model's identity, run the fast-path checks."""
        info = self.info
        bridge = make_bridge(self._hf_model, self.tokenizer, info.name, self.placement)
        # TransformerLens' own string APIs (to_tokens, detect_head) follow the model's BOS policy too; headscope
        # itself feeds the bridge explicit token tensors only
        bridge.cfg.default_prepend_bos = self.prepends_bos
        read = bridge_info(bridge, name=info.name, source=info.source, revision=info.revision,
                           placement=self.placement, n_params=info.n_params, load_seconds=info.load_seconds,
                           bos_token=info.bos_token, bos_rule=info.bos_rule)
        cap = max(float(getattr(bridge.cfg, "output_logits_soft_cap", 0) or 0), 0.0)  # TransformerLens: -1 for none
        differences = [f"{field} {getattr(info, field)!r} vs {getattr(read, field)!r}" for field in IDENTITY_FIELDS
                       if getattr(info, field) != getattr(read, field)]
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
        self._bridge = bridge
        self.native.attach(bridge)
        if self._check_fast_path:
            self._check_native()
            self._runner = self._checked_runner()
            if self._runner is None and self.native.ok:  # try the block loop on the bridge's own attention
                self.native.ok = False
                self._runner = self._checked_runner()
                self._check_native()
        self._ready = True

    # ------------------------------------------------------------------------------------------------ basics

    @property
    def hf_model(self) -> Any:
        return self._hf_model

    @property
    def block_runner(self) -> BridgeBlockRunner | None:
        self.prepare_hooks()
        return self._runner

    def _fall_back(self, route: str, why: str | None) -> None:
        """Record (why given) or clear (None) that a load-time check kept `route` off, in ModelInfo.fallbacks: the
        model card says which slower route runs and why, instead of the check swallowing it."""
        if why is None:
            self._fallbacks.pop(route, None)
        else:
            self._fallbacks[route] = f"{route} off: {why}"
        self.info = dataclasses.replace(self.info, fallbacks=tuple(self._fallbacks.values()))

    def _checked_runner(self) -> BridgeBlockRunner | None:
        """The block loop, if it reproduces the bridge's own forward on a short input (else None: general path)."""
        runner = BridgeBlockRunner(self)
        vocab = min(self.info.vocab_size, len(self.tokenizer))
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, vocab, (2, 7), generator=generator).to(self.device)
        ids = torch.randint(0, vocab, (2, 5), generator=generator).to(self.device)
        tolerance = 1e-4 if self.dtype == torch.float32 else 2e-2
        last = self.info.n_layers - 1
        try:
            with self.gate.hold(), torch.inference_mode():
                reference = self.bridge(tokens)[:, -1, :].float().gather(1, ids)
                scale = float(reference.abs().max()) or 1.0
                resid = runner.embed(tokens)
                context = runner.context(resid)
                for layer in range(last):
                    resid = runner.run_block(layer, resid, context).resid
                full = runner.run_block(last, resid, context).resid
                mine = runner.answer_logits(full[:, -1, :], ids)
                self.fast_path_error = float((mine - reference).abs().max()) / scale
                if self.fast_path_error > tolerance:
                    self._fall_back(FAST_PATH, f"the block loop's logits differ from the bridge's by "
                                               f"{self.fast_path_error:.2g} (relative; tolerance {tolerance:g})")
                    return None
                try:
                    cut = runner.run_block(last, resid, context, last_position_only=True).resid
                    cut_error = float((runner.answer_logits(cut[:, -1, :], ids) - reference).abs().max()) / scale
                    runner.last_position_ok = cut_error <= tolerance
                    self._fall_back(LAST_POSITION, None if runner.last_position_ok else
                                    f"differs from the full last block by {cut_error:.2g} (relative)")
                except Exception as error:  # TransformerLens' block refused the cut: the whole last block runs
                    runner.last_position_ok = False
                    self._fall_back(LAST_POSITION, _error_line(error))
        except Exception as error:  # the block loop cannot run this model: the general path serves it
            self._fall_back(FAST_PATH, _error_line(error))
            return None
        self._fall_back(FAST_PATH, None)
        return runner

    def _soft_cap(self, logits: torch.Tensor) -> torch.Tensor:
        if self._logit_cap > 0:
            return self._logit_cap * torch.tanh(logits / self._logit_cap)
        return logits

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
    #
    # Ablations and captures use plain torch hooks on each layer's output projection (its input is z, per head:
    # [batch, pos, n_heads · d_head], head-major in every transformers family) and on the MLP module (its output).
    # They fire the same whether the bridge's attention or the model's own runs, so hooked runs can use the model's
    # own attention kernel too (see _native_attention).

    @contextlib.contextmanager
    def module_hooks(
        self,
        *,
        z_edits: dict[int, ZEdit] | None = None,
        mlp_edits: dict[int, MlpEdit] | None = None,
        capture_z: Iterable[int] = (),
        capture_mlp: Iterable[int] = (),
        captured: dict[str, dict[int, torch.Tensor]] | None = None,
        retain_grad: bool = False,
        grad_from_embeddings: bool = False,
        cut_last_position: Iterable[int] = (),
    ) -> Iterator[None]:
        """Hooks for one forward: edits, captures (into captured["z"][layer], captured["mlp"][layer]), gradients
        retained on them, embeddings made to require grad, and the output projection and MLP of some layers cut to
        the last position."""
        z_edits, mlp_edits = z_edits or {}, mlp_edits or {}
        capture_z, capture_mlp, cut = set(capture_z), set(capture_mlp), set(cut_last_position)
        store = captured if captured is not None else {}
        store.setdefault("z", {})
        store.setdefault("mlp", {})
        n_heads, d_head = self.info.n_heads, self.info.d_head
        handles = []

        def edited(kind: str, layer: int, act: torch.Tensor, edits: dict, apply: Callable, capture: set[int]
                   ) -> torch.Tensor:
            """act with this layer's edit applied (its values cut to the last position where the layer is cut),
            its gradient retained and captured, as asked."""
            if layer in edits:
                edit = edits[layer]
                if layer in cut and edit.values is not None:
                    edit = dataclasses.replace(edit, values=edit.values[:, -1:])
                act = apply(act, edit)
            if retain_grad and act.requires_grad:
                act.retain_grad()
            if layer in capture:
                store[kind][layer] = act
            return act

        def z_hook(layer: int) -> Callable:
            def hook(module: Any, args: tuple) -> tuple:
                flat = args[0]
                if layer in cut:  # contiguous: a strided [batch, 1, ·] input would run as batch tiny products
                    flat = flat[:, -1:].contiguous()
                z = edited("z", layer, flat.view(*flat.shape[:-1], n_heads, d_head), z_edits, apply_z_edit,
                           capture_z)
                return (z.reshape(flat.shape), *args[1:])
            return hook

        def mlp_pre(module: Any, args: tuple) -> tuple:
            return (args[0][:, -1:].contiguous(), *args[1:])

        def mlp_hook(layer: int) -> Callable:
            def hook(module: Any, args: tuple, output: Any) -> Any:
                out = output[0] if isinstance(output, tuple) else output
                out = edited("mlp", layer, out, mlp_edits, apply_mlp_edit, capture_mlp)
                return (out, *output[1:]) if isinstance(output, tuple) else out
            return hook

        try:
            if grad_from_embeddings:
                embeddings = self.hf_model.get_input_embeddings()
                handles.append(embeddings.register_forward_hook(
                    lambda module, args, output: output.detach().requires_grad_(True)))
            for layer in set(z_edits) | capture_z | cut:
                handles.append(self.bridge.blocks[layer].attn.o.original_component.register_forward_pre_hook(
                    z_hook(layer)))
            for layer in cut:
                handles.append(self.bridge.blocks[layer].mlp.register_forward_pre_hook(mlp_pre))
            for layer in set(mlp_edits) | capture_mlp:
                handles.append(self.bridge.blocks[layer].mlp.register_forward_hook(mlp_hook(layer)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    _module_hooks = module_hooks  # the name the ablation primitives use

    def _normed_final(self, tokens: torch.Tensor) -> torch.Tensor:
        """normed[batch, pos, d_model] after the final norm, with whatever hooks are registered, on the fastest
        checked route (the model's own attention kernel where checked at load)."""
        with self._native_attention() as native:
            if native:
                return self._final_normed(tokens)
        return self.final_norm(self._final_resid(tokens))

    def _rows_per_chunk(self, seq_len: int, n_rows: int, what: str, per_row_factor: int = 1) -> int:
        """Sequences per forward within the memory budget (per_row_factor: activations kept per row, e.g. 3 with
        gradients)."""
        unit = block_bytes_per_token(self.info, self.dtype, seq_len) * seq_len * per_row_factor
        return plan_chunks(what, n_rows, unit, self.budget_bytes(), target=self.chunk_target()).per_chunk

    # ------------------------------------------------------------------------------------------------ forward
    #
    # Plain forwards (no hooks) run the model's own attention kernel (SDPA) instead of the bridge's attention, which
    # materializes every [head, dest, src] score to offer hook_pattern: on a 4,000-token prompt that costs several
    # times the rest of the forward. The swap is checked against the bridge's forward at load, and the model is
    # handed over between layers to anyone waiting (the swap undone meanwhile), so a long prompt never blocks the
    # other sessions for its whole forward.

    def _native_attention(self, keep: Iterable[int] = ()) -> contextlib.AbstractContextManager[bool]:
        """NativeAttention.swapped: the model's own attention in every layer but `keep` (False: nothing swapped)."""
        return self.native.swapped(keep)

    def _check_native(self) -> None:
        """Enable the native-attention plain forward only where it gives the bridge's logits (within tolerance)."""
        self.native.ok = True
        vocab = min(self.info.vocab_size, len(self.tokenizer))
        tokens = torch.randint(0, vocab, (2, 11), generator=torch.Generator().manual_seed(1)).to(self.device)
        try:
            with self.gate.hold(), torch.inference_mode():
                reference = self.bridge(tokens).float()
                with self._native_attention() as swapped:
                    if not swapped:
                        raise RuntimeError("nothing to swap")
                    mine = self._unembed_all(self._final_normed(tokens)).float()
            scale = float(reference.abs().max()) or 1.0
            error = float((mine - reference).abs().max()) / scale
            tolerance = 1e-4 if self.dtype == torch.float32 else 2e-2
            ok = error <= tolerance
            why = None if ok else (f"its logits differ from the bridge's by {error:.2g} (relative; tolerance "
                                   f"{tolerance:g})")
        except Exception as failure:  # the swap cannot run this model: the bridge's own attention serves it
            ok, why = False, _error_line(failure)
        self.native.ok = ok
        self._fall_back(NATIVE_ATTENTION, why)

    def _final_normed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.native.final_normed(tokens)

    def _unembed_all(self, normed: torch.Tensor) -> torch.Tensor:
        """logits[..., vocab] from final-normed residuals: W_U, or before the bridge is made the model's own output
        layer (the same matrix and bias)."""
        if not self._ready:
            out = self._hf_model.get_output_embeddings()(normed)
        else:
            out = normed @ self._bridge.W_U
            b_u = getattr(self._bridge, "b_U", None)
            if b_u is not None:
                out = out + b_u
        return self._soft_cap(out)

    def _plain_normed(self, tokens: torch.Tensor, progress: Callable[[float], None] | None = None) -> torch.Tensor:
        """normed[batch, pos, d_model] of a forward with no hooks, on the fastest checked route (before the bridge is
        made: the model as transformers loaded it)."""
        with self.gate.hold():
            if not self._ready:
                self._served_before_hooks = True
                with self.turns.during(progress, hand_over=False):
                    return self._final_normed(tokens)
            with self._native_attention() as native:
                if native:
                    with self.turns.during(progress):
                        return self._final_normed(tokens)
                return self.final_norm(self._final_resid(tokens))

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        with self.gate.hold():
            return self.bridge(tokens).float()  # the bridge applies the model's own soft-capping

    @torch.inference_mode()
    def next_tokens(self, tokens: torch.Tensor, position: int,
                    progress: Callable[[float], None] | None = None) -> NextTokenSummary:
        top_ids, top_logits, top_logprobs = [], [], []
        logits_at = None
        with self.gate.hold():  # one hold: the unembedding follows the forward without queueing again
            normed = self._plain_normed(tokens, progress)[0]  # [pos, d_model]
            for start in range(0, normed.shape[0], UNEMBED_CHUNK_TOKENS):
                chunk = self._unembed_all(normed[start:start + UNEMBED_CHUNK_TOKENS]).float()
                values, ids = chunk.max(-1)
                top_ids.append(ids)
                top_logits.append(values)
                top_logprobs.append(values - torch.logsumexp(chunk, -1))
                if start <= position < start + chunk.shape[0]:
                    logits_at = chunk[position - start].clone()
        assert logits_at is not None
        if progress is not None:
            progress(1.0)
        return NextTokenSummary(logits_at.cpu(), torch.cat(top_ids).cpu(), torch.cat(top_logits).cpu(),
                                torch.cat(top_logprobs).cpu())

    @torch.inference_mode()
    def last_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        out = []
        rows = self._rows_per_chunk(tokens.shape[1], tokens.shape[0], "A forward pass")
        for start in range(0, tokens.shape[0], rows):
            normed = self._plain_normed(tokens[start:start + rows])[:, -1, :]
            out.append(self._unembed_all(normed).float())
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
                    self._module_hooks(capture_z=every, capture_mlp=every, captured=captured):
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
    def ablated_logit_diffs(
        self,
        task: LogitDiffTask,
        method: AblationMethod,
        groups: AblationGroups,
        progress: Callable[[int], None] | None = None,
        *,
        full_forward: bool = False,
    ) -> np.ndarray:
        z_values, mlp_values = self.replacement_values(task, method)
        n = task.n_prompts
        groups_per_batch = max(1, self._rows_per_chunk(task.seq_len, n * len(groups), "An ablated forward pass") // n)
        weights = task.weights.to(self.device, torch.float32)
        ids = task.answer_ids.to(self.device)
        out = np.zeros(len(groups))
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
                    with self._module_hooks(z_edits=z_edits, mlp_edits=mlp_edits):
                        normed = self._normed_final(tokens)[:, -1, :]
                    logits = self._answer_from_normed(normed, ids.repeat(g, 1))
            diff = (logits[:, 0] - logits[:, 1]).view(g, n)
            out[start:start + g] = (diff * weights).sum(1).double().cpu().numpy()
            done += g
            if progress is not None:
                progress(done)
        return out

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
                    self._module_hooks(capture_z=every, capture_mlp=every, captured=captured, retain_grad=True,
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
            return self._native_patterns(tokens, reduce, wanted, heads)
        return self._bridge_patterns(tokens, reduce, wanted, heads)

    @property
    def native_patterns(self) -> bool:
        """Whether patterns come from the model's own attention (_native_patterns): checked against the bridge's
        hook_pattern on first use."""
        if self._native_patterns_ok is None:
            self.prepare_hooks()  # the check needs the bridge, and the native forward's own check made with it
            self._check_native_patterns()
        return bool(self._native_patterns_ok)

    def _bridge_patterns(self, tokens: torch.Tensor, reduce: Callable[[int, torch.Tensor], Any], wanted: set[int],
                         heads: dict[int, Sequence[int]] | None) -> dict[int, Any]:
        return bridge_patterns(self, tokens, reduce, wanted, heads)

    def _native_patterns(self, tokens: torch.Tensor, reduce: Callable[[int, torch.Tensor], Any], wanted: set[int],
                         heads: dict[int, Sequence[int]] | None) -> dict[int, Any]:
        return native_patterns(self, tokens, reduce, wanted, heads)

    def _check_native_patterns(self) -> None:
        """Enable the native pattern route only where it gives hook_pattern's patterns (every layer, every head)."""
        self._native_patterns_ok = False
        if not self.native.ok:
            return
        vocab = min(self.info.vocab_size, len(self.tokenizer))
        tokens = torch.randint(0, vocab, (1, 9), generator=torch.Generator().manual_seed(2)).to(self.device)
        layers = set(range(self.info.n_layers))

        def keep(layer: int, pattern: torch.Tensor) -> torch.Tensor:
            return pattern.float().clone()

        try:
            with torch.inference_mode():
                reference = self._bridge_patterns(tokens, keep, layers, None)
                mine = self._native_patterns(tokens, keep, layers, None)
            tolerance = 1e-5 if self.dtype == torch.float32 else 3e-2  # half: the eager reference rounds its scores
            if reference.keys() != mine.keys() or any(mine[k].shape != reference[k].shape for k in layers):
                raise RuntimeError("the routes returned different layers or shapes")
            self.pattern_route_error = max(float((mine[k] - reference[k]).abs().max()) for k in layers)
            self._native_patterns_ok = self.pattern_route_error <= tolerance
            self._fall_back(NATIVE_PATTERNS, None if self._native_patterns_ok else
                            f"its patterns differ from hook_pattern's by {self.pattern_route_error:.2g}")
        except Exception as error:  # any failure keeps the bridge's route (hook_pattern)
            self.pattern_route_error = repr(error)[:300]
            self._native_patterns_ok = False
            self._fall_back(NATIVE_PATTERNS, _error_line(error))

    # ------------------------------------------------------------------------------------------------ weights

    def embedding_rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The embedding of tokens token_ids[n] (with the model's own embedding scale) -> [n, d_model]."""
        return self.bridge.embed(token_ids.to(self.device).unsqueeze(0)).squeeze(0)

    def mlp0_effective_embedding(self, token_ids: torch.Tensor) -> torch.Tensor:
        with self.gate.hold(), torch.inference_mode():
            embedded = self.embedding_rows(token_ids).unsqueeze(0)  # [1, n, d_model]
            block = self.bridge.blocks[0]
            mlp_out = block.mlp(_block_norm(block, "ln2", embedded))
            return (embedded + _block_norm(block, "ln2_post", mlp_out)).squeeze(0)

    def ov_outputs(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        info = self.info
        with self.gate.hold(), torch.inference_mode():
            block = self.bridge.blocks[layer]
            normed = _block_norm(block, "ln1", resid.unsqueeze(0)).squeeze(0)  # [n, d_model]
            attn = block.attn
            w_v, w_o = attn.W_V, attn.W_O  # [kv, d_model, d_head], [head, d_head, d_model]
            kv_of_head = torch.arange(info.n_heads, device=w_v.device) // info.heads_per_kv
            values = torch.einsum("nd,hde->hne", normed.to(w_v.dtype), w_v[kv_of_head])  # [head, n, d_head]
            b_v = getattr(attn, "b_V", None)
            if b_v is not None:
                values = values + b_v[kv_of_head].unsqueeze(1)
            out = torch.einsum("hne,hed->hnd", values, w_o)
            b_o = getattr(attn, "b_O", None)
            if b_o is not None:
                out = out + b_o / info.n_heads
            # A norm after attention (Gemma-2, OLMo-2): each head's output through it on its own, as if it were the
            # layer's whole attention output (the norm's gain reaches the residual; its scale leaves the argmax of
            # final-norm logits unchanged).
            return _block_norm(block, "ln1_post", out)

    # ------------------------------------------------------------------------------------------------ readouts
    # (headscope.backends.bridge_readout)

    def direct_logits(self, tokens: torch.Tensor, position: int, token_ids: torch.Tensor) -> DirectLogits:
        from headscope.backends.bridge_readout import bridge_direct_logits

        return bridge_direct_logits(self, tokens, position, token_ids)

    def component_direct_logits(self, tokens: torch.Tensor, position: int, component: Component) -> torch.Tensor:
        from headscope.backends.bridge_readout import bridge_component_logits

        return bridge_component_logits(self, tokens, position, component)

    def lens_logits(self, tokens: torch.Tensor, position: int, token_ids: torch.Tensor) -> LensLogits:
        from headscope.backends.bridge_readout import bridge_lens

        return bridge_lens(self, tokens, position, token_ids)

    def unembed_logits(self, resid: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        with self.gate.hold(), torch.inference_mode():
            normed = self.final_norm(resid)
            if token_ids is None:
                w_u = self.bridge.W_U
                out = normed.to(w_u.dtype) @ w_u
                b_u = getattr(self.bridge, "b_U", None)
                if b_u is not None:
                    out = out + b_u
            else:
                columns, bias = self.unembed_columns(token_ids)
                out = normed.to(columns.dtype) @ columns.T
                if bias is not None:
                    out = out + bias
            return self._soft_cap(out.float())


def _block_norm(block: Any, name: str, x: torch.Tensor) -> torch.Tensor:
    """A block's norm `name` ("ln1", "ln2", or the post-norms "ln1_post", "ln2_post") applied to x, or x itself where
    the architecture has no such norm (pre-norms are absent in OLMo-2, post-norms in most families)."""
    norm = getattr(block, name, None)
    return norm(x) if isinstance(norm, torch.nn.Module) else x


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


def apply_z_edit(z: torch.Tensor, edit: ZEdit) -> torch.Tensor:
    """z[batch, pos, head, d_head] with the edited heads replaced (zeros where values is None)."""
    mask = edit.rows.to(z.device)[:, None, :, None]
    values = torch.zeros((), dtype=z.dtype, device=z.device) if edit.values is None else edit.values.to(z)
    return torch.where(mask, values, z)


def apply_mlp_edit(out: torch.Tensor, edit: MlpEdit) -> torch.Tensor:
    mask = edit.rows.to(out.device)[:, None, None]
    values = torch.zeros((), dtype=out.dtype, device=out.device) if edit.values is None else edit.values.to(out)
    return torch.where(mask, values, out)


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
        with hooks, backend.native.swapped(keep=keep):
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


def bridge_info(bridge: Any, *, name: str, source: str, revision: str, placement: Placement, n_params: int,
                load_seconds: float, bos_token: str | None, bos_rule: str, backend: str = "bridge") -> ModelInfo:
    """ModelInfo read off a bridge's config; the BOS is the model's policy (headscope.backends.bos), not
    TransformerLens' per-family default."""
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    return ModelInfo(
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
        dtype=placement.dtype_name,
        memory_bytes=resident_bytes(bridge),
        load_seconds=load_seconds,
        bos_token=bos_token,
        backend=backend,
        bos_rule=bos_rule,
        architecture=str(getattr(cfg, "architecture", "") or ""),
    )


# What a model's identity must agree on between its config and TransformerLens' reading of it (results depend on it)
IDENTITY_FIELDS = ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model", "d_mlp", "n_ctx", "vocab_size")
SUPPORTED_FAMILIES_HINT = "Llama, Mistral, Qwen2, Gemma, GPT-2, GPT-NeoX/Pythia, Phi, OLMo, …"

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
                             architecture=_architecture(hf_model))


def _architecture(hf_model: Any) -> str:
    """The model's architecture names from its config, else its class name."""
    return ", ".join(getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])


def _error_line(error: BaseException) -> str:
    """An exception as a fallback's reason: its type and first line."""
    return f"{type(error).__name__}: {_first_line(error)}"


def _first_line(error: BaseException) -> str:
    """An exception's first line (at most 300 characters), or its type where it has no message."""
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__


def make_bridge(hf_model: Any, tokenizer: Any, name: str, placement: Placement) -> Any:
    """The TransformerBridge around a loaded model, or a ModelLoadError saying why TransformerLens cannot serve it."""
    architecture = _architecture(hf_model)
    if not bridge_supports(hf_model.config):
        raise ModelLoadError(
            f"TransformerLens has no adapter for {name}'s architecture ({architecture}): choose a model of a "
            f"family it supports ({SUPPORTED_FAMILIES_HINT}) or the nnsight backend."
        )
    try:
        return wrap_in_bridge(hf_model, tokenizer, name, placement)
    except Exception as error:
        raise ModelLoadError(
            f"TransformerLens cannot serve {name} (architecture {architecture}): {_first_line(error)}. Choose a "
            f"model of a family TransformerLens supports ({SUPPORTED_FAMILIES_HINT}) or the nnsight backend."
        ) from error


def bridge_supports(config: Any) -> bool:
    """Whether TransformerLens has an architecture adapter for a transformers config (its own look-up, read only)."""
    from transformer_lens.model_bridge.sources.transformers import determine_architecture_from_hf_config

    try:
        determine_architecture_from_hf_config(config)
    except ValueError:
        return False
    return True


def wrap_in_bridge(hf_model: Any, tokenizer: Any, name: str, placement: Placement) -> Any:
    """TransformerBridge around an already loaded model (no hub call)."""
    import contextlib

    from transformer_lens.model_bridge import TransformerBridge

    with contextlib.redirect_stdout(None):
        bridge = TransformerBridge.boot_transformers(
            name,
            hf_model=hf_model,
            tokenizer=tokenizer,
            device=None if placement.device_map else placement.device,
            dtype=placement.dtype,
        )
    bridge.eval()
    bridge.requires_grad_(False)
    return bridge


__all__ = ["HOOKS_LATER_FAMILIES", "BridgeBackend", "BridgeBlockRunner", "apply_mlp_edit", "apply_z_edit",
           "attention_span_limit", "bridge_info", "bridge_supports", "config_info", "make_bridge", "open_local",
           "wrap_in_bridge"]
