"""The circuit search equals the sequential algorithm written here from its definition, with plain PyTorch hooks on
the Hugging Face modules (one full forward per candidate): the same removals in the same order, the same scores."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from headscope.ablation import prepare_dataset
from headscope.circuit import find_circuit, run_circuit
from headscope.errors import Cancelled
from headscope.results_cache import ResultsCache
from headscope.tasks import Dataset, build_task_dataset


class HandWritten:
    """LD with a set of heads and MLPs ablated, from HF's own forward: a pre-hook on each layer's o_proj replaces the
    removed heads' slices of its input (z), a forward hook on each layer's MLP replaces its output."""

    def __init__(self, model, encoded, method):
        self.hf = model.hf_model
        self.layers = self.hf.model.layers
        self.d_head = model.info.d_head
        self.encoded = encoded
        self.method = method
        self.z, self.mlp = self._corrupted_values()
        self.calls = 0

    def _corrupted_values(self):
        n = len(self.layers)
        if self.method == "zero":
            return [None] * n, [None] * n
        seen_z, seen_mlp = {}, {}
        handles = []
        for i, layer in enumerate(self.layers):
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
                lambda module, args, i=i: seen_z.__setitem__(i, args[0].detach().clone())))
            handles.append(layer.mlp.register_forward_hook(
                lambda module, args, out, i=i: seen_mlp.__setitem__(i, out.detach().clone())))
        with torch.no_grad():
            self.hf(self.encoded.corrupted)
        for handle in handles:
            handle.remove()
        if self.method == "mean":
            return ([seen_z[i].mean(0, keepdim=True) for i in range(n)],
                    [seen_mlp[i].mean(0, keepdim=True) for i in range(n)])
        return [seen_z[i] for i in range(n)], [seen_mlp[i] for i in range(n)]  # resample: paired prompts

    def ld(self, removed):
        self.calls += 1
        handles = []
        for i, layer in enumerate(self.layers):
            heads = [head for (at, head) in removed if at == i and head is not None]
            if heads:
                def replace_z(module, args, i=i, heads=tuple(heads)):
                    z = args[0].clone()
                    for head in heads:
                        cols = slice(head * self.d_head, (head + 1) * self.d_head)
                        z[..., cols] = 0.0 if self.z[i] is None else self.z[i][..., cols].expand_as(z[..., cols])
                    return (z, *args[1:])
                handles.append(layer.self_attn.o_proj.register_forward_pre_hook(replace_z))
            if (i, None) in removed:
                def replace_mlp(module, args, out, i=i):
                    return torch.zeros_like(out) if self.mlp[i] is None else self.mlp[i].expand_as(out).clone()
                handles.append(layer.mlp.register_forward_hook(replace_mlp))
        try:
            with torch.no_grad():
                logits = self.hf(self.encoded.clean).logits[:, -1, :].double()
        finally:
            for handle in handles:
                handle.remove()
        rows = torch.arange(self.encoded.n_prompts)
        return float((logits[rows, self.encoded.correct_ids] - logits[rows, self.encoded.incorrect_ids]).mean())


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


def positive_dataset(model, task, n_prompts, seed):
    """A task's prompts with each row's answers ordered so that the model prefers the first (LD > 0 on every row):
    the tiny random model does not continue digits, and the score 100·LD(C)/LD_clean needs LD_clean > 0."""
    dataset = build_task_dataset(task, n_prompts, seed=seed, model=model)
    encoded = prepare_dataset(model, dataset)
    logits = model.hf_model(encoded.clean).logits[:, -1, :]
    rows = torch.arange(encoded.n_prompts)
    diff = logits[rows, encoded.correct_ids] - logits[rows, encoded.incorrect_ids]
    items = tuple(item if diff[i] > 0 else replace(item, correct=item.incorrect, incorrect=item.correct)
                  for i, item in enumerate(encoded.dataset.items))
    return prepare_dataset(model, Dataset(dataset.name + "-ordered", items, builtin=False))


@pytest.fixture(scope="module")
def tiny_tasks(tiny_model):
    return positive_dataset(tiny_model, "digits", 6, seed=1)


# thresholds chosen so that each method's search removes some components and keeps others, over several passes
TINY_CASES = [("zero", 90.0), ("mean", 99.0), ("resample", 80.0)]


@pytest.mark.parametrize(("method", "threshold"), TINY_CASES)
@pytest.mark.parametrize("one_pass", [False, True])
def test_engine_equals_the_sequential_algorithm_on_the_tiny_model(tiny_model, tiny_tasks, method, threshold,
                                                                   one_pass):
    reference = HandWritten(tiny_model, tiny_tasks, method)
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
        np.testing.assert_allclose([r.ld_after for r in found.removals], [r.ld_after for r in base.removals],
                                   atol=1e-5)
        np.testing.assert_allclose([e.ld_without for e in found.kept_effects],
                                   [e.ld_without for e in base.kept_effects], atol=1e-5)
    # "kept" batches a layer's candidates: one batch per removal plus one per layer visit, at most
    kept = results[("fast", "kept")]
    visits = kept.passes * 3
    assert kept.batches <= len(kept.removals) + visits + 1
    assert results[("fast", "none")].batches == results[("fast", "none")].evaluations  # one candidate per batch


def test_engine_equals_the_sequential_algorithm_on_the_embedded_model(embedded_model):
    encoded = prepare_dataset(embedded_model, build_task_dataset("digits", 2, seed=0, model=embedded_model))
    reference = HandWritten(embedded_model, encoded, "mean")
    expected = sequential_circuit(reference, 30, 9, 80.0, one_pass=True)
    found = find_circuit(embedded_model, encoded, "mean", 80.0, one_pass=True)
    assert_same(found, expected, atol=2e-4)
    assert len(found.removals) > 50 and len(found.kept_effects) > 5


@pytest.mark.slow
def test_engine_equals_the_sequential_algorithm_until_stable_on_the_embedded_model(embedded_model):
    encoded = prepare_dataset(embedded_model, build_task_dataset("digits", 4, seed=0, model=embedded_model))
    reference = HandWritten(embedded_model, encoded, "mean")
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
