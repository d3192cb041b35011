"""Which heads matter for a task: single-component ablation on a logit-difference metric.

Metric: LD = mean over prompts of logit[correct] − logit[incorrect] at the last input position. Per head, the
ablated LD, the study's score 100·LD_ablated/LD_clean, the change from clean and, with corrupted prompts, the
normalized (LD_abl − LD_corr)/(LD_clean − LD_corr). Methods, applied to one head's output (its z, before W_O) at
every position: zero; mean (its position-wise mean over the corrupted prompts, the study's choice); resample (its
value on the paired corrupted prompt: activation patching). The same for each layer's MLP output.

The exact engine stacks the ablations of several heads along the batch and starts from the clean residual stream
entering the ablated layer, so each layer's heads cost one partial forward; only the last position's two answer
logits are computed. `naive_sweep` (one full forward per head) is kept as the reference it is tested against.
`attribution_sweep` estimates all effects from one forward and one backward pass (attribution patching).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from headscope.errors import Cancelled, InputError
from headscope.results_cache import ResultsCache
from headscope.tasks import TASKS, Dataset, EncodedDataset, encode_dataset, subset

if TYPE_CHECKING:
    from headscope.adapter import ModelAdapter

METHODS = ("zero", "mean", "resample")
METRIC = "logit_diff_last_position"
ENGINE_VERSION = 1
CACHE_KIND = "ablation"


@dataclass(frozen=True)
class SweepProgress:
    """Reported while a sweep runs: fraction of the work done and the estimated seconds left."""

    fraction: float
    eta_seconds: float | None
    message: str


ProgressCallback = Callable[[SweepProgress], None]


@dataclass(frozen=True)
class SweepResult:
    """One sweep. ablated_ld[layer, head] and mlp_ablated_ld[layer] are mean logit differences after ablation."""

    model: str
    task: str
    method: str
    estimate: bool  # True: attribution-patching estimate, not an exact ablation
    n_prompts: int
    seq_len: int
    clean_ld: float
    corrupt_ld: float | None
    ablated_ld: np.ndarray  # [layer, head]
    mlp_ablated_ld: np.ndarray  # [layer]
    seconds: float
    token_labels: tuple[str, ...] = ()
    first_prompt: str = ""
    notes: tuple[str, ...] = ()
    cached: bool = False
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.ablated_ld.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.ablated_ld.shape[1])

    @property
    def percent_of_clean(self) -> np.ndarray:
        """The study's score: 100 · LD_ablated / LD_clean (100 = no effect)."""
        return 100.0 * self.ablated_ld / self.clean_ld

    @property
    def mlp_percent_of_clean(self) -> np.ndarray:
        return 100.0 * self.mlp_ablated_ld / self.clean_ld

    @property
    def change(self) -> np.ndarray:
        """LD_ablated − LD_clean (0 = no effect; negative = the head helps the task)."""
        return self.ablated_ld - self.clean_ld

    @property
    def normalized(self) -> np.ndarray | None:
        """(LD_abl − LD_corr) / (LD_clean − LD_corr): 1 = no effect, 0 = as bad as the corrupted prompts."""
        if self.corrupt_ld is None or self.clean_ld == self.corrupt_ld:
            return None
        return (self.ablated_ld - self.corrupt_ld) / (self.clean_ld - self.corrupt_ld)

    @property
    def mlp_normalized(self) -> np.ndarray | None:
        if self.corrupt_ld is None or self.clean_ld == self.corrupt_ld:
            return None
        return (self.mlp_ablated_ld - self.corrupt_ld) / (self.clean_ld - self.corrupt_ld)

    @property
    def label(self) -> str:
        kind = "estimate" if self.estimate else "exact"
        return f"{self.task} · {self.method} ablation · {self.n_prompts} prompts · {kind}"

    def top_heads(self, k: int) -> list[tuple[int, int]]:
        """The k heads whose ablation changes LD the most (either sign)."""
        order = np.argsort(-np.abs(self.change), axis=None)[:k]
        return [(int(i // self.n_heads), int(i % self.n_heads)) for i in order]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "method": self.method,
            "estimate": self.estimate,
            "n_prompts": self.n_prompts,
            "seq_len": self.seq_len,
            "clean_ld": self.clean_ld,
            "corrupt_ld": self.corrupt_ld,
            "layers": self.n_layers,
            "heads": self.n_heads,
            "ablated_ld": self.ablated_ld.tolist(),
            "percent_of_clean": self.percent_of_clean.tolist(),
            "mlp_ablated_ld": self.mlp_ablated_ld.tolist(),
            "seconds": self.seconds,
            "cached": self.cached,
            "token_labels": list(self.token_labels),
            "first_prompt": self.first_prompt,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], key: dict[str, Any], cached: bool = True) -> SweepResult:
        return cls(
            model=data["model"], task=data["task"], method=data["method"], estimate=bool(data["estimate"]),
            n_prompts=int(data["n_prompts"]), seq_len=int(data["seq_len"]), clean_ld=float(data["clean_ld"]),
            corrupt_ld=None if data["corrupt_ld"] is None else float(data["corrupt_ld"]),
            ablated_ld=np.asarray(data["ablated_ld"], dtype=float),
            mlp_ablated_ld=np.asarray(data["mlp_ablated_ld"], dtype=float), seconds=float(data["seconds"]),
            token_labels=tuple(data.get("token_labels", ())), first_prompt=data.get("first_prompt", ""),
            notes=tuple(data.get("notes", ())), cached=cached, key=key,
        )


# ---------------------------------------------------------------------------------------------------------------
# Replacement values


@dataclass(frozen=True)
class Replacements:
    """What an ablated component's output becomes, per layer.

    z[layer]: [prompt, pos, head, d_head] (resample), [1, pos, head, d_head] (mean) or None (zero);
    mlp[layer]: [prompt, pos, d_model], [1, pos, d_model] or None. corrupt_final: the corrupted run's residual after
    the last block (for the corrupted baseline LD), None without corrupted prompts.
    """

    method: str
    z: list[torch.Tensor | None]
    mlp: list[torch.Tensor | None]
    corrupt_final: torch.Tensor | None = None


def _reduce_corrupted(method: str, z: torch.Tensor, mlp: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    if method == "zero":
        return None, None
    if method == "mean":
        return z.mean(0, keepdim=True), mlp.mean(0, keepdim=True)
    return z, mlp


def check_method(method: str, encoded: EncodedDataset) -> None:
    if method not in METHODS:
        raise InputError(f"Unknown ablation method {method!r}: choose zero, mean or resample.")
    if method != "zero" and encoded.corrupted is None:
        raise InputError(
            f"{method} ablation needs corrupted prompts: add a corrupted_prompt column to the dataset, or use zero."
        )


def _z_patch(values: torch.Tensor | None, heads: list[int], n_prompts: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Replace head heads[i]'s z in the i-th group of n_prompts sequences of the batch."""

    def patch(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        grouped = z.view(-1, n_prompts, *z.shape[1:])  # [group, prompt, pos, head, d_head]
        for group, head in enumerate(heads):
            if values is None:
                grouped[group, :, :, head] = 0
            else:
                grouped[group, :, :, head] = values[:, :, head].to(z.dtype)
        return z

    return patch


def _mlp_patch(values: torch.Tensor | None, group: int, n_prompts: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Replace the MLP output of the `group`-th group of n_prompts sequences (the other groups keep theirs)."""

    def patch(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        rows = slice(group * n_prompts, (group + 1) * n_prompts)
        out[rows] = 0 if values is None else values.to(out.dtype)
        return out

    return patch


def _logit_diff(
    model: ModelAdapter,
    resid: torch.Tensor,
    correct: torch.Tensor,
    incorrect: torch.Tensor,
    groups: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per group, the (weighted) mean over prompts of logit[correct] − logit[incorrect] at the last position."""
    ids = torch.stack([correct, incorrect], dim=1).repeat(groups, 1)  # [group*prompt, 2]
    logits = model.logits_of(resid[:, -1, :], ids)
    diff = (logits[:, 0] - logits[:, 1]).view(groups, -1)
    if weights is None:
        return diff.mean(1)
    return (diff * weights.to(diff.device)).sum(1)


@dataclass(frozen=True)
class _DistinctRuns:
    """Identical runs give identical results: the distinct (prompt, answers[, paired corrupted]) rows, weighted by
    how often each occurs, so repeated prompts (tasks with few distinct members) are computed once. Exact."""

    index: torch.Tensor  # rows of the encoded dataset kept
    weights: torch.Tensor  # [distinct] count / n_prompts


def _distinct_runs(encoded: EncodedDataset, method: str) -> _DistinctRuns:
    parts = [encoded.clean, encoded.correct_ids[:, None], encoded.incorrect_ids[:, None]]
    if method == "resample":
        parts.append(encoded.corrupted)
    rows = torch.cat([p.to("cpu") for p in parts], dim=1)
    _, inverse, counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
    first = torch.full((len(counts),), rows.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(rows.shape[0]), reduce="amin")
    order = torch.argsort(first)
    return _DistinctRuns(first[order].to(encoded.clean.device), counts[order].double() / rows.shape[0])


# ---------------------------------------------------------------------------------------------------------------
# The exact batched engine


def _activation_bytes_per_sequence(model: ModelAdapter, seq_len: int) -> int:
    """Rough peak activation memory of one sequence through one block (residual copies, MLP hidden, scores)."""
    info = model.info
    element = torch.tensor([], dtype=model.dtype).element_size()
    per_token = 12 * info.d_model + 4 * max(info.d_mlp, info.d_model) + 3 * info.n_heads * seq_len
    return seq_len * per_token * element


def heads_per_chunk(model: ModelAdapter, n_prompts: int, seq_len: int, budget_bytes: int | None = None) -> int:
    """How many heads' ablations to stack in one batch, from the memory available for activations."""
    if budget_bytes is None:
        if model.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(model.device)
            budget_bytes = int(free * 0.5)
        else:
            budget_bytes = 2 * 2**30
    per_group = _activation_bytes_per_sequence(model, seq_len) * n_prompts
    return int(max(1, min(model.info.n_heads + 1, budget_bytes // max(per_group, 1))))


class _Timer:
    """Progress with an ETA over units of work (sequence-blocks)."""

    def __init__(self, total: float, progress: ProgressCallback | None, should_cancel: Callable[[], bool] | None):
        self.total = max(total, 1.0)
        self.done = 0.0
        self.started = time.perf_counter()
        self.progress = progress
        self.should_cancel = should_cancel

    def advance(self, units: float, message: str) -> None:
        self.done += units
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("The sweep was cancelled.")
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            fraction = min(self.done / self.total, 1.0)
            eta = elapsed / fraction * (1 - fraction) if fraction > 0 else None
            self.progress(SweepProgress(fraction, eta, message))


def exact_sweep(
    model: ModelAdapter,
    encoded: EncodedDataset,
    method: str,
    *,
    include_mlp: bool = True,
    chunk: int | None = None,
    deduplicate: bool = True,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, float, float | None]:
    """Exact ablation of every head (and MLP): (ablated_ld[layer, head], mlp_ablated_ld[layer], clean, corrupt).

    Per layer L: the clean residual entering L is copied once per ablated head (up to `chunk` heads a batch), each
    copy gets its head's z replaced inside block L, and blocks L..N-1 run on the stack; the clean run then advances
    one block. The corrupted run advances alongside, providing the replacement values layer by layer, so nothing
    but the current residuals is kept.
    """
    check_method(method, encoded)
    info = model.info
    if deduplicate:
        runs = _distinct_runs(encoded, method)
        index, weights = runs.index, runs.weights.to(torch.float32)
    else:
        index = torch.arange(encoded.n_prompts, device=encoded.clean.device)
        weights = torch.full((encoded.n_prompts,), 1.0 / encoded.n_prompts)
    n_runs, seq_len = len(index), encoded.seq_len
    chunk = chunk or heads_per_chunk(model, n_runs, seq_len)
    correct, incorrect = encoded.correct_ids[index], encoded.incorrect_ids[index]
    # mean ablation averages over every corrupted prompt; resample pairs each distinct run with its own
    corrupted_rows = None
    if encoded.corrupted is not None:
        corrupted_rows = encoded.corrupted[index] if method == "resample" else encoded.corrupted
    ablated = np.zeros((info.n_layers, info.n_heads))
    mlp_ablated = np.full(info.n_layers, np.nan)
    copies_per_layer = info.n_heads + (1 if include_mlp else 0)
    total = sum((copies_per_layer + 2) * (info.n_layers - layer) for layer in range(info.n_layers))
    timer = _Timer(total, progress, should_cancel)

    with model.lock, torch.inference_mode():
        clean = model.embed(encoded.clean[index])
        kwargs = model.block_kwargs(clean)
        corrupt = model.embed(corrupted_rows) if corrupted_rows is not None else None
        for layer in range(info.n_layers):
            z_values = mlp_values = None
            if corrupt is not None:
                out = model.run_block(layer, corrupt, kwargs, capture_z=True, capture_mlp=True)
                z_values, mlp_values = _reduce_corrupted(method, out.z, out.mlp_out)
                corrupt = out.resid
            # Work list: each head, then the MLP, stacked `chunk` groups at a time.
            jobs: list[int | None] = list(range(info.n_heads)) + ([None] if include_mlp else [])
            for start in range(0, len(jobs), chunk):
                group_jobs = jobs[start : start + chunk]
                heads = [j for j in group_jobs if j is not None]
                batch = clean.repeat(len(group_jobs), 1, 1)
                patch_mlp = None
                if None in group_jobs:
                    patch_mlp = _mlp_patch(mlp_values, group_jobs.index(None), n_runs)
                resid = model.run_block(
                    layer, batch, kwargs,
                    patch_z=_z_patch(z_values, heads, n_runs) if heads else None,
                    patch_mlp=patch_mlp,
                ).resid
                for later in range(layer + 1, info.n_layers):
                    resid = model.run_block(later, resid, kwargs).resid
                lds = _logit_diff(model, resid, correct, incorrect, len(group_jobs), weights).cpu().numpy()
                for group, job in enumerate(group_jobs):
                    if job is None:
                        mlp_ablated[layer] = lds[group]
                    else:
                        ablated[layer, job] = lds[group]
                timer.advance(len(group_jobs) * (info.n_layers - layer), f"layer {layer}: heads {heads}")
            clean = model.run_block(layer, clean, kwargs).resid
            timer.advance(2 * (info.n_layers - layer), f"layer {layer} done")
        clean_ld = float(_logit_diff(model, clean, correct, incorrect, 1, weights)[0])
        corrupt_ld = None
        if corrupt is not None:
            corrupt_weights = weights if method == "resample" else None
            corrupt_correct = correct if method == "resample" else encoded.correct_ids
            corrupt_incorrect = incorrect if method == "resample" else encoded.incorrect_ids
            corrupt_ld = float(
                _logit_diff(model, corrupt, corrupt_correct, corrupt_incorrect, 1, corrupt_weights)[0]
            )
    return ablated, mlp_ablated, clean_ld, corrupt_ld


# ---------------------------------------------------------------------------------------------------------------
# The reference: one full forward per component


def corrupted_replacements(model: ModelAdapter, encoded: EncodedDataset, method: str) -> Replacements:
    """Per-layer replacement values from one corrupted run that keeps only z and MLP outputs."""
    check_method(method, encoded)
    n_layers = model.info.n_layers
    if encoded.corrupted is None:
        return Replacements(method, [None] * n_layers, [None] * n_layers)
    run = model.run_blocks(encoded.corrupted, capture_z=method != "zero", capture_mlp=method != "zero")
    if method == "zero":
        return Replacements(method, [None] * n_layers, [None] * n_layers, run.resid)
    pairs = [_reduce_corrupted(method, z, mlp) for z, mlp in zip(run.z, run.mlp_out, strict=True)]
    return Replacements(method, [p[0] for p in pairs], [p[1] for p in pairs], run.resid)


def naive_sweep(
    model: ModelAdapter,
    encoded: EncodedDataset,
    method: str,
    *,
    include_mlp: bool = True,
    layers: list[int] | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One full forward pass (the bridge's own) per head and per MLP. Slow; kept as the engine's reference.

    `layers` restricts the loop (the other rows stay NaN), so tests can check a sample of a large model.
    """
    info = model.info
    layers = list(range(info.n_layers)) if layers is None else layers
    values = corrupted_replacements(model, encoded, method)
    ids = torch.stack([encoded.correct_ids, encoded.incorrect_ids], dim=1)

    def ld(logits: torch.Tensor) -> float:
        last = logits[:, -1, :].gather(1, ids.to(logits.device))
        return float((last[:, 0] - last[:, 1]).mean())

    ablated = np.full((info.n_layers, info.n_heads), np.nan)
    mlp_ablated = np.full(info.n_layers, np.nan)
    total = len(layers) * (info.n_heads + int(include_mlp))
    timer = _Timer(total, progress, None)
    for layer in layers:
        for head in range(info.n_heads):
            patch = _z_patch(values.z[layer], [head], encoded.n_prompts)
            ablated[layer, head] = ld(model.logits_with_patches(encoded.clean, z_patches={layer: patch}))
            timer.advance(1, f"layer {layer} head {head}")
        if include_mlp:
            patch = _mlp_patch(values.mlp[layer], 0, encoded.n_prompts)
            mlp_ablated[layer] = ld(model.logits_with_patches(encoded.clean, mlp_patches={layer: patch}))
            timer.advance(1, f"layer {layer} MLP")
    return ablated, mlp_ablated, ld(model.logits(encoded.clean))


# ---------------------------------------------------------------------------------------------------------------
# Attribution patching: a first-order estimate from one forward and one backward pass


def attribution_sweep(
    model: ModelAdapter, encoded: EncodedDataset, method: str
) -> tuple[np.ndarray, np.ndarray, float, float | None]:
    """Estimate LD_ablated ≈ LD_clean + Σ (replacement − clean) · ∂LD/∂activation for every head and MLP."""
    check_method(method, encoded)
    info = model.info
    values = corrupted_replacements(model, encoded, method)
    corrupt_ld = None
    if values.corrupt_final is not None:
        with torch.inference_mode():
            corrupt_ld = float(
                _logit_diff(model, values.corrupt_final, encoded.correct_ids, encoded.incorrect_ids, 1)[0]
            )
    with model.lock, torch.enable_grad():
        resid = model.embed(encoded.clean).detach().requires_grad_(True)
        kwargs = model.block_kwargs(resid)
        zs, mlps = [], []
        for layer in range(info.n_layers):
            out = model.run_block(layer, resid, kwargs, capture_z=True, capture_mlp=True, retain_grad=True)
            zs.append(out.z)
            mlps.append(out.mlp_out)
            resid = out.resid
        clean_ld = _logit_diff(model, resid, encoded.correct_ids, encoded.incorrect_ids, 1)[0]
        clean_ld.backward()
    ablated = np.zeros((info.n_layers, info.n_heads))
    mlp_ablated = np.zeros(info.n_layers)
    with torch.no_grad():
        for layer in range(info.n_layers):
            z, grad = zs[layer].detach(), zs[layer].grad
            target = torch.zeros_like(z) if values.z[layer] is None else values.z[layer].expand_as(z)
            ablated[layer] = (((target - z) * grad).sum(dim=(0, 1, 3))).float().cpu().numpy()
            out, grad = mlps[layer].detach(), mlps[layer].grad
            target = torch.zeros_like(out) if values.mlp[layer] is None else values.mlp[layer].expand_as(out)
            mlp_ablated[layer] = float(((target - out) * grad).sum())
    value = float(clean_ld.detach())
    return ablated + value, mlp_ablated + value, value, corrupt_ld


# ---------------------------------------------------------------------------------------------------------------
# Running a sweep the way the app and the CLI do: encode, look in the cache, compute, store.


def filter_correct(model: ModelAdapter, encoded: EncodedDataset) -> EncodedDataset:
    """Keep the prompts the model gets right: top-1 is the correct answer and P(correct) > 2·P(incorrect)."""
    logits = model.logits(encoded.clean)[:, -1, :]
    probs = torch.softmax(logits, dim=-1)
    rows = torch.arange(encoded.n_prompts, device=probs.device)
    p_correct = probs[rows, encoded.correct_ids.to(probs.device)]
    p_incorrect = probs[rows, encoded.incorrect_ids.to(probs.device)]
    right = (logits.argmax(-1) == encoded.correct_ids.to(logits.device)) & (p_correct > 2 * p_incorrect)
    keep = [i for i in range(encoded.n_prompts) if bool(right[i])]
    dropped = encoded.n_prompts - len(keep)
    if not keep:
        raise InputError(
            f"The model gets none of the {encoded.n_prompts} prompts right (top-1 correct and P(correct) > "
            "2·P(incorrect)): turn off 'only prompts the model gets right' or choose another task."
        )
    return subset(encoded, keep, f"Kept {len(keep)} of {encoded.n_prompts} prompts the model gets right "
                                 f"(top-1 correct, P(correct) > 2·P(incorrect)); dropped {dropped}.")


def sweep_key(model: ModelAdapter, encoded: EncodedDataset, method: str, estimate: bool, only_correct: bool) -> dict:
    """Everything that changes a sweep's result."""
    return {
        **model.identity,
        "dataset": encoded.dataset.name,
        "dataset_hash": encoded.dataset.content_hash,
        "only_correct": only_correct,
        "method": method,
        "metric": METRIC,
        "estimate": estimate,
        "engine": ENGINE_VERSION,
    }


def prepare_dataset(model: ModelAdapter, dataset: Dataset) -> EncodedDataset:
    """Encode for this model; built-in tasks drop prompts of another token length, user datasets must be even."""
    return encode_dataset(model, dataset, fit=dataset.name in TASKS, drop_uneven=dataset.name in TASKS)


def load_sweep(
    model: ModelAdapter,
    encoded: EncodedDataset,
    method: str,
    estimate: bool,
    only_correct: bool,
    cache: ResultsCache | None = None,
) -> SweepResult | None:
    """The stored sweep for exactly this configuration, or None."""
    cache = cache if cache is not None else ResultsCache()
    key = sweep_key(model, encoded, method, estimate, only_correct)
    stored = cache.load(CACHE_KIND, key)
    return None if stored is None else SweepResult.from_json(stored, key, cached=True)


def run_sweep(
    model: ModelAdapter,
    dataset: Dataset | EncodedDataset,
    method: str = "mean",
    *,
    estimate: bool = False,
    only_correct: bool = False,
    cache: ResultsCache | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> SweepResult:
    """A whole sweep: from the results cache when it holds one for exactly this key, else computed and stored.

    `dataset` may already be encoded for this model (the page encodes it to validate it before any run).
    """
    encoded = dataset if isinstance(dataset, EncodedDataset) else prepare_dataset(model, dataset)
    check_method(method, encoded)
    cache = cache if cache is not None else ResultsCache()
    if use_cache:
        stored = load_sweep(model, encoded, method, estimate, only_correct, cache)
        if stored is not None:
            return stored
    key = sweep_key(model, encoded, method, estimate, only_correct)
    started = time.perf_counter()
    if only_correct:
        encoded = filter_correct(model, encoded)
    if estimate:
        ablated, mlp_ablated, clean_ld, corrupt_ld = attribution_sweep(model, encoded, method)
    else:
        ablated, mlp_ablated, clean_ld, corrupt_ld = exact_sweep(
            model, encoded, method, progress=progress, should_cancel=should_cancel
        )
    result = SweepResult(
        model=model.info.name,
        task=encoded.dataset.name,
        method=method,
        estimate=estimate,
        n_prompts=encoded.n_prompts,
        seq_len=encoded.seq_len,
        clean_ld=clean_ld,
        corrupt_ld=corrupt_ld,
        ablated_ld=ablated,
        mlp_ablated_ld=mlp_ablated,
        seconds=time.perf_counter() - started,
        token_labels=encoded.token_labels,
        first_prompt=encoded.dataset.items[0].prompt,
        notes=(*encoded.dataset.notes, *encoded.warnings),
        key=key,
    )
    cache.store(CACHE_KIND, key, result.to_json())
    return result


def cached_sweeps(model: ModelAdapter, cache: ResultsCache | None = None) -> list[SweepResult]:
    """Sweeps already on disk for this model (same source, revision, dtype, device), newest first."""
    cache = cache if cache is not None else ResultsCache()
    identity = model.identity
    return [
        SweepResult.from_json(entry.payload, entry.key)
        for entry in cache.entries(CACHE_KIND)
        if all(entry.key.get(k) == v for k, v in identity.items())
    ]

