"""Path patching (headscope.path_patching) against independent references: TransformerLens' own
`patching.get_act_patch_direct_path` (denoising, into the query) and plain PyTorch hooks written in
tests/model/path_reference.py on untouched transformers models (noising with each method, keys and values, grouped
KV heads, the direct path to the logits, the receiver view). Backends and paths agree with each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.component import Component
from headscope.path_patching import PathQuery, compute_paths, run_paths
from headscope.tasks import Dataset, prepare_dataset
from tests.model import path_reference as ref
from tests.model.reference import digit_items, plain_inputs

ITEMS = digit_items([1, 3, 4, 5], ["3 1 4 2 ", "6 4 3 5 ", "8 4 6 5 ", "5 7 6 8 "])
TOLERANCE = 1e-4  # float32 on LDs of order 0.1 to 10


def _encoded(model, items=ITEMS):
    return prepare_dataset(model, Dataset("digits-paths", items))


def _tl_direct_path(model, encoded, sender: Component) -> np.ndarray:
    """TransformerLens' get_act_patch_direct_path on the backend's own bridge: run the corrupted prompts, add the
    sender's clean-minus-corrupted write to each later head's query input (rows ≤ the sender's layer: 0.0)."""
    from transformer_lens import patching

    bridge = model.bridge
    ids = torch.stack([encoded.correct_ids, encoded.incorrect_ids], dim=1)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1]
        return (last.gather(1, ids[:, :1]) - last.gather(1, ids[:, 1:])).mean()

    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(encoded.clean)
        _, corrupted_cache = bridge.run_with_cache(encoded.corrupted)
        return patching.get_act_patch_direct_path(bridge, encoded.corrupted, clean_cache, corrupted_cache, metric,
                                                  sender.layer, sender.head, component="q", verbose=False).numpy()


def _check_against_tl(model, sender: Component, items=ITEMS) -> None:
    encoded = _encoded(model, items)
    result = compute_paths(model, encoded, PathQuery(sender=sender, direction="denoise"))
    expected = _tl_direct_path(model, encoded, sender)[sender.layer + 1:]
    got = result.ld[sender.layer + 1:]
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() < TOLERANCE * scale, np.abs(got - expected).max()
    assert np.isnan(result.ld[:sender.layer + 1]).all()  # not later than the sender: no partner
    # the paths do something: an unpatched run would miss the reference by more than the tolerance
    assert np.abs(expected - result.run_ld).max() > 5 * TOLERANCE * scale


@pytest.mark.slow  # minutes on a shared CPU (TransformerLens runs one forward per receiver); tiny GPT-2 runs by default
def test_denoise_into_q_matches_transformer_lens_on_the_embedded_model(embedded_model):
    _check_against_tl(embedded_model, Component(27, 3), ITEMS[:2])


@pytest.mark.parametrize("family", ["gpt2", pytest.param("neox", marks=pytest.mark.slow),
                                    pytest.param("qwen2", marks=pytest.mark.slow)])
def test_denoise_into_q_matches_transformer_lens_on_tiny_families(tiny_family_loader, family):
    # Gemma-2 is left out: TransformerLens refuses it (its post-attention norm scales a head's write), and its
    # numbers are checked against the other backend in test_backends_and_paths_agree.
    _check_against_tl(tiny_family_loader(family).backend, Component(0, 1))


