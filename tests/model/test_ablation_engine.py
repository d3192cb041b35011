"""The batched engine equals the one-forward-per-head loop, and both equal hand-written hooks on an untouched
transformers copy of the model (tests/model/reference.py), for every method, heads and MLPs alike."""

import numpy as np
import pytest
import torch

from headscope.ablation import attribution_sweep, exact_sweep, filter_correct, naive_sweep, prepare_dataset
from headscope.errors import InputError
from headscope.tasks import Dataset, PromptItem, build_task_dataset
from tests.model.reference import HandWritten, assert_same_inputs, digit_items, plain_inputs

# the embedded model's digits, written out here (not built by headscope's task code), with corrupted prompts
EMBEDDED_ITEMS = digit_items([1, 2, 4, 5], ["3 1 4 1 ", "5 9 2 6 ", "5 3 5 8 ", "9 7 9 3 "])
TINY_ITEMS = digit_items([1, 2, 3, 4, 5], ["3 1 4 1 ", "5 9 2 6 ", "5 3 5 8 ", "9 7 9 3 ", "2 3 8 4 "])


@pytest.fixture(scope="module")
def tiny_digits(tiny_model):
    return prepare_dataset(tiny_model, build_task_dataset("digits", 6, seed=1, model=tiny_model))


@pytest.fixture(scope="module")
def embedded_digits(embedded_model):
    return prepare_dataset(embedded_model, Dataset("digits-by-hand", EMBEDDED_ITEMS))


@pytest.fixture(scope="module")
def embedded_inputs(embedded_hf_tokenizer, embedded_digits):
    inputs = plain_inputs(embedded_hf_tokenizer, EMBEDDED_ITEMS)
    assert_same_inputs(embedded_digits, inputs)
    return inputs


