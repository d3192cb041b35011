"""Direct logit attribution (DLA) and what a head writes: which components write the answer into the logits directly.

DLA at the last position, per prompt, then the task's weighted mean: each head's output there (z·W_O[h]; Gemma-2:
through its post-attention norm with the scale frozen from the clean run), each MLP's output (as added to the
residual), the embeddings, each through the final norm with its scale frozen from the clean run, onto
W_U[correct] − W_U[incorrect]. bias_dla holds every constant term (attention-output biases b_O, the final norm's bias,
b_U), so head_dla.sum() + mlp_dla.sum() + embed_dla + bias_dla == clean_ld.

Gemma-2 caps its final logits (cap·tanh(l/cap)): contributions are computed in pre-cap logit space and each answer's
are then scaled by cap·tanh(l/cap)/l of that answer's pre-cap logit l, so they still sum exactly to the capped LD.

A component with a large ablation effect but a small direct effect acts through later components. See
docs/logit-attribution.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from headscope.backends.base import ReadNorm, Readout, SiteReadings
from headscope.backends.interventions import Site, SiteKind
from headscope.component import Component
from headscope.confidence import RankingConfidence, ranking_confidence
from headscope.engine import METRIC, Progress, ProgressCallback, WorkTimer, logit_diff_task, prompt_rows
from headscope.errors import InputError
from headscope.memory import block_bytes_per_token, plan_chunks
from headscope.methods import get_method
from headscope.results_cache import ResultsCache, load_result, stored_or_computed
from headscope.serialize import NOT_STORED, from_payload, to_payload
from headscope.tasks import Dataset, EncodedDataset, prepare_dataset
from headscope.tokens import TokenDescriber

if TYPE_CHECKING:
    from headscope.backends.base import Backend

ENGINE_VERSION = 2  # 2: per-prompt values kept (version-1 entries recompute)
CACHE_KIND = "dla"
MAX_K = 200


@dataclass(frozen=True)
class DlaResult:
    """Direct logit attribution of one task: head_dla[layer, head], mlp_dla[layer], embed_dla and bias_dla in LD
    units (their sum is clean_ld), mean over prompts (the task's weights). per_prompt_*: the same per dataset prompt
    (a repeated prompt computed once, its values repeated), in the dataset's order: [prompt, ...]; their plain mean
    over prompts is the value above."""

    model: str
    task: str
    clean_ld: float
    head_dla: np.ndarray  # [layer, head]
    mlp_dla: np.ndarray  # [layer]
    embed_dla: float
    bias_dla: float
    n_prompts: int
    seconds: float
    cached: bool = False
    seq_len: int = 0
    soft_cap: float = 0.0  # the model's final-logit cap (contributions scaled as the module docstring says), 0: none
    notes: tuple[str, ...] = ()
    per_prompt_head_dla: np.ndarray | None = None  # [prompt, layer, head]
    per_prompt_mlp_dla: np.ndarray | None = None  # [prompt, layer]
    per_prompt_embed_dla: np.ndarray | None = None  # [prompt]
    per_prompt_bias_dla: np.ndarray | None = None  # [prompt]
    per_prompt_clean_ld: np.ndarray | None = None  # [prompt]
    key: dict[str, Any] = field(default_factory=dict, metadata=NOT_STORED)

    json_derived: ClassVar[dict[str, str]] = {"layers": "n_layers", "heads": "n_heads", "total": "total"}

    def confidence(self, **options: Any) -> RankingConfidence | None:
        """Bootstrap intervals of each head's direct effect and its top-10 stability (headscope.confidence, options
        passed on), or None without per-prompt values or with fewer than two prompts."""
        if self.per_prompt_head_dla is None or self.per_prompt_head_dla.shape[0] < 2:
            return None
        return ranking_confidence(self.per_prompt_head_dla, **options)

    @property
    def n_layers(self) -> int:
        return int(self.head_dla.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.head_dla.shape[1])

    @property
    def total(self) -> float:
        """Σ every contribution: equals clean_ld up to rounding (shown beside it as the sum check)."""
        return float(self.head_dla.sum() + self.mlp_dla.sum() + self.embed_dla + self.bias_dla)

    def top_heads(self, k: int) -> list[Component]:
        """The k heads with the largest direct effect (either sign)."""
        order = np.argsort(-np.abs(self.head_dla), axis=None)[:k]
        return [Component(int(i // self.n_heads), int(i % self.n_heads)) for i in order]

    def to_json(self) -> dict[str, Any]:
        return to_payload(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], key: dict[str, Any], cached: bool = True) -> DlaResult:
        return from_payload(cls, data, key=key, cached=cached)


@dataclass(frozen=True)
class TokenEffect:
    """One token a component's output promotes (logit > 0) or suppresses, and its logit contribution."""

    token: str  # the text it stands for, whitespace made visible ('·5')
    token_id: int
    logit: float


