"""Each prompt's own LD through the one evaluator, against TransformerLens' own activation patching
(`generic_activation_patch(..., reduce="none")`, one forward per head, per-example metric) on the embedded model and
on a tiny GPT-2; and the KV-group sweep against hand-written hooks that ablate a group's query heads together."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformer_lens.patching import generic_activation_patch, layer_head_vector_patch_setter

from headscope.ablation import exact_sweep, prepare_dataset, run_sweep
from headscope.backends.interventions import InterventionGroup, SourceKind, ValueSource
from headscope.component import Component
from headscope.engine import check_method, evaluation, logit_diff_task, prompt_rows
from headscope.results_cache import ResultsCache
from headscope.tasks import Dataset, build_task_dataset
from tests.model.reference import HandWritten, digit_items, plain_inputs

# the embedded model's digits with one prompt repeated (its per-prompt values must come back twice)
ITEMS = digit_items([1, 2, 4, 1, 5], ["3 1 4 1 ", "5 9 2 6 ", "5 3 5 8 ", "3 1 4 1 ", "9 7 9 3 "])
HEADS = [Component(3, 5), Component(29, 8)]
TOL = 1e-4  # float32 LDs of a 30-layer model, scale ~5: one forward against another batched differently


def reference_per_prompt(backend, encoded, heads: list[Component]) -> tuple[np.ndarray, np.ndarray]:
    """TransformerLens' resample (noising) patching: run the clean prompts, each head's z taken from the corrupted
    run in turn; the metric keeps each prompt's logit[correct] − logit[incorrect] at the last position.
    Returns (ld[head, prompt], the unpatched clean run's ld[prompt])."""
    bridge = backend.bridge
    ids = torch.stack([encoded.correct_ids, encoded.incorrect_ids], dim=1).cpu()

    def metric(logits: torch.Tensor) -> torch.Tensor:
        picked = logits[:, -1, :].float().cpu().gather(1, ids)
        return picked[:, 0] - picked[:, 1]

    with torch.no_grad():
        _, corrupted_cache = bridge.run_with_cache(encoded.corrupted)
    index = pd.DataFrame({"layer": [h.layer for h in heads], "head_index": [h.head for h in heads]})
    result = generic_activation_patch(bridge, encoded.clean, corrupted_cache, metric, layer_head_vector_patch_setter,
                                      "z", index_df=index, reduce="none", baseline=True)
    assert not result.reduced and tuple(result.values.shape) == (len(heads), encoded.n_prompts)
    return result.values.double().cpu().numpy(), result.baseline.double().cpu().numpy()


@pytest.fixture(scope="module")
def embedded_case(embedded_model):
    encoded = prepare_dataset(embedded_model, Dataset("digits-repeated", ITEMS))
    return encoded, reference_per_prompt(embedded_model, encoded, HEADS)


def _evaluated(model, encoded, heads, path):
    spec = check_method("resample", encoded)
    task = logit_diff_task(encoded, spec)  # a repeated prompt is one run, weighted by its count
    groups = [InterventionGroup.ablating([head], ValueSource(SourceKind(spec.source))) for head in heads]
    with evaluation(model, task, spec, label="a test", what="The test", subject="The test", path=path) as evaluator:
        assert evaluator.path == path
        per_task = evaluator.evaluate_per_prompt(groups)
        summed = evaluator.evaluate(groups)
        clean = evaluator.clean_prompt_lds()
    return task, prompt_rows(encoded, spec), per_task, summed, clean


@pytest.mark.parametrize("path", ["fast", pytest.param("general", marks=pytest.mark.slow)])
def test_per_prompt_lds_equal_transformer_lens_patching_on_the_embedded_model(embedded_model, embedded_case, path):
    encoded, (expected, expected_clean) = embedded_case
    task, rows, per_task, summed, clean = _evaluated(embedded_model, encoded, HEADS, path)
    assert task.n_prompts == 4 and list(rows) == [0, 1, 2, 0, 3]
    np.testing.assert_allclose(per_task[:, rows], expected, atol=TOL, rtol=0)  # back to the dataset's 5 prompts
    np.testing.assert_allclose(clean[rows], expected_clean, atol=TOL, rtol=0)
    # the weighted sum of the per-prompt values is the evaluator's LD, and the prompts differ (not one number)
    np.testing.assert_allclose(per_task @ task.weights.double().numpy(), summed, atol=1e-5, rtol=1e-5)
    assert np.ptp(expected, axis=1).max() > 0.1


def test_a_sweep_keeps_per_prompt_values_equal_to_transformer_lens_on_tiny_gpt2(tiny_family_loader, tmp_path):
    family = tiny_family_loader("gpt2")
    backend = family.backend
    encoded = prepare_dataset(backend, build_task_dataset("digits", 8, seed=3, model=backend))
    result = run_sweep(backend, encoded, "resample", cache=ResultsCache(tmp_path), use_cache=False)
    info = backend.info
    assert result.per_prompt_ld.shape == (8, info.n_layers, info.n_heads)
    assert result.per_prompt_mlp_ld.shape == (8, info.n_layers) and result.per_prompt_clean_ld.shape == (8,)
    heads = [Component(layer, head) for layer in range(info.n_layers) for head in range(info.n_heads)]
    by_head, expected_clean = reference_per_prompt(backend, encoded, heads)
    expected = by_head.T.reshape(8, info.n_layers, info.n_heads)
    np.testing.assert_allclose(result.per_prompt_ld, expected, atol=1e-5, rtol=1e-5)  # LDs ~0.1–1, float32
    # the means are the sweep's own numbers
    np.testing.assert_allclose(result.per_prompt_ld.mean(0), result.ablated_ld, atol=1e-6)
    np.testing.assert_allclose(result.per_prompt_mlp_ld.mean(0), result.mlp_ablated_ld, atol=1e-6)
    assert result.per_prompt_clean_ld.mean() == pytest.approx(result.clean_ld, abs=1e-6)
    np.testing.assert_allclose(result.per_prompt_clean_ld, expected_clean, atol=1e-5, rtol=1e-5)
    # the general path (the backend's batched full forwards) gives the same per-prompt values
    _, rows, per_task, _, clean = _evaluated(backend, encoded, heads, "general")
    np.testing.assert_allclose(per_task[:, rows].T.reshape(expected.shape), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(clean[rows], result.per_prompt_clean_ld, atol=1e-5, rtol=1e-5)
    # stored and read back whole
    again = run_sweep(backend, encoded, "resample", cache=ResultsCache(tmp_path))
    assert again.cached and np.array_equal(again.per_prompt_ld, result.per_prompt_ld)


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_kv_group_sweep_equals_hand_written_hooks_on_a_tiny_gqa_model(tiny_model, tiny_reference,
                                                                        embedded_tokenizer, method):
    items = digit_items([1, 2, 3], ["3 1 4 1 ", "5 9 2 6 ", "5 3 5 8 "])
    encoded = prepare_dataset(tiny_model, Dataset("digits-by-hand", items))
    info = tiny_model.info
    assert info.n_kv_heads < info.n_heads  # grouped-query: 4 query heads over 2 KV heads
    per_kv = info.n_heads // info.n_kv_heads
    groups = exact_sweep(tiny_model, encoded, method, unit="kv-group")
    assert groups.ablated_ld.shape == (info.n_layers, info.n_kv_heads)
    reference = HandWritten(tiny_reference, plain_inputs(embedded_tokenizer, items), method)
    for layer in range(info.n_layers):
        for group in range(info.n_kv_heads):
            heads = {(layer, group * per_kv + k) for k in range(per_kv)}
            assert groups.ablated_ld[layer, group] == pytest.approx(reference.ld(heads), abs=1e-5, rel=1e-5)
    # a group's ablation is not the sum of its heads' (the heads interact), so the test reads real group runs
    single = exact_sweep(tiny_model, encoded, method)
    summed = (single.ablated_ld - single.clean_ld).reshape(info.n_layers, info.n_kv_heads, per_kv).sum(-1)
    assert np.abs(summed - (groups.ablated_ld - groups.clean_ld)).max() > 1e-3


def test_the_nnsight_backend_and_its_remote_dry_run_give_the_same_per_prompt_values(tiny_model, tiny_model_dir):
    from headscope.loading import ModelRequest, load_model

    local = load_model(ModelRequest(str(tiny_model_dir), backend="nnsight", device="cpu"))
    encoded = prepare_dataset(tiny_model, build_task_dataset("digits", 5, seed=4, model=tiny_model))
    info = tiny_model.info
    heads = [Component(layer, head) for layer in range(info.n_layers) for head in range(info.n_heads)]
    _, _, expected, _, expected_clean = _evaluated(tiny_model, encoded, heads, "fast")
    assert np.ptp(expected, axis=1).max() > 1e-2
    for backend in (local, local.with_mode("simulate")):
        _, _, per_task, _, clean = _evaluated(backend, encoded, heads, "general")
        np.testing.assert_allclose(per_task, expected, atol=1e-5, rtol=1e-5)  # LDs ~1, float32
        np.testing.assert_allclose(clean, expected_clean, atol=1e-5, rtol=1e-5)