def _reference_grid(loaded, family: str, query: PathQuery, tokenizer) -> np.ndarray:
    """per_prompt[prompt, layer, head] from the plain-hook reference for a sender-view or receiver-view query."""
    hf = loaded.reference
    config = hf.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    inputs = plain_inputs(tokenizer, ITEMS)
    answers = torch.stack([inputs.correct_ids, inputs.incorrect_ids], dim=1)
    fam = ref.FAMILIES[family]
    source = {"resample": "paired"}.get(query.method, query.method)
    out = np.full((inputs.n_prompts, n_layers, n_heads), np.nan)

    def write(sender: Component) -> torch.Tensor:
        return ref.sender_write(hf, fam, inputs.clean, inputs.corrupted, source, sender.layer, sender.head, d_head)

    if query.sender is not None:
        delta = write(query.sender)
        for layer in range(query.sender.layer + 1, n_layers):
            for head in range(n_heads):
                out[:, layer, head] = ref.path_lds(hf, fam, inputs.clean, answers, delta, layer, query.into, head,
                                                   n_heads, n_kv, d_head).numpy()
    elif query.receiver is not None:
        for layer in range(query.receiver.layer):
            for head in range(n_heads):
                out[:, layer, head] = ref.path_lds(hf, fam, inputs.clean, answers, write(Component(layer, head)),
                                                   query.receiver.layer, query.into, query.receiver.head, n_heads,
                                                   n_kv, d_head).numpy()
    else:
        for layer in range(n_layers):
            for head in range(n_heads):
                out[:, layer, head] = ref.logit_path_lds(hf, fam, inputs.clean, answers,
                                                         write(Component(layer, head))).numpy()
    return out


def _check_against_hooks(loaded, family: str, query: PathQuery, tokenizer) -> None:
    result = compute_paths(loaded.backend, _encoded(loaded.backend), query)
    expected = _reference_grid(loaded, family, query, tokenizer)
    assert np.array_equal(np.isnan(result.per_prompt_ld), np.isnan(expected))
    scale = max(1.0, float(np.nanmax(np.abs(expected))))
    assert np.nanmax(np.abs(result.per_prompt_ld - expected)) < TOLERANCE * scale
    assert np.allclose(result.ld, np.nanmean(expected, axis=0), atol=TOLERANCE * scale, equal_nan=True)
    assert np.nanmax(np.abs(expected - result.run_ld)) > 100 * TOLERANCE * scale  # the paths move the LD


@pytest.mark.parametrize("method", ["resample", "mean", "zero"])
def test_noise_each_method_into_q_matches_plain_hooks(tiny_family_loader, embedded_tokenizer, method):
    query = PathQuery(sender=Component(0, 1), into="q", method=method)
    _check_against_hooks(tiny_family_loader("llama"), "llama", query, embedded_tokenizer)


@pytest.mark.parametrize("into", ["k", "v"])
def test_noise_into_grouped_keys_and_values_matches_plain_hooks(tiny_family_loader, embedded_tokenizer, into):
    """The tiny Llama has 4 query heads over 2 KV heads: a path into k/v enters the whole group."""
    loaded = tiny_family_loader("llama")
    query = PathQuery(sender=Component(0, 2), into=into, method="mean")
    _check_against_hooks(loaded, "llama", query, embedded_tokenizer)
    result = compute_paths(loaded.backend, _encoded(loaded.backend), query)
    assert result.kv_grouped
    assert np.array_equal(result.ld[1, 0], result.ld[1, 1]) and np.array_equal(result.ld[2, 2], result.ld[2, 3])


