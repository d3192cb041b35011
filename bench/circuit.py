"""Circuit search speed: the plain loop (one full forward pass per component per pass) and the engine, side by side
in one run, with the same decisions checked.

    python bench/circuit.py                       # embedded model (CPU), digits, 8 prompts, mean, threshold 80
    python bench/circuit.py --prompts 16 --speculations adaptive,kept
    python bench/circuit.py --gpu                 # Llama-2-7B-shaped float16 random model, 16 prompts × 9 tokens

CPU mode runs the plain loop in full and the engine with each speculation asked for ("adaptive": the default;
"kept": guess "kept" for every candidate, the batches = removals + 1 scheme; "none": one candidate per batch), and
prints seconds, the speed-up, candidate circuits scored, batches, group-blocks run and whether every decision matched.

GPU mode (--gpu) builds a Llama-2-7B-shaped model with random weights on the GPU (timing does not depend on the
weights), 16 random prompts of 9 tokens whose answers the random model prefers (so that LD_clean > 0), and times the
full search until stable (target ≤ 30 s). The plain loop's time is estimated there from --plain-sample timed full
forwards times the number of forwards the plain loop needs (the decisions are the engine's), to save device time.
`--small --device cpu` runs GPU mode's code path here with a small shape.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.gpu_sweep import build_model, sync
from headscope.ablation import prepare_dataset
from headscope.circuit import CircuitSearch, find_circuit, plain_circuit


def describe(label: str, seconds: float, search: CircuitSearch) -> None:
    print(f"  {label:<46} {seconds:8.1f} s   {len(search.removals):4d} removed, {len(search.kept_effects):4d} kept, "
          f"{search.passes} passes, score {100 * search.circuit_ld / search.clean_ld:5.1f}%; "
          f"{search.evaluations:5d} circuits scored in {search.batches:4d} batches, {search.group_blocks:6d} "
          f"group-blocks, {search.reused} scores known", flush=True)


def same_decisions(a: CircuitSearch, b: CircuitSearch) -> bool:
    return [r.component for r in a.removals] == [r.component for r in b.removals] and a.passes == b.passes


def plain_forwards(search: CircuitSearch, n_components: int, one_pass: bool) -> int:
    """Full forwards the plain loop needs for these decisions: every pass scores every component not yet removed,
    plus the clean run (and, after one pass that removed something, one per kept component)."""
    removed_before = 0
    total = 1
    for number in range(1, search.passes + 1):
        total += n_components - removed_before
        removed_before += sum(1 for r in search.removals if r.pass_number == number)
    if one_pass and search.removals:
        total += len(search.kept_effects)
    return total


def cpu_bench(args: argparse.Namespace) -> None:
    from headscope.loading import ModelRequest, load_model
    from headscope.tasks import build_task_dataset

    model = load_model(ModelRequest(args.model))
    info = model.info
    encoded = prepare_dataset(model, build_task_dataset(args.task, args.prompts, seed=args.seed, model=model))
    distinct = len({tuple(row) for row in encoded.clean.tolist()})
    print(f"{info.name}: {info.n_layers} layers × ({info.n_heads} heads + MLP) = {info.n_layers * (info.n_heads + 1)} "
          f"components; {encoded.n_prompts} {args.task} prompts ({distinct} distinct) of {encoded.seq_len} tokens; "
          f"{args.method} ablation, threshold {args.threshold:g}%, {'one pass' if args.one_pass else 'until stable'}; "
          f"torch threads {torch.get_num_threads()}")
    print("  (timings on a shared CPU are noisy: compare ratios within one run)")
    runs: dict[str, tuple[float, CircuitSearch]] = {}
    for speculation in args.speculations.split(","):
        started = time.perf_counter()
        search = find_circuit(model, encoded, args.method, args.threshold, one_pass=args.one_pass,
                              speculation=speculation)
        runs[speculation] = (time.perf_counter() - started, search)
        describe(f"engine, speculation {speculation}", *runs[speculation])
    started = time.perf_counter()
    plain = plain_circuit(model, encoded, args.method, args.threshold, one_pass=args.one_pass)
    t_plain = time.perf_counter() - started
    describe("plain loop: one full forward per component/pass", t_plain, plain)
    print()
    for speculation, (seconds, search) in runs.items():
        diff = max((abs(a.ld_after - b.ld_after) for a, b in zip(search.removals, plain.removals, strict=False)),
                   default=0.0)
        print(f"engine ({speculation}) vs plain loop: {t_plain / seconds:.1f}× faster; same decisions: "
              f"{same_decisions(search, plain)}; max |Δ LD| after a removal {diff:.1e}")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          f"(weights {info.memory_bytes / 2**20:.0f} MiB)")


# ---------------------------------------------------------------------------------------------------------------
# GPU mode: a Llama-2-7B-shaped random model


def random_llama(small: bool, device: str, dtype: torch.dtype):
    """bench/gpu_sweep.py's random Llama (weights seeded), which must offer the fast path."""
    torch.manual_seed(0)
    model, _ = build_model("small" if small else "7b", device, dtype)
    if model.block_runner is None:
        raise SystemExit(f"the fast path failed its check at load (error {model.checks.fast_path_error})")
    return model


