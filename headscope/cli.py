"""Command line: the app's computations, for scripts and for precomputing results before a lab meeting.

Bad input exits with code 2 and one line on stderr; results go to stdout (a table, or one JSON object with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence

from headscope.errors import HeadscopeError, InputError

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

    prepare = sub.add_parser("prepare", help="convert the embedded model's GGUF once, so later starts are fast")
    prepare.set_defaults(handler=_cmd_prepare)
    return parser


def _cmd_prepare(args: argparse.Namespace) -> int:
    import time

    from headscope.loading import embedded_converted_folder

    started = time.perf_counter()
    folder, _ = embedded_converted_folder(lambda stage, fraction: print(stage, file=sys.stderr))
    print(f"embedded model ready in {folder} ({time.perf_counter() - started:.1f} s)")
    return 0


def load_for_cli(args: argparse.Namespace):
    from headscope.loading import ModelRequest, load_model

    return load_model(ModelRequest(args.model, args.device, args.dtype))


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
                            "notes": payload["notes"]}))
        return 0
    print(f"model: {result.model}   prompt: {result.prompt!r}   {len(result.tokens)} tokens")
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
                print(f"{label} {v.text!r}: ids {list(v.ids)}  rank {v.rank}  logit {v.logit:.3f}  prob {v.prob:.4f}")
    if result.logit_diff is not None:
        print(f"logit difference (answer − contrast): {result.logit_diff:.3f}")
    for note in result.notes:
        print(f"note: {note}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except HeadscopeError as error:
        sys.stderr.write(f"headscope: error: {_one_line(str(error))}\n")
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("headscope: interrupted\n")
        return 130


def _one_line(text: str) -> str:
    return " ".join(text.split())

