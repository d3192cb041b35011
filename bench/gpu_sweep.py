"""Exact ablation sweep on a Llama-2-7B-shaped float16 model with random weights (timing does not depend on the
weights): 1,024 heads × 16 prompts of 9 tokens. Prints the engine's time, the naive loop's in the same process, the
achieved TFLOP/s against the sweep's FLOP count, and the engine's agreement with the naive loop.

    python bench/gpu_sweep.py                         # on a GPU: the full 7B shape
    python bench/gpu_sweep.py --small --device cpu    # the same script on a CPU, with a small shape
    python bench/gpu_sweep.py --tiny --device cpu     # 7B's 32 layers × 32 heads at a tiny width: the time is
                                                      # Python dispatch (the part a GPU cannot speed up)

On the device machine (torch and transformers present, transformer-lens not): carry wheels of transformer-lens and
its missing dependencies in .whl/ and install them to /tmp/site first (see the README, "Benchmarks").
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fake_tokenizer(vocab_size: int):
    """A word-level tokenizer over t0…tN, saved to a temporary folder (TransformerLens reloads tokenizers from their
    folder): the adapter needs one (BOS, special ids); the bench feeds token ids directly."""
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<unk>": 1, **{f"t{i}": i for i in range(2, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tempfile.mkdtemp(prefix="headscope-bench-tokenizer-")
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", unk_token="<unk>").save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def build_model(shape: str, device: str, dtype: torch.dtype):
    """A Llama-2-7B-shaped model (or a small one, or 7B's layers and heads at a tiny width) with random weights behind
    headscope's TransformerLens backend."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from headscope.backends.base import Placement
    from headscope.loading import wrap_local_model

    if shape == "small":
        config = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=6, num_attention_heads=8,
                             num_key_value_heads=8, vocab_size=1000, max_position_embeddings=512)
    elif shape == "tiny":  # every product tiny: what is left is the Python and dispatch cost of 7B's 1,024 heads
        config = LlamaConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=32, vocab_size=1000, max_position_embeddings=512)
    else:  # Llama-2-7B's shape
        config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
    config.bos_token_id = 0
    started = time.perf_counter()
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            hf_model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    placement = Placement(device, None, dtype)
    n_params = sum(p.numel() for p in hf_model.parameters())
    model = wrap_local_model("bridge", hf_model, fake_tokenizer(config.vocab_size), name="llama-2-7b-shaped-random",
                             source="random", revision="random", placement=placement, n_params=n_params,
                             started=started)  # wrapped now, the fast paths checked, as load_model does
    print(f"model built and wrapped in {time.perf_counter() - started:.1f} s; fast path "
          f"{'on' if model.block_runner else 'OFF'} (error {model.checks.fast_path_error}), last block at the last "
          f"position only: {bool(model.block_runner and model.block_runner.supports_last_position_only)}")
    return model, config


def random_dataset(model, n_prompts: int, seq_len: int, seed: int):
    from headscope.tasks import Dataset, EncodedDataset, PromptItem

    generator = torch.Generator().manual_seed(seed)
    vocab = model.info.vocab_size

    def rows():
        body = torch.randint(2, vocab, (n_prompts, seq_len - 1), generator=generator)
        return torch.cat([torch.zeros(n_prompts, 1, dtype=torch.long), body], dim=1).to(model.device)

    answers = torch.randint(2, vocab, (2, n_prompts), generator=generator)
    answers[1] = torch.where(answers[1] == answers[0], (answers[0] + 1) % vocab, answers[1])
    dataset = Dataset("random", tuple(PromptItem(f"p{i}", "a", "b", "c") for i in range(n_prompts)))
    return EncodedDataset(dataset, rows(), rows(), answers[0].to(model.device), answers[1].to(model.device),
                          ("<s>",) * seq_len, ((),) * n_prompts)