def random_task(model, n_prompts: int, seq_len: int, seed: int):
    """Random prompts (BOS first) and random corrupted prompts; the correct answer is the model's own top token and
    the incorrect one a random token, so every prompt has LD > 0."""
    from headscope.tasks import Dataset, EncodedDataset, PromptItem

    generator = torch.Generator().manual_seed(seed)
    vocab = model.info.vocab_size

    def rows():
        body = torch.randint(2, vocab, (n_prompts, seq_len - 1), generator=generator)
        return torch.cat([torch.zeros(n_prompts, 1, dtype=torch.long), body], dim=1).to(model.device)

    clean, corrupted = rows(), rows()
    logits = model.last_logits(clean)
    correct = logits.argmax(-1)
    incorrect = torch.randint(2, vocab, (n_prompts,), generator=generator).to(model.device)
    incorrect = torch.where(incorrect == correct, (correct + 1) % vocab, incorrect)
    dataset = Dataset("random", tuple(PromptItem(f"p{i}", "a", "b", "c") for i in range(n_prompts)))
    return EncodedDataset(dataset, clean, corrupted, correct, incorrect, ("<s>",) * seq_len, ((),) * n_prompts)


def gpu_bench(args: argparse.Namespace) -> None:
    from headscope.backends.interventions import InterventionGroup, SourceKind, ValueSource
    from headscope.circuit import visiting_order
    from headscope.methods import get_method

    dtype = torch.float16 if args.device != "cpu" else torch.float32
    model = random_llama(args.small, args.device, dtype)
    info = model.info
    encoded = random_task(model, args.prompts, args.seq_len, seed=0)
    name = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "CPU"
    n_components = info.n_layers * (info.n_heads + 1)
    print(f"{name}: {info.n_layers} layers × ({info.n_heads} heads + MLP) = {n_components} components, d_model "
          f"{info.d_model}, {dtype}, {args.prompts} prompts × {args.seq_len} tokens, {args.method} ablation, "
          f"threshold {args.threshold:g}%; weights {info.memory_bytes / 2**30:.2f} GiB", flush=True)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
        base_memory = torch.cuda.memory_allocated(model.device)
    runs = {}
    for speculation in args.speculations.split(","):
        sync(model)
        started = time.perf_counter()
        search = find_circuit(model, encoded, args.method, args.threshold, one_pass=args.one_pass,
                              speculation=speculation)
        sync(model)
        runs[speculation] = (time.perf_counter() - started, search)
        describe(f"engine, speculation {speculation}", *runs[speculation])
    if model.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(model.device) - base_memory
        print(f"peak GPU memory above the weights: {peak / 2**30:.2f} GiB")
    first = next(iter(runs.values()))[1]
    for speculation, (_, search) in runs.items():
        print(f"  {speculation}: same decisions as {next(iter(runs))}: {same_decisions(search, first)}")

    # the plain loop: time full forwards (one component ablated on top of a removed set, as the loop does)
    from headscope.engine import logit_diff_task

    spec = get_method(args.method)
    task = logit_diff_task(encoded, spec, deduplicate=False)
    sample = visiting_order(info.n_layers, info.n_heads)[: args.plain_sample]
    groups = [InterventionGroup.ablating([c], ValueSource(SourceKind(spec.source))) for c in sample]
    model.logit_diffs(task, groups[:1])  # warm-up (and the replacement values)
    sync(model)
    started = time.perf_counter()
    for group in groups:
        model.logit_diffs(task, [group])
    sync(model)
    per_forward = (time.perf_counter() - started) / len(sample)
    forwards = plain_forwards(first, n_components, args.one_pass)
    t_plain = per_forward * forwards
    print(f"plain loop: {forwards} full forwards × {1000 * per_forward:.1f} ms (timed on {len(sample)}) ≈ "
          f"{t_plain:.1f} s")
    for speculation, (seconds, _) in runs.items():
        print(f"engine ({speculation}): {seconds:.1f} s → {t_plain / seconds:.1f}× faster than the plain loop"
              f"{'  (target ≤ 30 s: met)' if seconds <= 30 else '  (target ≤ 30 s: NOT met)'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="the Llama-2-7B-shaped float16 random model")
    parser.add_argument("--small", action="store_true", help="GPU mode with a small shape (for a CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--prompts", type=int, default=None, help="default: 8 on the CPU, 16 in GPU mode")
    parser.add_argument("--seq-len", type=int, default=9, help="GPU mode: prompt length in tokens, BOS included")
    parser.add_argument("--method", default="mean")
    parser.add_argument("--threshold", type=float, default=80.0)
    parser.add_argument("--one-pass", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speculations", default="adaptive,kept",
                        help="engine runs, comma-separated: adaptive, kept, none")
    parser.add_argument("--plain-sample", type=int, default=64, help="GPU mode: full forwards timed for the plain loop")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 avoids thread contention on a busy shared CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    np.set_printoptions(precision=3)
    if args.gpu or args.small:
        args.prompts = args.prompts or 16
        gpu_bench(args)
    else:
        args.prompts = args.prompts or 8
        cpu_bench(args)


if __name__ == "__main__":
    main()
