"""How far a path result's ranking can be trusted: bootstrap intervals of each path's effect and top-k stability
(headscope.confidence), from the result's per-prompt values.

A path's effect on one prompt is that prompt's LD with the path patched minus the same prompt's LD in the run with
nothing patched (clean for noise, corrupted for denoise): a paired difference, far tighter than the spread of the
prompts' LDs themselves. A PathResult keeps per_prompt_ld but only the run's mean LD, so the run's per-prompt LDs
come from one forward of the run's prompts (`run_prompt_lds`) and are checked against the result's mean before use.

On a grouped-query model a K/V result patches a whole KV group's input, and every head of a group holds the group's
value: the bootstrap counts each group once (the top-k is the k largest distinct paths) and every head of a group
shows its group's interval and stability.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from headscope.confidence import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    DEFAULT_TOP_K,
    BootstrapIntervals,
    RankingConfidence,
    TopKStability,
    ranking_confidence,
)
from headscope.errors import InputError

if TYPE_CHECKING:
    from headscope.backends.base import Backend
    from headscope.path_patching import PathResult
    from headscope.tasks import EncodedDataset

MEAN_TOLERANCE = 1e-4  # relative to the LDs' scale: the run's LD recomputed here against the one the result holds


def run_prompt_lds(model: Backend, encoded: EncodedDataset, direction: str) -> np.ndarray:
    """ld[prompt]: each prompt's LD in the run the paths are patched into (clean for noise, corrupted for denoise),
    nothing patched: one forward of those prompts."""
    tokens = encoded.corrupted if direction == "denoise" else encoded.clean
    if tokens is None:
        raise InputError("Denoising runs the corrupted prompts: this dataset has none.")
    ids = torch.stack([encoded.correct_ids, encoded.incorrect_ids], dim=1)
    logits = model.answer_logits(tokens, ids)
    return (logits[:, 0] - logits[:, 1]).double().numpy()


def path_effects(result: PathResult, run_ld: np.ndarray) -> np.ndarray:
    """effect[prompt, layer, head] = per_prompt_ld − that prompt's run LD (nan off the partners). Raises ValueError
    when run_ld cannot be this result's run (another count of prompts, or a mean that differs from the result's)."""
    run_ld = np.asarray(run_ld, dtype=np.float64)
    if run_ld.shape != (result.n_prompts,):
        raise ValueError(f"The run's LDs cover {run_ld.size} prompts; the result has {result.n_prompts}.")
    scale = max(1.0, float(np.abs(run_ld).max(initial=0.0)))
    if abs(float(run_ld.mean()) - result.run_ld) > MEAN_TOLERANCE * scale:
        raise ValueError(f"The run's LDs average {run_ld.mean():.6f}, the result's run LD is {result.run_ld:.6f}: "
                         "they are not of the same prompts.")
    return np.asarray(result.per_prompt_ld, dtype=np.float64) - run_ld[:, None, None]


def path_confidence(result: PathResult, run_ld: np.ndarray, heads_per_kv: int = 1, *, k: int = DEFAULT_TOP_K,
                    resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                    level: float = DEFAULT_LEVEL) -> RankingConfidence:
    """Intervals of each path's effect (patched − run LD) and the top-k stability by |effect|, over [layer, head]
    (a K/V result on a grouped-query model: over KV groups, shown on each of the group's heads)."""
    effects = path_effects(result, run_ld)
    group = heads_per_kv if result.kv_grouped and heads_per_kv > 1 else 1
    confidence = ranking_confidence(effects[:, :, ::group], k=k, resamples=resamples, seed=seed, level=level)
    if group == 1:
        return confidence
    intervals, stability = confidence.intervals, confidence.stability

    def spread(cells: np.ndarray) -> np.ndarray:
        return np.repeat(cells, group, axis=-1)

    return RankingConfidence(
        BootstrapIntervals(spread(intervals.mean), spread(intervals.low), spread(intervals.high), intervals.level,
                           intervals.resamples, intervals.seed, intervals.n_prompts),
        TopKStability(stability.k, spread(stability.frequency), spread(stability.in_top), stability.resamples,
                      stability.seed))


__all__ = ["path_confidence", "path_effects", "run_prompt_lds"]
