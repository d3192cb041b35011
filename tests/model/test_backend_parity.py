"""Cross-backend parity: for every family the nnsight backend serves, one tiny random model behind the TransformerLens
backend, the nnsight backend and nnsight's dry run of the remote path (remote="local") gives the same numbers —
token ids, logits, every LD of a sweep, OV outputs, effective embedding, unembedding and every head score — with a
tokenizer that adds BOS and one that does not.

The independent anchor for the ids is the tokenizer itself (`tokenizer(text)`, as a plain transformers user gets
them); each backend's numbers are checked against raw weights and plain hooks elsewhere (test_architectures,
test_nnsight_layouts). This file closes the gap between them: two backends over one model never disagree."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from headscope.ablation import exact_sweep, prepare_dataset
from headscope.heads import SCORE_NAMES
from headscope.loading import ModelRequest, load_model
from headscope.predict import analyze_prompt
from headscope.results_cache import ResultsCache
from headscope.scores import score_heads
from headscope.tasks import build_task_dataset
from tests.model.tiny_families import TINY_FAMILIES, TinyFamily, save_tiny_model

PROMPTS = ("1 2 3 4 ", "The cat sat on the mat.")
RTOL = 1e-5  # of each compared tensor's scale: float32, equivalent operation orders


def _llama(vocab: int, bos: int | None, eos: int | None) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos)


FAMILIES: dict[str, TinyFamily] = {"llama": TinyFamily("llama", "LlamaForCausalLM", _llama), **TINY_FAMILIES}
VARIANTS = ("adds-bos", "no-bos")  # the tokenizer puts BOS first itself / the model has no BOS at all
FAST_NO_BOS = {"qwen2"}  # the other families' no-BOS runs are marked slow (about 15 s each on a 2-core CPU)


def _param(family: str, variant: str) -> Any:
    marks = [] if variant == "adds-bos" or family in FAST_NO_BOS else [pytest.mark.slow]
    return pytest.param((family, variant), id=f"{family}-{variant}", marks=marks)


@dataclass(frozen=True)
class Trio:
    family: str
    variant: str
    tokenizer: Any  # the folder's tokenizer, loaded by plain transformers
    backends: dict[str, Any]  # "bridge", "nnsight", "dry run"


@pytest.fixture(scope="module", params=[_param(f, v) for f in FAMILIES for v in VARIANTS])
def trio(request, tmp_path_factory, embedded_tokenizer):
    from transformers import AutoTokenizer

    name, variant = request.param
    tokenizer = copy.deepcopy(embedded_tokenizer)
    adds = variant == "adds-bos"
    tokenizer.add_bos_token = adds  # saved in the tokenizer's post-processor: the folder's tokenizer adds BOS
    # without BOS: the config names none and the tokenizer adds none (the tokenizer still has a BOS token)
    config = FAMILIES[name].config(len(tokenizer), tokenizer.bos_token_id if adds else None, tokenizer.eos_token_id)
    folder = save_tiny_model(tmp_path_factory.mktemp(f"parity-{name}-{variant}-"), config,
                             FAMILIES[name].model_class, tokenizer)
    bridge = load_model(ModelRequest(str(folder), device="cpu", backend="bridge"))
    nnsight = load_model(ModelRequest(str(folder), device="cpu", backend="nnsight"))
    plain = AutoTokenizer.from_pretrained(folder)
    return Trio(name, variant, plain, {"bridge": bridge, "nnsight": nnsight, "dry run": nnsight.with_mode("simulate")})


def _close(got: Any, expected: Any, what: str) -> None:
    got, expected = torch.as_tensor(np.asarray(got)).double(), torch.as_tensor(np.asarray(expected)).double()
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(got, expected, atol=RTOL * max(scale, 1.0), rtol=0, msg=lambda m: f"{what}: {m}")


def _others(trio: Trio) -> list[tuple[str, Any]]:
    return [(name, backend) for name, backend in trio.backends.items() if name != "bridge"]


def test_every_backend_feeds_the_ids_the_tokenizer_gives(trio):
    bridge = trio.backends["bridge"]
    for prompt in PROMPTS:
        plain = list(trio.tokenizer(prompt)["input_ids"])
        assert (plain[0] == trio.tokenizer.bos_token_id) == (trio.variant == "adds-bos")
        for name, backend in trio.backends.items():
            assert backend.input_ids(prompt) == plain, (name, prompt)
    for name, backend in _others(trio):
        assert backend.info.bos_token == bridge.info.bos_token and backend.info.bos_rule == bridge.info.bos_rule
        assert backend.identity["bos"] == bridge.identity["bos"], name
    assert bridge.info.bos_rule.startswith("BOS" if trio.variant == "adds-bos" else "no BOS")
    assert bridge.bridge.cfg.default_prepend_bos == (trio.variant == "adds-bos")  # TransformerLens' strings alike


def test_logits_agree(trio):
    bridge = trio.backends["bridge"]
    tokens = bridge.tensor([bridge.input_ids(PROMPTS[1])])
    expected_last = bridge.last_logits(tokens)
    expected_next = bridge.next_tokens(tokens, 2)
    for name, backend in _others(trio):
        _close(backend.last_logits(tokens), expected_last, f"{name} last logits")
        got = backend.next_tokens(tokens, 2)
        _close(got.logits_at, expected_next.logits_at, f"{name} logits at position 2")
        assert got.top1_id.tolist() == expected_next.top1_id.tolist(), name
        _close(got.top1_logit, expected_next.top1_logit, f"{name} top-1 logits")


def test_top1_from_an_offset_is_the_full_summarys_tail(trio):
    """next_tokens' top1_from (a page drawing a window of a long prompt): the top-1 of the positions from it on, the
    same as the full summary's, and the chosen position's logits unchanged, on every backend (nnsight's from inside
    its trace, with and without the lens)."""
    bridge = trio.backends["bridge"]
    tokens = bridge.tensor([bridge.input_ids(PROMPTS[1])])
    last = tokens.shape[1] - 1
    full = bridge.next_tokens(tokens, last)
    for name, backend in trio.backends.items():
        for top1_from in (2, last):
            got = backend.next_tokens(tokens, last, top1_from=top1_from)
            assert got.top1_start == top1_from and got.top1_id.tolist() == full.top1_id[top1_from:].tolist(), name
            _close(got.top1_logprob, full.top1_logprob[top1_from:], f"{name} top-1 log-probabilities")
            _close(got.logits_at, full.logits_at, f"{name} logits at the last position")
        with pytest.raises(ValueError, match="top1_from"):
            backend.next_tokens(tokens, 1, top1_from=2)  # past the chosen position
        # the prompt tester's call: the lens read from the same forward, the top-1 of the last 3 positions
        whole = analyze_prompt(backend, PROMPTS[0], "5", "4", lens=True)
        window = analyze_prompt(backend, PROMPTS[0], "5", "4", lens=True, top1_window=3)
        assert window.top1_start == len(whole.tokens) - 3, name
        assert [p.id for p in window.top1_per_position] == [p.id for p in whole.top1_per_position[-3:]], name
        _close(torch.tensor([p.logprob for p in window.top1_per_position]),
               torch.tensor([p.logprob for p in whole.top1_per_position[-3:]]), f"{name} top-1 log-probabilities")
        assert [layer.rank for layer in window.lens.layers] == [layer.rank for layer in whole.lens.layers], name
        _close(torch.tensor([layer.logit_diff for layer in window.lens.layers]),
               torch.tensor([layer.logit_diff for layer in whole.lens.layers]), f"{name} lens")


def test_every_ld_of_a_sweep_agrees(trio):
    results = {}
    for name, backend in trio.backends.items():
        encoded = prepare_dataset(backend, build_task_dataset("digits", 4, seed=1, model=backend))
        results[name] = (encoded, exact_sweep(backend, encoded, "mean"))
    expected_encoded, expected = results["bridge"]
    for name, (encoded, numbers) in results.items():
        assert encoded.clean.tolist() == expected_encoded.clean.tolist(), name
        for field, got, want in zip(("heads", "MLPs", "clean LD", "corrupted LD"), numbers, expected, strict=True):
            _close(got, want, f"{name} {field}")


def test_weight_based_computations_agree(trio):
    bridge = trio.backends["bridge"]
    ids = torch.tensor([5, 17, 300, 999])
    effective = bridge.mlp0_effective_embedding(ids)
    for name, backend in _others(trio):
        _close(backend.mlp0_effective_embedding(ids), effective, f"{name} effective embedding")
        for layer in range(bridge.info.n_layers):
            _close(backend.ov_outputs(layer, effective), bridge.ov_outputs(layer, effective), f"{name} OV {layer}")
            _close(backend.ov_unembed_logits(layer, effective, ids), bridge.ov_unembed_logits(layer, effective, ids),
                   f"{name} OV logits {layer}")
        _close(backend.unembed_logits(effective), bridge.unembed_logits(effective), f"{name} unembedding")


def test_every_head_score_agrees(trio, tmp_path):
    scores = {name: {score: score_heads(backend, score, n_sequences=2, repeat_length=8,
                                        cache=ResultsCache(tmp_path / name.replace(" ", "-"))).scores
                     for score in SCORE_NAMES}
              for name, backend in trio.backends.items()}
    for name in scores:
        for score in SCORE_NAMES:
            _close(scores[name][score], scores["bridge"][score], f"{name} {score}")
