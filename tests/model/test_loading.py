"""Loading: the embedded model, a local folder, and failures that say what to do."""

import pytest
import torch

from headscope.errors import ModelLoadError
from headscope.loading import ModelRequest, embedded_converted_folder, load_model


def test_embedded_model_shape(embedded_model):
    info = embedded_model.info
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.d_head) == (30, 9, 3, 64)
    assert info.n_ctx == 8192 and info.vocab_size == 49152
    assert info.device == "cpu" and info.dtype == "float32"
    assert 400e6 < info.memory_bytes < 700e6  # 135 M float32 parameters, tied embeddings counted once
    assert 130e6 < info.n_params < 140e6


def test_local_folder_gives_the_same_logits_as_embedded(embedded_model):
    folder = embedded_converted_folder()[0]
    local = load_model(ModelRequest(str(folder)))
    tokens = embedded_model.tensor([embedded_model.input_ids("1 2 3 4 ")])
    assert local.info.source == str(folder)
    assert torch.allclose(local.logits(tokens), embedded_model.logits(tokens), atol=1e-5)


def test_local_tiny_folder_loads_with_its_shape(tiny_model):
    info = tiny_model.info
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.d_head) == (3, 4, 2, 16)


def test_unknown_hub_id_fails_fast_and_offline():
    with pytest.raises(ModelLoadError, match=r"not reachable.*not in the local cache"):
        load_model(ModelRequest("nobody-here/no-such-model"))


def test_memory_estimate_refuses_a_model_too_big(tmp_path, monkeypatch):
    from transformers import LlamaConfig

    import headscope.loading as loading

    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                vocab_size=32000).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(loading, "available_bytes", lambda placement: 4 * 2**30)  # a 4 GiB machine
    with pytest.raises(ModelLoadError, match=r"6\.74 B parameters need about 25\.1 GiB.*4\.0 GiB free"):
        load_model(ModelRequest(str(tmp_path)))
