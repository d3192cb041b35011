"""Model loading: the embedded model, a hub id or a local folder, on a chosen device and dtype.

Every failure becomes a ModelLoadError whose message names what was tried and what to do, and the memory a model
needs is estimated from its config before any weight is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from headscope.backends import check_backend_name
from headscope.backends.base import (
    Backend,
    LocalModel,
    Placement,
    ProgressCallback,
    config_dims,
    config_model_info,
)
from headscope.backends.bos import BOS_CHOICES, BosPolicy, decide_bos
from headscope.embedded import (  # noqa: F401  (re-exported: the app and the tests import them from here)
    EMBEDDED,
    EMBEDDED_GGUF,
    EMBEDDED_NAME,
    EMBEDDED_PACKAGE,
    embedded_converted_folder,
    embedded_gguf_path,
    file_sha256,
)
from headscope.errors import ModelLoadError
from headscope.settings import positive_env

DEVICE_CHOICES = ("auto", "cpu", "cuda", "multi-gpu")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")



@dataclass(frozen=True)
class ModelRequest:
    """What the user asked for. `key` names everything that makes two loaded models differ, the backend included.

    backend: "bridge" (TransformerLens, local), "nnsight" (nnsight, local) or "ndif" (nnsight on NDIF, remote).
    api_key: the NDIF key for backend "ndif" (else NDIF_API_KEY is read). Held in memory only: not in `key`, the
    repr, equality or any cache.
    """

    source: str = EMBEDDED
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "bridge"
    api_key: str | None = field(default=None, repr=False, compare=False)
    bos: str = "auto"  # "auto" (from the tokenizer and config), "prepend" or "none": headscope.backends.bos

    @property
    def key(self) -> tuple[str, ...]:
        """Source, device, dtype, backend; for NDIF also a fingerprint of the key (a SHA-256 prefix, in memory only),
        so one session's loaded NDIF model is never used under another session's (or no) key."""
        base = (self.source.strip(), self.device, self.dtype, self.backend, self.bos)
        if self.backend != "ndif":
            return base
        secret = self.api_key or os.environ.get("NDIF_API_KEY", "")
        return (*base, hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else "no key")


@dataclass(frozen=True)
class ResolvedSource:
    """A source classified: the embedded model, a local folder, or a hub id."""

    kind: str  # "embedded" | "local" | "hub"
    name: str  # a short display name
    location: str  # folder path or hub id


def _silence_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_placement(device: str, dtype: str) -> Placement:
    """Turn the device and dtype choices into a placement, or say clearly why that is impossible."""
    device = (device or "auto").strip().lower()
    dtype = (dtype or "auto").strip().lower()
    if dtype not in DTYPE_CHOICES:
        raise ModelLoadError(f"Unknown dtype {dtype!r}: choose one of {', '.join(DTYPE_CHOICES)}.")
    has_cuda = torch.cuda.is_available()
    device_map = None
    if device == "auto":
        device = "cuda:0" if has_cuda else "cpu"
    elif device == "multi-gpu":
        if not has_cuda:
            raise ModelLoadError(_no_cuda_message("multi-gpu"))
        device, device_map = "cuda:0", "auto"
    elif device == "cuda" or device.startswith("cuda:"):
        if not has_cuda:
            raise ModelLoadError(_no_cuda_message(device))
        index = 0 if device == "cuda" else _parse_cuda_index(device)
        if index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"Device {device} asked for, but only {torch.cuda.device_count()} CUDA device(s) are visible "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}). Choose one of those, or multi-gpu."
            )
        device = f"cuda:{index}"
    elif device != "cpu":
        raise ModelLoadError(f"Unknown device {device!r}: choose auto, cpu, cuda, cuda:N or multi-gpu.")
    if device == "cpu":
        if dtype in ("float16", "bfloat16"):
            raise ModelLoadError(
                f"dtype {dtype} on the CPU is not supported (half-precision matmuls there are slow and "
                "inexact): use float32 on the CPU, or a CUDA device for float16/bfloat16."
            )
        torch_dtype = torch.float32
    else:
        torch_dtype = torch.float16 if dtype == "auto" else _DTYPES[dtype]
    return Placement(device=device, device_map=device_map, dtype=torch_dtype)


def _parse_cuda_index(device: str) -> int:
    try:
        return int(device.split(":", 1)[1])
    except ValueError:
        raise ModelLoadError(f"Unknown device {device!r}: write cuda:N with N a GPU index, e.g. cuda:0.") from None


def _no_cuda_message(device: str) -> str:
    return (
        f"Device {device} asked for, but CUDA is not available here (torch {torch.__version__}, "
        f"torch.cuda.is_available() is False). Choose device cpu (or auto), or install a CUDA build of torch "
        "on a machine with an NVIDIA GPU."
    )


_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class SourcePolicy:
    """Which sources may be loaded. The command line and a server on localhost: any folder (roots None) and the hub
    unless switched off. A server bound beyond localhost: only folders under `roots` (resolved paths), so nobody on
    the network can load, or find out about, any other folder the server can read."""

    roots: tuple[str, ...] | None = None
    allow_hub: bool = True

    @classmethod
    def from_env(cls, network: bool = False) -> SourcePolicy:
        """HEADSCOPE_ALLOW_HUB=0 switches hub loading off; on a network, HEADSCOPE_MODEL_DIRS (os.pathsep-separated)
        names the folders whose models may be loaded (none when unset)."""
        allow_hub = os.environ.get("HEADSCOPE_ALLOW_HUB", "1").strip().lower() not in _FALSE
        if not network:
            return cls(None, allow_hub)
        roots = tuple(
            os.path.realpath(os.path.expanduser(root.strip()))
            for root in os.environ.get("HEADSCOPE_MODEL_DIRS", "").split(os.pathsep)
            if root.strip()
        )
        return cls(roots, allow_hub)

    def inside_roots(self, real_path: str) -> bool:
        return self.roots is None or any(
            real_path == root or real_path.startswith(root.rstrip(os.sep) + os.sep) for root in self.roots
        )

    def outside_message(self) -> str:
        """The one answer for every folder outside the roots, whether it exists or not: nothing about the server's
        folders can be learnt from it."""
        if not self.roots:
            return ("Local folders cannot be loaded on this server: choose the embedded model" +
                    (" or a hub id." if self.allow_hub else ".") +
                    " (The server's administrator can allow folders with HEADSCOPE_MODEL_DIRS.)")
        return (f"Only folders inside this server's model folders can be loaded: {', '.join(self.roots)}. Give the "
                "path of a model folder inside one of them" + (", a hub id" if self.allow_hub else "") +
                ", or 'embedded'.")


def _hub_off_message(policy: SourcePolicy) -> str:
    folders = "" if policy.roots == () else " or a local folder"
    return (f"Loading from the Hugging Face hub is switched off here (HEADSCOPE_ALLOW_HUB=0): choose the embedded "
            f"model{folders}.")


def resolve_source(source: str, policy: SourcePolicy | None = None) -> ResolvedSource:
    """Classify a source string: 'embedded', an existing folder, or a hub id, as `policy` allows.

    Under a policy with roots, a path is resolved (symlinks and '..' followed) before anything about it is checked,
    and every path outside the roots gets the same message; strings that look like hub ids are never looked up on
    disk there.
    """
    policy = policy or SourcePolicy.from_env()
    text = (source or "").strip()
    if not text or text.lower() == EMBEDDED:
        return ResolvedSource(EMBEDDED, EMBEDDED_NAME, EMBEDDED)
    if "\x00" in text:
        raise ModelLoadError("A model source cannot hold a NUL character: give a folder path, a hub id or 'embedded'.")
    if policy.roots is not None:
        looks_like_path = text.startswith(("/", ".", "~", "\\")) or not _HUB_ID.match(text)
        if looks_like_path:
            real = os.path.realpath(os.path.expanduser(text))
            if not policy.inside_roots(real):
                raise ModelLoadError(policy.outside_message())
            return _local_source(Path(real), text)
    else:
        path = Path(text).expanduser()
        if text.startswith(("/", ".", "~")) or path.exists():
            return _local_source(path, text)
        if not _HUB_ID.match(text):
            raise ModelLoadError(
                f"{text!r} is neither an existing folder nor a valid hub id (owner/name, e.g. "
                "meta-llama/Llama-2-7b-hf)."
            )
    if not policy.allow_hub:
        raise ModelLoadError(_hub_off_message(policy))
    return ResolvedSource("hub", text, text)


def _local_source(path: Path, text: str) -> ResolvedSource:
    if not path.is_dir():
        raise ModelLoadError(
            f"Model folder {text!r} does not exist (or is not a folder). Give the path of a folder that holds "
            "a transformers model (config.json and weights), a hub id like meta-llama/Llama-2-7b-hf, or 'embedded'."
        )
    _check_model_folder(path)
    return ResolvedSource("local", path.resolve().name, str(path.resolve()))


def _check_model_folder(path: Path) -> None:
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any(next(path.glob(p), None) for p in _WEIGHT_PATTERNS):
        missing.append("weight files (*.safetensors or *.bin)")
    if missing:
        raise ModelLoadError(
            f"Folder {str(path)!r} holds no transformers model: missing {' and '.join(missing)}. Save one there with "
            "model.save_pretrained(folder) and tokenizer.save_pretrained(folder), or pick another source."
        )


# ---------------------------------------------------------------------------------------------------------------
# Memory estimate before loading.


def estimate_weight_bytes(config: Any, dtype: torch.dtype) -> tuple[int, int]:
    """(parameter count, bytes) of a model built from `config`, counted on the meta device without allocating."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(), contextlib.redirect_stdout(None):
        skeleton = AutoModelForCausalLM.from_config(config)
    skeleton.tie_weights()  # tied embeddings count once (inside init_empty_weights tying does not take)
    n_params = sum(p.numel() for p in skeleton.parameters())
    return n_params, n_params * torch.tensor([], dtype=dtype).element_size()


