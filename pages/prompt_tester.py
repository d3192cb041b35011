"""Prompt tester: per-position tokens, top-k next tokens, the rank of an expected answer, and a side-by-side compare.

Every input lives in the URL (prompt, answer, contrast, top_k, position): a link reopens the same view.
"""

import time

import streamlit as st

from components.lens_view import lens_panel
from components.long_prompt import LONG_PROMPT_TOKENS
from components.long_run import REDRAW_SECONDS, still_progress_bars
from components.model_state import active_request, require_model
from components.preload import preload_result_elements
from components.presentation import controls, present_figure, settings_line
from components.share import BOUND, copy_link, prompt_box
from components.text import md, md_code, plain, plural, quoted
from components.token_view import (
    STRIP_MAX_TOKENS,
    answer_panel,
    diagnostics,
    token_strip,
    token_table,
    topk_chart,
    topk_table,
)
from headscope.api import call_code, notebook_code
from headscope.errors import HeadscopeError
from headscope.predict import MAX_TOP_K, analyze_prompt, toggle_trailing_space
from headscope.profile import timed

COMPARE_TOP_K = 5  # next tokens listed per side of the compare
TABLE_OPEN = "pt_token_table"  # a long prompt's token table expander: True while it is open

title_col, link_col = st.columns([4, 1], vertical_alignment="bottom")
title_col.title("Prompt tester")
line = st.empty()  # presentation mode: the view's settings, in one line under the title
st.caption(
    "Positions count the model's real input, BOS included. Whitespace is visible: space ·, newline ↵, tab →; "
    "invisible characters show as ⟨U+XXXX⟩."
)
with timed("prompt tester: model"):
    model = require_model()

with controls("Prompt and answers"), timed("prompt tester: controls"):
    left, right = st.columns([3, 2])
    with left:
        prompt = prompt_box(st, "1 2 3 4 ", height=90,
                            help="Llama-style tokenizers emit the space before a digit as its own token: "
                                 "'1 2 3 4' predicts a space, '1 2 3 4 ' predicts '5'.")
    with right:
        a_col, c_col = st.columns(2)
        answer = a_col.text_input("Expected answer", value="5", key="answer", **BOUND)
        contrast = c_col.text_input("Contrast answer", value="4", key="contrast", **BOUND)
        k_col, p_col = st.columns(2)
        top_k = k_col.number_input("Top-k", min_value=1, max_value=MAX_TOP_K, value=10, step=1, key="top_k", **BOUND)
        position = p_col.number_input("Position (-1 = last)", value=-1, step=1, key="position", **BOUND)

with timed("prompt tester: copy link"):
    copy_link(link_col, notebook_code(active_request(), call_code(
        "tokens", prompt, answer=answer or None, contrast=contrast or None, top_k=None if top_k == 10 else int(top_k),
        position=None if position == -1 else int(position))))

progress_slot = st.empty()


forward_clock = {"started": time.perf_counter(), "drawn": 0.0}


def forward_progress(fraction: float) -> None:
    """A progress bar for a long prompt (shown only once a forward pass has taken more than half a second), redrawn
    at most every REDRAW_SECONDS: each redraw is a message the browser renders while the forward needs the cores."""
    now = time.perf_counter()
    if now - forward_clock["started"] > 0.5 and now - forward_clock["drawn"] >= REDRAW_SECONDS:
        forward_clock["drawn"] = now
        progress_slot.progress(min(fraction, 1.0), text=f"Running the model on the prompt: {100 * fraction:.0f}%")


# a rerun with the same inputs (a toggle, an expander, a link copied) reuses the forward: a long prompt's costs seconds
asked = (str(model.identity), prompt, answer or None, contrast or None, int(top_k), int(position))
try:
    long_prompt = len(prompt) > LONG_PROMPT_TOKENS and len(model.input_ids(prompt)) > LONG_PROMPT_TOKENS
    # a long prompt's strip draws a window of positions, and its token table (every position) comes when opened:
    # until then only the window's top-1 predictions are unembedded, a tenth of the forward at 4,320 tokens
    every_position = not long_prompt or bool(st.session_state.get(TABLE_OPEN))
    memo = st.session_state.get("pt_memo")
    if memo is not None and memo[0] == asked and (memo[1].top1_start == 0 or not every_position):
        analysis = memo[1]
    else:
        if long_prompt:
            # the browser loads its chart and table code while the long forward runs, not after it
            preload_result_elements(frame=False)  # the prompt tester shows no frame
            still_progress_bars()
        with timed("prompt tester: analyze_prompt"):  # the logit lens from the same forward
            analysis = analyze_prompt(model, prompt, answer or None, contrast or None, int(top_k), int(position),
                                      progress=forward_progress, lens=True,
                                      top1_window=None if every_position else STRIP_MAX_TOKENS)
        st.session_state["pt_memo"] = (asked, analysis)
    st.session_state["pt_last_good"] = (model.identity, analysis)
    progress_slot.empty()  # the forward is over: its bar goes
