"""headscope's results as pandas tables, one row per position, head or component: what a notebook's `.to_frame()`
returns and what the pages download as CSV."""

from __future__ import annotations

import html
import io
from typing import TYPE_CHECKING

import pandas as pd

from headscope.component import every_component

if TYPE_CHECKING:
    from headscope.ablation import SweepResult
    from headscope.circuit import CircuitResult
    from headscope.patterns import AttentionPatterns
    from headscope.predict import PromptAnalysis


def tokens_frame(result: PromptAnalysis) -> pd.DataFrame:
    """One row per position of the real input (BOS included), with the model's top-1 prediction after it."""
    rows = []
    for token in result.tokens:
        top1 = result.top1_at(token.position)
        rows.append({"position": token.position, "id": token.id, "text": token.text, "display": token.display,
                     "special": token.special, "top1": None if top1 is None else top1.display,
                     "top1_prob": None if top1 is None else top1.prob})
    return pd.DataFrame(rows)


def top_k_frame(result: PromptAnalysis) -> pd.DataFrame:
    """The top-k next tokens at the analysed position."""
    return pd.DataFrame([{"rank": p.rank, "id": p.id, "text": p.text, "display": p.display, "logit": p.logit,
                          "prob": p.prob, "logprob": p.logprob} for p in result.top_k])


def tokens_html(result: PromptAnalysis) -> str:
    """The prompt tester in short: the answers' ranks, the warnings, the top-k and the tokens (text escaped)."""
    lines = []
    for label, report in (("answer", result.answer), ("contrast", result.contrast)):
        for variant in (report.typed, report.alternate) if report is not None else ():
            if variant is not None:
                lines.append(f"{label} {variant.text!r}: rank {variant.rank} ({variant.ranked}), logit "
                             f"{variant.logit:.3f}, prob {variant.prob:.4f}")
    if result.logit_diff is not None:
        lines.append(f"logit difference (answer − contrast): {result.logit_diff:.3f}")
    lines += [f"warning: {w}" for w in result.warnings] + [f"note: {n}" for n in result.notes]
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (f"<p><b>{html.escape(result.model)}</b>: {len(result.tokens)} tokens; top-{len(result.top_k)} at "
            f"position {result.position}</p><ul>{summary}</ul>"
            f"<div style='display: flex; gap: 2em'>{top_k_frame(result).to_html(index=False)}"
            f"{tokens_frame(result).to_html(index=False)}</div>")


def sweep_frame(result: SweepResult) -> pd.DataFrame:
    """One row per head, then one per MLP (head empty): ablated LD, % of clean, change from clean, and normalized
    where the sweep had corrupted prompts."""
    normalized, mlp_normalized = result.normalized, result.mlp_normalized
    rows = []
    for layer in range(result.n_layers):
        for head in range(result.n_heads):
            rows.append({"layer": layer, "head": head, "component": f"{layer}.{head}",
                         "ablated_ld": result.ablated_ld[layer, head],
                         "percent_of_clean": result.percent_of_clean[layer, head],
                         "change": result.change[layer, head],
                         "normalized": None if normalized is None else normalized[layer, head]})
    for layer in range(result.n_layers):
        rows.append({"layer": layer, "head": None, "component": f"MLP {layer}",
                     "ablated_ld": result.mlp_ablated_ld[layer],
                     "percent_of_clean": result.mlp_percent_of_clean[layer],
                     "change": result.mlp_ablated_ld[layer] - result.clean_ld,
                     "normalized": None if mlp_normalized is None else mlp_normalized[layer]})
    frame = pd.DataFrame(rows)
    frame["head"] = frame["head"].astype("Int64")  # empty for an MLP
    return frame


def circuit_frame(result: CircuitResult) -> pd.DataFrame:
    """One row per component (each layer's heads, then its MLP): kept or removed, when, and the scores."""
    rows = []
    for component in every_component(result.n_layers, result.n_heads):
        removal = result.removal_of(component)
        effect = result.effect_of(component)
        head = component.head
        rows.append({
            "layer": component.layer, "component": "mlp" if head is None else f"head {head}", "head": head,
            "kept": removal is None,
            "removal_step": None if removal is None else removal[0],
            "pass": None if removal is None else removal[1].pass_number,
            "score_after_removal": None if removal is None else removal[1].score_after,
            "score_without_it": None if effect is None else effect.score_without,
        })
    return pd.DataFrame(rows)


def patterns_frame(result: AttentionPatterns) -> pd.DataFrame:
    """Long format, one row per head and causal (dest, src) pair: the page's CSV download, read back."""
    from headscope.patterns import patterns_csv

    return pd.read_csv(io.StringIO(patterns_csv(result)), keep_default_na=False,
                       dtype={"dest_token": str, "src_token": str})