def stored_elements(folder: Path) -> int | None:
    """Elements in a local folder's safetensors files, read from their headers (no tensor is read: a fraction of a
    second faster than building a skeleton model); None where the folder keeps its weights in another format."""
    files = sorted(folder.glob("*.safetensors"))
    if not files or any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        return None
    total = 0
    try:
        for path in files:
            with path.open("rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size))
            total += sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return total


def available_bytes(placement: Placement) -> int:
    """Memory free where the weights would go: MemAvailable on the CPU, free CUDA memory on GPUs."""
    if placement.device == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 1 << 62  # unknown: do not block
    if placement.device_map:
        return sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
    return torch.cuda.mem_get_info(torch.device(placement.device))[0]


def check_fits(name: str, n_params: int, needed: int, placement: Placement) -> None:
    free = available_bytes(placement)
    # Weights plus ~15% for activations, the bridge and the allocator's slack.
    if needed * 1.15 > free:
        raise ModelLoadError(
            f"Not enough memory for {name}: {n_params / 1e9:.2f} B parameters need about {needed / 2**30:.1f} GiB in "
            f"{str(placement.dtype).removeprefix('torch.')} (plus ~15% working memory), but {placement.label} has "
            f"{free / 2**30:.1f} GiB free. Use a smaller dtype (float16/bfloat16 on a GPU), device multi-gpu, or a "
            "smaller model."
        )


# ---------------------------------------------------------------------------------------------------------------
# Hub access: decide once whether the hub answers, so an unreachable hub fails in seconds rather than after retries.


def hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^https?://", "", endpoint).split("/")[0]
    hostname, _, port = host.partition(":")
    try:
        with socket.create_connection((hostname, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_failure(source: ResolvedSource, online: bool, error: Exception) -> ModelLoadError:
    text = str(error)
    if not online:
        return ModelLoadError(
            f"Could not load {source.location!r}: the Hugging Face hub is not reachable from here and the model is "
            "not in the local cache (~/.cache/huggingface/hub). Download it where there is network access "
            f"(`huggingface-cli download {source.location}`) and copy the cache, or give a local folder."
        )
    if "gated" in text.lower() or "401" in text or "403" in text:
        return ModelLoadError(
            f"{source.location!r} is gated: accept its licence on huggingface.co and log in (`huggingface-cli login`)."
        )
    return ModelLoadError(
        f"Unknown model id {source.location!r}: the hub has no such repository (or it has no config.json). "
        "Check the spelling (owner/name), or give a local folder."
    )


# ---------------------------------------------------------------------------------------------------------------


def _report(progress: ProgressCallback | None, stage: str, fraction: float) -> None:
    if progress is not None:
        progress(stage, fraction)


def load_model(
    request: ModelRequest, progress: ProgressCallback | None = None, policy: SourcePolicy | None = None, *,
    hooks_later: bool = False,
) -> Backend:
    """Load a model behind the requested backend, as `policy` allows (default: SourcePolicy.from_env()). Raises
    ModelLoadError with an actionable message on any failure. hooks_later: see wrap_local_model (the app's choice:
    usable sooner, TransformerLens set up on first need)."""
    spec = check_backend_name(request.backend)
    if request.bos not in BOS_CHOICES:
        raise ModelLoadError(f"Unknown BOS choice {request.bos!r}: choose one of {', '.join(BOS_CHOICES)}.")
    policy = policy or SourcePolicy.from_env()
    started = time.perf_counter()
    _silence_transformers()
    if not spec.local:  # NDIF: reads only the model's config and tokenizer, from the hub
        if not policy.allow_hub:
            raise ModelLoadError(_hub_off_message(policy))
        return load_remote(request, progress)
    placement = resolve_placement(request.device, request.dtype)
    source = resolve_source(request.source, policy)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # seconds: only when a model loads

    hub_kwargs: dict[str, Any] = {}
    if source.kind == EMBEDDED:
        folder, revision = embedded_converted_folder(progress)
        location = str(folder)
    elif source.kind == "local":
        location, revision = source.location, _folder_revision(Path(source.location))
    else:
        location = source.location
        online = hub_reachable()
        if not online:
            hub_kwargs["local_files_only"] = True

    _report(progress, f"Reading the config of {source.name}", 0.55)
    try:
        config = AutoConfig.from_pretrained(location, **hub_kwargs)
    except Exception as error:  # transformers raises OSError, ValueError, HTTP errors...
        if source.kind == "hub":
            raise _hub_failure(source, online, error) from error
        raise ModelLoadError(f"Could not read the model config in {location!r}: {error}") from error
    if source.kind == "hub":
        revision = getattr(config, "_commit_hash", None) or "unknown"

    stored = stored_elements(Path(location)) if source.kind != "hub" else None
    if stored is None:
        n_params, needed = estimate_weight_bytes(config, placement.dtype)
    else:  # buffers saved beside the parameters count too: an upper bound, fine for the memory check
        n_params, needed = stored, stored * placement.dtype.itemsize
    check_fits(source.name, n_params, needed, placement)

    _report(progress, f"Loading {n_params / 1e6:.0f} M parameters onto {placement.label}", 0.6)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **hub_kwargs)
        load_kwargs: dict[str, Any] = {"dtype": placement.dtype, **hub_kwargs}
        if placement.device_map:
            load_kwargs["device_map"] = placement.device_map
        hf_model = AutoModelForCausalLM.from_pretrained(location, **load_kwargs)
        if not placement.device_map:
            hf_model = hf_model.to(placement.device)
    except torch.OutOfMemoryError as error:
        raise ModelLoadError(
            f"Ran out of memory loading {source.name} on {placement.label}: use a smaller dtype or multi-gpu."
        ) from error
    except Exception as error:
        if source.kind == "hub":
            raise _hub_failure(source, online, error) from error
        raise ModelLoadError(f"Could not load the model in {location!r}: {error}") from error

    n_params = sum(parameter.numel() for parameter in hf_model.parameters())  # tied weights once
    bos = decide_bos(tokenizer, config, request.bos)  # once per model: every backend feeds the ids it gives
    backend = wrap_local_model(
        request.backend,
        hf_model,
        tokenizer,
        name=source.name,
        source=request.source.strip() or EMBEDDED,
        revision=revision,
        placement=placement,
        n_params=n_params,
        started=started,
        progress=progress,
        hooks_later=hooks_later,
        bos=bos,
    )
    _report(progress, "Ready", 1.0)
    return backend


def load_for_console(request: ModelRequest) -> Backend:
    """load_model for the command line and the Python API (TransformerLens set up on first need). A model NDIF lists
    COLD says so on stderr, once, right after the load: its first job waits while NDIF starts it (the app shows that
    notice under the model card instead)."""
    model = load_model(request, hooks_later=True)
    if request.backend == "ndif":  # nnsight (behind headscope.backends.ndif) imported only for NDIF
        from headscope.backends.ndif import say_starting_notice

        say_starting_notice(model)
    return model


def wrap_local_model(
    backend: str,
    hf_model: Any,
    tokenizer: Any,
    *,
    name: str,
    source: str,
    revision: str,
    placement: Placement,
    n_params: int,
    started: float,
    progress: ProgressCallback | None = None,
    hooks_later: bool = False,
    bos: BosPolicy | None = None,
) -> Backend:
    """The requested local backend around a transformers model already loaded on this machine, made by its
    BackendSpec's factory. bos: the model's BOS policy (default: decided from the tokenizer and config); every
    backend feeds the model the ids it gives. hooks_later: see headscope.backends.bridge.open_local."""
    spec = check_backend_name(backend)
    bos = bos if bos is not None else decide_bos(tokenizer, hf_model.config)
    return spec.opener()(LocalModel(hf_model, tokenizer, name, source, revision, placement, n_params, started, bos,
                                    progress, hooks_later))


# ids NDIF got as written, because the hub could not be asked for their spelling (why; kept for the process,
# as nnsight keeps the id it was given)
_IDS_AS_WRITTEN: dict[str, str] = {}


def load_remote(request: ModelRequest, progress: ProgressCallback | None = None) -> Backend:
    """A model run on NDIF: the key, NDIF's reachability and whether it hosts the model are checked first (each
    failing within seconds with what to do); then only the config and tokenizer are read (from the hub)."""
    # imported here, not at the top: nnsight and transformers take seconds to import, and the app imports this
    # module before its first page is drawn (no circle: none of these modules imports headscope.loading)
    from nnsight import TransformersModel
    from nnsight.modeling import huggingface as nnsight_huggingface
    from transformers import AutoConfig, AutoTokenizer

    from headscope.backends.layouts import check_modules, layout_for
    from headscope.backends.ndif import (
        NDIF_DEFAULT_TIMEOUT,
        NdifRun,
        NdifTarget,
        ndif_host,
        probe_ndif,
        resolve_api_key,
        shown_host,
    )
    from headscope.backends.nnsight import NnsightBackend
    started = time.perf_counter()
    api_key = resolve_api_key(request.api_key)
    source = (request.source or "").strip()
    if not source or source.lower() == EMBEDDED:
        raise ModelLoadError("NDIF runs models it hosts (for example meta-llama/Llama-2-7b-hf), not the embedded "
                             "model: give a hub id, or choose a local backend.")
    resolved = resolve_source(source)
    if resolved.kind != "hub":
        raise ModelLoadError(f"NDIF runs models it hosts, by hub id (for example meta-llama/Llama-2-7b-hf); "
                             f"{source!r} is a local folder: choose a local backend for it.")
    host = ndif_host()
    if progress is not None:
        progress(f"Checking that NDIF ({shown_host(host)}) answers", 0.1)
    listing = probe_ndif(host)
    if listing is not None and not (listing.is_deployed(source) or listing.is_cold(source)):
        raise ModelLoadError(f"NDIF does not host {source} now. Hosted models: {listing.describe()}. Choose one of "
                             "those, or a local backend.")
    cold = listing is not None and listing.is_cold(source)  # accepted: NDIF starts it for its first job
    if progress is not None:
        progress(f"Reading the config and tokenizer of {source} (no weights)", 0.4)
    kwargs: dict[str, Any] = {} if hub_reachable() else {"local_files_only": True}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as error:
        raise ModelLoadError(
            f"Could not read the config and tokenizer of {source} from the Hugging Face hub ({error}). NDIF runs "
            "the weights, but headscope needs these two small files here: check the network, or accept the model's "
            "licence on huggingface.co and log in (`huggingface-cli login`) for a gated model."
        ) from error
    layout = layout_for(config, source)
    dims = config_dims(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TransformersModel(source, tokenizer=tokenizer, task="text-generation")
    check_modules(model._module, layout, dims.n_layers, source)
    why = _IDS_AS_WRITTEN.get(source)
    if why is None:
        try:
            model_key = model.to_model_key()  # asks the hub for the canonical spelling of the id
        except Exception as error:  # hub busy or offline: NDIF matches the id as written; the model card says so
            why = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else 'no message'}"
            _IDS_AS_WRITTEN[source] = why
    if why is not None:
        nnsight_huggingface._ID_CACHE.setdefault(source, source)
        model_key = model.to_model_key()
    fallbacks = () if why is None else (f"The hub's spelling of the model id off: {why}; NDIF gets {source!r} as "
                                        "written",)
    dtype_name = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float16")
    dtype_name = dtype_name.removeprefix("torch.")
    n_params, _ = estimate_weight_bytes(config, torch.float32)
    placement = Placement(device="cpu", device_map=None, dtype=torch.float32)
    bos = decide_bos(tokenizer, config, request.bos)
    info = config_model_info(config, dims, bos, name=resolved.name, source=source,
                             revision=str(getattr(config, "_commit_hash", None) or "main"), n_params=n_params,
                             device="NDIF", dtype=dtype_name, memory_bytes=0,
                             load_seconds=time.perf_counter() - started, backend="ndif")
    info = replace(info, fallbacks=fallbacks)
    timeout = positive_env("HEADSCOPE_NDIF_TIMEOUT", NDIF_DEFAULT_TIMEOUT, maximum=7 * 24 * 3600.0)
    backend = NnsightBackend(model, tokenizer, info, placement, layout, dims,
                             mode=NdifRun(NdifTarget(host, model_key, timeout, source if cold else None)),
                             api_key=api_key)
    if progress is not None:
        progress("Ready (runs on NDIF; NDIF starts it at its first job)" if cold else "Ready (runs on NDIF)", 1.0)
    return backend


# Files that define how a folder's model reads text: a changed tokenizer changes every result (token ids, lengths)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja")


def _folder_revision(path: Path) -> str:
    """A fingerprint of a local model folder: config and tokenizer files' content plus the names, sizes and mtimes of
    its weights (hashing gigabytes of weights on every load would cost more than the load)."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for name in _TOKENIZER_FILES:
        if (path / name).is_file():
            digest.update(f"{name}:".encode() + hashlib.sha256((path / name).read_bytes()).digest())
    for pattern in _WEIGHT_PATTERNS:
        for weight in sorted(path.glob(pattern)):
            stat = weight.stat()
            digest.update(f"{weight.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()
