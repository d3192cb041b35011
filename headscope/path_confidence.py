"""How far a path result's ranking can be trusted: bootstrap intervals of each path's effect and top-k stability
(headscope.confidence), from the result's per-prompt values.

A path's effect on one prompt is that prompt's LD with the path patched minus the same prompt's LD in the run with
nothing patched (clean for noise, corrupted for denoise): a paired difference, far tighter than the spread of the
prompts' LDs themselves. A PathResult keeps both (per_prompt_ld and run_prompt_ld, from the same evaluation).

On a grouped-query model a K/V sender result patches a whole KV group's input, and every head of a group holds the
group's value: the bootstrap counts each group once (the top-k is the k largest distinct paths) and every head of a
group shows its group's interval and stability.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

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

if TYPE_CHECKING:
    from headscope.path_patching import PathResult


def path_effects(result: PathResult) -> np.ndarray:
    """effect[prompt, layer, head] = per_prompt_ld − that prompt's run LD (nan off the partners)."""
    run_ld = np.asarray(result.run_prompt_ld, dtype=np.float64)
    return np.asarray(result.per_prompt_ld, dtype=np.float64) - run_ld[:, None, None]


def path_confidence(result: PathResult, heads_per_kv: int = 1, *, k: int = DEFAULT_TOP_K,
                    resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                    level: float = DEFAULT_LEVEL) -> RankingConfidence:
    """Intervals of each path's effect (patched − run LD) and the top-k stability by |effect|, over [layer, head]
    (a K/V result on a grouped-query model: over KV groups, shown on each of the group's heads)."""
    effects = path_effects(result)
    group = heads_per_kv if result.cells_per_group and heads_per_kv > 1 else 1
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


__all__ = ["path_confidence", "path_effects"]
