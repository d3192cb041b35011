"""Backends side by side: the embedded digits sweep on each local backend against the naive loop, in one process;
then what a remote (NDIF) sweep of Llama-2-7B would send and receive.

    python bench/backends.py                  # 16 digit prompts, mean ablation, every head and MLP
    python bench/backends.py --skip-timing    # only the NDIF request sizes (a few seconds)

Timing: the naive loop (one full forward per head and per MLP, bridge) is the baseline; the bridge's fast path (one
pass over the layers), the bridge's general path (one batched forward per layer) and nnsight (general path: one
trace per layer, i.e. one NDIF request per layer remotely) are reported in seconds, as speed-ups over it, and by
their largest difference from it.

NDIF sizes are measured, not estimated: the backend's own request bodies are serialised exactly as nnsight's
RemoteBackend serialises them (zstd-compressed, headscope's code shipped by value) against a weightless (meta)
model of Llama-2-7B's shape (32 layers × 32 heads, vocab 32,000), for 16 prompts of 9 tokens; results are the saved
values as NDIF returns them (torch.save, zstd-compressed). Status polls (a few hundred bytes each) are not counted.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from headscope.ablation import exact_sweep, naive_sweep, prepare_dataset
from headscope.backends.base import Placement
from headscope.backends.interventions import InterventionGroup, LogitDiffTask, SourceKind, ValueSource
from headscope.component import Component
from headscope.loading import ModelRequest, load_model
from headscope.methods import get_method
from headscope.tasks import build_task_dataset


def timed(label: str, fn):
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    print(f"  {label:<44} {seconds:8.1f} s", flush=True)
    return value, seconds


def local_timing(prompts: int, method: str) -> None:
    bridge = load_model(ModelRequest())
    nnsight = load_model(ModelRequest(backend="nnsight"))
    encoded = prepare_dataset(bridge, build_task_dataset("digits", prompts, seed=0, model=bridge))
    info = bridge.info
    print(f"{info.name}: {info.n_layers} layers × {info.n_heads} heads + {info.n_layers} MLPs; {encoded.n_prompts} "
          f"digit prompts of {encoded.seq_len} tokens; {method} ablation; torch threads {torch.get_num_threads()}")
    exact_sweep(bridge, encoded, method)  # warm-up
    (naive, naive_mlp, _), base = timed("naive loop (bridge, one forward per component)",
                                        lambda: naive_sweep(bridge, encoded, method))
    rows = [("bridge, fast path", lambda: exact_sweep(bridge, encoded, method, path="fast")),
            ("bridge, general path", lambda: exact_sweep(bridge, encoded, method, path="general")),
            ("nnsight (local), general path", lambda: exact_sweep(nnsight, encoded, method))]
    print(f"\n  {'':<44} {'':>10}  {'vs naive':>8}  {'max |Δ| vs naive':>16}")
    for label, run in rows:
        started = time.perf_counter()
        numbers = run()
        seconds = time.perf_counter() - started
        delta = max(np.abs(numbers.ablated_ld - naive).max(), np.abs(numbers.mlp_ablated_ld - naive_mlp).max())
        print(f"  {label:<44} {seconds:8.1f} s  {base / seconds:7.1f}×  {delta:16.2e}", flush=True)


class _Captured(Exception):
    """Raised by the capturing backend once a request is serialised: nothing runs (the model is weightless)."""


def ndif_sizes(prompts: int, seq_len: int) -> None:
    """Serialise every request of a 7B-shaped general-path sweep as nnsight would send it to NDIF."""
    import zstandard
    from nnsight.ndif import pull_env
    from nnsight.schema.request import RequestModel
    from nnsight.tracing.backend import Backend as NnsightTraceBackend
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from headscope.backends.base import config_dims, config_model_info
    from headscope.backends.bos import decide_bos
    from headscope.backends.layouts import layout_for
    from headscope.backends.ndif import NdifRun, NdifTarget
    from headscope.backends.nnsight import NnsightBackend
    from headscope.loading import embedded_converted_folder

    sizes: list[int] = []

    class Capture(NnsightTraceBackend):
        def __call__(self, tracer) -> None:
            pull_env()  # what RemoteBackend does first: headscope's code travels by value
            sizes.append(len(RequestModel.serialize(tracer, compress=True)))
            raise _Captured

    class Measuring(NnsightBackend):
        def _trace_backend(self, attn_implementation=None):
            self.requests_sent += 1
            return Capture()

    config = LlamaConfig()  # the defaults are Llama-2-7B's shape
    with torch.device("meta"):
        meta = LlamaForCausalLM(config)
    tokenizer = AutoTokenizer.from_pretrained(embedded_converted_folder()[0])
    from nnsight import TransformersModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TransformersModel(meta, tokenizer=tokenizer, task="text-generation", device="meta")
    dims = config_dims(config)
    bos = decide_bos(tokenizer, config)
    info = config_model_info(config, dims, bos, name="Llama-2-7B shape", source="meta", revision="0", n_params=0,
                 device="NDIF", dtype="float16", memory_bytes=0, load_seconds=0.0, backend="ndif")
    backend = Measuring(model, tokenizer, info, Placement("cpu", None, torch.float32), layout_for(config, "7B"),
                        dims, mode=NdifRun(NdifTarget("http://ndif.invalid", "meta", 60.0)), api_key="unused")
    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(3, config.vocab_size, (prompts, seq_len), generator=generator)
    corrupted = torch.randint(3, config.vocab_size, (prompts, seq_len), generator=generator)
    answers = torch.randint(3, config.vocab_size, (prompts, 2), generator=generator)
    task = LogitDiffTask(clean, corrupted, answers[:, 0], answers[:, 1], torch.full((prompts,), 1 / prompts))
    method = get_method("mean")
    n_layers, n_heads = dims.n_layers, dims.n_heads

    def request(call) -> None:
        try:
            call()
        except Exception as error:  # the capture stops every request once it is serialised
            if not isinstance(error.__cause__, _Captured) and not isinstance(error, _Captured):
                raise

    source = ValueSource(SourceKind(method.source))
    request(lambda: backend.logit_diffs(task, [InterventionGroup.nothing()]))
    for layer in range(n_layers):
        components = [Component(layer, head) for head in range(n_heads)] + [Component.mlp(layer)]
        request(lambda c=components: backend.logit_diffs(
            task, [InterventionGroup.ablating([component], source) for component in c]))
    request(lambda: backend.answer_logits(corrupted, answers))  # the corrupted LD
    requests = backend.requests_sent

    def result_bytes(values: dict) -> int:
        buffer = io.BytesIO()
        torch.save(values, buffer)
        return len(zstandard.ZstdCompressor(level=6).compress(buffer.getvalue()))

    received = (result_bytes({"lds": torch.zeros(1)}) + n_layers * result_bytes({"lds": torch.randn(n_heads + 1)})
                + result_bytes({"logits": torch.randn(prompts, 2)}))
    print(f"\nNDIF sweep of a Llama-2-7B-shaped model ({n_layers} layers × {n_heads} heads + MLPs, {prompts} prompts × "
          f"{seq_len} tokens, mean ablation, general path):")
    print(f"  requests: {requests} (1 clean run, {n_layers} layers, 1 corrupted LD); each layer's request holds "
          f"{prompts} corrupted + {(n_heads + 1) * prompts} clean rows")
    print(f"  sent:     {sum(sizes) / 1e3:,.0f} kB in all (per request {min(sizes) / 1e3:,.1f}–{max(sizes) / 1e3:,.1f} "
          "kB; measured: serialised as nnsight sends it)")
    print(f"  received: {received / 1e3:,.1f} kB in all (the LD per group only; computed from the saved values' "
          "torch.save + zstd)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--method", default="mean")
    parser.add_argument("--skip-timing", action="store_true", help="only the NDIF request sizes")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if not args.skip_timing:
        local_timing(args.prompts, args.method)
    ndif_sizes(16, 9)


if __name__ == "__main__":
    main()
