"""Shared fixtures. No test reaches a model hub: HF_HUB_OFFLINE is set before anything imports transformers."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The job-time limit asks before long jobs; a loaded test machine's estimates can pass the default, so the suite runs
# without it except where a test sets it (tests/app/test_job_time_limit.py, tests/model/test_job_time.py)
os.environ.setdefault("HEADSCOPE_MAX_JOB_SECONDS", "86400")

import pytest
import torch

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded model (SmolLM2-135M-Instruct) on the CPU, loaded once per test session."""
    from headscope.loading import ModelRequest
    from headscope.registry import ModelRegistry

    return ModelRegistry().get(ModelRequest())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A local folder holding a tiny random-init Llama (GQA: 4 query heads over 2 KV heads) with the embedded
    model's tokenizer: fast, and it exercises the local-folder loading path."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from headscope.loading import embedded_converted_folder

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_converted_folder()[0])
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the init's 0.02 so that heads have visible effects
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0, 0.2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from headscope.loading import ModelRequest, load_model

    return load_model(ModelRequest(str(tiny_model_dir)))