@pytest.fixture(scope="module")
def embedded_exact(embedded_model, embedded_digits):
    """Exact sweeps of the embedded model, computed once per method for the whole module."""
    done = {}

    def get(method):
        if method not in done:
            done[method] = exact_sweep(embedded_model, embedded_digits, method)
        return done[method]

    return get


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_batched_equals_naive_on_tiny_model(tiny_model, tiny_digits, method):
    naive, naive_mlp, naive_clean = naive_sweep(tiny_model, tiny_digits, method)
    for chunk in (1, 3, 5):  # one head per batch, several, and heads plus the MLP in one batch
        ablated, mlp, clean, _ = exact_sweep(tiny_model, tiny_digits, method, chunk=chunk)
        # float32 LDs: 1e-5 of their scale (and 1e-5 absolute near 0)
        assert clean == pytest.approx(naive_clean, abs=1e-5, rel=1e-5)
        np.testing.assert_allclose(ablated, naive, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(mlp, naive_mlp, atol=1e-5, rtol=1e-5)
    # the heads do something: ablations move LD away from clean (so equality above is not trivial)
    assert np.abs(naive - naive_clean).max() > 1e-2


def test_repeated_prompts_are_computed_once_with_identical_results(tiny_model):
    # 6 distinct digit prompts repeated to 12: deduplication must not change any number
    encoded = prepare_dataset(tiny_model, build_task_dataset("digits", 12, seed=2, model=tiny_model))
    for method in ("mean", "resample"):
        fast = exact_sweep(tiny_model, encoded, method, deduplicate=True)
        full = exact_sweep(tiny_model, encoded, method, deduplicate=False)
        np.testing.assert_allclose(fast[0], full[0], atol=1e-5, rtol=1e-5)  # float32: 1e-5 of the LDs' scale
        np.testing.assert_allclose(fast[1], full[1], atol=1e-5, rtol=1e-5)
        assert fast[2] == pytest.approx(full[2], abs=1e-5, rel=1e-5)
        assert fast[3] == pytest.approx(full[3], abs=1e-5, rel=1e-5)


# slow: batched = naive is checked in the default run on the tiny model (every method, three chunk sizes), and the
# batched sweep of the embedded model against hand-written hooks below
@pytest.mark.slow
@pytest.mark.parametrize("method", ["mean", "resample"])
def test_batched_equals_naive_on_embedded_model(embedded_model, embedded_digits, embedded_exact, method):
    layers = [0, 3, 16, 29]
    naive, naive_mlp, naive_clean = naive_sweep(embedded_model, embedded_digits, method, layers=layers)
    ablated, mlp, clean, _ = embedded_exact(method)
    assert clean == pytest.approx(naive_clean, abs=1e-4)
    np.testing.assert_allclose(ablated[layers], naive[layers], atol=1e-4, rtol=0)
    np.testing.assert_allclose(mlp[layers], naive_mlp[layers], atol=1e-4, rtol=0)
    assert np.isfinite(ablated).all()


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_every_method_matches_hand_written_hooks_on_the_tiny_model(tiny_model, tiny_reference, embedded_tokenizer,
                                                                    method):
    """Every head and every MLP of the tiny model against the reference's own forward per component."""
    encoded = prepare_dataset(tiny_model, Dataset("digits-by-hand", TINY_ITEMS))
    inputs = plain_inputs(embedded_tokenizer, TINY_ITEMS)
    assert_same_inputs(encoded, inputs)
    ablated, mlp, clean, _ = exact_sweep(tiny_model, encoded, method)
    reference = HandWritten(tiny_reference, inputs, method)
    # tolerance: LDs of a few units from float32 forwards (the engine batches and reuses layers; ~1e-6 apart here)
    assert clean == pytest.approx(reference.ld(set()), abs=1e-4)
    expected = np.array([[reference.ld({(layer, head)}) for head in range(4)] for layer in range(3)])
    np.testing.assert_allclose(ablated, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(mlp, [reference.ld({(layer, None)}) for layer in range(3)], atol=1e-4, rtol=0)
    assert np.abs(expected - clean).max() > 1e-2  # the heads do something: equality above is not trivial


# zero and resample slow (a whole exact sweep of the embedded model each): every method is checked against
# hand-written hooks in the default run on the tiny model above, and mean here on the embedded model
@pytest.mark.parametrize("method", [pytest.param("zero", marks=pytest.mark.slow), "mean",
                                    pytest.param("resample", marks=pytest.mark.slow)])
def test_every_method_matches_hand_written_hooks_on_the_embedded_model(embedded_reference, embedded_inputs,
                                                                        embedded_exact, method):
    ablated, mlp, clean, _ = embedded_exact(method)
    reference = HandWritten(embedded_reference, embedded_inputs, method)
    # tolerance: LDs of ~5 through 30 float32 layers; 1e-4 is ~2e-5 of the scale
    assert clean == pytest.approx(reference.ld(set()), abs=1e-4)
    for layer, head in [(0, 0), (5, 2), (16, 0), (29, 8)]:
        assert ablated[layer, head] == pytest.approx(reference.ld({(layer, head)}), abs=1e-4)
    for layer in (0, 16, 29):
        assert mlp[layer] == pytest.approx(reference.ld({(layer, None)}), abs=1e-4)


def test_attribution_estimate_tracks_exact_effects(embedded_model, embedded_digits, embedded_exact):
    exact, _exact_mlp, clean, corrupt = embedded_exact("mean")
    estimate, _estimate_mlp, est_clean, est_corrupt = attribution_sweep(embedded_model, embedded_digits, "mean")
    assert est_clean == pytest.approx(clean, abs=1e-4) and est_corrupt == pytest.approx(corrupt, abs=1e-4)
    exact_change = (exact - clean).ravel()
    estimate_change = (estimate - clean).ravel()
    ranks = np.argsort(np.argsort(exact_change)), np.argsort(np.argsort(estimate_change))
    spearman = np.corrcoef(*ranks)[0, 1]
    assert spearman > 0.5, spearman
    # the largest exact effect is among the estimate's ten largest
    assert np.argmax(np.abs(exact_change)) in np.argsort(-np.abs(estimate_change))[:10]


def test_clean_and_corrupted_ld_are_mean_logit_differences(embedded_reference, embedded_inputs, embedded_exact):
    _, _, clean, corrupt = embedded_exact("mean")
    rows = torch.arange(embedded_inputs.n_prompts)
    with torch.no_grad():
        logits = embedded_reference(embedded_inputs.clean).logits[:, -1, :]
        corrupted_logits = embedded_reference(embedded_inputs.corrupted).logits[:, -1, :]
    ids = embedded_inputs.correct_ids, embedded_inputs.incorrect_ids
    assert clean == pytest.approx(float((logits[rows, ids[0]] - logits[rows, ids[1]]).mean()), abs=1e-4)
    expected_corrupt = float((corrupted_logits[rows, ids[0]] - corrupted_logits[rows, ids[1]]).mean())
    assert corrupt == pytest.approx(expected_corrupt, abs=1e-4)
    assert clean > 2 and corrupt < clean  # the model continues digits; corrupted prompts lose the signal


def test_filter_correct_keeps_prompts_the_model_gets_right(embedded_model):
    encoded = prepare_dataset(embedded_model, build_task_dataset("template", 16, model=embedded_model))
    kept = filter_correct(embedded_model, encoded)
    logits = embedded_model.logits(kept.clean)[:, -1, :]
    assert (logits.argmax(-1) == kept.correct_ids).all()
    assert 0 < kept.n_prompts < encoded.n_prompts  # this small model misses some template prompts
    with pytest.raises(InputError, match="gets none of the"):  # and every month (it is a 135 M model)
        filter_correct(embedded_model, prepare_dataset(embedded_model, build_task_dataset("months", 8,
                                                                                          model=embedded_model)))
    assert "dropped" in kept.dataset.notes[-1]


def test_a_dropped_first_prompt_takes_its_token_labels_along(embedded_model):
    # the labels name the first kept prompt's tokens: a dropped first prompt's tokens would label the heatmap's axis
    dataset = Dataset("mine.csv", (PromptItem("5 3 8 1 ", "7", "1"), PromptItem("1 2 3 4 ", "5", "4"),
                                   PromptItem("2 3 4 5 ", "6", "5")))
    kept = filter_correct(embedded_model, prepare_dataset(embedded_model, dataset))
    assert kept.dataset.items[0].prompt == "1 2 3 4 "  # the model cannot continue '5 3 8 1 '
    expected = embedded_model.tokenizer.convert_ids_to_tokens(embedded_model.input_ids("1 2 3 4 "))
    assert len(kept.token_labels) == len(expected)
    assert [label.replace("·", " ") for label in kept.token_labels[1:]] == [
        token.replace("Ġ", " ") for token in expected[1:]]


def test_mean_ablation_without_corrupted_prompts_is_refused(embedded_model):
    dataset = Dataset("mine.csv", (PromptItem("1 2 3 4 ", "5", "4"), PromptItem("2 3 4 5 ", "6", "5")))
    encoded = prepare_dataset(embedded_model, dataset)
    with pytest.raises(InputError, match="needs corrupted prompts"):
        exact_sweep(embedded_model, encoded, "mean")
    ablated, _, _clean, corrupt = exact_sweep(embedded_model, encoded, "zero", include_mlp=False)
    assert corrupt is None and np.isfinite(ablated).all()
