"""One tiny random model per family the nnsight backend serves, as folders NDIF's test bed deploys beside the embedded
model (serve.sh serves each as `headscope-tiny/<family>` through a local Hugging Face cache entry).

Run by serve.sh with headscope's venv: `python tests/ndif/tiny_models.py OUT_DIR` writes OUT_DIR/<family>/ (a
folder is kept when it already holds weights, so a restart does not change them). The configs are the test suite's
own (tests/model/tiny_families.py, and test_backend_parity's Llama), plus Mistral.
"""

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.model.tiny_families import D_MODEL, N_HEADS, TINY_FAMILIES, TinyFamily, save_tiny_model  # noqa: E402

REPO_PREFIX = "headscope-tiny"


def _llama(vocab: int, bos: int | None, eos: int | None) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=D_MODEL, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=N_HEADS, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos)


def _mistral(vocab: int, bos: int | None, eos: int | None) -> Any:
    from transformers import MistralConfig

    return MistralConfig(vocab_size=vocab, hidden_size=D_MODEL, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=N_HEADS, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos)


FAMILIES: dict[str, TinyFamily] = {
    "llama": TinyFamily("llama", "LlamaForCausalLM", _llama),
    "mistral": TinyFamily("mistral", "MistralForCausalLM", _mistral),
    **TINY_FAMILIES,
}


def repo_id(family: str) -> str:
    return f"{REPO_PREFIX}/{family}"


def build(out: Path) -> list[Path]:
    from transformers import AutoTokenizer

    from headscope.loading import embedded_converted_folder

    tokenizer = AutoTokenizer.from_pretrained(embedded_converted_folder()[0])
    folders = []
    for family in FAMILIES.values():
        folder = out / family.name
        if not (folder / "model.safetensors").exists():
            config = family.config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
            save_tiny_model(folder, config, family.model_class, tokenizer)
        folders.append(folder)
    return folders


if __name__ == "__main__":
    for built in build(Path(sys.argv[1])):
        print(built)
