"""Token strip, token table, top-k table and chart, answer panel: the prompt tester's pieces.

Every token string reaches the page through st.dataframe (rendered as text), html.escape (the strip), Plotly-escaped
labels (the chart) or components.text (Markdown); invisible characters show as ⟨U+XXXX⟩ (headscope.tokens).
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components.text import md, md_list, plain, plotly_text
from headscope.predict import AnswerReport, Prediction, PromptAnalysis, window_around

STRIP_CSS = """
<style>
.hs-strip{display:flex;flex-wrap:wrap;gap:4px;font-family:ui-monospace,Menlo,Consolas,monospace;margin:4px 0 12px}
.hs-tok{border:1px solid #c9ced6;border-radius:6px;padding:2px 6px;min-width:2.2em;text-align:center;background:#fff}
.hs-tok.special{background:#eef1f6;color:#5b6472}
.hs-tok.chosen{border:2px solid #e4572e}
.hs-pos{font-size:10px;color:#8a93a3}
.hs-text{font-size:15px;white-space:pre;color:#1f2430}
.hs-next{font-size:11px;color:#8a93a3;border-top:1px dashed #d5d9e0;margin-top:2px;white-space:pre}
.hs-next.hit{color:#1b8a4b;font-weight:600}
.hs-bos{font-size:12px;color:#5b6372;margin-top:4px}
</style>
"""


STRIP_MAX_TOKENS = 256  # chips drawn at most: a long prompt's strip shows a window, the token table every position


def strip_window(n_tokens: int, position: int) -> range:
    """The positions the strip draws: all of a short prompt; of a long one, STRIP_MAX_TOKENS positions holding the
    chosen one, with the ones before it and a few after. Thousands of chips are unreadable and cost the browser about
    a second to lay out."""
    return window_around(n_tokens, position, STRIP_MAX_TOKENS)


def token_strip_html(analysis: PromptAnalysis, show_predictions: bool = True, window: range | None = None) -> str:
    """The tokens as chips (position, visible-whitespace text) with each position's top-1 prediction underneath;
    `window`: only these positions (default: every one).

    A prediction is green when it equals the next input token. All token text is HTML-escaped.
    """
    tokens = analysis.tokens
    chips = []
    for token in tokens if window is None else tokens[window.start:window.stop]:
        classes = ["hs-tok"]
        if token.special:
            classes.append("special")
        if token.position == analysis.position:
            classes.append("chosen")
        parts = [
            f'<div class="hs-pos">{token.position}</div>',
            f'<div class="hs-text">{html.escape(token.display)}</div>',
        ]
        predicted = analysis.top1_at(token.position) if show_predictions else None
        if predicted is not None:
            following = tokens[token.position + 1] if token.position + 1 < len(tokens) else None
            hit = " hit" if following is not None and following.id == predicted.id else ""
            parts.append(f'<div class="hs-next{hit}" title="top-1 next token">{html.escape(predicted.display)}</div>')
        title = html.escape(f"id {token.id} · raw {token.raw!r}", quote=True)
        chips.append(f'<div class="{" ".join(classes)}" title="{title}">{"".join(parts)}</div>')
    rule = analysis.tokenized.bos_rule
    why = f'<div class="hs-bos" data-testid="hs-bos-rule">{html.escape(rule)}</div>' if rule else ""
    return f'{STRIP_CSS}<div class="hs-strip" data-testid="hs-token-strip">{"".join(chips)}</div>{why}'


def token_strip(analysis: PromptAnalysis, show_predictions: bool = True) -> None:
    """The strip of a short prompt; of a long one, the window around the chosen position, said in a caption."""
    window = strip_window(len(analysis.tokens), analysis.position)
    if len(window) < len(analysis.tokens):
        st.caption(f"Drawn: positions {window.start:,}–{window.stop - 1:,} of {len(analysis.tokens):,}, around the "
                   "chosen position (change Position to move the window); the token table lists every position.")
    st.html(token_strip_html(analysis, show_predictions, window))


def token_frame(analysis: PromptAnalysis) -> pd.DataFrame:
    rows = []
    for token in analysis.tokens:
        predicted = analysis.top1_at(token.position)
        rows.append({
            "position": token.position,
            "id": token.id,
            "token": token.display,
            "raw": plain(token.raw),
            "special": token.special,
            "span": "" if token.char_start is None else f"{token.char_start}–{token.char_end}",
            "top-1 next": "" if predicted is None else predicted.display,
            "p(top-1)": None if predicted is None else predicted.prob,
        })
    return pd.DataFrame(rows)


def token_table(analysis: PromptAnalysis) -> None:
    st.dataframe(
        token_frame(analysis),
        hide_index=True,
        width="stretch",
        column_config={"p(top-1)": st.column_config.NumberColumn(format="%.3f")},
    )


def topk_frame(predictions: tuple[Prediction, ...]) -> pd.DataFrame:
    return pd.DataFrame([
        {"rank": p.rank, "token": p.display, "id": p.id, "logit": p.logit, "prob": p.prob, "logprob": p.logprob}
        for p in predictions
    ])


def topk_table(predictions: tuple[Prediction, ...]) -> None:
    st.dataframe(
        topk_frame(predictions),
        hide_index=True,
        width="stretch",
        column_config={
            "logit": st.column_config.NumberColumn(format="%.3f"),
            "prob": st.column_config.ProgressColumn(format="%.3f", min_value=0.0, max_value=1.0),
            "logprob": st.column_config.NumberColumn(format="%.3f"),
        },
    )


def topk_chart(predictions: tuple[Prediction, ...], highlight_ids: set[int] | None = None) -> go.Figure:
    """Horizontal bars of probability, best at the top; answer tokens highlighted."""
    highlight_ids = highlight_ids or set()
    labels = [plotly_text(f"{p.rank}. {p.display}") for p in predictions]
    colors = ["#e4572e" if p.id in highlight_ids else "#4c78a8" for p in predictions]
    figure = go.Figure(go.Bar(
        x=[p.prob for p in predictions],
        y=labels,
        orientation="h",
        marker_color=colors,
        customdata=[[p.logit, p.id] for p in predictions],
        hovertemplate="%{y}<br>prob %{x:.4f}<br>logit %{customdata[0]:.3f}<br>id %{customdata[1]}<extra></extra>",
    ))
    figure.update_layout(
        height=max(220, 26 * len(predictions) + 60),
        margin={"l": 10, "r": 10, "t": 10, "b": 30},
        yaxis={"autorange": "reversed", "type": "category"},
        xaxis={"title": "probability", "range": [0, 1]},
    )
    return figure


def answer_panel(label: str, report: AnswerReport) -> None:
    """Rank, logit and probability of an answer as typed and with its leading space toggled, and which token they
    are of (the first, where the spelling is several tokens)."""
    rows = []
    for variant in (report.typed, report.alternate):
        if variant is None:
            continue
        rows.append({
            label: repr(plain(variant.text)),
            "tokens": " ".join(variant.tokens_display),
            "ranked": variant.ranked,  # a rank is the first token's: "'·' (first of 2)" says so
            "first id": variant.first_id,
            "rank": variant.rank,
            "logit": variant.logit,
            "prob": variant.prob,
        })
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "logit": st.column_config.NumberColumn(format="%.3f"),
            "prob": st.column_config.NumberColumn(format="%.4f"),
        },
    )


def diagnostics(analysis: PromptAnalysis) -> None:
    if analysis.warnings:  # one box, however many there are (a prompt could stack six)
        st.warning(md_list(analysis.warnings), icon=":material/warning:")
    for note in analysis.notes:
        st.caption(":material/info: " + md(note))
