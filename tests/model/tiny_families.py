"""Tiny random models of several architecture families: how to build each and save it as a local folder with the
embedded model's tokenizer (the fixtures that load them are in conftest.py)."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

D_MODEL = 64
N_HEADS = 4
D_HEAD = 16
GEMMA2_WINDOW = 10


@dataclass(frozen=True)
class TinyFamily:
    """How to build a tiny random model of one family: config(vocab, bos, eos) and the transformers class name."""

    name: str
    model_class: str
    config: Callable[[int, int | None, int | None], Any]


def _gpt2(vocab: int, bos: int | None, eos: int | None) -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab, n_embd=D_MODEL, n_layer=2, n_head=N_HEADS, n_positions=128,
                      bos_token_id=bos, eos_token_id=eos)


def _neox(vocab: int, bos: int | None, eos: int | None) -> Any:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(vocab_size=vocab, hidden_size=D_MODEL, num_hidden_layers=2, num_attention_heads=N_HEADS,
                         intermediate_size=128, rotary_pct=0.25, use_parallel_residual=True,
                         max_position_embeddings=128, tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos)


def _qwen2(vocab: int, bos: int | None, eos: int | None) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab, hidden_size=D_MODEL, num_hidden_layers=2, num_attention_heads=N_HEADS,
                       num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                       tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos)


def _gemma2(vocab: int, bos: int | None, eos: int | None) -> Any:
    from transformers import Gemma2Config

    # Soft caps far below Gemma-2's own (50, 30) so that these tiny weights reach them: a backend that skipped
    # either cap would give visibly different numbers. Layer 0 attends within a sliding window of GEMMA2_WINDOW
    # positions (Gemma-2's is 4096): the digit prompts fit in it, longer prompts do not.
    return Gemma2Config(vocab_size=vocab, hidden_size=D_MODEL, num_hidden_layers=2, num_attention_heads=N_HEADS,
                        num_key_value_heads=2, head_dim=D_HEAD, intermediate_size=128, max_position_embeddings=128,
                        query_pre_attn_scalar=D_HEAD, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                        sliding_window=GEMMA2_WINDOW, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)


TINY_FAMILIES: dict[str, TinyFamily] = {
    family.name: family
    for family in (
        TinyFamily("gpt2", "GPT2LMHeadModel", _gpt2),
        TinyFamily("neox", "GPTNeoXForCausalLM", _neox),
        TinyFamily("qwen2", "Qwen2ForCausalLM", _qwen2),
        TinyFamily("gemma2", "Gemma2ForCausalLM", _gemma2),
    )
}


def save_tiny_model(folder: Path, config: Any, model_class: str, tokenizer: Any, seed: int = 0) -> Path:
    """A random model of `config` saved with the tokenizer in `folder`. Weights are larger than the init's 0.02, and
    biases and norm gains are moved off their init values, so that every head, bias and norm has a visible effect."""
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0, 0.2)
            else:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


