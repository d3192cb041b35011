"""The prompt tester's computation: next-token predictions at any position, the rank of an expected answer, and
diagnostics for the tokenization traps (whitespace predictions, BOS, context length)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from headscope.errors import InputError
from headscope.lens import LensResult, lens_question, lens_result
from headscope.tokens import (
    TokenDescriber,
    TokenInfo,
    TokenizedPrompt,
    continuation_ids,
    display_form,
    is_whitespace_token,
    tokenize_prompt,
)

if TYPE_CHECKING:
    from headscope.backends.base import Backend

MAX_TOP_K = 200


@dataclass(frozen=True)
class Prediction:
    """One candidate next token at a position."""

    rank: int  # 1-based
    id: int
    text: str
    display: str
    logit: float
    prob: float
    logprob: float

    def to_json(self) -> dict:
        return {"id": self.id, "text": self.text, "logit": self.logit, "prob": self.prob, "logprob": self.logprob}


@dataclass(frozen=True)
class AnswerVariant:
    """One spelling of an answer (as typed, or with its leading space toggled), scored by its first token."""

    text: str
    ids: tuple[int, ...]
    tokens_display: tuple[str, ...]
    rank: int  # 1-based rank of the first token among the whole vocabulary
    logit: float
    prob: float
    merged_with_prompt: bool  # the text fuses with the prompt's last token; ids are of the text alone

    @property
    def first_id(self) -> int:
        return self.ids[0]

    @property
    def multi_token(self) -> bool:
        return len(self.ids) > 1

    @property
    def ranked(self) -> str:
        """The token the rank is of, and of how many: "'5'", or "'·' (first of 2)" where the rank is only the first
        token's (after '1 2 3 4 ', ' 5' is ranked as the bare space token)."""
        first = f"'{self.tokens_display[0]}'"
        return f"{first} (first of {len(self.ids)})" if self.multi_token else first


@dataclass(frozen=True)
class AnswerReport:
    """An expected (or contrast) answer: as typed, and with / without a leading space."""

    typed: AnswerVariant
    alternate: AnswerVariant | None

    def to_json(self) -> dict:
        v = self.typed
        return {
            "text": v.text,
            "ids": list(v.ids),
            "rank": v.rank,
            "logit": v.logit,
            "prob": v.prob,
            "multi_token": v.multi_token,
            "alternate": None
            if self.alternate is None
            else {"text": self.alternate.text, "ids": list(self.alternate.ids), "rank": self.alternate.rank,
                  "logit": self.alternate.logit, "prob": self.alternate.prob,
                  "multi_token": self.alternate.multi_token},
        }


@dataclass(frozen=True)
class PromptAnalysis:
    """Everything the prompt tester shows for one prompt. Positions count the model's real input, BOS included."""

    model: str
    prompt: str
    tokenized: TokenizedPrompt
    position: int
    top_k: tuple[Prediction, ...]  # at `position`
    # top1_per_position[i]: the prediction after token top1_start + i (every position unless a window was asked)
    top1_per_position: tuple[Prediction, ...]
    answer: AnswerReport | None
    contrast: AnswerReport | None
    logit_diff: float | None  # logit(answer first token) - logit(contrast first token) at `position`
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    lens: LensResult | None = None  # the logit lens at the last position, from the same forward (lens=True)
    top1_start: int = 0  # analyze_prompt's top1_window: the positions before it were not unembedded

    @property
    def tokens(self) -> tuple[TokenInfo, ...]:
        return self.tokenized.tokens

    def top1_at(self, position: int) -> Prediction | None:
        """The top-1 prediction after token `position`; None before `top1_start` (not unembedded)."""
        index = position - self.top1_start
        return self.top1_per_position[index] if 0 <= index < len(self.top1_per_position) else None

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "position": self.position,
            "tokens": [t.to_json() for t in self.tokens],
            "top_k": [p.to_json() for p in self.top_k],
            "answer": self.answer.to_json() if self.answer else None,
            "contrast": self.contrast.to_json() if self.contrast else None,
            "logit_diff": self.logit_diff,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


def validate_top_k(top_k: int) -> int:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise InputError(f"top-k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}.")
    return top_k


TOP1_AFTER_CHOSEN = 16  # a window of positions holds this many after the chosen one, where the prompt has them


def window_around(n_tokens: int, position: int, size: int) -> range:
    """`size` positions holding `position`: the ones before it (what the prediction reads) and a few after; all of a
    prompt of at most `size` tokens."""
    if n_tokens <= size:
        return range(n_tokens)
    start = max(0, min(position + TOP1_AFTER_CHOSEN + 1 - size, n_tokens - size))
    return range(start, start + size)