def sweep_flops(info, n_prompts: int, seq_len: int, groups_per_layer: int) -> float:
    """Matmul FLOPs of the exact sweep: every ablated copy runs the blocks from its layer up, plus the clean and
    corrupted runs; 2 FLOPs per multiply-add; attention scores and weighted sums included."""
    d, d_mlp, kv = info.d_model, info.d_mlp, info.n_kv_heads * info.d_head
    per_token_block = 2 * (2 * d * d + 2 * d * kv + 3 * d * d_mlp) + 2 * 2 * seq_len * d
    copies = sum((groups_per_layer + 2) * (info.n_layers - layer) for layer in range(info.n_layers))
    return float(copies * n_prompts * seq_len * per_token_block)


def sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def timed(model, fn, repeats: int = 1):
    """(median seconds, last value) of fn() with the device synchronized around each run."""
    times, value = [], None
    for _ in range(repeats):
        sync(model)
        started = time.perf_counter()
        value = fn()
        sync(model)
        times.append(time.perf_counter() - started)
    return float(np.median(times)), value


def pattern_view(model, n_tokens: int) -> None:
    """The pattern view of the study's four Llama-2-7B heads on a long random prompt: its time against a plain
    forward in the same process, and the route (checked on first use) against the bridge's hook_pattern route."""
    from headscope.backends.bridge_patterns import bridge_patterns

    info = model.info
    heads = {3: [24], 5: [25], 16: [0], 20: [17]} if info.n_layers >= 21 else {1: [0], 2: [1], 3: [2], 4: [3]}
    generator = torch.Generator().manual_seed(3)
    tokens = torch.cat([torch.zeros(1, 1, dtype=torch.long),
                        torch.randint(2, info.vocab_size, (1, n_tokens - 1), generator=generator)], 1).to(model.device)

    def keep(layer, pattern):
        return pattern.float().cpu()

    def view():
        return model.reduce_attention_patterns(tokens, keep, layers=heads, heads=heads)

    print(f"pattern route from the model's own attention (checked on first use): {model.native_patterns} "
          f"({model.checks.pattern_route_error})")
    model.last_logits(tokens)
    view()  # warm-up
    t_plain, _ = timed(model, lambda: model.last_logits(tokens), 3)
    t_view, mine = timed(model, view, 3)
    print(f"{n_tokens:,} tokens: plain forward {t_plain:.3f} s; pattern view of 4 heads {t_view:.3f} s "
          f"({t_view / t_plain:.2f}×)")
    reference = bridge_patterns(model, tokens, keep, set(heads), heads)
    diff = max(float((mine[layer] - reference[layer]).abs().max()) for layer in heads)
    print(f"max |pattern − hook_pattern route| = {diff:.2e}")


