"""The bootstrap and the estimate-vs-exact comparison against computations written here, from the draw the module
states (numpy's default_rng(seed).integers(0, P, (resamples, P))), with plain indexing instead of its count matrix."""

import numpy as np
import pytest

from headscope.confidence import estimate_agreement, ranking_confidence


def _values(n_prompts: int = 12, layers: int = 3, heads: int = 5, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.normal(0, 1, size=(layers, heads))
    centre[0, 0] = 0.0  # a head with no effect: its interval must reach 0
    return centre + rng.normal(0, 0.5, size=(n_prompts, layers, heads))


def test_intervals_and_top_k_stability_equal_a_bootstrap_written_here():
    values = _values()
    resamples, seed, k = 400, 3, 4
    got = ranking_confidence(values, k=k, resamples=resamples, seed=seed)

    draws = np.random.default_rng(seed).integers(0, values.shape[0], size=(resamples, values.shape[0]))
    means = values[draws].mean(axis=1)  # [resample, layer, head]
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    np.testing.assert_allclose(got.intervals.low, low, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.intervals.high, high, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.intervals.mean, values.mean(axis=0), rtol=1e-12, atol=1e-12)
    assert np.array_equal(got.intervals.crosses_zero, (low <= 0) & (high >= 0))
    assert got.intervals.crosses_zero[0, 0]  # the no-effect head
    assert not got.intervals.crosses_zero.all()  # and some heads' signs are settled

    frequency = np.zeros(values.shape[1:])
    for sample in np.abs(means):
        for flat in np.argsort(-sample, axis=None)[:k]:
            frequency[np.unravel_index(flat, sample.shape)] += 1
    np.testing.assert_allclose(got.stability.frequency, frequency / resamples, atol=1e-12)
    assert got.stability.frequency.sum() == pytest.approx(k)
    assert got.stability.in_top.sum() == k
    assert got.intervals.resamples == resamples and got.intervals.seed == seed
    assert got.intervals.how == f"95% percentile bootstrap over 12 prompts, {resamples} resamples, seed {seed}"


def test_the_same_seed_gives_the_same_intervals_and_another_seed_other_ones():
    values = _values()
    first, again = ranking_confidence(values, resamples=200), ranking_confidence(values, resamples=200)
    other = ranking_confidence(values, resamples=200, seed=1)
    assert np.array_equal(first.intervals.low, again.intervals.low)
    assert not np.array_equal(first.intervals.low, other.intervals.low)


def test_unswept_cells_stay_out_of_the_top_k():
    values = _values(layers=2, heads=3)
    values[:, 1, 2] = np.nan  # e.g. an MLP-less layer, or a head not swept
    got = ranking_confidence(values, k=5, resamples=100)
    assert got.stability.frequency[1, 2] == 0 and not got.stability.in_top[1, 2]
    assert np.isnan(got.intervals.low[1, 2]) and not got.intervals.crosses_zero[1, 2]


def test_estimate_agreement_ranks_and_names_the_worst_cells():
    exact = np.array([[-3.0, 0.1, 0.2], [1.0, -0.5, 0.0]])
    estimate = exact.copy()
    estimate[1, 2] = -4.0  # the estimate makes an idle head the largest
    got = estimate_agreement(estimate, exact, n_worst=2)
    # Spearman's ρ written out: Pearson correlation of the ranks (no ties here)
    ranks = [np.argsort(np.argsort(a.ravel())) for a in (estimate, exact)]
    assert got.spearman == pytest.approx(np.corrcoef(*ranks)[0, 1], abs=1e-12)
    assert got.exact_rank[0, 0] == 1 and got.estimate_rank[1, 2] == 1
    assert got.exact_rank[1, 2] == 6  # the smallest |effect| of six
    assert got.worst[0] == (1, 2)
    identical = estimate_agreement(exact, exact)
    assert identical.spearman == pytest.approx(1.0)


def test_fewer_valid_cells_than_k_fill_the_top_k_alone():
    """A receiver in layer 1 has one layer of senders: with k above their count, the top-k is those cells, never a
    cell that holds no value."""
    values = _values(layers=2, heads=3)
    values[:, 1, :] = np.nan  # only layer 0's three cells hold values
    got = ranking_confidence(values, k=10, resamples=50)
    assert got.stability.k == 3
    assert got.stability.in_top[0].all() and not got.stability.in_top[1].any()
    np.testing.assert_array_equal(got.stability.frequency, [[1, 1, 1], [0, 0, 0]])
