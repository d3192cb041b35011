"""Which configs limit the block-by-block fast path: sliding-window and chunked attention masks, read off the config."""

import transformers

from headscope.backends.bridge import attention_span_limit


def test_sliding_window_layers_limit_the_fast_path():
    assert attention_span_limit(transformers.Gemma2Config(num_hidden_layers=4)) == 4096  # every other layer slides
    assert attention_span_limit(transformers.MistralConfig()) == 4096  # no layer_types: every layer slides
    qwen = transformers.Qwen2Config(use_sliding_window=True, sliding_window=64, num_hidden_layers=4,
                                    max_window_layers=2)
    assert attention_span_limit(qwen) == 64


def test_plain_causal_models_have_no_limit():
    assert attention_span_limit(transformers.LlamaConfig()) is None
    assert attention_span_limit(transformers.GPT2Config()) is None
    assert attention_span_limit(transformers.Qwen2Config(sliding_window=4096)) is None  # use_sliding_window is off
    assert attention_span_limit(transformers.MistralConfig(sliding_window=None)) is None
