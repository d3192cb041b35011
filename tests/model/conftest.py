"""Tiny random models of several architecture families (tests/model/tiny_families.py), loaded twice: through
headscope like a user's own folder, and as an untouched copy with plain transformers, the independent reference
(TransformerLens replaces the submodules of the model it wraps with its own bridge components, so
`backend.hf_model` no longer runs Hugging Face's code alone)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.model.tiny_families import TINY_FAMILIES, save_tiny_model


@pytest.fixture(scope="session")
def embedded_tokenizer():
    from transformers import AutoTokenizer

    from headscope.loading import embedded_converted_folder

    return AutoTokenizer.from_pretrained(embedded_converted_folder()[0])


@pytest.fixture(scope="session")
def tiny_reference(tiny_model_dir):
    """tests/conftest's tiny GQA Llama loaded by plain transformers alone (eager attention, float32): the reference."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                                attn_implementation="eager").eval()


@dataclass(frozen=True)
class LoadedFamily:
    """A tiny model loaded twice: through headscope (`backend`) and untouched by any library (`reference`)."""

    name: str
    folder: Path
    backend: Any
    reference: Any


@pytest.fixture(scope="session")
def tiny_family_loader(tmp_path_factory, embedded_tokenizer, tiny_model_dir, tiny_model, tiny_reference):
    """family name -> LoadedFamily, built on first use and kept for the session ("llama" is tests/conftest's
    tiny GQA Llama, its backend and reference the session's `tiny_model` and `tiny_reference`: loaded once)."""
    from transformers import AutoModelForCausalLM

    from headscope.loading import ModelRequest, load_model

    loaded: dict[str, LoadedFamily] = {}

    def get(name: str) -> LoadedFamily:
        if name == "llama" and name not in loaded:
            loaded[name] = LoadedFamily(name, Path(tiny_model_dir), tiny_model, tiny_reference)
        if name not in loaded:
            family = TINY_FAMILIES[name]
            tokenizer = embedded_tokenizer
            config = family.config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
            folder = save_tiny_model(tmp_path_factory.mktemp(f"tiny-{name}-"), config, family.model_class, tokenizer)
            backend = load_model(ModelRequest(str(folder), device="cpu"))  # float32 on any machine
            reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                             attn_implementation="eager").eval()
            loaded[name] = LoadedFamily(name, folder, backend, reference)
        return loaded[name]

    return get
