"""Command line: the app's computations, for scripts and for precomputing results before a lab meeting.

Bad input exits with code 2 and one line on stderr; results go to stdout (a table, or one JSON object with --json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from headscope.backends import BACKENDS, LOCAL_BACKEND_NAMES
from headscope.cli_args import add_prompt_source, print_intervals
from headscope.cli_paths import CliSteps, add_paths_parser
from headscope.durations import readable_duration, time_left
from headscope.errors import HeadscopeError, InputError
from headscope.heads import PATTERN_SCORE_NAMES, SCORE_NAMES, scores_help
from headscope.methods import get_method, methods_help
from headscope.units import UNIT_NAMES, units_help

if TYPE_CHECKING:
    from headscope.backends.base import Backend
    from headscope.tasks import Dataset

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"headscope: error: {message} (see: python -m {self.prog} --help)\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="embedded", metavar="SOURCE",
                        help="'embedded' (default), a hub id such as meta-llama/Llama-2-7b-hf, or a local folder")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or multi-gpu")
    parser.add_argument("--dtype", default="auto", help="auto (default), float32, float16 or bfloat16")
    parser.add_argument("--backend", choices=LOCAL_BACKEND_NAMES, default=None,
                        help="; ".join(f"{name}: {BACKENDS[name].help}" for name in LOCAL_BACKEND_NAMES))
    parser.add_argument("--remote", action="store_true",
                        help="run the model on NDIF through nnsight (a hosted hub id; the key is read from "
                             "NDIF_API_KEY)")
    parser.add_argument("--bos", default="auto", metavar="{auto,prepend,none}",  # checked by load_model
                        help="whether inputs start with BOS: auto (default: as the tokenizer and config say), "
                             "prepend or none")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="headscope", description="Explore the attention heads of language models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    tokens = sub.add_parser("tokens", help="token table, top-k next tokens and the rank of an expected answer")
    tokens.add_argument("prompt")
    tokens.add_argument("--top-k", type=int, default=10)
    tokens.add_argument("--answer", default=None, help="expected answer (its first token is ranked)")
    tokens.add_argument("--contrast", default=None, help="contrast answer: logit difference answer − contrast")
    tokens.add_argument("--position", type=int, default=None,
                        help="position to read (index in the real input, BOS included; default: the last)")
    _add_model_options(tokens)
    tokens.set_defaults(handler=_cmd_tokens)

    ablate = sub.add_parser("ablate", help="ablate every head and MLP on a task; writes the cache the app reads")
    add_prompt_source(ablate)
    ablate.add_argument("--method", default="mean", help=f"{methods_help()} (default: mean)")
    ablate.add_argument("--only-correct", action="store_true",
                        help="keep only prompts the model gets right (top-1 correct, P(correct) > 2·P(incorrect))")
    ablate.add_argument("--estimate", action="store_true",
                        help="attribution patching: an instant first-order estimate instead of exact ablation")
    ablate.add_argument("--unit", choices=UNIT_NAMES, default="head",
                        help=f"what one cell ablates: {units_help()} (default: head)")
    ablate.add_argument("--per-prompt", action="store_true",
                        help="each prompt's own LDs: --json adds per_prompt_ld (prompts × layers × heads), "
                             "per_prompt_mlp_ld and per_prompt_clean_ld; the table adds 95%% bootstrap intervals "
                             "and top-10 stability (1000 resamples, seed 0). Exact sweeps only")
    ablate.add_argument("--no-cache", action="store_true", help="recompute even if the result is cached")
    ablate.add_argument("--no-time-limit", action="store_true",
                        help="run even when the job's estimated time exceeds HEADSCOPE_MAX_JOB_SECONDS")
    _add_model_options(ablate)
    ablate.set_defaults(handler=_cmd_ablate)

    circuit = sub.add_parser("circuit", help="find the circuit by iterative pruning (exact); writes the cache the app "
                                             "reads")
    add_prompt_source(circuit, step_help="the step of the step task (default 2): 2 4 6 8 -> 10")
    circuit.add_argument("--method", default="mean", help=f"{methods_help()} (default: mean)")
    circuit.add_argument("--threshold", type=float, default=80.0,
                         help="keep a removal when the circuit still scores ≥ this %% of the clean LD (default 80)")
    circuit.add_argument("--one-pass", action="store_true", help="stop after one pass (default: until a pass "
                                                                   "removes nothing)")
    circuit.add_argument("--estimate", action="store_true",
                         help="an instant ESTIMATE (attribution-ranked greedy pruning) instead of the exact search")
    circuit.add_argument("--no-cache", action="store_true", help="recompute even if the result is cached")
    circuit.add_argument("--no-time-limit", action="store_true",
                         help="run even when the search's estimated time exceeds HEADSCOPE_MAX_JOB_SECONDS")
    _add_model_options(circuit)
    circuit.set_defaults(handler=_cmd_circuit)

    dla = sub.add_parser("dla", help="direct logit attribution: each head's, MLP's and the embeddings' direct "
                                     "contribution to the LD at the last position; writes the cache the app reads")
    add_prompt_source(dla, seed_help="seed for a built-in task's prompts (default 0)")
    dla.add_argument("--only-correct", action="store_true",
                     help="keep only prompts the model gets right (top-1 correct, P(correct) > 2·P(incorrect))")
    dla.add_argument("--per-prompt", action="store_true",
                     help="each prompt's own contributions: --json adds per_prompt_head_dla (prompts × layers × "
                          "heads), per_prompt_mlp_dla, per_prompt_embed_dla, per_prompt_bias_dla and "
                          "per_prompt_clean_ld; the table adds 95%% bootstrap intervals and top-10 stability "
                          "(1000 resamples, seed 0)")
    dla.add_argument("--no-cache", action="store_true", help="recompute even if the result is cached")
    _add_model_options(dla)
    dla.set_defaults(handler=_cmd_dla)

    lens = sub.add_parser("lens", help="logit lens at the last position: the answer's rank, probability and logit "
                                       "difference after each layer")
    lens.add_argument("prompt")
    lens.add_argument("--answer", required=True, help="the answer to follow (its first token is ranked)")
    lens.add_argument("--contrast", default=None, help="contrast answer: logit difference answer − contrast")
    _add_model_options(lens)
    lens.set_defaults(handler=_cmd_lens)

    heads = sub.add_parser("heads", help="score every head: " + ", ".join(SCORE_NAMES))
    heads.add_argument("--score", required=True, choices=SCORE_NAMES, metavar="SCORE", help=scores_help())
    heads.add_argument("--prompt", default=None,
                       help="score the pattern scores on this prompt instead of generated sequences "
                            "(detect_head's defaults: error measure 'mul', nothing excluded)")
    heads.add_argument("--task", default=None, help="task prompts for the sequence score (default digits)")
    heads.add_argument("--top", type=int, default=10, help="how many top heads the table lists (default 10)")
    heads.add_argument("--no-cache", action="store_true", help="recompute even when the results cache holds it")
    _add_model_options(heads)
    heads.set_defaults(handler=_cmd_heads)

    patterns = sub.add_parser("patterns", help="attention patterns of chosen heads as a standalone offline HTML file")
    patterns.add_argument("--prompt", required=True)
    patterns.add_argument("--heads", required=True, metavar="L.H[,L.H...]", help="e.g. 3.24,5.25")
    patterns.add_argument("--html", required=True, metavar="FILE", help="write the offline HTML view here")
    patterns.add_argument("--csv", default=None, metavar="FILE", help="also write the pattern values as CSV")
    patterns.add_argument("--single", default=None, metavar="L.H",
                          help="head of the single-head view (default: the first)")
    _add_model_options(patterns)
    patterns.set_defaults(handler=_cmd_patterns)

    add_paths_parser(sub, CliSteps(_add_model_options, _model_and_dataset, _progress_printer, _clear_progress,
                                   _check_time))

    prepare = sub.add_parser("prepare", help="convert the embedded model's GGUF once, so later starts are fast")
    prepare.set_defaults(handler=_cmd_prepare)

    run = sub.add_parser("run", help="serve the dashboard (Streamlit; needs the app extra: pip install "
                                     "'headscope[app]')")
    run.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    run.add_argument("--address", default="localhost",
                     help="address to listen on (default localhost; 0.0.0.0 for the lab network)")
    run.set_defaults(handler=_cmd_run)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    import importlib.util
    import subprocess

    from headscope.paths import app_folder

    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be from 1 to 65535, got {args.port}.")
    if importlib.util.find_spec("streamlit") is None:
        raise InputError("The dashboard needs Streamlit: pip install 'headscope[app]' (the command line and the "
                         "Python API run without it).")
    folder = app_folder()
    command = [sys.executable, "-m", "streamlit", "run", str(folder / "app.py"),
               *streamlit_flags(folder / ".streamlit" / "config.toml"),
               f"--server.port={args.port}", f"--server.address={args.address}"]
    if os.name == "posix":  # the process becomes the server: Ctrl+C and a supervisor's signals reach Streamlit itself
        os.execv(sys.executable, command)
    return subprocess.call(command)


def streamlit_flags(config: os.PathLike) -> list[str]:
    """The app's .streamlit/config.toml as command-line flags (Streamlit reads that file only from its working
    directory), so `headscope run` serves the app as `make run` does from wherever it is started."""
    import tomllib

    with open(config, "rb") as handle:
        sections = tomllib.load(handle)
    return [f"--{section}.{key}={str(value).lower() if isinstance(value, bool) else value}"
            for section, options in sections.items() for key, value in options.items()]


def _cmd_prepare(args: argparse.Namespace) -> int:
    import time

    from headscope.embedded import embedded_converted_folder  # torch-free: instant when already converted

    started = time.perf_counter()
    folder, _ = embedded_converted_folder(lambda stage, fraction: print(stage, file=sys.stderr))
    print(f"embedded model ready in {folder} ({time.perf_counter() - started:.1f} s)")
    return 0


def backend_for(args: argparse.Namespace) -> str:
    """The backend named by --backend and --remote ("ndif" is nnsight on NDIF)."""
    if not args.remote:
        return args.backend or "bridge"
    if args.backend == "bridge":
        raise InputError("--remote runs nnsight on NDIF: leave out --backend bridge (or use --backend nnsight).")
    if args.device != "auto" or args.dtype != "auto":
        raise InputError("--device and --dtype do not apply with --remote: NDIF chooses where and in which dtype "
                         "the model runs.")
    return "ndif"


def load_for_cli(args: argparse.Namespace):
    """The model of --model/--device/--dtype/--backend; TransformerLens is set up only by the commands that use its
    hooks (`tokens` runs without it, seconds sooner)."""
    from headscope.loading import ModelRequest, load_for_console

    return load_for_console(ModelRequest(args.model, args.device, args.dtype, backend=backend_for(args), bos=args.bos))


def _show_wait(status) -> None:
    """While waiting (for the model, or for an NDIF job): the state and elapsed time on stderr."""
    if sys.stderr.isatty():
        # a free gate (the wait is over): the line is cleared
        sys.stderr.write(f"\r{status.describe('cli')}   " if status.busy else "\r\033[K")


DEFAULT_TASK_PROMPTS = 16


def _model_and_dataset(args: argparse.Namespace) -> tuple[Backend, Dataset]:
    """--task/--step/--n-prompts checked and a --dataset file parsed before the model loads (bad input fails fast),
    then the model and the dataset (a built-in task is built for the model's tokenizer)."""
    from headscope.tasks import build_task_dataset, check_step, check_task, load_dataset_file

    for option, value in (("--step", args.step), ("--n-prompts", args.n_prompts), ("--seed", args.seed)):
        if value is not None and args.task is None:  # never silently ignored
            raise InputError(f"{option} applies to a built-in task (--task), not to a dataset file: leave it out.")
    if args.task is not None:
        check_step(check_task(args.task), args.step)
    n_prompts = DEFAULT_TASK_PROMPTS if args.n_prompts is None else args.n_prompts
    if not 1 <= n_prompts <= 4096:
        raise InputError(f"--n-prompts must be from 1 to 4096, got {n_prompts}.")
    dataset = load_dataset_file(args.dataset) if args.dataset else None
    model = load_for_cli(args)
    if dataset is None:
        dataset = build_task_dataset(args.task, n_prompts, seed=args.seed or 0, model=model, step=args.step)
    return model, dataset


def _cmd_ablate(args: argparse.Namespace) -> int:
    from headscope.ablation import load_sweep, prepare_dataset, run_sweep
    from headscope.job_time import sweep_estimate

    get_method(args.method)  # an unknown method is refused before any model loads
    if args.per_prompt and args.estimate:
        raise InputError("--per-prompt needs the exact sweep: the estimate has no per-prompt values.")
    model, dataset = _model_and_dataset(args)
    encoded = prepare_dataset(model, dataset)
    if args.no_cache or load_sweep(model, encoded, args.method, args.estimate, args.only_correct,
                                   unit=args.unit) is None:
        _check_time(args, lambda: sweep_estimate(model, encoded, args.method, args.estimate))
    result = run_sweep(model, encoded, args.method, estimate=args.estimate, only_correct=args.only_correct,
                       use_cache=not args.no_cache, progress=_progress_printer(args), unit=args.unit)
    _clear_progress(args)
    if args.json:
        payload = result.to_json() | {"backend": model.info.backend}
        if not args.per_prompt:
            payload = {name: value for name, value in payload.items() if not name.startswith("per_prompt_")}
        print(json.dumps(payload))
        return 0
    kind = "attribution-patching ESTIMATE" if result.estimate else "exact"
    print(f"model: {result.model}   backend: {model.info.backend_label}   task: {result.task}   "
          f"method: {result.method} ({kind})")
    print(f"prompts: {result.n_prompts} of {result.seq_len} tokens (BOS included); first: {result.first_prompt!r}")
    corrupt = "n/a" if result.corrupt_ld is None else f"{result.corrupt_ld:.3f}"
    print(f"clean LD {result.clean_ld:.3f}   corrupted LD {corrupt}   "
          f"{result.seconds:.1f} s{'  (from cache)' if result.cached else ''}")
    for note in result.notes:
        print(f"note: {note}")
    if result.caution:
        print(f"warning: {result.caution}")
    print(f"\n{'head' if result.unit == 'head' else 'KV group':>8}  {'ablated LD':>10}  {'% of clean':>10}  "
          f"{'change':>8}")
    for top in result.top_heads(10):
        layer, head = top.layer, top.head
        print(f"{result.cell_label(layer, head):>8}  {result.ablated_ld[layer, head]:>10.3f}  "
              f"{result.percent_of_clean[layer, head]:>10.1f}  {result.change[layer, head]:>8.3f}")
    mlp_order = sorted(range(result.n_layers), key=lambda i: -abs(result.mlp_ablated_ld[i] - result.clean_ld))[:3]
    for layer in mlp_order:
        print(f"MLP{layer:<4}  {result.mlp_ablated_ld[layer]:>10.3f}  {result.mlp_percent_of_clean[layer]:>10.1f}  "
              f"{result.mlp_ablated_ld[layer] - result.clean_ld:>8.3f}")
    if args.per_prompt:
        _print_confidence(result)
    return 0


def _print_confidence(result) -> None:
    """The top-10 cells with their 95 % bootstrap interval of the change and how often each stays in the top-10."""
    from headscope.confidence import ranking_confidence

    change = result.per_prompt_change
    if change is None:
        print("\nno per-prompt values in this result: run it again with --no-cache")
        return
    cells = [(result.cell_label(top.layer, top.head), (top.layer, top.head)) for top in result.top_heads(10)]
    _print_intervals(ranking_confidence(change), cells, "cell", "change")


def _print_intervals(confidence, cells: list, cell_header: str, value_header: str) -> None:
    """Each (label, index) cell's mean with its bootstrap interval and its top-k stability, one line each."""
    width = max(8, len(value_header))
    rows = [(f"{label:>8}  {confidence.intervals.mean[at]:>{width}.3f}", at) for label, at in cells]
    print_intervals(confidence, rows, f"{cell_header:>8}  {value_header:>{width}}")


def _check_time(args: argparse.Namespace, estimate) -> None:
    """Refuse a job estimated above HEADSCOPE_MAX_JOB_SECONDS (unless --no-time-limit), with the estimate and what
    to do; say the estimate on stderr otherwise."""
    from headscope.job_time import max_job_seconds

    if args.no_time_limit and not sys.stderr.isatty():
        return
    expected = estimate()
    if expected is None:
        return
    if expected.over() and not args.no_time_limit:
        raise InputError(expected.advice(where="cli"))
    if sys.stderr.isatty() and not args.json:
        sys.stderr.write(f"{expected.job}: about {expected.readable} (limit {readable_duration(max_job_seconds())})\n")


def _progress_printer(args: argparse.Namespace):
    def progress(update) -> None:
        if sys.stderr.isatty() and not args.json:
            eta = f", {time_left(update.eta_seconds)}" if update.eta_seconds is not None else ""
            sys.stderr.write(f"\r{100 * update.fraction:5.1f}%{eta} · {update.message[:60]:<60}")

    return progress


def _clear_progress(args: argparse.Namespace) -> None:
    if sys.stderr.isatty() and not args.json:
        sys.stderr.write("\r\033[K")


def _cmd_circuit(args: argparse.Namespace) -> int:
    from headscope.circuit import check_threshold, run_circuit
    from headscope.methods import get_method

    get_method(args.method)  # every option checked before the model loads
    check_threshold(args.threshold)
    from headscope.ablation import prepare_dataset
    from headscope.circuit import load_circuit
    from headscope.job_time import circuit_estimate

    model, dataset = _model_and_dataset(args)
    encoded = prepare_dataset(model, dataset)
    if args.no_cache or load_circuit(model, encoded, args.method, args.threshold, args.one_pass, args.estimate) \
            is None:
        _check_time(args, lambda: circuit_estimate(model, encoded, args.method, args.one_pass, args.estimate))
    result = run_circuit(model, encoded, args.method, args.threshold, one_pass=args.one_pass,
                         estimate=args.estimate, use_cache=not args.no_cache, progress=_progress_printer(args))
    _clear_progress(args)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    kind = "attribution-ranked ESTIMATE (not the exact search)" if result.estimate else "exact"
    print(f"model: {result.model}   backend: {model.info.backend_label}   task: {result.task}   "
          f"method: {result.method}   threshold: "
          f"{result.threshold:g}%   {kind}")
    print(f"prompts: {result.n_prompts} of {result.seq_len} tokens (BOS included); first: {result.first_prompt!r}")
    origin = "from cache" if result.cached else f"{result.seconds:.1f} s"
    print(f"clean LD {result.clean_ld:.3f}   circuit LD {result.circuit_ld:.3f}   score {result.score:.1f}%   "
          f"passes {result.passes}   ({origin})")
    for note in result.notes:
        print(f"note: {note}")
    print(f"\ncircuit: {len(result.heads)} heads and {len(result.mlps)} MLPs of "
          f"{result.n_layers * result.n_heads} heads and {result.n_layers} MLPs")
    print("heads: " + (" ".join(head.label for head in result.heads) or "none"))
    print("MLPs:  " + (" ".join(str(layer) for layer in result.mlps) or "none"))
    print(f"\n{'kept':>8}  {'score without it':>16}")
    for effect in sorted(result.kept_effects, key=lambda e: e.score_without)[:15]:
        print(f"{effect.label:>8}  {effect.score_without:>15.1f}%")
    print(f"\n{len(result.removals)} removals; the last ten:")
    for step, removal in list(enumerate(result.removals, 1))[-10:]:
        print(f"{step:>5}. {removal.label:>8}  score after {removal.score_after:.1f}%  (pass {removal.pass_number})")
    return 0


def _cmd_dla(args: argparse.Namespace) -> int:
    from headscope.logit_attribution import run_dla
    from headscope.tasks import prepare_dataset

    model, dataset = _model_and_dataset(args)
    encoded = prepare_dataset(model, dataset)
    result = run_dla(model, encoded, only_correct=args.only_correct, use_cache=not args.no_cache,
                     progress=_progress_printer(args))
    _clear_progress(args)
    if args.json:
        payload = result.to_json() | {"backend": model.info.backend}
        if not args.per_prompt:
            payload = {name: value for name, value in payload.items() if not name.startswith("per_prompt_")}
        print(json.dumps(payload))
        return 0
    origin = "from cache" if result.cached else f"{result.seconds:.1f} s"
    print(f"model: {result.model}   backend: {model.info.backend_label}   task: {result.task}   "
          f"prompts: {result.n_prompts}   ({origin})")
    print(f"clean LD {result.clean_ld:.3f} = heads {result.head_dla.sum():.3f} + MLPs {result.mlp_dla.sum():.3f} "
          f"+ embeddings {result.embed_dla:.3f} + biases {result.bias_dla:.3f} (sum {result.total:.3f})")
    if result.soft_cap:
        print(f"note: final logits soft-capped at {result.soft_cap:g}: contributions scaled per answer by "
              "cap·tanh(l/cap)/l of its pre-cap logit l")
    for note in result.notes:
        print(f"note: {note}")
    print(f"\n{'head':>7}  {'direct LD':>9}")
    for top in result.top_heads(10):
        print(f"{top.layer:>3}.{top.head:<3}  {result.head_dla[top.layer, top.head]:>9.3f}")
    for layer in sorted(range(result.n_layers), key=lambda i: -abs(result.mlp_dla[i]))[:3]:
        print(f"MLP{layer:<4}  {result.mlp_dla[layer]:>9.3f}")
    if args.per_prompt:
        _print_dla_confidence(result)
    return 0


def _print_dla_confidence(result) -> None:
    """The top-10 heads by direct effect with their 95 % bootstrap interval and how often each stays in the top-10."""
    confidence = result.confidence()
    if confidence is None:
        print("\nintervals need each prompt's own values from at least two prompts")
        return
    _print_intervals(confidence, [(top.label, (top.layer, top.head)) for top in result.top_heads(10)], "head",
                     "direct LD")


def _cmd_lens(args: argparse.Namespace) -> int:
    from headscope.lens import logit_lens

    if args.prompt == "":
        raise InputError("The prompt is empty: give some text to read the logit lens on.")
    if args.answer == "" or args.contrast == "":
        raise InputError(f"The {'answer' if args.answer == '' else 'contrast'} is empty: give a token to follow.")
    model = load_for_cli(args)
    result = logit_lens(model, args.prompt, args.answer, args.contrast)
    if args.json:
        print(json.dumps(result.to_json() | {"backend": model.info.backend}))
        return 0
    print(f"model: {result.model}   backend: {model.info.backend_label}   prompt: {result.prompt!r}   "
          f"answer: {result.answer!r}" + (f"   contrast: {result.contrast!r}" if result.contrast is not None else ""))
    print(f"{'layer':>5}  {'rank':>7}  {'prob':>8}  {'logit diff':>10}")
    for row in result.layers:
        label = "emb" if row.layer < 0 else str(row.layer)
        diff = "" if row.logit_diff is None else f"{row.logit_diff:>10.3f}"
        print(f"{label:>5}  {row.rank:>7}  {row.prob:>8.4f}  {diff}")
    first = result.first_top1_layer
    print("the answer is never top-1" if first is None else
          f"first top-1 after {'the embeddings' if first < 0 else f'layer {first}'}")
    return 0


def _cmd_tokens(args: argparse.Namespace) -> int:
    from headscope.predict import analyze_prompt, validate_top_k

    validate_top_k(args.top_k)  # checked before the model loads: bad input fails fast
    if args.prompt == "":
        raise InputError("The prompt is empty: give some text to tokenize.")
    model = load_for_cli(args)
    result = analyze_prompt(model, args.prompt, args.answer, args.contrast, args.top_k, args.position)
    if args.json:
        payload = result.to_json()
        print(json.dumps({k: payload[k] for k in ("model", "tokens", "top_k", "answer", "logit_diff", "warnings")}
                         | {"position": payload["position"], "contrast": payload["contrast"],
                            "notes": payload["notes"], "backend": model.info.backend}))
        return 0
    print(f"model: {result.model}   backend: {model.info.backend_label}   prompt: {result.prompt!r}   "
          f"{len(result.tokens)} tokens")
    print(f"{'pos':>4}  {'id':>7}  {'token':<20} special")
    for token in result.tokens:
        print(f"{token.position:>4}  {token.id:>7}  {token.display:<20} {'yes' if token.special else ''}")
    print(f"\ntop-{len(result.top_k)} next tokens at position {result.position}:")
    print(f"{'rank':>4}  {'id':>7}  {'token':<16} {'logit':>9} {'prob':>8}")
    for p in result.top_k:
        print(f"{p.rank:>4}  {p.id:>7}  {p.display:<16} {p.logit:>9.3f} {p.prob:>8.4f}")
    for label, report in (("answer", result.answer), ("contrast", result.contrast)):
        if report is None:
            continue
        for v in (report.typed, report.alternate):
            if v is not None:
                print(f"{label} {v.text!r}: ids {list(v.ids)}  rank {v.rank}  logit {v.logit:.3f}  prob {v.prob:.4f}"
                      f"  (of {v.ranked})")
    if result.logit_diff is not None:
        print(f"logit difference (answer − contrast): {result.logit_diff:.3f}")
    for note in result.notes:
        print(f"note: {note}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


def _cmd_heads(args: argparse.Namespace) -> int:
    from headscope.scores import score_heads

    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}.")
    if args.prompt == "":
        raise InputError("The prompt is empty: give some text to score the heads on, or leave out --prompt.")
    if args.prompt is not None and args.score not in PATTERN_SCORE_NAMES:
        raise InputError(f"--prompt applies to the pattern scores ({', '.join(PATTERN_SCORE_NAMES)}), not to "
                         f"{args.score}: leave it out.")
    if args.task is not None:
        from headscope.tasks import check_task

        if args.score != "sequence":
            raise InputError(f"--task applies to the sequence score, not to {args.score}: leave it out.")
        check_task(args.task)
    model = load_for_cli(args)
    result = score_heads(model, args.score, prompt=args.prompt, task=args.task or "digits",
                         use_cache=not args.no_cache)
    if args.json:
        print(json.dumps(result.to_json() | {"backend": model.info.backend}))
        return 0
    origin = "from the results cache" if result.cached else f"computed in {result.compute_seconds:.1f} s"
    print(f"model: {result.model}   backend: {model.info.backend_label}   score: {result.score}   "
          f"{result.n_layers} layers × {result.n_heads} heads   ({origin})")
    print(f"on: {result.inputs}")
    for usage in result.lists:
        print(f"list {usage.name}: " + ("usable" if usage.usable else f"not usable, {usage.reason}"))
    for note in result.notes:
        print(f"note: {note}")
    print(f"\ntop {min(args.top, result.n_layers * result.n_heads)} heads:")
    print(f"{'rank':>4}  {'head':>6}  {'kv':>3}  {'score':>8}")
    for rank, row in enumerate(result.rows()[: args.top], start=1):
        print(f"{rank:>4}  {row['layer']:>3}.{row['head']:<2}  {row['kv_head']:>3}  {row['score']:>8.4f}")
    return 0


def _cmd_patterns(args: argparse.Namespace) -> int:
    from pathlib import Path

    from headscope.heads import check_heads, parse_head_list

    requested = parse_head_list(args.heads)  # syntax checked before the model loads
    single = parse_head_list(args.single)[0] if args.single is not None else requested[0]
    if single not in requested:
        raise InputError(f"--single {single} is not among --heads ({args.heads}).")
    if args.prompt == "":
        raise InputError("The prompt is empty: give some text to show the attention patterns on.")
    outputs = [Path(args.html)] + ([Path(args.csv)] if args.csv else [])
    for path in outputs:
        if not path.parent.is_dir():
            raise InputError(f"Cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist.")
    model = load_for_cli(args)
    check_heads(requested, model.info)

    from headscope.patterns import compute_patterns, patterns_csv, standalone_html

    result = compute_patterns(model, args.prompt, requested)
    page = standalone_html(result, result.heads.index(single))
    try:
        Path(args.html).write_text(page, encoding="utf-8")
        if args.csv:
            Path(args.csv).write_text(patterns_csv(result), encoding="utf-8")
    except OSError as error:
        raise InputError(f"Cannot write the output: {error.strerror} ({error.filename}).") from error
    if args.json:
        print(json.dumps({"model": result.model, "backend": model.info.backend, "prompt": result.prompt,
                          "heads": [h.label for h in result.heads],
                          "kv_heads": list(result.kv_heads), "tokens": [t.display for t in result.tokens],
                          "html": args.html, "csv": args.csv, "seconds": result.seconds}))
        return 0
    print(f"wrote {args.html}: {len(result.heads)} heads ({', '.join(h.label for h in result.heads)}) on "
          f"{len(result.tokens)} tokens of {result.model} ({model.info.backend_label})"
          + (f"; values in {args.csv}" if args.csv else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for stream in (sys.stdout, sys.stderr):  # a terminal or file that is not UTF-8 gets escapes, not a crash
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    _warnings_to_stderr()
    args = build_parser().parse_args(argv)
    from headscope.sharing import caller

    try:
        _check_text_arguments(args)
        with caller("cli", on_wait=None if getattr(args, "json", False) else _show_wait):
            return args.handler(args)
    except HeadscopeError as error:
        sys.stderr.write(f"headscope: error: {_one_line(str(error))}\n")
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except OSError as error:  # a disk or folder problem no check above foresaw: one line, not a traceback
        where = f" ({error.filename})" if error.filename else ""
        sys.stderr.write(f"headscope: error: {error.strerror or error}{where}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("headscope: interrupted\n")
        return 130


class _StderrLines(logging.Handler):
    """headscope's warnings (a result that could not be saved) as plain lines on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def _warnings_to_stderr() -> None:
    logger = logging.getLogger("headscope")
    if not any(isinstance(handler, _StderrLines) for handler in logger.handlers):
        logger.addHandler(_StderrLines(logging.WARNING))


def _check_text_arguments(args: argparse.Namespace) -> None:
    """Text arguments are UTF-8: bytes that are not (a Latin-1 terminal or file) reach Python as lone surrogates,
    which a tokenizer refuses with a traceback."""
    for name, value in vars(args).items():
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            bad = ord(value[error.start])
            byte = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"character U+{bad:04X}"
            option = "The prompt" if name == "prompt" else f"--{name.replace('_', '-')}"
            raise InputError(f"{option} is not valid UTF-8 ({byte} at character {error.start}): give the text in "
                             "UTF-8.") from error


def _one_line(text: str) -> str:
    return " ".join(text.split())

