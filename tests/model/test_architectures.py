"""The same numbers on every architecture headscope accepts: tiny random models of five families that differ in layout.

Every reference here is computed on an untouched copy of the model loaded with plain transformers: its own forward,
plain PyTorch hooks on that family's modules, and its raw weights read in that family's storage layout (GPT-2's
Conv1D [in, out] with a fused c_attn, GPT-NeoX's fused per-head query_key_value, nn.Linear [out, in] elsewhere).
Nothing here goes through headscope's or TransformerLens' own code paths except the calls under test (and
`detect_head`, the library definition the pattern scores follow).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from transformer_lens.head_detector import detect_head

from headscope.ablation import exact_sweep, prepare_dataset
from headscope.errors import InputError, ModelLoadError
from headscope.loading import ModelRequest, load_model
from headscope.predict import analyze_prompt
from headscope.results_cache import ResultsCache
from headscope.scores import generated_sequences, list_usage, ov_list_scores, score_heads
from headscope.tasks import build_task_dataset
from tests.model.tiny_families import D_MODEL, GEMMA2_WINDOW, save_tiny_model

FAMILIES = ("llama", "gpt2", "neox", "qwen2", "gemma2")
DETECTOR_NAMES = {"previous-token": "previous_token_head", "duplicate-token": "duplicate_token_head",
                  "induction": "induction_head"}
ATOL = 1e-4  # float32 on the CPU: different but equivalent operation orders agree to ~1e-6 on these logits


# ---------------------------------------------------------------------------------------------------------------
# Each family's layout, read off the reference model


@dataclass(frozen=True)
class OvWeights:
    """One layer's value and output weights in a common layout: w_v[kv, d_model, d_head], b_v[kv, d_head] | None,
    w_o[head, d_head, d_model], b_o[d_model] | None."""

    w_v: torch.Tensor
    b_v: torch.Tensor | None
    w_o: torch.Tensor
    b_o: torch.Tensor | None


def _linear_ov(block: nn.Module, n_heads: int, n_kv: int, d_head: int) -> OvWeights:
    """Llama, Qwen2, Gemma-2: separate nn.Linear projections, weight [out, in]."""
    v, o = block.self_attn.v_proj, block.self_attn.o_proj
    d_model = o.weight.shape[0]
    w_v = v.weight.view(n_kv, d_head, d_model).transpose(1, 2)
    b_v = None if v.bias is None else v.bias.view(n_kv, d_head)
    w_o = o.weight.view(d_model, n_heads, d_head).permute(1, 2, 0)
    return OvWeights(w_v, b_v, w_o, o.bias)


def _gpt2_ov(block: nn.Module, n_heads: int, n_kv: int, d_head: int) -> OvWeights:
    """GPT-2: Conv1D stores [in, out]; c_attn's output is [q | k | v], each head-major; c_proj's input head-major."""
    c_attn, c_proj = block.attn.c_attn, block.attn.c_proj
    d_model = c_proj.weight.shape[1]
    w_v = c_attn.weight[:, 2 * d_model:].view(d_model, n_heads, d_head).permute(1, 0, 2)
    b_v = c_attn.bias[2 * d_model:].view(n_heads, d_head)
    w_o = c_proj.weight.view(n_heads, d_head, d_model)
    return OvWeights(w_v, b_v, w_o, c_proj.bias)


def _neox_ov(block: nn.Module, n_heads: int, n_kv: int, d_head: int) -> OvWeights:
    """GPT-NeoX: query_key_value's output is viewed [.., head, 3 * d_head] (q, k, v per head); V is the last third."""
    qkv, dense = block.attention.query_key_value, block.attention.dense
    d_model = dense.weight.shape[0]
    w_v = qkv.weight.view(n_heads, 3 * d_head, d_model)[:, 2 * d_head:, :].transpose(1, 2)
    b_v = qkv.bias.view(n_heads, 3 * d_head)[:, 2 * d_head:]
    w_o = dense.weight.view(d_model, n_heads, d_head).permute(1, 2, 0)
    return OvWeights(w_v, b_v, w_o, dense.bias)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass(frozen=True)