def resolve_position(position: int | None, n_tokens: int) -> int:
    """A position index into the real input (BOS included); negative counts from the end; None is the last."""
    if position is None:
        return n_tokens - 1
    if not -n_tokens <= position < n_tokens:
        raise InputError(
            f"Position {position} is outside the prompt: it has {n_tokens} tokens (positions 0 to {n_tokens - 1}, "
            "BOS included, or -1 for the last)."
        )
    return position % n_tokens


def toggle_leading_space(text: str) -> str:
    return text[1:] if text.startswith(" ") else " " + text


def toggle_trailing_space(prompt: str) -> str:
    """The other variant of a prompt for the side-by-side compare: with / without a trailing space."""
    return prompt[:-1] if prompt.endswith(" ") else prompt + " "


def analyze_prompt(
    model: Backend,
    prompt: str,
    answer: str | None = None,
    contrast: str | None = None,
    top_k: int = 10,
    position: int | None = None,
    progress: Callable[[float], None] | None = None,
    lens: bool = False,
    top1_window: int | None = None,
) -> PromptAnalysis:
    """Run the prompt once and report predictions, answer ranks and diagnostics (`progress(fraction)` while the
    forward pass runs); with `lens` and an answer, the logit lens at the last position too, read from the same
    forward (`PromptAnalysis.lens`). With `top1_window`, the top-1 prediction only from the start of the window of
    that many positions around the chosen one (`window_around`) on: a page drawing only those saves unembedding the
    rest of a long prompt, about a tenth of its forward."""
    validate_top_k(top_k)
    describer = TokenDescriber(model)
    tokenized = tokenize_prompt(model, prompt, describer)
    pos = resolve_position(position, len(tokenized))
    question = lens_question(model, prompt, answer, contrast or None) if lens and answer else None
    top1_from = 0 if top1_window is None else window_around(len(tokenized), pos, top1_window).start
    summary = model.next_tokens(model.tensor([tokenized.ids]), pos, progress,
                                None if question is None else question.readout, top1_from)
    logits_at = summary.logits_at.float()  # [vocab] at `pos`
    logprobs_at = torch.log_softmax(logits_at, dim=-1)
    warnings: list[str] = []
    notes: list[str] = []

    values, ids = logits_at.topk(top_k)
    top = tuple(
        _prediction(describer, rank, token_id, value, float(logprobs_at[token_id]))
        for rank, (value, token_id) in enumerate(zip(values.tolist(), ids.tolist(), strict=True), start=1)
    )
    per_position = tuple(
        _prediction(describer, 1, int(token_id), float(logit), float(logprob))
        for token_id, logit, logprob in zip(summary.top1_id.tolist(), summary.top1_logit.tolist(),
                                            summary.top1_logprob.tolist(), strict=True)
    )

    prefix = _prefix_before(tokenized, pos, prompt)
    answer_report = _score_answer(model, describer, logits_at, prefix, answer, "answer", warnings)
    contrast_report = _score_answer(model, describer, logits_at, prefix, contrast, "contrast", warnings)
    logit_diff = None
    if answer_report and contrast_report:
        logit_diff = answer_report.typed.logit - contrast_report.typed.logit
        if answer_report.typed.first_id == contrast_report.typed.first_id:
            warnings.append("The answer and the contrast start with the same token: their logit difference is 0.")

    _diagnose(model, tokenized, pos, top[0], warnings, notes)
    return PromptAnalysis(
        model=model.info.name,
        prompt=prompt,
        tokenized=tokenized,
        position=pos,
        top_k=top,
        top1_per_position=per_position,
        answer=answer_report,
        contrast=contrast_report,
        logit_diff=logit_diff,
        warnings=tuple(warnings),
        notes=tuple(notes),
        lens=None if question is None or summary.lens is None else lens_result(model, question, summary.lens),
        top1_start=summary.top1_start,
    )


def _prediction(describer: TokenDescriber, rank: int, token_id: int, logit: float, logprob: float) -> Prediction:
    info = describer.one(token_id)
    return Prediction(rank, token_id, info.text, info.display, logit, math.exp(logprob), logprob)


def _prefix_before(tokenized: TokenizedPrompt, pos: int, prompt: str) -> str:
    """The prompt text up to and including token `pos` (what the prediction at `pos` continues)."""
    if pos == len(tokenized) - 1:
        return prompt
    end = tokenized.tokens[pos].char_end
    return prompt[:end] if end is not None else ""