@dataclass(frozen=True)
class HeadWrites:
    """The tokens a component's output promotes and suppresses most (largest and smallest logit contributions)."""

    component: Component
    position: int  # in the real input, BOS included; -1 for the OV view (no prompt)
    promoted: tuple[TokenEffect, ...]
    suppressed: tuple[TokenEffect, ...]


# ---------------------------------------------------------------------------------------------------------------
# The arithmetic: per-prompt contributions from one read of every component at the last position


def capped_scales(pre_cap: torch.Tensor, cap: float) -> torch.Tensor:
    """cap·tanh(l/cap)/l per logit (1 without a cap, and where l is 0): the factor that makes pre-cap contributions sum
    to the capped logit."""
    pre_cap = pre_cap.double()
    if cap <= 0:
        return torch.ones_like(pre_cap)
    safe = torch.where(pre_cap == 0, torch.ones_like(pre_cap), pre_cap)
    return torch.where(pre_cap == 0, torch.ones_like(pre_cap), cap * torch.tanh(safe / cap) / safe)


@dataclass(frozen=True)
class PromptDla:
    """Per prompt, in LD units: heads[prompt, layer, head], mlps[prompt, layer], embed[prompt], bias[prompt], and
    ld[prompt] (the model's own capped LD)."""

    heads: np.ndarray
    mlps: np.ndarray
    embed: np.ndarray
    bias: np.ndarray
    ld: np.ndarray


@dataclass(frozen=True)
class DlaSites:
    """The sites DLA reads: the embeddings (the residual entering block 0), every head's and MLP's output and every
    layer's attention bias as added to the residual, and the final residual (whose read is the model's own logit)."""

    n_layers: int
    n_heads: int

    @property
    def heads(self) -> list[Site]:
        return [Site(SiteKind.HEAD_OUT, layer, head) for layer in range(self.n_layers) for head in range(self.n_heads)]

    @property
    def mlps(self) -> list[Site]:
        return [Site(SiteKind.MLP_OUT, layer) for layer in range(self.n_layers)]

    @property
    def biases(self) -> list[Site]:
        return [Site(SiteKind.ATTN_BIAS, layer) for layer in range(self.n_layers)]

    @property
    def embed(self) -> Site:
        return Site(SiteKind.RESID, 0)

    @property
    def final(self) -> Site:
        return Site(SiteKind.RESID, self.n_layers)

    @property
    def all(self) -> list[Site]:
        return [self.embed, *self.heads, *self.mlps, *self.biases, self.final]


def read_direct(model: Backend, tokens: torch.Tensor, answer_ids: torch.Tensor) -> SiteReadings:
    """Every component's direct contribution to the logits of answer_ids[batch, k] at the last position: its output
    there through the final norm with the scale frozen from the run's final residual, onto W_U's rows (pre-cap)."""
    info = model.info
    readout = Readout(ReadNorm.FROZEN, token_ids=answer_ids)
    return model.read_sites(tokens, -1, DlaSites(info.n_layers, info.n_heads).all, readout)


def per_prompt_dla(readings: SiteReadings, n_layers: int, n_heads: int) -> PromptDla:
    """LD contributions from the contributions to the correct (k = 0) and incorrect (k = 1) logits, each answer's
    scaled for the soft cap by its own pre-cap logit (the model's: the final residual's read plus the constant)."""
    sites = DlaSites(n_layers, n_heads)
    assert readings.constant is not None
    logits = readings.at(sites.final).double() + readings.constant.double()  # [prompt, 2]
    scales = capped_scales(logits, readings.soft_cap)
    weights = scales * torch.tensor([1.0, -1.0], dtype=torch.float64)  # [prompt, 2]

    def ld(part: torch.Tensor) -> np.ndarray:
        return (part.double() * weights.view(-1, *([1] * (part.ndim - 2)), 2)).sum(-1).numpy()

    batch = logits.shape[0]
    bias = readings.stacked(sites.biases).double().sum(1) + readings.constant.double()
    return PromptDla(ld(readings.stacked(sites.heads).reshape(batch, n_layers, n_heads, -1)),
                     ld(readings.stacked(sites.mlps)), ld(readings.at(sites.embed)), ld(bias), ld(logits))


