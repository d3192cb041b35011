"""Intervals of path effects (headscope.path_confidence) against a bootstrap written here from the draw
headscope.confidence states (numpy's default_rng(seed).integers(0, P, (resamples, P))): paired per-prompt effects,
non-partners left out, KV groups counted once, each prompt's effect against its own run LD (the result's)."""

import numpy as np
import pytest

from headscope.component import Component
from headscope.path_confidence import path_confidence, path_effects
from headscope.path_patching import PathQuery, PathResult

N_PROMPTS, LAYERS, HEADS = 6, 3, 4


def _result(into: str = "q", kv_grouped: bool = False, seed: int = 5) -> tuple[PathResult, np.ndarray]:
    """A sender 0.1 result: layers 1 and 2 are receivers; each prompt's run LD spreads widely (2 … 7) while each
    path's paired effect is small, as on real prompts."""
    rng = np.random.default_rng(seed)
    run = rng.uniform(2, 7, size=N_PROMPTS)
    effect = rng.normal(0, 0.3, size=(LAYERS, HEADS)) + rng.normal(0, 0.1, size=(N_PROMPTS, LAYERS, HEADS))
    if kv_grouped:  # two query heads per KV head share one value
        effect[:, :, 1::2] = effect[:, :, 0::2]
    per_prompt = run[:, None, None] + effect
    per_prompt[:, 0] = np.nan  # the sender's own layer: no partner
    result = PathResult(model="m", task="t", query=PathQuery(sender=Component(0, 1), into=into), clean_ld=run.mean(),
                        corrupt_ld=None, ld=per_prompt.mean(axis=0),
                        per_prompt_ld=per_prompt, run_prompt_ld=run, to_logits_ld=None, kv_grouped=kv_grouped,
                        n_prompts=N_PROMPTS, seconds=0.0)
    return result, run


def _bootstrap(cells: np.ndarray, resamples: int, seed: int, k: int):
    """means[resample, cell] by plain indexing, the 95 % percentiles, and each cell's share of top-k finishes."""
    draws = np.random.default_rng(seed).integers(0, cells.shape[0], size=(resamples, cells.shape[0]))
    means = cells[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    share = np.zeros(cells.shape[1])
    for sample in np.abs(means):
        share[np.argsort(-sample)[:k]] += 1
    return low, high, share / resamples


def test_intervals_are_of_the_paired_effects_and_skip_non_partners():
    result, run = _result()
    got = path_confidence(result, k=3, resamples=300, seed=4)
    effects = result.per_prompt_ld[:, 1:].reshape(N_PROMPTS, -1) - run[:, None]
    low, high, share = _bootstrap(effects, 300, 4, 3)
    np.testing.assert_allclose(got.intervals.low[1:].ravel(), low, atol=1e-12)
    np.testing.assert_allclose(got.intervals.high[1:].ravel(), high, atol=1e-12)
    np.testing.assert_allclose(got.stability.frequency[1:].ravel(), share, atol=1e-12)
    np.testing.assert_allclose(got.intervals.mean, result.change, atol=1e-12, equal_nan=True)
    # paired: the intervals are as narrow as the effects' own spread, not the run LDs' (2 … 7)
    assert np.nanmax(got.intervals.high - got.intervals.low) < 1.0
    assert np.isnan(got.intervals.low[0]).all() and not got.stability.frequency[0].any()
    assert not got.intervals.crosses_zero[0].any() and got.stability.in_top.sum() == 3


def test_kv_groups_count_once_and_every_head_of_a_group_shows_its_interval():
    result, run = _result(into="k", kv_grouped=True)
    got = path_confidence(result, heads_per_kv=2, k=2, resamples=200, seed=0)
    groups = (result.per_prompt_ld[:, 1:, ::2] - run[:, None, None]).reshape(N_PROMPTS, -1)
    low, high, share = _bootstrap(groups, 200, 0, 2)
    np.testing.assert_allclose(got.intervals.low[1:, ::2].ravel(), low, atol=1e-12)
    np.testing.assert_allclose(got.intervals.high[1:, ::2].ravel(), high, atol=1e-12)
    np.testing.assert_allclose(got.stability.frequency[1:, ::2].ravel(), share, atol=1e-12)
    np.testing.assert_array_equal(got.intervals.high[:, ::2], got.intervals.high[:, 1::2])
    np.testing.assert_array_equal(got.stability.frequency[:, ::2], got.stability.frequency[:, 1::2])
    assert got.stability.k == 2 and got.stability.in_top.sum() == 4  # two groups of two heads
    assert got.stability.frequency.sum() == pytest.approx(4)


def test_effects_are_paired_with_each_prompts_own_run_ld():
    result, run = _result()
    effects = path_effects(result)
    np.testing.assert_allclose(effects[:, 1:], result.per_prompt_ld[:, 1:] - run[:, None, None], atol=1e-12)
    np.testing.assert_allclose(effects[:, 1:].mean(axis=0), result.change[1:], atol=1e-12)
    assert np.isnan(effects[:, 0]).all()
