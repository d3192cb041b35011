"""The backend contract: the primitives every headscope engine is built from.

A backend wraps one loaded model (TransformerLens' TransformerBridge, nnsight locally, nnsight on NDIF). Engines
(predict, ablation, circuit, scores, patterns) call only what is declared here; nothing outside a backend touches
hooks, modules or weights. Each primitive says what it returns, with shapes in names or docstrings
(`pattern[batch, head, dest, src]`). Positions always count the model's real input, BOS included.

Interventions are data (the vocabulary below: Site, ValueSource, Edit, InterventionGroup). Two paths run them:
- the general path, `logit_diffs(task, groups)`: "run these InterventionGroups, return the LD per group (per prompt
  optionally)", one batched forward in which each group of rows carries its own edits. Every backend offers it,
  remote ones included (the replacement values never leave the backend). Backends lower the groups to a dense mask
  (AblationGroups, `masked_logit_diffs`) for speed, and path patching's edges to EdgeGroups (`edge_logit_diffs`);
  that lowering is theirs, no engine states masks or edges;
- the fast path, `block_runner` (optional): block-by-block execution from a given residual, so the evaluator
  (headscope.engine) can reuse the residual stream below the layer a group edits. A backend offers it only where it
  has checked, at load, that its block loop reproduces its own full forward.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from headscope.backends import BACKENDS
from headscope.backends.bos import BosPolicy
from headscope.backends.interventions import (
    AblationGroups,
    EdgeGroups,
    InterventionGroup,
    LogitDiffTask,
    Site,
    SiteKind,
    SourceKind,
    UnsupportedIntervention,
)
from headscope.memory import activation_budget, chunk_target_bytes
from headscope.methods import AblationMethod, method_for_source
from headscope.sharing import ModelGate

if TYPE_CHECKING:
    from headscope.backends.attention_inputs import AttentionInputs


@dataclass(frozen=True)
class Placement:
    """Where the weights go: one torch device, or an accelerate device map over several GPUs."""

    device: str  # the device inputs are sent to ("cpu", "cuda:0", ...)
    device_map: str | None  # "auto" when the model is split over several GPUs
    dtype: torch.dtype

    @property
    def label(self) -> str:
        where = f"{torch.cuda.device_count()} GPUs" if self.device_map else self.device
        return f"{where}, {str(self.dtype).removeprefix('torch.')}"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


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
    bos_token: str | None  # the token every input starts with (the model's BosPolicy), or None
    backend: str = "bridge"  # "bridge", "nnsight" or "ndif" (nnsight, remote)
    architecture: str = ""
    bos_rule: str = ""  # why the input does or does not start with BOS (BosPolicy.reason)
    # load-time checks that chose a slower route, each with why (e.g. the bridge's block loop did not match)
    fallbacks: tuple[str, ...] = ()

    @property
    def heads_per_kv(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def backend_label(self) -> str:
        spec = BACKENDS.get(self.backend)
        return spec.label if spec is not None else self.backend


ProgressCallback = Callable[[str, float], None]  # a load stage's description and a fraction in [0, 1]


@dataclass(frozen=True)
class LocalModel:
    """A transformers model loaded on this machine, as the loader hands it to a local backend's factory
    (BackendSpec.factory). hooks_later: the backend may leave its own set-up to first need (the app's choice)."""

    hf_model: Any
    tokenizer: Any
    name: str
    source: str
    revision: str
    placement: Placement
    n_params: int
    started: float  # time.perf_counter() when the load began
    bos: BosPolicy
    progress: ProgressCallback | None = None
    hooks_later: bool = False

    def report(self, stage: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(stage, fraction)


@dataclass(frozen=True)
class ConfigDims:
    """A model's sizes as its transformers config states them."""

    n_layers: int
    n_heads: int
    n_kv: int
    d_head: int
    d_model: int
    d_mlp: int
    n_ctx: int
    vocab: int
    logit_cap: float  # final-logit soft-capping (Gemma-2), 0 for none


def config_dims(config: Any) -> ConfigDims:
    """Sizes read off a transformers config (GPT-2's n_embd/n_head/... are mapped by its attribute_map)."""
    d_model = int(config.hidden_size)
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    d_head = int(getattr(config, "head_dim", None) or d_model // n_heads)
    d_mlp = int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d_model)
    return ConfigDims(int(config.num_hidden_layers), n_heads, n_kv, d_head, d_model, d_mlp,
                      int(getattr(config, "max_position_embeddings", 0) or 0), int(config.vocab_size),
                      float(getattr(config, "final_logit_softcapping", None) or 0.0))


def resident_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers, each tensor once (tied weights share one)."""
    unique = {id(t): t for t in list(module.parameters()) + list(module.buffers())}.values()
    return sum(t.numel() * t.element_size() for t in unique)


def config_model_info(config: Any, dims: ConfigDims, bos: BosPolicy, *, name: str, source: str, revision: str,
                      n_params: int, device: str, dtype: str, memory_bytes: int, load_seconds: float, backend: str,
                      architecture: str | None = None) -> ModelInfo:
    """ModelInfo read off a transformers config and the model's BOS policy; architecture defaults to the config's
    `architectures`."""
    return ModelInfo(
        name=name, source=source, revision=revision, n_layers=dims.n_layers, n_heads=dims.n_heads,
        n_kv_heads=dims.n_kv, d_head=dims.d_head, d_model=dims.d_model, d_mlp=dims.d_mlp, n_ctx=dims.n_ctx,
        vocab_size=dims.vocab, n_params=n_params, device=device, dtype=dtype, memory_bytes=memory_bytes,
        load_seconds=load_seconds, bos_token=bos.token if bos.prepend else None, backend=backend,
        bos_rule=bos.reason,
        architecture=architecture if architecture is not None else ", ".join(getattr(config, "architectures", None)
                                                                             or []),
    )


@dataclass(frozen=True)
class AttributionEffects:
    """First-order estimates from one forward and one backward pass: Σ (replacement − activation) · ∂LD/∂activation
    per head (head_effect[layer, head]) and per MLP (mlp_effect[layer]); add clean_ld for the estimated ablated LD."""

    clean_ld: float
    corrupt_ld: float | None
    head_effect: np.ndarray  # [layer, head]
    mlp_effect: np.ndarray  # [layer]


@dataclass(frozen=True)
class NextTokenSummary:
    """The next-token predictions of one prompt: logits_at[vocab] at the chosen position (float32), and at every
    position from top1_start on the top-1 id, its logit and log-probability (top1_id[i], top1_logit[i],
    top1_logprob[i] for position top1_start + i)."""

    logits_at: torch.Tensor
    top1_id: torch.Tensor
    top1_logit: torch.Tensor
    top1_logprob: torch.Tensor
    # with next_tokens' `lens` readout: the residual at the LAST position after the embeddings and after each layer
    # (sites RESID 0..n_layers, in that order) read through it, from the same forward (the logit lens without a
    # second one): values[1, n_layers + 1, k] (and rank / log_norm with rank_ids); None when no lens was asked
    lens: SiteReadings | None = None
    top1_start: int = 0  # next_tokens' top1_from: the positions before it were not unembedded


def check_top1_from(top1_from: int, position: int) -> None:
    """next_tokens' `top1_from` may not pass the chosen position: its logits come from the same unembedding."""
    if not 0 <= top1_from <= position:
        raise ValueError(f"top1_from must be from 0 to the chosen position {position}, got {top1_from}")


class ReadNorm(StrEnum):
    """How a read vector meets the final norm before a readout's directions:

    - NONE: as it is (the vectors themselves, [d_model], when the readout has no directions either);
    - FROZEN: the final norm with its scale frozen from the run's own final residual at that position, without its
      bias: affine, so the reads of the residual's parts add up to the read of the residual (direct logit
      attribution); what the norm and b_U add whatever the input comes back as `SiteReadings.constant`;
    - DECODE: as the model decodes its own last residual: the final norm recomputed on each vector, W_U, b_U and the
      soft cap (the logit lens)."""

    NONE = "none"
    FROZEN = "frozen"
    DECODE = "decode"


@dataclass(frozen=True, eq=False)  # holds tensors: compared by identity
class Readout:
    """The linear readout every read vector goes through inside the backend, so a remote one returns
    [batch, site, k]-sized tensors, never every head's [d_model] output.

    directions: the caller's own directions[batch | 1, k, d_model], or None for the model's unembedding: W_U's rows of
    token_ids[batch, k], or (token_ids None) of the whole vocabulary, read inside the backend through its FamilyView
    (headscope.backends.weights), so no weight leaves a remote model. rank_ids[batch, k] (DECODE over the whole
    vocabulary only): reduce each read to these tokens' logits, their ranks (1 = top) and the logsumexp."""

    norm: ReadNorm = ReadNorm.NONE
    directions: torch.Tensor | None = None
    token_ids: torch.Tensor | None = None
    whole_vocabulary: bool = False
    rank_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        unembeds = self.token_ids is not None or self.whole_vocabulary
        if self.directions is not None and unembeds:
            raise ValueError("A readout reads either the caller's directions or the unembedding, not both.")
        if self.norm is ReadNorm.DECODE and not unembeds:
            raise ValueError("A decoding readout reads through the unembedding.")
        if self.rank_ids is not None and not (self.norm is ReadNorm.DECODE and self.whole_vocabulary):
            raise ValueError("Ranks are over the whole vocabulary as the model decodes it.")

    @property
    def linear(self) -> bool:
        """Whether the readout maps each vector to k numbers (False: the vectors come back as they are)."""
        return self.directions is not None or self.token_ids is not None or self.whole_vocabulary


@dataclass(frozen=True, eq=False)  # holds tensors: compared by identity
class SiteReadings:
    """What `Backend.read_sites` returns for sites read at one position (float32, on the CPU):
    values[batch, site, k] through the readout (or [batch, site, d_model] without one), in the order asked;
    constant[batch, k] (FROZEN readouts): the final norm's bias onto the directions plus b_U, so that the read of a
    residual plus `constant` is the model's own pre-cap logit; rank[batch, site, k] and log_norm[batch, site] (with
    rank_ids): values then holds the rank_ids' logits."""

    sites: tuple[Site, ...]
    values: torch.Tensor
    constant: torch.Tensor | None = None
    rank: torch.Tensor | None = None
    log_norm: torch.Tensor | None = None
    soft_cap: float = 0.0  # the model's final-logit cap (0: none); FROZEN and NONE reads are before it

    def at(self, site: Site) -> torch.Tensor:
        """values[batch, k | d_model] of one site."""
        return self.values[:, self.sites.index(site)]

    def stacked(self, sites: Sequence[Site]) -> torch.Tensor:
        """values[batch, len(sites), ...] of the given sites, in that order."""
        index = {site: i for i, site in enumerate(self.sites)}
        return self.values[:, [index[site] for site in sites]]


# ---------------------------------------------------------------------------------------------------------------
# The optional fast path: blocks run one at a time from a given residual


@dataclass(frozen=True)
class ZEdit:
    """Replace per-head z inside a block: rows[batch, head] (bool) selects which heads of which rows are replaced;
    values[batch | 1, pos, head, d_head] gives their new z, or None for zeros."""

    rows: torch.Tensor
    values: torch.Tensor | None


@dataclass(frozen=True)
class MlpEdit:
    """Replace the MLP output of the rows selected by rows[batch] (bool) with values[batch | 1, pos, d_model] (None:
    zeros)."""

    rows: torch.Tensor
    values: torch.Tensor | None


@dataclass(frozen=True)
class InputEdit:
    """Add delta[batch, pos, d_model] to what some heads' query (key, value) projection reads: the heads selected by
    rows[batch, column] (bool; columns are heads for Q_INPUT, KV groups for K_INPUT / V_INPUT) get
    proj(norm(x + delta)) − proj(norm(x)) added on their slice, x being the residual the block reads and norm its
    attention norm recomputed (frozen_norm: its scale frozen from x instead). Every other reader of x is unchanged:
    a path patching receiver."""

    kind: SiteKind  # Q_INPUT | K_INPUT | V_INPUT
    rows: torch.Tensor
    delta: torch.Tensor
    frozen_norm: bool = False


@dataclass(frozen=True)
class BlockOutput:
    """One block's output residual resid[batch, pos, d_model] and what was captured on the way."""

    resid: torch.Tensor
    z: torch.Tensor | None = None  # z[batch, pos, head, d_head]: per-head attention output before W_O
    mlp_out: torch.Tensor | None = None  # mlp_out[batch, pos, d_model]
    pattern: torch.Tensor | None = None  # pattern[batch, head, dest, src]


class BlockRunner(Protocol):
    """Block-by-block execution (the fast path). Tensors stay on the backend's device."""

    # The longest sequence the block loop reproduces exactly (sliding-window attention), or None for no limit:
    # engines take the general path for longer prompts.
    max_seq_len: int | None

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """resid[batch, pos, d_model] entering block 0 for tokens[batch, pos]."""
        ...

    def context(self, resid: torch.Tensor) -> Any:
        """What every block needs besides the residual (rotary tables, masks) for this sequence length."""
        ...

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
        """Block `layer` on resid[batch, pos, d_model], optionally replacing or capturing z and the MLP output and
        changing what some heads' projections read (input_edits, at most one per kind).

        last_position_only (for the last block, when only the final position's residual is read): the output
        projection and the MLP run on the last position alone (keys and values still see every position); only
        resid[:, -1] of the result is meaningful. A runner may ignore it (`supports_last_position_only`)."""
        ...

    def answer_logits(self, resid_last: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """logits[batch, k] (float32) of tokens ids[batch, k] from final-position residuals resid_last[batch, d_model]
        (final norm and unembedding of only those tokens; soft-capping where the model has it)."""
        ...

    @property
    def supports_last_position_only(self) -> bool:
        """Whether run_block honours last_position_only (checked against the full forward at load)."""
        ...


# ---------------------------------------------------------------------------------------------------------------
# The backend


class Backend(ABC):
    """One loaded model behind the primitives headscope's engines use.

    Concrete here: tokenization (every backend holds a Hugging Face tokenizer) and identity. Abstract: the model
    primitives. Every primitive that runs the model takes `gate` (see headscope.sharing), so sessions sharing one
    loaded model take turns and never interleave hooks.
    """

    name: str = "?"

    def __init__(self, tokenizer: Any, info: ModelInfo, placement: Placement, prepends_bos: bool) -> None:
        self.tokenizer = tokenizer
        self.info = info
        self.placement = placement
        self.prepends_bos = prepends_bos
        self.gate: ModelGate = ModelGate()

    # ------------------------------------------------------------------------------------------------ identity

    @property
    def identity(self) -> dict[str, str]:
        """Everything about the model that changes a result: part of every results-cache key."""
        return {
            "model_source": self.info.source,
            "model_revision": self.info.revision,
            "backend": self.info.backend,
            "dtype": self.info.dtype,
            "device": self.placement.device if not self.placement.device_map else "multi-gpu",
            "bos": self.info.bos_token or "",  # the input's first token (BosPolicy): every position depends on it
        }

    @property
    def device(self) -> torch.device:
        return torch.device(self.placement.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.placement.dtype

    @property
    def hf_model(self) -> Any | None:
        """The underlying transformers model where it is local (tests build independent references from it)."""
        return None

    # ------------------------------------------------------------------------------------------------ readiness

    @property
    def hooks_ready(self) -> bool:
        """Whether every primitive runs without first-use set-up (a backend may load in two steps: the plain
        forwards at once, its hooks on first need)."""
        return True

    def prepare_hooks(self) -> None:
        """Finish any first-use set-up now (blocking); raises ModelLoadError where it cannot be done."""
        return None  # nothing left to set up here

    def prepare_hooks_in_background(self) -> None:
        """Start that set-up on a background thread, if any is left (a failure is raised by prepare_hooks)."""
        return None  # nothing left to set up here

    # ------------------------------------------------------------------------------------------------ tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with no special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character spans of `text` (no special tokens)."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]

    def input_ids(self, text: str) -> list[int]:
        """The model's real input for a prompt: BOS first where the model expects it."""
        return ([self.tokenizer.bos_token_id] if self.prepends_bos else []) + self.encode(text)

    def raw_tokens(self, ids: Iterable[int]) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens([int(i) for i in ids]))

    def special_ids(self) -> set[int]:
        return set(self.tokenizer.all_special_ids)

    def tensor(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """tokens[batch, pos] on the model's input device."""
        return torch.tensor([list(r) for r in rows], dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------------------------------------ forward

    @abstractmethod
    def next_tokens(self, tokens: torch.Tensor, position: int,
                    progress: Callable[[float], None] | None = None, lens: Readout | None = None,
                    top1_from: int = 0) -> NextTokenSummary:
        """Predictions for tokens[1, pos]: the full logits at `position`, the top-1 at every position from
        `top1_from` (≤ position) on: a long prompt's page shows a window of positions, and unembedding all of them
        is about a tenth of its forward (4,320 tokens, 2 cores). `progress(fraction)` may be called while it runs (a
        long prompt takes a while on a CPU). With `lens`, the residual at the last position after the embeddings and
        after each layer is read through that readout inside the backend, from the same forward
        (`NextTokenSummary.lens`, as `read_sites` would give for the RESID sites 0..n_layers at position -1), so the
        prompt tester's logit lens costs no second forward."""

    @abstractmethod
    def last_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """logits[batch, vocab] (float32) at the last position of tokens[batch, pos]."""

    @abstractmethod
    def answer_logits(self, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """logits[batch, k] (float32) at the last position of tokens[batch, pos] of the tokens ids[batch, k]."""

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """logits[batch, pos, vocab] (float32): every position. Costly on long prompts; prefer the primitives above."""
        raise NotImplementedError(f"The {self.name} backend does not return full logits.")

    # ------------------------------------------------------------------------------------------------ ablation

    def logit_diffs(
        self,
        task: LogitDiffTask,
        groups: Sequence[InterventionGroup],
        progress: Callable[[int], None] | None = None,
        *,
        full_forward: bool = False,
        per_prompt: bool = False,
    ) -> np.ndarray:
        """ld[group] (float64): the task's LD with each group's edits applied (the general path), one batched
        forward per chunk of groups. per_prompt: ld[group, prompt] instead, each prompt's own logit[correct] −
        logit[incorrect] (unweighted).

        The edits' values come from the task's corrupted prompts (their ValueSource: zero, mean, paired) and stay
        inside the backend. A group with no edit gives the clean LD. `progress(groups_done)` is called between
        batches, and the model is held only per batch, so other sessions' short requests get in between.
        `full_forward` runs the model's own forward to the logits of every position, as a notebook loop does (the
        naive reference); otherwise a backend may stop at the final residual and compute only the two answer
        logits. Sites the backends run today: head z and MLP outputs at every position, one value source per call;
        or path patching's edges (a sender's change into a receiver's Q/K/V input, or the logits), one edit per
        group (others raise UnsupportedIntervention)."""
        info = self.info
        if EdgeGroups.applies(groups):
            edges = EdgeGroups.from_groups(groups, info.n_layers)
            lds = self.edge_logit_diffs(task, edges, progress)
            return lds if per_prompt else lds @ task.weights.double().cpu().numpy()
        masks, source = AblationGroups.from_groups(groups, info.n_layers, info.n_heads)
        method = method_for_source(source if source is not None else SourceKind.ZERO)
        return self.masked_logit_diffs(task, method, masks, progress, full_forward=full_forward,
                                       per_prompt=per_prompt)

    @abstractmethod
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
        """`logit_diffs` on the groups' dense lowering (each group's components replaced by `method`'s values at
        every position): what each backend implements. Engines call `logit_diffs`."""

    @abstractmethod
    def attribution_effects(self, task: LogitDiffTask, method: AblationMethod) -> AttributionEffects:
        """Attribution patching: every head's and MLP's first-order effect from one forward and one backward pass."""

    def edge_logit_diffs(self, task: LogitDiffTask, edges: EdgeGroups, progress: Callable[[int], None] | None = None,
                         *, runner: BlockRunner | None = None, timer: Any = None) -> np.ndarray:
        """ld[group, prompt] (float64) on the groups' edge lowering (path patching: each edge's LD with only that
        path patched; a group without an edge, the run's own LDs): what a backend that runs path patching
        implements. task.clean is the run, task.corrupted the prompts the senders' replacements come from.
        runner: the evaluator's fast path (this backend's block runner), else whole forwards; timer: the
        evaluator's WorkTimer (totals added here). Engines call `logit_diffs` or the evaluator."""
        raise UnsupportedIntervention(f"Path patching does not run on the {self.info.backend_label} backend yet.")

    @property
    def block_runner(self) -> BlockRunner | None:
        """The fast path where this backend offers it (checked against its own full forward at load), else None."""
        return None

    # ------------------------------------------------------------------------------------------------ patterns

    @abstractmethod
    def reduce_attention_patterns(
        self,
        tokens: torch.Tensor,
        reduce: Callable[[int, torch.Tensor], Any],
        layers: Iterable[int] | None = None,
        heads: dict[int, Sequence[int]] | None = None,
    ) -> dict[int, Any]:
        """reduce(layer, pattern[batch, head, dest, src]) for each layer asked for (all when None), as soon as that
        layer has run; only reductions are kept. Blocks above the highest layer asked for are not run. `heads`
        (optional) names the heads of each layer that will be read: a backend may then return only those rows of
        the head axis, in that order."""

    def attention_inputs(self, tokens: torch.Tensor, top_layer: int) -> AttentionInputs | None:
        """The query, key and mask of layers 0..top_layer on tokens[1, pos] from one forward, so that any of their
        heads' patterns is recomputed without another (a page's head change on a long prompt); None where this
        backend has no such route (patterns then come from reduce_attention_patterns)."""
        return None

    # ------------------------------------------------------------------------------------------------ weights

    @abstractmethod
    def mlp0_effective_embedding(self, token_ids: torch.Tensor) -> torch.Tensor:
        """W_E[t] + MLP0(ln2_0(W_E[t])) for token_ids[n] -> [n, d_model] (layer 0's attention left out)."""

    @abstractmethod
    def ov_outputs(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """out[head, n, d_model] = ln1(resid) · W_V[kv(head)] · W_O[head] (+ b_V·W_O + b_O / n_heads): what each head
        of `layer` writes when it attends fully to a token with residual resid[n, d_model]."""

    def ov_unembed_logits(self, layer: int, resid: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """logits[head, n, len(token_ids)] = unembed_logits(ov_outputs(layer, resid), token_ids): one call, so a
        remote backend returns these logits instead of every head's [n, d_model] output."""
        return self.unembed_logits(self.ov_outputs(layer, resid), token_ids)

    @abstractmethod
    def unembed_logits(self, resid: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """logits[..., vocab or len(token_ids)] (float32) of residual vectors resid[..., d_model] through the final
        norm and W_U (+ b_U)."""

    # ------------------------------------------------------------------------------------------------ readouts
    #
    # One primitive reads sites at one position of one clean forward; direct logit attribution, what a head writes
    # and the logit lens (headscope.logit_attribution, headscope.lens) are engine modules over it.

    def read_sites(self, tokens: torch.Tensor, position: int, sites: Sequence[Site], readout: Readout
                   ) -> SiteReadings:
        """sites (HEAD_OUT, ATTN_BIAS, MLP_OUT, RESID) at `position` of tokens[batch, pos], from one forward, each
        through `readout` inside the backend (SiteReadings)."""
        raise NotImplementedError(f"The {self.name} backend reads no sites.")

    # ------------------------------------------------------------------------------------------------ memory

    def budget_bytes(self) -> int:
        """Memory a computation may use for activations now (see headscope.memory)."""
        return activation_budget(self.placement)

    def chunk_target(self) -> int:
        """Activation bytes per batch past which bigger batches stop running faster here (headscope.memory)."""
        return chunk_target_bytes(self.placement)
