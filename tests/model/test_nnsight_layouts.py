"""The nnsight backend's layout table, family by family, on tiny random models: each number against a reference
written here from the raw HF weights or plain PyTorch hooks (never through nnsight or headscope)."""

import pytest
import torch
from transformers import (
    AutoTokenizer,
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from headscope.backends.base import Placement
from headscope.backends.interventions import InterventionGroup, LogitDiffTask, SourceKind, ValueSource
from headscope.backends.nnsight import NnsightBackend
from headscope.component import Component
from headscope.errors import ModelLoadError
from headscope.loading import embedded_converted_folder
from headscope.methods import get_method

D_MODEL, N_HEADS, N_KV, N_LAYERS = 32, 4, 2, 3
D_HEAD = D_MODEL // N_HEADS


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(embedded_converted_folder()[0])


def _configs(vocab):
    common = dict(vocab_size=vocab, hidden_size=D_MODEL, intermediate_size=64, num_hidden_layers=N_LAYERS,
                  num_attention_heads=N_HEADS, max_position_embeddings=64)
    return {
        "llama": (LlamaForCausalLM, LlamaConfig(**common, num_key_value_heads=N_KV)),
        "mistral": (MistralForCausalLM, MistralConfig(**common, num_key_value_heads=N_KV)),
        "qwen2": (Qwen2ForCausalLM, Qwen2Config(**common, num_key_value_heads=N_KV)),  # q/k/v biases
        "gemma2": (Gemma2ForCausalLM, Gemma2Config(**common, num_key_value_heads=N_KV, head_dim=D_HEAD,
                                                   query_pre_attn_scalar=D_HEAD, final_logit_softcapping=5.0)),
        "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=vocab, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS,
                                             n_positions=64)),
        "gpt_neox": (GPTNeoXForCausalLM, GPTNeoXConfig(**common, rotary_pct=0.5, use_parallel_residual=True,
                                                       attention_bias=True)),
    }


# Where each family keeps its output projection and MLP, written out here independently of the backend's table.
O_PROJ = {
    "llama": lambda m, i: m.model.layers[i].self_attn.o_proj,
    "mistral": lambda m, i: m.model.layers[i].self_attn.o_proj,
    "qwen2": lambda m, i: m.model.layers[i].self_attn.o_proj,
    "gemma2": lambda m, i: m.model.layers[i].self_attn.o_proj,
    "gpt2": lambda m, i: m.transformer.h[i].attn.c_proj,
    "gpt_neox": lambda m, i: m.gpt_neox.layers[i].attention.dense,
}
MLP = {
    "llama": lambda m, i: m.model.layers[i].mlp,
    "mistral": lambda m, i: m.model.layers[i].mlp,
    "qwen2": lambda m, i: m.model.layers[i].mlp,
    "gemma2": lambda m, i: m.model.layers[i].mlp,
    "gpt2": lambda m, i: m.transformer.h[i].mlp,
    "gpt_neox": lambda m, i: m.gpt_neox.layers[i].mlp,
}


def _raw_ov(family, model, layer, x):
    """out[head, n, d_model] = ln1(x) · W_V[kv(head)] · W_O[head] + b_V·W_O + b_O / n_heads, from raw weights."""
    if family == "gpt2":  # Conv1D: weights stored [in, out]
        block = model.transformer.h[layer]
        normed = block.ln_1(x)
        w, b = block.attn.c_attn.weight, block.attn.c_attn.bias
        w_o, b_o = block.attn.c_proj.weight, block.attn.c_proj.bias
        outs = []
        for h in range(N_HEADS):
            cols = slice(2 * D_MODEL + h * D_HEAD, 2 * D_MODEL + (h + 1) * D_HEAD)
            v = normed @ w[:, cols] + b[cols]
            outs.append(v @ w_o[h * D_HEAD:(h + 1) * D_HEAD] + b_o / N_HEADS)
        return torch.stack(outs)
    if family == "gpt_neox":  # fused per head: [q | k | v] blocks of d_head, nn.Linear [out, in]
        block = model.gpt_neox.layers[layer]
        normed = block.input_layernorm(x)
        w, b = block.attention.query_key_value.weight, block.attention.query_key_value.bias
        w_o, b_o = block.attention.dense.weight, block.attention.dense.bias
        outs = []
        for h in range(N_HEADS):
            rows = slice(h * 3 * D_HEAD + 2 * D_HEAD, (h + 1) * 3 * D_HEAD)
            v = normed @ w[rows].T + b[rows]
            outs.append(v @ w_o[:, h * D_HEAD:(h + 1) * D_HEAD].T + b_o / N_HEADS)
        return torch.stack(outs)
    block = model.model.layers[layer]
    normed = block.input_layernorm(x)
    v_proj, o_proj = block.self_attn.v_proj, block.self_attn.o_proj
    outs = []
    for h in range(N_HEADS):
        kv = h // (N_HEADS // N_KV)
        rows = slice(kv * D_HEAD, (kv + 1) * D_HEAD)
        v = normed @ v_proj.weight[rows].T + (v_proj.bias[rows] if v_proj.bias is not None else 0)
        out = v @ o_proj.weight[:, h * D_HEAD:(h + 1) * D_HEAD].T
        out = out + (o_proj.bias / N_HEADS if o_proj.bias is not None else 0)
        if family == "gemma2":  # the README: Gemma-2's post-attention norm on each head's output alone
            out = _gemma2_rms(out, block.post_attention_layernorm.weight)
        outs.append(out)
    return torch.stack(outs)