def main() -> None:
    from headscope import memory
    from headscope.ablation import attribution_sweep, exact_sweep, naive_sweep

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float16 on a GPU (default), float32 on the CPU")
    shapes = parser.add_mutually_exclusive_group()
    shapes.add_argument("--small", action="store_true", help="a small shape (for the CPU)")
    shapes.add_argument("--tiny", action="store_true",
                        help="7B's 32 layers × 32 heads at width 128: times the dispatch cost, not the products")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=9)
    parser.add_argument("--method", default="zero")
    parser.add_argument("--naive-layers", type=int, default=None,
                        help="run the naive loop on this many layers only and scale up (saves device time)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--targets", default="", help="comma-separated chunk targets in GiB to compare, e.g. 1,2,4")
    parser.add_argument("--large", default="", help="also time PROMPTSxTOKENS, e.g. 64x20")
    parser.add_argument("--profile", action="store_true", help="print the top kernels of one exact sweep")
    parser.add_argument("--patterns", type=int, default=0, metavar="TOKENS",
                        help="only time the pattern view of 4 heads on a random prompt of TOKENS tokens against a "
                             "plain forward, and compare both pattern routes")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if args.device != "cpu" else torch.float32)

    model, _ = build_model("small" if args.small else "tiny" if args.tiny else "7b", args.device, dtype)
    if args.patterns:
        pattern_view(model, args.patterns)
        return
    info = model.info
    encoded = random_dataset(model, args.prompts, args.seq_len, seed=0)
    flops = sweep_flops(info, args.prompts, args.seq_len, info.n_heads)
    name = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "CPU"
    print(f"{name}: {info.n_layers} layers × {info.n_heads} heads = {info.n_layers * info.n_heads} heads, "
          f"d_model {info.d_model}, {dtype}, {args.prompts} prompts × {args.seq_len} tokens, {args.method} ablation; "
          f"weights {info.memory_bytes / 2**30:.2f} GiB")
    cuda = model.device.type == "cuda"
    base_memory = torch.cuda.memory_allocated(model.device) if cuda else 0

    def sweep(enc=encoded, mlp=False):
        return exact_sweep(model, enc, args.method, include_mlp=mlp, deduplicate=False)

    sweep()  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats(model.device)
    t_exact, exact_numbers = timed(model, sweep, args.repeats)
    exact, clean = exact_numbers.ablated_ld, exact_numbers.clean_ld
    print(f"exact sweep (one pass): {t_exact:.3f} s (median of {args.repeats}); {flops / 1e12:.2f} TFLOP of "
          f"matmuls → {flops / t_exact / 1e12:.1f} TFLOP/s")
    if cuda:
        peak = torch.cuda.max_memory_allocated(model.device) - base_memory
        print(f"peak GPU memory above the weights: {peak / 2**30:.2f} GiB")
    t_mlp, _ = timed(model, lambda: sweep(mlp=True), 1)
    print(f"exact sweep with MLP rows: {t_mlp:.3f} s")
    for target in [float(x) for x in args.targets.split(",") if x]:
        memory.CHUNK_TARGET_BYTES = int(target * 2**30)
        if cuda:
            torch.cuda.reset_peak_memory_stats(model.device)
        t_target, _ = timed(model, sweep, 2)
        peak = (torch.cuda.max_memory_allocated(model.device) - base_memory) / 2**30 if cuda else 0.0
        print(f"  chunk target {target:g} GiB: {t_target:.3f} s, {flops / t_target / 1e12:.1f} TFLOP/s, "
              f"peak +{peak:.2f} GiB")
    memory.CHUNK_TARGET_BYTES = 2 * 2**30

    attribution_sweep(model, encoded, args.method)  # warm-up
    t_attr, _ = timed(model, lambda: attribution_sweep(model, encoded, args.method), args.repeats)
    print(f"attribution estimate: {t_attr:.3f} s ({t_exact / t_attr:.0f}× faster than exact)")

    if args.profile and cuda:
        from torch.profiler import ProfilerActivity, profile

        for label, fn in (("exact sweep", sweep), ("attribution", lambda: attribution_sweep(model, encoded,
                                                                                            args.method))):
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                fn()
                sync(model)
            print(f"top kernels of one {label}:")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=48))

    if args.large:
        n_large, len_large = (int(x) for x in args.large.lower().split("x"))
        large = random_dataset(model, n_large, len_large, seed=1)
        sweep(large)
        t_large, _ = timed(model, lambda: sweep(large), 1)
        large_flops = sweep_flops(info, n_large, len_large, info.n_heads)
        print(f"exact sweep {n_large} prompts × {len_large} tokens: {t_large:.3f} s, "
              f"{large_flops / t_large / 1e12:.1f} TFLOP/s")

    layers = list(range(info.n_layers if args.naive_layers is None else min(args.naive_layers, info.n_layers)))
    t_naive, naive_numbers = timed(model, lambda: naive_sweep(model, encoded, args.method, include_mlp=False,
                                                              layers=layers), 1)
    naive = naive_numbers[0]
    t_naive *= info.n_layers / len(layers)
    scaled = "" if len(layers) == info.n_layers else f" (scaled from {len(layers)} layers)"
    print(f"naive loop, one forward per head: {t_naive:.2f} s{scaled} → exact is {t_naive / t_exact:.1f}× faster")
    diff = float(np.nanmax(np.abs(exact[layers] - naive[layers])))
    largest = float(np.nanmax(np.abs(naive[layers] - clean)))
    print(f"max |exact − naive| = {diff:.2e} LD; largest effect {largest:.3e}; ratio {diff / max(largest, 1e-12):.2%} "
          f"(limit: 1e-4 in float32, 1% in float16)")


if __name__ == "__main__":
    main()
