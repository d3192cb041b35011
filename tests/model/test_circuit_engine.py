"""The circuit search equals the sequential algorithm written here from its definition, with plain PyTorch hooks on
an untouched transformers copy of the model (tests/model/reference.py: one full forward per candidate, inputs built
from the prompts' text with the HF tokenizer): the same removals in the same order, the same scores."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from headscope.ablation import prepare_dataset
from headscope.circuit import find_circuit, run_circuit
from headscope.errors import Cancelled
from headscope.results_cache import ResultsCache
from headscope.tasks import Dataset
from tests.model.reference import HandWritten, assert_same_inputs, digit_items, plain_inputs

CORRUPTED = ["3 1 4 1 ", "5 9 2 6 ", "5 3 5 8 ", "9 7 9 3 ", "2 3 8 4 ", "6 2 6 4 "]


def sequential_circuit(reference, n_layers, n_heads, threshold, one_pass):
    """The algorithm as the issue defines it: passes over layers last to first, MLP then heads 0 … H−1; remove a
    component for good when the circuit without it scores ≥ threshold; until a pass removes nothing."""
    order = []
    for layer in reversed(range(n_layers)):
        order += [(layer, None)] + [(layer, head) for head in range(n_heads)]
    clean = reference.ld(set())
    removed, removals, passes = set(), [], 0
    while True:
        passes += 1
        changed = False
        for component in order:
            if component in removed:
                continue
            ld = reference.ld(removed | {component})
            if 100 * ld / clean >= threshold:
                removed.add(component)
                removals.append((component, ld, passes))
                changed = True
        if one_pass or not changed:
            break
    kept = [c for c in order if c not in removed]
    effects = {c: reference.ld(removed | {c}) for c in kept}
    return clean, removals, passes, effects


def assert_same(found, expected, atol):
    clean, removals, passes, effects = expected
    assert found.clean_ld == pytest.approx(clean, abs=atol)
    assert [(r.layer, r.head) for r in found.removals] == [c for c, _, _ in removals]  # the same order of removals
    assert [r.pass_number for r in found.removals] == [p for _, _, p in removals]
    np.testing.assert_allclose([r.ld_after for r in found.removals], [ld for _, ld, _ in removals], atol=atol)
    assert found.passes == passes
    assert {(e.layer, e.head) for e in found.kept_effects} == set(effects)
    for effect in found.kept_effects:
        assert effect.ld_without == pytest.approx(effects[(effect.layer, effect.head)], abs=atol)
        assert effect.score_without == pytest.approx(100 * effect.ld_without / found.clean_ld)


def positive_dataset(model, reference, tokenizer, starts):
    """Digit prompts with each row's answers ordered so that the model prefers the first (LD > 0 on every row): the
    tiny random model does not continue digits, and the score 100·LD(C)/LD_clean needs LD_clean > 0. The order is
    read from the untouched reference; returns headscope's encoding and the reference's own inputs."""
    items = digit_items(starts, CORRUPTED[:len(starts)])
    inputs = plain_inputs(tokenizer, items)
    with torch.no_grad():
        logits = reference(inputs.clean).logits[:, -1, :]
    rows = torch.arange(inputs.n_prompts)
    diff = logits[rows, inputs.correct_ids] - logits[rows, inputs.incorrect_ids]
    items = tuple(item if diff[i] > 0 else replace(item, correct=item.incorrect, incorrect=item.correct)
                  for i, item in enumerate(items))
    encoded = prepare_dataset(model, Dataset("digits-ordered", items))
    inputs = plain_inputs(tokenizer, items)
    assert_same_inputs(encoded, inputs)
    return encoded, inputs


@pytest.fixture(scope="module")
def tiny_case(tiny_model, tiny_reference, embedded_tokenizer):
    return positive_dataset(tiny_model, tiny_reference, embedded_tokenizer, [1, 2, 3, 4, 5, 2])


@pytest.fixture(scope="module")
def tiny_tasks(tiny_case):
    return tiny_case[0]


# thresholds chosen so that each method's search removes some components and keeps others, over several passes
TINY_CASES = [("zero", 90.0), ("mean", 99.0), ("resample", 80.0)]


@pytest.mark.parametrize(("method", "threshold"), TINY_CASES)
@pytest.mark.parametrize("one_pass", [False, True])
def test_engine_equals_the_sequential_algorithm_on_the_tiny_model(tiny_model, tiny_reference, tiny_case, method,
                                                                   threshold, one_pass):
    tiny_tasks, inputs = tiny_case
    reference = HandWritten(tiny_reference, inputs, method)
    expected = sequential_circuit(reference, 3, 4, threshold, one_pass)
    found = find_circuit(tiny_model, tiny_tasks, method, threshold, one_pass=one_pass)
    assert_same(found, expected, atol=1e-4)
    # the case is not trivial: something is removed and something kept
    assert 0 < len(found.removals) < 15 and found.kept_effects
    if not one_pass:
        assert found.passes >= 2
    # no decision sat so close to the threshold that rounding could have made it
    scores = [100 * ld / expected[0] for _, ld, _ in expected[1]] + [100 * ld / expected[0]
                                                                      for ld in expected[3].values()]
    assert min(abs(s - threshold) for s in scores) > 1e-3


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_every_path_and_speculation_gives_the_same_decisions(tiny_model, tiny_tasks, method):
    threshold = dict(TINY_CASES)[method]
    results = {(path, speculation): find_circuit(tiny_model, tiny_tasks, method, threshold, path=path,
                                                 speculation=speculation)
               for path in ("fast", "general") for speculation in ("adaptive", "kept", "none")}
    chunked = find_circuit(tiny_model, tiny_tasks, method, threshold, chunk=1)  # one group per in-flight batch
    base = results[("fast", "none")]
    for found in [*results.values(), chunked]:
        assert [r.component for r in found.removals] == [r.component for r in base.removals]
        # float32 LDs from differently batched forwards: 1e-5 of their scale
        np.testing.assert_allclose([r.ld_after for r in found.removals], [r.ld_after for r in base.removals],
                                   atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose([e.ld_without for e in found.kept_effects],
                                   [e.ld_without for e in base.kept_effects], atol=1e-5, rtol=1e-5)
    # "kept" batches a layer's candidates: one batch per removal plus one per layer visit, at most
    kept = results[("fast", "kept")]
    visits = kept.passes * 3
    assert kept.batches <= len(kept.removals) + visits + 1
    assert results[("fast", "none")].batches == results[("fast", "none")].evaluations  # one candidate per batch


def _embedded_case(embedded_model, embedded_hf_tokenizer, starts):
    items = digit_items(starts, CORRUPTED[:len(starts)])
    encoded = prepare_dataset(embedded_model, Dataset("digits-by-hand", items))
    inputs = plain_inputs(embedded_hf_tokenizer, items)
    assert_same_inputs(encoded, inputs)
    return encoded, inputs


@pytest.mark.slow  # ~2 min of sequential reference forwards; engine = sequential is checked by default on the tiny
# models (every method, every path and speculation)
def test_engine_equals_the_sequential_algorithm_on_the_embedded_model(embedded_model, embedded_reference,
                                                                       embedded_hf_tokenizer):
    encoded, inputs = _embedded_case(embedded_model, embedded_hf_tokenizer, [1, 4])
    reference = HandWritten(embedded_reference, inputs, "mean")
    expected = sequential_circuit(reference, 30, 9, 80.0, one_pass=True)
    found = find_circuit(embedded_model, encoded, "mean", 80.0, one_pass=True)
    assert_same(found, expected, atol=2e-4)
    assert len(found.removals) > 50 and len(found.kept_effects) > 5


@pytest.mark.slow
def test_engine_equals_the_sequential_algorithm_until_stable_on_the_embedded_model(embedded_model, embedded_reference,
                                                                                    embedded_hf_tokenizer):
    encoded, inputs = _embedded_case(embedded_model, embedded_hf_tokenizer, [1, 2, 4, 5])
    reference = HandWritten(embedded_reference, inputs, "mean")
    expected = sequential_circuit(reference, 30, 9, 80.0, one_pass=False)
    found = find_circuit(embedded_model, encoded, "mean", 80.0)
    assert_same(found, expected, atol=2e-4)
    assert found.passes >= 2


def test_cancel_leaves_nothing_in_the_cache(tiny_model, tiny_tasks, tmp_path):
    cache = ResultsCache(tmp_path)
    calls = []

    def cancel_after_a_few() -> bool:
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(Cancelled):
        run_circuit(tiny_model, tiny_tasks, "mean", 99.0, cache=cache, should_cancel=cancel_after_a_few)
    assert not cache.entries("circuit") and not list(tmp_path.rglob("*.json"))
    done = run_circuit(tiny_model, tiny_tasks, "mean", 99.0, cache=cache)
    assert not done.cached and len(cache.entries("circuit")) == 1
    again = run_circuit(tiny_model, tiny_tasks, "mean", 99.0, cache=cache)
    assert again.cached and again.heads == done.heads and again.removals == done.removals


def test_estimate_is_attribution_ranked_greedy_pruning_and_labelled(tiny_model, tiny_tasks, tmp_path):
    from headscope.ablation import attribution_sweep
    from headscope.circuit import estimate_circuit

    numbers = attribution_sweep(tiny_model, tiny_tasks, "mean")
    effects = {(layer, head): numbers.ablated_ld[layer, head] - numbers.clean_ld
               for layer in range(3) for head in range(4)}
    effects |= {(layer, None): numbers.mlp_ablated_ld[layer] - numbers.clean_ld for layer in range(3)}
    # the definition: least harmful first, removed while the estimated (additive) score stays ≥ the threshold
    ranked = sorted(effects, key=lambda c: -effects[c])
    expected, total = [], numbers.clean_ld
    for component in ranked:
        if 100 * (total + effects[component]) / numbers.clean_ld < 99.0:
            break
        total += effects[component]
        expected.append(component)
    estimate = estimate_circuit(tiny_model, tiny_tasks, "mean", 99.0)
    assert [(r.layer, r.head) for r in estimate.removals] == expected and 0 < len(expected) < 15
    assert estimate.circuit_ld == pytest.approx(total)
    cache = ResultsCache(tmp_path)
    labelled = run_circuit(tiny_model, tiny_tasks, "mean", 99.0, estimate=True, cache=cache)
    assert labelled.estimate and labelled.path == "estimate" and "estimate" in labelled.label
    exact = run_circuit(tiny_model, tiny_tasks, "mean", 99.0, cache=cache)
    assert not exact.cached and not exact.estimate  # the estimate never stands in for the exact result


def test_a_search_that_does_not_fit_memory_is_refused_before_it_runs(tiny_model, tiny_tasks, monkeypatch):
    from headscope.memory import MemoryRefused

    monkeypatch.setenv("HEADSCOPE_MEMORY_BUDGET_MB", "0.01")
    calls = []
    with pytest.raises(MemoryRefused, match="A circuit search needs"):
        find_circuit(tiny_model, tiny_tasks, "mean", 99.0, progress=calls.append)
    assert not calls  # nothing ran