def test_receiver_view_and_logits_match_plain_hooks(tiny_family_loader, embedded_tokenizer):
    loaded = tiny_family_loader("llama")
    _check_against_hooks(loaded, "llama", PathQuery(receiver=Component(2, 3), into="q"), embedded_tokenizer)
    _check_against_hooks(loaded, "llama", PathQuery(to_logits=True), embedded_tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize("family,into", [("gpt2", "k"), ("gpt2", "v"), ("qwen2", "v"), ("gpt2", "q")])
def test_noise_on_fused_and_biased_projections_matches_plain_hooks(tiny_family_loader, embedded_tokenizer, family,
                                                                   into):
    """GPT-2's fused Conv1D c_attn ([q | k | v]) and Qwen2's biased, grouped projections."""
    query = PathQuery(sender=Component(0, 3), into=into, method="resample")
    _check_against_hooks(tiny_family_loader(family), family, query, embedded_tokenizer)


def test_sender_view_holds_its_direct_path_to_the_logits(tiny_family_loader):
    model = tiny_family_loader("llama").backend
    encoded = _encoded(model)
    sender = compute_paths(model, encoded, PathQuery(sender=Component(1, 2)))
    logits = compute_paths(model, encoded, PathQuery(to_logits=True))
    assert sender.to_logits_ld == pytest.approx(float(logits.ld[1, 2]), abs=1e-6)
    assert np.isnan(logits.ld).sum() == 0 and logits.to_logits_ld is None


def _nnsight(loaded):
    from headscope.backends.nnsight import NnsightBackend

    backend = loaded.backend
    return NnsightBackend.from_local(loaded.reference, backend.tokenizer, name=backend.info.name,
                                     source=backend.info.source, revision=backend.info.revision,
                                     placement=backend.placement, n_params=backend.info.n_params, started=0.0)


@pytest.mark.parametrize("family", ["llama", pytest.param("gemma2", marks=pytest.mark.slow),
                                    pytest.param("neox", marks=pytest.mark.slow)])
def test_backends_and_paths_agree(tiny_family_loader, family):
    """The bridge's fast path (receivers joining the block loop at their layer) = its general path (whole hooked
    forwards) = the nnsight backend's, on the same weights (its dry run: tests/model/test_nnsight_paths.py)."""
    loaded = tiny_family_loader(family)
    encoded = _encoded(loaded.backend)
    query = PathQuery(sender=Component(0, 0), into="k", method="resample")
    fast = compute_paths(loaded.backend, encoded, query, path="fast")
    general = compute_paths(loaded.backend, encoded, query, path="general")
    nnsight = _nnsight(loaded)
    other = compute_paths(nnsight, _encoded(nnsight), query)
    scale = max(1.0, float(np.nanmax(np.abs(fast.ld))))
    assert np.allclose(fast.per_prompt_ld, general.per_prompt_ld, atol=TOLERANCE * scale, equal_nan=True)
    assert np.allclose(fast.per_prompt_ld, other.per_prompt_ld, atol=TOLERANCE * scale, equal_nan=True)
    assert fast.clean_ld == pytest.approx(other.clean_ld, abs=TOLERANCE * scale)


def test_results_are_cached_and_read_back(tiny_family_loader, tmp_path):
    from headscope.results_cache import ResultsCache

    model = tiny_family_loader("llama").backend
    cache = ResultsCache(tmp_path)
    query = PathQuery(receiver=Component(1, 0), into="v", method="zero")
    first = run_paths(model, Dataset("digits-paths", ITEMS), query, cache=cache)
    again = run_paths(model, Dataset("digits-paths", ITEMS), query, cache=cache)
    assert not first.cached and again.cached
    assert again.query == query and again.kv_grouped
    assert np.array_equal(np.isnan(again.per_prompt_ld), np.isnan(first.per_prompt_ld))
    assert np.allclose(again.per_prompt_ld, first.per_prompt_ld, equal_nan=True)
    assert again.per_prompt_ld.shape == (len(ITEMS), 3, 4)


@pytest.mark.parametrize("query,message", [
    (PathQuery(sender=Component(2, 0)), "last layer"),
    (PathQuery(receiver=Component(0, 1)), "layer 0"),
    (PathQuery(sender=Component(1, 7)), "No head 1.7"),
    (PathQuery(sender=Component(0, 1), receiver=Component(2, 1)), "exactly one"),
    (PathQuery(sender=Component(0, 1), direction="denoise", method="mean"), "noising only"),
])
def test_queries_without_valid_paths_are_refused(tiny_family_loader, query, message):
    from headscope.errors import InputError

    with pytest.raises(InputError, match=message):
        run_paths(tiny_family_loader("llama").backend, Dataset("digits-paths", ITEMS), query)