# ---------------------------------------------------------------------------------------------------------------
# DLA of a task


def dla_numbers(model: Backend, encoded: EncodedDataset, *, progress: ProgressCallback | None = None,
                should_cancel: Callable[[], bool] | None = None) -> tuple[PromptDla, np.ndarray, float]:
    """Per-prompt DLA of the distinct prompts of a dataset, their weights (sum 1) and the model's soft cap."""
    task = logit_diff_task(encoded, get_method("zero"), deduplicate=True)
    info = model.info
    # one forward (the bridge's own attention keeps its scores) and [layer, head, d_model] kept per prompt, twice
    kept = (info.n_layers * info.n_heads + 3 * info.n_layers + 2) * info.d_model * 4 * 2
    per_prompt = block_bytes_per_token(info, model.dtype, task.seq_len) * task.seq_len + kept
    plan = plan_chunks("Direct logit attribution", task.n_prompts, per_prompt, model.budget_bytes(),
                       target=model.chunk_target())
    timer = WorkTimer(task.n_prompts, progress, should_cancel, model, "Direct logit attribution")
    parts: list[PromptDla] = []
    soft_cap = 0.0
    with model.gate.job("a direct logit attribution"):
        for start in range(0, task.n_prompts, plan.per_chunk):
            stop = min(task.n_prompts, start + plan.per_chunk)
            readings = read_direct(model, task.clean[start:stop], task.answer_ids[start:stop])
            parts.append(per_prompt_dla(readings, info.n_layers, info.n_heads))
            soft_cap = readings.soft_cap
            timer.advance(stop - start, f"prompts {start + 1}–{stop} of {task.n_prompts}")
    joined = PromptDla(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                         ("heads", "mlps", "embed", "bias", "ld")))
    return joined, task.weights.double().cpu().numpy(), soft_cap


def dla_key(model: Backend, encoded: EncodedDataset, only_correct: bool) -> dict[str, Any]:
    """Everything that changes a DLA result."""
    return {
        **model.identity,
        "dataset": encoded.dataset.name,
        "dataset_hash": encoded.dataset.content_hash,
        "only_correct": only_correct,
        "metric": METRIC,
        "position": "last",
        "engine": f"dla-{ENGINE_VERSION}",
    }


def load_dla(model: Backend, encoded: EncodedDataset, only_correct: bool = False,
             cache: ResultsCache | None = None) -> DlaResult | None:
    """The stored DLA for exactly this configuration, or None."""
    return load_result(cache, CACHE_KIND, dla_key(model, encoded, only_correct), DlaResult)


def run_dla(
    model: Backend,
    dataset: Dataset | EncodedDataset,
    *,
    only_correct: bool = False,
    cache: ResultsCache | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> DlaResult:
    """DLA of a task at the last position: from the results cache when it holds exactly this key, else computed and
    stored. `dataset` may already be encoded for this model."""
    from headscope.ablation import filter_correct

    encoded = dataset if isinstance(dataset, EncodedDataset) else prepare_dataset(model, dataset)
    key = dla_key(model, encoded, only_correct)

    def compute() -> DlaResult:
        started = time.perf_counter()
        used = filter_correct(model, encoded) if only_correct else encoded
        numbers, weights, soft_cap = dla_numbers(model, used, progress=progress, should_cancel=should_cancel)
        rows = prompt_rows(used, get_method("zero"))  # the distinct run of each dataset prompt

        def mean(values: np.ndarray) -> np.ndarray:
            return np.tensordot(weights, values, axes=(0, 0))

        return DlaResult(
            model=model.info.name, task=used.dataset.name, clean_ld=float(mean(numbers.ld)),
            head_dla=mean(numbers.heads), mlp_dla=mean(numbers.mlps), embed_dla=float(mean(numbers.embed)),
            bias_dla=float(mean(numbers.bias)), n_prompts=used.n_prompts, seconds=time.perf_counter() - started,
            seq_len=used.seq_len, soft_cap=soft_cap, notes=(*used.dataset.notes, *used.warnings),
            per_prompt_head_dla=numbers.heads[rows], per_prompt_mlp_dla=numbers.mlps[rows],
            per_prompt_embed_dla=numbers.embed[rows], per_prompt_bias_dla=numbers.bias[rows],
            per_prompt_clean_ld=numbers.ld[rows], key=key,
        )

    return stored_or_computed(cache, CACHE_KIND, key, DlaResult, compute, use_cache=use_cache)


# ---------------------------------------------------------------------------------------------------------------
# What a component writes


def check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InputError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}.")
    return k