class Layout:
    """Where a family keeps its parts (paths into the transformers model) and how its weights are stored."""

    blocks: str  # the ModuleList of layers
    o_proj: str  # in a block: the attention output projection (its input is the per-head z, head-major)
    mlp: str  # in a block: the MLP module
    ln1: str  # in a block: the norm before attention
    ln2: str  # in a block: the norm before the MLP
    ov: Callable[[nn.Module, int, int, int], OvWeights]
    embed: str  # the token embedding
    final_norm: str
    unembed: str
    post_attn: str | None = None  # Gemma-2's norm on the attention output before it joins the residual
    post_mlp: str | None = None  # Gemma-2's norm on the MLP output
    embed_scale: Callable[[Any], float] = lambda config: 1.0


LAYOUTS: dict[str, Layout] = {
    "llama": Layout("model.layers", "self_attn.o_proj", "mlp", "input_layernorm", "post_attention_layernorm",
                    _linear_ov, "model.embed_tokens", "model.norm", "lm_head"),
    "qwen2": Layout("model.layers", "self_attn.o_proj", "mlp", "input_layernorm", "post_attention_layernorm",
                    _linear_ov, "model.embed_tokens", "model.norm", "lm_head"),
    "gemma2": Layout("model.layers", "self_attn.o_proj", "mlp", "input_layernorm", "pre_feedforward_layernorm",
                     _linear_ov, "model.embed_tokens", "model.norm", "lm_head",
                     post_attn="post_attention_layernorm", post_mlp="post_feedforward_layernorm",
                     embed_scale=lambda config: config.hidden_size ** 0.5),
    "gpt2": Layout("transformer.h", "attn.c_proj", "mlp", "ln_1", "ln_2", _gpt2_ov, "transformer.wte",
                   "transformer.ln_f", "lm_head"),
    "neox": Layout("gpt_neox.layers", "attention.dense", "mlp", "input_layernorm", "post_attention_layernorm",
                   _neox_ov, "gpt_neox.embed_in", "gpt_neox.final_layer_norm", "lm_head"),
}

# Where headscope is expected to offer the fast (block-by-block) path; a family left out runs the general path only.
FAST_PATH_EXPECTED = {"llama": True, "gpt2": True, "neox": True, "qwen2": True, "gemma2": True}
# Patterns recomputed from the query and key the model's own (SDPA) attention receives; Gemma-2 soft-caps its scores,
# which SDPA cannot, so its patterns come from the bridge's eager attention.
NATIVE_PATTERNS_EXPECTED = {"llama": True, "gpt2": True, "neox": True, "qwen2": True, "gemma2": False}


