"""The logit lens at the last position: how early the model has the answer.

The residual after the embeddings (layer −1) and after each layer, through the final norm (recomputed on that
residual, the usual lens) and W_U, soft-capped as the model's own logits: per layer the answer's rank (1 = top),
probability and, with a contrast, logit(answer) − logit(contrast); and the first layer where the answer is top-1.
The last layer's row is the model's own prediction. Answers are ranked by their first token after the prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from headscope.backends.base import ReadNorm, Readout, SiteReadings
from headscope.backends.interventions import Site, SiteKind
from headscope.errors import InputError
from headscope.serialize import to_payload
from headscope.tokens import continuation_ids

if TYPE_CHECKING:
    from headscope.backends.base import Backend


@dataclass(frozen=True)
class LensLayer:
    """The answer after one layer (layer −1: after the embeddings)."""

    layer: int
    rank: int  # 1 = top
    prob: float
    logit_diff: float | None  # logit(answer) − logit(contrast); None without a contrast


@dataclass(frozen=True)
class LensResult:
    answer: str
    contrast: str | None
    layers: tuple[LensLayer, ...]
    first_top1_layer: int | None  # the first layer (−1: the embeddings) where the answer is top-1; None if never
    answer_id: int = -1
    contrast_id: int | None = None
    prompt: str = ""
    model: str = ""

    def to_json(self) -> dict[str, Any]:
        return to_payload(self)


def _first_id(model: Backend, prompt: str, text: str | None, role: str) -> int | None:
    if text is None:
        return None
    ids, _ = continuation_ids(model, prompt, text) if text else ([], False)
    if not ids:
        raise InputError(f"The {role} is empty: give the {role} whose rank to follow.")
    return ids[0]


@dataclass(frozen=True, eq=False)  # holds a tensor: compared by identity
class LensQuestion:
    """A lens asked of one prompt: the answer's and contrast's first token ids and the readout that reads them at
    every RESID site (next_tokens' `lens`, or read_sites')."""

    prompt: str
    answer: str
    contrast: str | None
    answer_id: int
    contrast_id: int | None
    readout: Readout


def lens_question(model: Backend, prompt: str, answer: str, contrast: str | None = None) -> LensQuestion:
    """The lens's lowering: the answer's (and contrast's) first token after `prompt` and the decoding readout."""
    if prompt == "":
        raise InputError("The prompt is empty: give some text to read the logit lens on.")
    answer_id = _first_id(model, prompt, answer, "answer")
    contrast_id = _first_id(model, prompt, contrast, "contrast")
    assert answer_id is not None
    ids = [answer_id] + ([contrast_id] if contrast_id is not None else [])
    readout = Readout(ReadNorm.DECODE, whole_vocabulary=True, rank_ids=torch.tensor([ids], device=model.device))
    return LensQuestion(prompt, answer, contrast, answer_id, contrast_id, readout)


def lens_result(model: Backend, question: LensQuestion, lens: SiteReadings) -> LensResult:
    """The LensResult of the RESID sites 0..n_layers read through the question's readout."""
    assert lens.rank is not None and lens.log_norm is not None
    layers = []
    for row in range(lens.values.shape[1]):
        logit = float(lens.values[0, row, 0])
        diff = None if question.contrast_id is None else logit - float(lens.values[0, row, 1])
        layers.append(LensLayer(row - 1, int(lens.rank[0, row, 0]), math.exp(logit - float(lens.log_norm[0, row])),
                                diff))
    first = next((layer.layer for layer in layers if layer.rank == 1), None)
    return LensResult(question.answer, question.contrast, tuple(layers), first, question.answer_id,
                      question.contrast_id, question.prompt, model.info.name)


def logit_lens(model: Backend, prompt: str, answer: str, contrast: str | None = None) -> LensResult:
    """The logit lens at the prompt's last position for `answer` (and `contrast`), by their first tokens (a forward
    of its own; the prompt tester reads it from its own forward: analyze_prompt(..., lens=True))."""
    question = lens_question(model, prompt, answer, contrast)
    tokens = model.tensor([model.input_ids(prompt)])
    sites = [Site(SiteKind.RESID, layer) for layer in range(model.info.n_layers + 1)]
    return lens_result(model, question, model.read_sites(tokens, -1, sites, question.readout))


__all__ = ["LensLayer", "LensQuestion", "LensResult", "lens_question", "lens_result", "logit_lens"]
