"""Prompt tester: per-position tokens, top-k next tokens, the rank of an expected answer, and a side-by-side compare."""

import streamlit as st

from components.model_state import require_model
from components.token_view import answer_panel, diagnostics, token_strip, token_table, topk_chart, topk_table
from headscope.errors import InputError
from headscope.predict import MAX_TOP_K, analyze_prompt, toggle_trailing_space

st.title("Prompt tester")
st.caption(
    "Positions count the model's real input, BOS included. Whitespace is visible: space ·, newline ↵, tab →."
)
model = require_model()

left, right = st.columns([3, 2])
with left:
    prompt = st.text_area("Prompt", value="1 2 3 4 ", key="pt_prompt", height=90,
                          help="Llama-style tokenizers emit the space before a digit as its own token: "
                               "'1 2 3 4' predicts a space, '1 2 3 4 ' predicts '5'.")
with right:
    a_col, c_col = st.columns(2)
    answer = a_col.text_input("Expected answer", value="5", key="pt_answer")
    contrast = c_col.text_input("Contrast answer", value="4", key="pt_contrast")
    k_col, p_col = st.columns(2)
    top_k = k_col.number_input("Top-k", min_value=1, max_value=MAX_TOP_K, value=10, step=1, key="pt_topk")
    position = p_col.number_input("Position (-1 = last)", value=-1, step=1, key="pt_position")

try:
    analysis = analyze_prompt(model, prompt, answer or None, contrast or None, int(top_k), int(position))
    st.session_state["pt_last_good"] = analysis
except InputError as error:
    st.error(str(error))
    analysis = None
    previous = st.session_state.get("pt_last_good")
    if previous is not None:
        st.caption(f"Showing the last result, for the prompt {previous.prompt!r}.")
        analysis = previous

if analysis is not None:
    diagnostics(analysis)
    st.subheader(f"{len(analysis.tokens)} tokens")
    token_strip(analysis)
    with st.expander("Token table", expanded=True):
        token_table(analysis)

    chosen = analysis.tokens[analysis.position]
    st.subheader(f"Next token after position {analysis.position} ({chosen.display!r})")
    table_col, chart_col = st.columns([1, 1])
    with table_col:
        topk_table(analysis.top_k)
    with chart_col:
        answer_ids = {r.typed.first_id for r in (analysis.answer,) if r is not None}
        st.plotly_chart(topk_chart(analysis.top_k, answer_ids), width="stretch", key="pt_topk_chart")

    if analysis.answer or analysis.contrast:
        st.subheader("Expected answer")
        metric_cols = st.columns(3)
        if analysis.answer:
            metric_cols[0].metric("Rank of answer", analysis.answer.typed.rank)
        if analysis.contrast:
            metric_cols[1].metric("Rank of contrast", analysis.contrast.typed.rank)
        if analysis.logit_diff is not None:
            metric_cols[2].metric("Logit difference", f"{analysis.logit_diff:.3f}")
        if analysis.answer:
            answer_panel("answer", analysis.answer)
        if analysis.contrast:
            answer_panel("contrast", analysis.contrast)

    st.subheader("Compare two variants")
    variant = st.text_input(
        "Variant prompt", value=toggle_trailing_space(analysis.prompt), key=f"pt_variant_{analysis.prompt}",
        help="Defaults to the prompt with its trailing space toggled.",
    )
    columns = st.columns(2)
    for column, text in zip(columns, (analysis.prompt, variant), strict=True):
        with column:
            st.text(repr(text))
            try:
                other = analysis if text == analysis.prompt else analyze_prompt(
                    model, text, answer or None, contrast or None, 5)
            except InputError as error:
                st.error(str(error))
                continue
            token_strip(other, show_predictions=False)
            topk_table(other.top_k[:5])
            if other.answer:
                st.caption(f"answer {other.answer.typed.text!r}: rank {other.answer.typed.rank}, "
                           f"p = {other.answer.typed.prob:.3f}")
            for warning in other.warnings:
                st.caption(f":material/warning: {warning}")
