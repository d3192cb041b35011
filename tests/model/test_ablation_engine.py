"""The batched engine equals the one-forward-per-head reference, and both equal hand-written hooks."""

import numpy as np
import pytest
import torch

from headscope.ablation import attribution_sweep, exact_sweep, filter_correct, naive_sweep, prepare_dataset
from headscope.errors import InputError
from headscope.tasks import Dataset, PromptItem, build_task_dataset


@pytest.fixture(scope="module")
def tiny_digits(tiny_model):
    return prepare_dataset(tiny_model, build_task_dataset("digits", 6, seed=1, model=tiny_model))


@pytest.fixture(scope="module")
def embedded_digits(embedded_model):
    return prepare_dataset(embedded_model, build_task_dataset("digits", 4, seed=0, model=embedded_model))


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
        assert clean == pytest.approx(naive_clean, abs=1e-5)
        np.testing.assert_allclose(ablated, naive, atol=1e-5, rtol=0)
        np.testing.assert_allclose(mlp, naive_mlp, atol=1e-5, rtol=0)
    # the heads do something: ablations move LD away from clean (so equality above is not trivial)
    assert np.abs(naive - naive_clean).max() > 1e-2


def test_repeated_prompts_are_computed_once_with_identical_results(tiny_model):
    # 6 distinct digit prompts repeated to 12: deduplication must not change any number
    encoded = prepare_dataset(tiny_model, build_task_dataset("digits", 12, seed=2, model=tiny_model))
    for method in ("mean", "resample"):
        fast = exact_sweep(tiny_model, encoded, method, deduplicate=True)
        full = exact_sweep(tiny_model, encoded, method, deduplicate=False)
        np.testing.assert_allclose(fast[0], full[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(fast[1], full[1], atol=1e-5, rtol=0)
        assert fast[2] == pytest.approx(full[2], abs=1e-5) and fast[3] == pytest.approx(full[3], abs=1e-5)


@pytest.mark.parametrize("method", ["mean", "resample"])
def test_batched_equals_naive_on_embedded_model(embedded_model, embedded_digits, embedded_exact, method):
    layers = [0, 3, 16, 29]
    naive, naive_mlp, naive_clean = naive_sweep(embedded_model, embedded_digits, method, layers=layers)
    ablated, mlp, clean, _ = embedded_exact(method)
    assert clean == pytest.approx(naive_clean, abs=1e-4)
    np.testing.assert_allclose(ablated[layers], naive[layers], atol=1e-4, rtol=0)
    np.testing.assert_allclose(mlp[layers], naive_mlp[layers], atol=1e-4, rtol=0)
    assert np.isfinite(ablated).all()


@pytest.fixture(scope="module")
def plain_embedded():
    """The embedded model loaded a second time by plain transformers: untouched by TransformerLens (which swaps the
    submodules of the model it wraps), so the hooks below run Hugging Face's own code."""
    from transformers import AutoModelForCausalLM

    from headscope.loading import embedded_converted_folder

    return AutoModelForCausalLM.from_pretrained(embedded_converted_folder()[0], dtype=torch.float32,
                                                attn_implementation="eager").eval()


def _hand_written_ld(hf, encoded, layer, head, method):
    """The head's slice of o_proj's input replaced by a plain PyTorch pre-hook on the HF module; HF's own forward."""
    o_proj = hf.model.layers[layer].self_attn.o_proj
    d_head = hf.config.hidden_size // hf.config.num_attention_heads
    cols = slice(head * d_head, (head + 1) * d_head)
    seen = {}

    def capture(module, args):
        seen["z"] = args[0].detach().clone()

    handle = o_proj.register_forward_pre_hook(capture)
    with torch.no_grad():
        hf(encoded.corrupted)
    handle.remove()
    corrupted_z = seen["z"]  # [prompt, pos, n_heads * d_head]
    replacement = corrupted_z.mean(0, keepdim=True) if method == "mean" else corrupted_z

    def replace(module, args):
        z = args[0].clone()
        z[..., cols] = replacement[..., cols].expand_as(z[..., cols])
        return (z, *args[1:])

    handle = o_proj.register_forward_pre_hook(replace)
    with torch.no_grad():
        logits = hf(encoded.clean).logits[:, -1, :]
    handle.remove()
    rows = torch.arange(encoded.n_prompts)
    return float((logits[rows, encoded.correct_ids] - logits[rows, encoded.incorrect_ids]).mean())


@pytest.mark.parametrize("method", ["mean", "resample"])
def test_mean_and_resample_match_a_hand_written_hook(embedded_digits, embedded_exact, tiny_model, tiny_digits,
                                                      tiny_family_loader, plain_embedded, method):
    for hf, encoded, heads, ablated in (
        (tiny_family_loader("llama").reference, tiny_digits, [(0, 1), (2, 3)],
         exact_sweep(tiny_model, tiny_digits, method)[0]),
        (plain_embedded, embedded_digits, [(5, 2), (16, 0)], embedded_exact(method)[0]),
    ):
        for layer, head in heads:
            expected = _hand_written_ld(hf, encoded, layer, head, method)
            assert ablated[layer, head] == pytest.approx(expected, abs=1e-4)


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


def test_clean_ld_is_the_mean_logit_difference(embedded_model, embedded_digits, embedded_exact):
    _, _, clean, corrupt = embedded_exact("mean")
    logits = embedded_model.logits(embedded_digits.clean)[:, -1, :]
    rows = torch.arange(embedded_digits.n_prompts)
    expected = (logits[rows, embedded_digits.correct_ids] - logits[rows, embedded_digits.incorrect_ids]).mean()
    assert clean == pytest.approx(float(expected), abs=1e-4)
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