def _gemma2_rms(x, gain):
    """Gemma-2's RMSNorm written out: x / rms(x) · (1 + gain), in float32 (eps 1e-6, the config's default)."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + gain.float())).to(x.dtype)


def _post_mlp(family, model, mlp_out):
    """MLP₀'s output as it reaches the residual: through Gemma-2's post-MLP norm (the README's MLP0), else as is."""
    if family == "gemma2":
        return _gemma2_rms(mlp_out, model.model.layers[0].post_feedforward_layernorm.weight)
    return mlp_out


def _raw_embedding(family, model, ids):
    if family == "gpt2":
        return model.transformer.wte.weight[ids]
    if family == "gpt_neox":
        return model.gpt_neox.embed_in.weight[ids]
    scale = D_MODEL ** 0.5 if family == "gemma2" else 1.0
    return model.model.embed_tokens.weight[ids] * scale


def _ln2(family, model):
    """The norm in front of layer 0's MLP."""
    if family == "gpt2":
        return model.transformer.h[0].ln_2
    if family == "gpt_neox":
        return model.gpt_neox.layers[0].post_attention_layernorm
    if family == "gemma2":
        return model.model.layers[0].pre_feedforward_layernorm
    return model.model.layers[0].post_attention_layernorm


def _hooked_ld(family, model, clean, corrupted, answers, heads, mlps, method):
    """Mean LD with the given heads (z slices of the output projection's input) and MLPs replaced, by plain PyTorch
    hooks: the corrupted run's activations first, then the clean run with replacements."""
    seen = {}
    handles = []
    for layer in {layer for layer, _ in heads} | set(mlps):
        handles.append(O_PROJ[family](model, layer).register_forward_pre_hook(
            lambda mod, args, layer=layer: seen.__setitem__(("z", layer), args[0].detach().clone())))
        handles.append(MLP[family](model, layer).register_forward_hook(
            lambda mod, args, out, layer=layer: seen.__setitem__(("mlp", layer), out.detach().clone())))
    with torch.no_grad():
        model(corrupted)
    for handle in handles:
        handle.remove()

    def value(kind, layer):
        if method == "zero":
            return 0.0
        acts = seen[(kind, layer)]
        return acts.mean(0, keepdim=True) if method == "mean" else acts

    def replace_z(mod, args, layer):
        z = args[0].clone()
        for at, head in heads:
            if at == layer:
                cols = slice(head * D_HEAD, (head + 1) * D_HEAD)
                v = value("z", layer)
                z[..., cols] = v if isinstance(v, float) else v[..., cols].expand_as(z[..., cols])
        return (z, *args[1:])

    def replace_mlp(mod, args, out, layer):
        v = value("mlp", layer)
        return torch.zeros_like(out) if isinstance(v, float) else v.expand_as(out).clone()

    handles = [O_PROJ[family](model, layer).register_forward_pre_hook(
        lambda mod, args, layer=layer: replace_z(mod, args, layer)) for layer in {layer for layer, _ in heads}]
    handles += [MLP[family](model, layer).register_forward_hook(
        lambda mod, args, out, layer=layer: replace_mlp(mod, args, out, layer)) for layer in mlps]
    with torch.no_grad():
        logits = model(clean).logits[:, -1, :]
    for handle in handles:
        handle.remove()
    rows = torch.arange(clean.shape[0])
    return float((logits[rows, answers[:, 0]] - logits[rows, answers[:, 1]]).mean())


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen2", "gemma2", "gpt2", "gpt_neox"])
def family_model(request, tokenizer):
    model_class, config = _configs(len(tokenizer))[request.param]
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():  # weights large enough for heads to matter; biases visible
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.normal_(0, 0.2)
            elif name.endswith("bias"):
                param.normal_(0, 0.1)
    backend = NnsightBackend.from_local(model, tokenizer, name=f"tiny-{request.param}", source="test", revision="0",
                                        placement=Placement("cpu", None, torch.float32), n_params=0, started=0.0)
    return request.param, model, backend


def test_last_logits_equal_the_hf_forward(family_model):
    _family, model, backend = family_model
    tokens = torch.randint(0, 1000, (3, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(tokens).logits[:, -1, :]
    torch.testing.assert_close(backend.last_logits(tokens), expected, atol=1e-5, rtol=1e-5)  # 1e-5 of the scale
    assert backend.info.n_heads == N_HEADS and backend.info.d_head == D_HEAD


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_ablation_equals_hand_written_hooks(family_model, method):
    family, model, backend = family_model
    generator = torch.Generator().manual_seed(2)
    clean = torch.randint(0, 1000, (3, 6), generator=generator)
    corrupted = torch.randint(0, 1000, (3, 6), generator=generator)
    answers = torch.randint(0, 1000, (3, 2), generator=generator)
    task = LogitDiffTask(clean, corrupted, answers[:, 0], answers[:, 1], torch.full((3,), 1 / 3))
    # three groups: one head; two heads of different layers plus an MLP (as a circuit search asks); nothing
    source = ValueSource(SourceKind(get_method(method).source))
    groups = [InterventionGroup.ablating([Component(1, 2)], source),
              InterventionGroup.ablating([Component(0, 3), Component(2, 0), Component.mlp(1)], source),
              InterventionGroup.nothing()]
    lds = backend.logit_diffs(task, groups)
    expected = [
        _hooked_ld(family, model, clean, corrupted, answers, [(1, 2)], [], method),
        _hooked_ld(family, model, clean, corrupted, answers, [(0, 3), (2, 0)], [1], method),
        _hooked_ld(family, model, clean, corrupted, answers, [], [], method),
    ]
    assert lds == pytest.approx(expected, abs=1e-5, rel=1e-5)  # float32 LDs: 1e-5 of their scale
    assert abs(expected[1] - expected[2]) > 1e-3  # the ablations change something


def test_ov_outputs_and_effective_embedding_equal_raw_weights(family_model):
    family, model, backend = family_model
    ids = torch.tensor([5, 17, 300, 999])
    with torch.no_grad():
        embedded = _raw_embedding(family, model, ids)
        expected_effective = embedded + _post_mlp(family, model, MLP[family](model, 0)(_ln2(family, model)(embedded)))
        expected_ov = _raw_ov(family, model, 1, expected_effective)
    effective = backend.mlp0_effective_embedding(ids)
    torch.testing.assert_close(effective, expected_effective, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(backend.ov_outputs(1, effective), expected_ov, atol=1e-5, rtol=1e-5)


def test_patterns_equal_hf_attention_weights(family_model):
    _family, model, backend = family_model
    tokens = torch.randint(0, 1000, (1, 8), generator=torch.Generator().manual_seed(3))
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    with torch.no_grad():
        expected = model(tokens, output_attentions=True).attentions
    model.set_attn_implementation(before)
    got = backend.reduce_attention_patterns(tokens, lambda layer, pattern: pattern.clone(), layers=[0, 2],
                                            heads={2: [3, 1]})
    # attention weights lie in [0, 1]; float32 softmax differs by a few ulps between kernels and CPUs
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[2], expected[2][:, [3, 1]], atol=1e-5, rtol=0)
    assert model.config._attn_implementation == before  # eager only for that request


def test_a_family_without_a_known_layout_is_refused(tokenizer):
    model = OPTForCausalLM(OPTConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                     ffn_dim=32, num_attention_heads=2, word_embed_proj_dim=16))
    with pytest.raises(ModelLoadError, match=r"does not know where .* keeps its per-head attention output"):
        NnsightBackend.from_local(model, tokenizer, name="tiny-opt", source="test", revision="0",
                                  placement=Placement("cpu", None, torch.float32), n_params=0, started=0.0)