except HeadscopeError as error:
    st.error(md(str(error)))
    analysis = None
    identity, previous = st.session_state.get("pt_last_good", (None, None))
    if previous is not None and identity == model.identity:  # never another model's result under this one's name
        st.caption(f"Showing the last result, for the prompt {quoted(previous.prompt)}.")
        analysis = previous

if analysis is not None:
    settings_line(line, f"{model.info.name} · prompt {analysis.prompt!r} · expected {answer!r} vs {contrast!r} · "
                        f"top {int(top_k)} at position {analysis.position}")
    diagnostics(analysis)
    st.subheader(plural(len(analysis.tokens), "token"))
    with timed("prompt tester: token strip"):
        token_strip(analysis)
    if len(analysis.tokens) <= LONG_PROMPT_TOKENS:
        with st.expander("Token table", expanded=False), timed("prompt tester: token table"):
            token_table(analysis)
    else:  # thousands of rows: sent when the table is opened (the browser lays them out even while it is folded)
        if analysis.top1_start:  # (said outside the label: a label that changes would close the table again)
            st.caption("The token table's top-1 column covers every position: opening it runs the model again over "
                       "the whole prompt.")
        table_box = st.expander(f"Token table (all {len(analysis.tokens):,} positions)", key=TABLE_OPEN,
                                on_change="rerun")
        if table_box.open:
            with table_box, timed("prompt tester: token table"):
                token_table(analysis)

    chosen = analysis.tokens[analysis.position]
    st.subheader(f"Next token after position {analysis.position:d} ({md_code(chosen.display)})")
    table_col, chart_col = st.columns([1, 1])
    with table_col:
        topk_table(analysis.top_k)
    with chart_col:
        answer_ids = {r.typed.first_id for r in (analysis.answer,) if r is not None}
        st.plotly_chart(present_figure(topk_chart(analysis.top_k, answer_ids)), width="stretch", key="pt_topk_chart")

    if analysis.answer or analysis.contrast:
        st.subheader("Expected answer")
        metric_cols = st.columns(3)
        if analysis.answer:
            metric_cols[0].metric("Rank of answer", f"{analysis.answer.typed.rank:d}")
        if analysis.contrast:
            metric_cols[1].metric("Rank of contrast", f"{analysis.contrast.typed.rank:d}")
        if analysis.logit_diff is not None:
            metric_cols[2].metric("Logit difference", f"{analysis.logit_diff:.3f}")
        if analysis.answer:
            answer_panel("answer", analysis.answer)
        if analysis.contrast:
            answer_panel("contrast", analysis.contrast)

    if analysis.lens is not None:
        st.subheader("Logit lens at the last position")
        st.caption("The residual after the embeddings and after each layer, through the final norm (recomputed on "
                   "that residual) and the unembedding: where in depth the answer emerges.")
        lens_panel(analysis.lens)

    st.subheader("Compare two variants")
    compare = st.toggle("Compare with a variant of the prompt", value=False, key="compare", **BOUND,
                        help="Runs the model a second time, on the variant (by default the prompt with its trailing "
                             "space toggled): the '1 2 3 4' vs '1 2 3 4 ' trap side by side.")
    if compare:
        variant = st.text_input(
            "Variant prompt", value=toggle_trailing_space(analysis.prompt), key=f"pt_variant_{analysis.prompt}",
            help="Defaults to the prompt with its trailing space toggled.",
        )
        st.caption(md(f"Both at their last position: the top {COMPARE_TOP_K} next tokens and the expected answer's "
                      "rank."))
        # the result above is reused only where it is the same reading (last position, at least 5 candidates)
        reusable = analysis.position == len(analysis.tokens) - 1 and len(analysis.top_k) >= COMPARE_TOP_K
        columns = st.columns(2)
        for column, text in zip(columns, (analysis.prompt, variant), strict=True):
            with column:
                st.text(repr(plain(text)))
                try:
                    other = analysis if text == analysis.prompt and reusable else analyze_prompt(
                        model, text, answer or None, contrast or None, COMPARE_TOP_K)
                except HeadscopeError as error:
                    st.error(md(str(error)))
                    continue
                token_strip(other, show_predictions=False)
                topk_table(other.top_k[:COMPARE_TOP_K])
                if other.answer:
                    st.caption(f"answer {quoted(other.answer.typed.text)}: rank {other.answer.typed.rank:d}, "
                               f"p = {other.answer.typed.prob:.3f}")
                for warning in other.warnings:
                    st.caption(":material/warning: " + md(warning))