def _score_answer(
    model: Backend,
    describer: TokenDescriber,
    logits_at: torch.Tensor,
    prefix: str,
    text: str | None,
    role: str,
    warnings: list[str],
) -> AnswerReport | None:
    if text is None or text == "":
        return None

    def variant(spelling: str) -> AnswerVariant | None:
        ids, merged = continuation_ids(model, prefix, spelling)
        if not ids:
            return None
        first = ids[0]
        value = float(logits_at[first])
        return AnswerVariant(
            text=spelling,
            ids=tuple(ids),
            tokens_display=tuple(describer.one(i).display for i in ids),
            rank=int((logits_at > value).sum()) + 1,
            logit=value,
            prob=float(torch.softmax(logits_at.float(), dim=-1)[first]),
            merged_with_prompt=merged,
        )

    typed = variant(text)
    if typed is None:
        raise InputError(f"The {role} {text!r} has no tokens: give a non-empty {role}.")
    alternate = variant(toggle_leading_space(text)) if text.strip() else None
    if typed.multi_token:
        shown = " ".join(f"'{d}'" for d in typed.tokens_display)
        warnings.append(
            f"The {role} {display_form(text)!r} is {len(typed.ids)} tokens ({shown}); only its first token "
            f"'{typed.tokens_display[0]}' is ranked."
        )
    # An alternate that starts with a bare whitespace token is covered by the whitespace diagnostic; a different
    # spelling the model prefers (' May' over 'May') deserves its own warning.
    preferred = (alternate is not None and alternate.rank < typed.rank
                 and not is_whitespace_token(describer.one(alternate.first_id).text))
    # after a trailing space, ' Paris' is a second space (and 'Paris' merges with the space): the fix is in the prompt
    trailing_space = preferred and prefix[-1:].isspace() and alternate.text[:1].isspace()
    if typed.merged_with_prompt and not trailing_space:
        warnings.append(
            f"The {role} {display_form(text)!r} merges with the prompt's last token when appended; it was tokenized "
            "on its own instead."
        )
    if preferred:
        ranks = (f"The model ranks the {role} {display_form(alternate.text)!r} (rank {alternate.rank}) above "
                 f"{display_form(text)!r} (rank {typed.rank}")
        if trailing_space:
            merged = ", which merges with the trailing space and was ranked on its own" if typed.merged_with_prompt \
                else ""
            warnings.append(
                f"{ranks}{merged}), but after the prompt's trailing whitespace {display_form(alternate.text)!r} "
                f"makes a second space: try the prompt without its trailing whitespace, and the {role} "
                f"{display_form(alternate.text)!r}."
            )
        else:
            warnings.append(f"{ranks}): check the leading space.")
    return AnswerReport(typed=typed, alternate=alternate)


def _diagnose(
    model: Backend, tokenized: TokenizedPrompt, pos: int, top1: Prediction, warnings: list[str], notes: list[str]
) -> None:
    tokens = tokenized.tokens
    bos_id = model.tokenizer.bos_token_id
    if tokenized.bos_prepended:
        notes.append(
            f"BOS {tokens[0].display!r} was prepended: position 0 is BOS and the prompt's first token is position 1."
        )
        if len(tokens) > 1 and tokens[1].id == bos_id:
            warnings.append(
                f"BOS is doubled: the prompt itself starts with {tokens[1].display!r} and the model prepends "
                "another. Remove it from the prompt."
            )
    elif bos_id is not None and tokens[0].id != bos_id:
        notes.append("This model's input has no BOS token: position 0 is the prompt's first token.")
    if is_whitespace_token(top1.text):
        at_end = pos == len(tokens) - 1
        if not at_end:  # the prompt goes on: the advice is about reading it, not about changing its end
            following = tokens[pos + 1]
            hint = (f"the prompt has whitespace there too: read position {pos + 1} for the prediction after it"
                    if is_whitespace_token(following.text) else
                    f"the prompt continues with {following.display!r} at position {pos + 1} instead")
        elif "\n" in top1.text or "\r" in top1.text:
            # a line break is not the space before the next word: a trailing space does not "fix" it
            prompt = tokenized.prompt
            if "\n" in prompt.rstrip("\n") and not prompt.endswith("\n"):
                hint = ("the prompt's items are on separate lines: end it with a line break (not a space) to read the "
                        "prediction that follows it")
            else:
                hint = ("the model expects a line break, as if the line were finished; a trailing space would not "
                        "change that. Make the prompt read as unfinished (e.g. more items of the pattern), or read the "
                        "expected answer's rank")
        elif tokenized.prompt[-1:].isspace():
            hint = "the prompt already ends in whitespace: try removing the trailing whitespace"
        else:
            hint = ("tokenizers like Llama's emit the space before a word or number as its own token: add a trailing "
                    "space to read the prediction that follows it")
        warnings.append(f"The top prediction at position {pos} is a whitespace token ({top1.display!r}); {hint}.")