class Reference:
    """The untouched transformers model of a family, read through its layout."""

    def __init__(self, name: str, hf: nn.Module) -> None:
        self.layout = LAYOUTS[name]
        self.hf = hf
        self.config = hf.config
        self._captured: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def part(self, path: str, root: nn.Module | None = None) -> nn.Module:
        return (root or self.hf).get_submodule(path)

    def block(self, layer: int) -> nn.Module:
        return self.part(self.layout.blocks)[layer]

    def norm(self, path: str | None, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x if path is None else self.part(path, block)(x)

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hf(tokens).logits.float()

    def answer_ld(self, tokens: torch.Tensor, correct: torch.Tensor, incorrect: torch.Tensor) -> float:
        logits = self.logits(tokens)[:, -1, :]
        rows = torch.arange(tokens.shape[0])
        return float((logits[rows, correct] - logits[rows, incorrect]).double().mean())

    # -------------------------------------------------------------------------------- the OV circuit, by hand

    def embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """W_E[t] with the family's embedding scale (Gemma: sqrt(d_model))."""
        return self.part(self.layout.embed).weight[ids] * self.layout.embed_scale(self.config)

    @torch.no_grad()
    def effective_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """W_E[t] + MLP0(ln2_0(W_E[t])) (Gemma-2: the MLP output through its post-MLP norm, as the block adds it)."""
        block = self.block(0)
        embedded = self.embedding(ids)
        mlp = self.part(self.layout.mlp, block)(self.part(self.layout.ln2, block)(embedded))
        return embedded + self.norm(self.layout.post_mlp, block, mlp)

    @torch.no_grad()
    def ov_outputs(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """out[head, n, d_model] = ln1(resid) · W_V[kv(head)] · W_O[head] + b_V·W_O[head] + b_O / n_heads, from the
        raw weights (Gemma-2: each head's output through the post-attention norm on its own)."""
        config = self.config
        n_heads = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        d_head = config.hidden_size // n_heads if not getattr(config, "head_dim", None) else config.head_dim
        block = self.block(layer)
        weights = self.layout.ov(block, n_heads, n_kv, d_head)
        normed = self.part(self.layout.ln1, block)(resid)
        out = []
        for head in range(n_heads):
            kv = head // (n_heads // n_kv)
            values = normed @ weights.w_v[kv]
            if weights.b_v is not None:
                values = values + weights.b_v[kv]
            written = values @ weights.w_o[head]
            if weights.b_o is not None:
                written = written + weights.b_o / n_heads
            out.append(self.norm(self.layout.post_attn, block, written))
        return torch.stack(out)

    @torch.no_grad()
    def unembed(self, resid: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """logits of tokens ids through the final norm, the unembedding rows (+ bias) and the final soft cap."""
        head = self.part(self.layout.unembed)
        logits = self.part(self.layout.final_norm)(resid) @ head.weight[ids].T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[ids]
        cap = getattr(self.config, "final_logit_softcapping", None)
        return cap * torch.tanh(logits / cap) if cap else logits

    # -------------------------------------------------------------------------------- ablation by plain hooks

    @torch.no_grad()
    def captured(self, tokens: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z[prompt, pos, n_heads * d_head], mlp_out[prompt, pos, d_model]) of `layer` on tokens (remembered)."""
        key = (layer, tuple(tokens.shape), tuple(tokens.flatten().tolist()))
        if key in self._captured:
            return self._captured[key]
        block = self.block(layer)
        seen: dict[str, torch.Tensor] = {}
        handles = [
            self.part(self.layout.o_proj, block).register_forward_pre_hook(
                lambda module, args: seen.__setitem__("z", args[0].detach().clone())),
            self.part(self.layout.mlp, block).register_forward_hook(
                lambda module, args, out: seen.__setitem__("mlp", out.detach().clone())),
        ]
        try:
            self.hf(tokens)
        finally:
            for handle in handles:
                handle.remove()
        self._captured[key] = seen["z"], seen["mlp"]
        return self._captured[key]

    def ablated_ld(self, encoded: Any, method: str, layer: int, head: int | None) -> float:
        """LD with one head (its slice of the output projection's input) or one MLP (its output) replaced: zero,
        the position-wise mean over the corrupted prompts, or the paired corrupted prompt's value. One forward."""
        block = self.block(layer)
        if method == "zero":
            z_corrupt = mlp_corrupt = None
        else:
            z_corrupt, mlp_corrupt = self.captured(encoded.corrupted, layer)
            if method == "mean":
                z_corrupt, mlp_corrupt = z_corrupt.mean(0, keepdim=True), mlp_corrupt.mean(0, keepdim=True)
        d_head = self.hf.config.hidden_size // self.hf.config.num_attention_heads
        d_head = getattr(self.hf.config, "head_dim", None) or d_head

        def replace_head(module: nn.Module, args: tuple) -> tuple:
            z = args[0].clone()
            cols = slice(head * d_head, (head + 1) * d_head)
            z[..., cols] = 0.0 if z_corrupt is None else z_corrupt[..., cols].expand_as(z[..., cols])
            return (z, *args[1:])

        def replace_mlp(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(out) if mlp_corrupt is None else mlp_corrupt.expand_as(out).clone()

        if head is None:
            handle = self.part(self.layout.mlp, block).register_forward_hook(replace_mlp)
        else:
            handle = self.part(self.layout.o_proj, block).register_forward_pre_hook(replace_head)
        try:
            return self.answer_ld(encoded.clean, encoded.correct_ids, encoded.incorrect_ids)
        finally:
            handle.remove()


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tiny_family_loader):
    loaded = tiny_family_loader(request.param)
    return loaded.name, loaded.backend, Reference(loaded.name, loaded.reference)


# ---------------------------------------------------------------------------------------------------------------
# Top-k logits


def test_top_k_logits_equal_the_reference_forward(family):
    name, model, ref = family
    prompt = "The cat sat on the mat. 1 2 3"
    for position in (None, 2):
        analysis = analyze_prompt(model, prompt, top_k=10, position=position)
        tokens = torch.tensor([list(analysis.tokenized.ids)])
        logits = ref.logits(tokens)[0]  # [pos, vocab]
        expected, expected_ids = logits[analysis.position].topk(10)
        assert [p.id for p in analysis.top_k] == expected_ids.tolist(), name
        np.testing.assert_allclose([p.logit for p in analysis.top_k], expected.numpy(), atol=ATOL, rtol=0)
        log_probs = torch.log_softmax(logits[analysis.position], -1)[expected_ids]
        np.testing.assert_allclose([p.logprob for p in analysis.top_k], log_probs.numpy(), atol=ATOL, rtol=0)
        assert [p.id for p in analysis.top1_per_position] == logits.argmax(-1).tolist()
        # every position's top-1 logit and log-probability (the token strip and table), against the reference's
        np.testing.assert_allclose([p.logit for p in analysis.top1_per_position], logits.max(-1).values.numpy(),
                                   atol=ATOL, rtol=0)
        np.testing.assert_allclose([p.logprob for p in analysis.top1_per_position],
                                   torch.log_softmax(logits, -1).max(-1).values.numpy(), atol=ATOL, rtol=0)
    # a window's top-1 (a long prompt's strip): from its start on, the reference's argmax, and nothing before it
    windowed = analyze_prompt(model, prompt, top_k=10, top1_window=4)
    n_tokens = len(windowed.tokens)
    assert windowed.top1_start == n_tokens - 4
    assert [windowed.top1_at(p) and windowed.top1_at(p).id for p in range(n_tokens)] == \
        [None] * (n_tokens - 4) + logits.argmax(-1)[-4:].tolist()
    # the model's real input: BOS first exactly where TransformerLens prepends it (detect_head's input too)
    assert list(analysis.tokenized.ids) == model.bridge.to_tokens(prompt)[0].tolist()


# ---------------------------------------------------------------------------------------------------------------
# The exact sweep


@pytest.fixture(scope="module")
def digits(family):
    model = family[1]
    return prepare_dataset(model, build_task_dataset("digits", 4, seed=1, model=model))


def test_the_fast_path_is_offered_where_expected(family):
    name, model, _ = family
    assert (model.block_runner is not None) == FAST_PATH_EXPECTED[name], (name, model.checks.fast_path_error)


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_exact_sweep_equals_one_hooked_forward_per_component(family, digits, method):
    name, model, ref = family
    info = model.info
    expected = np.array([[ref.ablated_ld(digits, method, layer, head) for head in range(info.n_heads)]
                         for layer in range(info.n_layers)])
    expected_mlp = np.array([ref.ablated_ld(digits, method, layer, None) for layer in range(info.n_layers)])
    clean = ref.answer_ld(digits.clean, digits.correct_ids, digits.incorrect_ids)
    corrupt = ref.answer_ld(digits.corrupted, digits.correct_ids, digits.incorrect_ids)
    paths = ["general"] + (["fast"] if model.block_runner is not None else [])
    for path in paths:
        ablated, mlp, clean_ld, corrupt_ld = exact_sweep(model, digits, method, path=path)
        assert clean_ld == pytest.approx(clean, abs=ATOL), (name, path)
        assert corrupt_ld == pytest.approx(corrupt, abs=ATOL), (name, path)
        np.testing.assert_allclose(ablated, expected, atol=ATOL, rtol=0, err_msg=f"{name} {path} heads")
        np.testing.assert_allclose(mlp, expected_mlp, atol=ATOL, rtol=0, err_msg=f"{name} {path} MLPs")
    # every head and MLP moves the LD (so the equalities above are not trivial)
    assert np.abs(expected - clean).min() > 1e-4 and np.abs(expected_mlp - clean).min() > 1e-4


def test_prompts_longer_than_a_sliding_window_never_take_the_block_loop(tiny_family_loader):
    """Sliding-window masks come from the model's own forward loop, which the block loop bypasses: beyond the window
    the fast path would attend too far back. The sweep then takes the general path; forcing the fast one is refused."""
    loaded = tiny_family_loader("gemma2")
    model, ref = loaded.backend, Reference("gemma2", loaded.reference)
    long_digits = prepare_dataset(model, build_task_dataset("digits", 4, length=7, seed=1, model=model))
    assert long_digits.seq_len > GEMMA2_WINDOW
    assert model.block_runner is not None and model.block_runner.max_seq_len == GEMMA2_WINDOW
    expected = np.array([[ref.ablated_ld(long_digits, "mean", layer, head) for head in range(model.info.n_heads)]
                         for layer in range(model.info.n_layers)])
    ablated, _, clean, _ = exact_sweep(model, long_digits, "mean")
    np.testing.assert_allclose(ablated, expected, atol=ATOL, rtol=0)
    assert clean == pytest.approx(ref.answer_ld(long_digits.clean, long_digits.correct_ids,
                                                long_digits.incorrect_ids), abs=ATOL)
    with pytest.raises(InputError, match="sliding window"):
        exact_sweep(model, long_digits, "mean", path="fast")


# ---------------------------------------------------------------------------------------------------------------
# Pattern scores and patterns


def test_pattern_scores_equal_detect_head(family, tmp_path):
    name, model, _ = family
    cache = ResultsCache(tmp_path / "results")
    texts = list(generated_sequences(model, n_sequences=2, repeat_length=8))
    prompt = "The cat sat on the mat. The cat sat on the mat."
    for score, detector in DETECTOR_NAMES.items():
        generated = score_heads(model, score, n_sequences=2, repeat_length=8, cache=cache)
        np.testing.assert_allclose(generated.scores, detect_head(model.bridge, texts, detector).numpy(),
                                   atol=1e-5, rtol=0, err_msg=f"{name} {score}")
        on_prompt = score_heads(model, score, prompt=prompt, cache=cache)
        np.testing.assert_allclose(on_prompt.scores, detect_head(model.bridge, prompt, detector).numpy(),
                                   atol=1e-5, rtol=0, err_msg=f"{name} {score} on a prompt")


@pytest.mark.parametrize("route", ["as loaded", "bridge"])
def test_attention_patterns_equal_the_reference_attention_weights(family, route, monkeypatch):
    """Both pattern routes (the model's own attention where offered, the bridge's hook_pattern) against
    transformers' eager attention weights (Gemma-2's soft-capped scores included), every head and a chosen few."""
    name, model, ref = family
    assert model.native_patterns == NATIVE_PATTERNS_EXPECTED[name]
    if route == "bridge":
        monkeypatch.setattr(model.checks, "native_patterns_ok", False)
    tokens = torch.tensor([model.input_ids("The cat sat on the mat. The cat sat on the mat.")])
    mine = model.reduce_attention_patterns(tokens, lambda layer, pattern: pattern.clone())
    chosen = {layer: [model.info.n_heads - 1, 0] for layer in range(model.info.n_layers)}
    few = model.reduce_attention_patterns(tokens, lambda layer, pattern: pattern.clone(), layers=[0], heads=chosen)
    with torch.no_grad():
        expected = ref.hf(tokens, output_attentions=True).attentions
    for layer in range(model.info.n_layers):
        torch.testing.assert_close(mine[layer], expected[layer], atol=1e-5, rtol=0, msg=f"{name} layer {layer}")
    assert list(few) == [0]
    torch.testing.assert_close(few[0], expected[0][:, chosen[0]], atol=1e-5, rtol=0)
    kept = model.attention_inputs(tokens, model.info.n_layers - 1)  # the pattern memo's route: rows of a window
    assert (kept is not None) == (route == "as loaded" and model.native_patterns)
    if kept is not None:
        top, n = model.info.n_layers - 1, tokens.shape[1]
        rows = kept.rows(top, [0, model.info.n_heads - 1], 3, n - 2)
        np.testing.assert_allclose(rows, expected[top][0, [0, model.info.n_heads - 1], 3:n - 2, :n - 2].numpy(),
                                   atol=1e-5, rtol=0, err_msg=f"{name} window rows")


# ---------------------------------------------------------------------------------------------------------------
# The OV circuit: successor and copying scores


def test_ov_weights_equal_a_computation_from_the_raw_weights(family):
    name, model, ref = family
    ids = torch.tensor([model.encode(f" {word}")[0] for word in ("one", "two", "three", "four", "five", "cat")])
    effective = model.mlp0_effective_embedding(ids)
    torch.testing.assert_close(effective, ref.effective_embedding(ids), atol=1e-5, rtol=1e-5)
    generator = torch.Generator().manual_seed(0)
    resid = torch.randn(5, model.info.d_model, generator=generator)
    for layer in range(model.info.n_layers):
        for vectors in (effective, resid):
            torch.testing.assert_close(model.ov_outputs(layer, vectors), ref.ov_outputs(layer, vectors),
                                       atol=1e-5, rtol=1e-5, msg=f"{name} layer {layer}")
    torch.testing.assert_close(model.unembed_logits(resid, ids), ref.unembed(resid, ids), atol=1e-5, rtol=1e-5)


def test_successor_and_copying_scores_equal_the_raw_weight_computation(family):
    name, model, ref = family
    usable = [usage for usage in list_usage(model) if usage.usable]
    assert usable, name
    successor, copying = ov_list_scores(model, usable)
    expected_successor = np.zeros_like(successor)
    expected_copying = np.zeros_like(copying)
    n_pairs = sum(len(usage.token_ids) - 1 for usage in usable)
    n_members = sum(len(usage.token_ids) for usage in usable)
    for usage in usable:
        ids = torch.tensor(usage.token_ids)
        effective = ref.effective_embedding(ids)
        for layer in range(model.info.n_layers):
            logits = ref.unembed(ref.ov_outputs(layer, effective), ids)  # [head, member, candidate]
            best = logits.argmax(-1)
            members = torch.arange(len(ids))
            expected_successor[layer] += (best[:, :-1] == members[1:]).sum(-1).numpy() / n_pairs
            expected_copying[layer] += (best == members).sum(-1).numpy() / n_members
    np.testing.assert_allclose(successor, expected_successor, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(copying, expected_copying, atol=1e-9, err_msg=name)
    assert successor.max() > 0 and copying.max() > 0  # the random heads do pick some members


# ---------------------------------------------------------------------------------------------------------------
# A family TransformerLens cannot serve


def test_an_architecture_transformerlens_cannot_serve_is_refused_at_load(tmp_path, embedded_tokenizer):
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES
    from transformers import BioGptConfig

    assert "BioGptForCausalLM" not in SUPPORTED_ARCHITECTURES
    config = BioGptConfig(vocab_size=len(embedded_tokenizer), hidden_size=D_MODEL, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=128, max_position_embeddings=64)
    folder = save_tiny_model(tmp_path / "tiny-biogpt", config, "BioGptForCausalLM", embedded_tokenizer)
    with pytest.raises(ModelLoadError) as refused:
        load_model(ModelRequest(str(folder), device="cpu"))
    message = str(refused.value)
    assert message.startswith("TransformerLens has no adapter for tiny-biogpt's architecture (BioGptForCausalLM)")
    assert "nnsight backend" in message and len(message) < 300  # a short sentence, not the library's list of 160