def check_component(model: Backend, component: Component) -> Component:
    info = model.info
    if not component.within(info.n_layers, info.n_heads):
        raise InputError(f"{component.label} is not in {info.name}: it has {info.n_layers} layers of "
                         f"{info.n_heads} heads (0-based).")
    return component


def _effects(model: Backend, logits: torch.Tensor, k: int) -> tuple[tuple[TokenEffect, ...], tuple[TokenEffect, ...]]:
    """The k largest and k smallest entries of logits[vocab] as TokenEffects (largest first; most negative first)."""
    logits = logits.float().cpu()
    usable = min(model.info.vocab_size, len(model.tokenizer), logits.shape[0])
    logits = logits[:usable]  # padded vocabulary rows name no token
    describer = TokenDescriber(model)
    k = min(k, usable)

    def effect(token_id: int) -> TokenEffect:
        return TokenEffect(describer.one(token_id).display, token_id, float(logits[token_id]))

    top = logits.topk(k)
    bottom = (-logits).topk(k)
    return tuple(effect(int(i)) for i in top.indices), tuple(effect(int(i)) for i in bottom.indices)


def head_writes(model: Backend, prompt: str, component: Component, position: int, k: int = 10) -> HeadWrites:
    """What a head (or MLP) writes at `position` of the prompt (real input, BOS included; negative from the end): its
    output there through the final norm with that position's scale frozen and W_U (pre-cap logit contributions)."""
    from headscope.predict import resolve_position

    check_k(k)
    check_component(model, component)
    if prompt == "":
        raise InputError("The prompt is empty: give some text to read the head's output on.")
    ids = model.input_ids(prompt)
    pos = resolve_position(position, len(ids))
    site = Site(SiteKind.MLP_OUT, component.layer) if component.head is None else \
        Site(SiteKind.HEAD_OUT, component.layer, component.head)
    readings = model.read_sites(model.tensor([ids]), pos, [site], Readout(ReadNorm.FROZEN, whole_vocabulary=True))
    promoted, suppressed = _effects(model, readings.values[0, 0], k)
    return HeadWrites(component, pos, promoted, suppressed)


def ov_view(model: Backend, component: Component, token: str, k: int = 10) -> HeadWrites:
    """A head's OV circuit for one input token: what the head writes when it attends fully to that token (its
    effective embedding W_E + MLP0), through the final norm and W_U. The successor / copying view."""
    check_k(k)
    check_component(model, component)
    if component.head is None:
        raise InputError(f"The OV view is of a head; {component.label} is an MLP.")
    ids = model.encode(token) if token else []
    if not ids:
        raise InputError("The token is empty: give the input token whose OV output to read (e.g. ' 5').")
    if len(ids) > 1:
        raise InputError(f"{token!r} is {len(ids)} tokens for this tokenizer: give a single token.")
    token_ids = torch.tensor(ids, device=model.device)
    effective = model.mlp0_effective_embedding(token_ids)  # [1, d_model]
    vocab = torch.arange(min(model.info.vocab_size, len(model.tokenizer)), device=model.device)
    logits = model.ov_unembed_logits(component.layer, effective, vocab)[component.head, 0]
    promoted, suppressed = _effects(model, logits, k)
    return HeadWrites(component, -1, promoted, suppressed)


__all__ = ["CACHE_KIND", "DlaResult", "HeadWrites", "Progress", "PromptDla", "TokenEffect", "capped_scales",
           "dla_key", "dla_numbers", "head_writes", "load_dla", "ov_view", "per_prompt_dla", "read_direct", "run_dla"]
