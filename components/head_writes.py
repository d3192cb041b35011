"""What a head writes: the tokens its output at a chosen position promotes and suppresses most (through the final norm,
its scale frozen from that position's residual, and the unembedding), and its OV view for a chosen input token (what
it would write attending fully to that token). One panel, opened wherever a head is chosen (a click on the ablation
heatmap, the attention page's single-head choice).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from components import long_prompt
from components.long_prompt import run_on_request
from components.text import md, plain
from headscope.component import Component
from headscope.errors import HeadscopeError
from headscope.logit_attribution import HeadWrites, head_writes, ov_view
from headscope.tokens import tokenize_prompt

DEFAULT_K = 10
MAX_K = 50  # the engine takes up to 200; a table of 50 is already long
EFFECT_COLUMNS = {
    "token": st.column_config.TextColumn("token", help="whitespace shown: space ·, newline ↵, tab →"),
    "id": st.column_config.NumberColumn("id", format="%d"),
    "logit": st.column_config.NumberColumn("logit", format="%+.3f", help="the head's contribution to that token's "
                                                                           "logit"),
}


def effects_frame(effects) -> pd.DataFrame:
    """One row per token: its visible form (whitespace made visible by the engine), id and logit contribution."""
    return pd.DataFrame([{"token": plain(e.token), "id": e.token_id, "logit": e.logit} for e in effects],
                        columns=["token", "id", "logit"])


def writes_tables(writes: HeadWrites) -> None:
    """Promoted and suppressed tokens side by side."""
    up_col, down_col = st.columns(2)
    up_col.markdown("**Promoted**")
    up_col.dataframe(effects_frame(writes.promoted), hide_index=True, width="stretch", column_config=EFFECT_COLUMNS)
    down_col.markdown("**Suppressed**")
    down_col.dataframe(effects_frame(writes.suppressed), hide_index=True, width="stretch",
                       column_config=EFFECT_COLUMNS)


def _memo(key: str, asked: tuple, compute: Callable[[], HeadWrites]) -> HeadWrites:
    """A rerun with the same question (any click on the page) reuses the answer instead of a new forward."""
    memo = st.session_state.get(key)
    if memo is not None and memo[0] == asked:
        return memo[1]
    answer = compute()
    st.session_state[key] = (asked, answer)
    return answer


def head_writes_panel(model, prompt: str, component: Component, key: str) -> None:
    """The panel for one head (or MLP) on one prompt: a position (default the last) and k, the promoted and suppressed
    tokens there, then, for a head, the OV view for an input token (default the token at that position). `key` keeps
    two pages' panels apart."""
    label = component.label if component.is_head else f"MLP {component.layer}"
    what = f"Head {label}" if component.is_head else label
    try:
        tokens = tokenize_prompt(model, prompt).tokens
    except HeadscopeError as error:
        st.error(md(str(error)))
        return
    pos_col, k_col = st.columns([3, 1])
    position_help = ("the position whose output of the head is read (BOS included in the positions); the last is the "
                     "one the logit difference is read at")
    if len(tokens) <= long_prompt.LONG_PROMPT_TOKENS:
        position = pos_col.selectbox(
            "Position", range(len(tokens)), index=len(tokens) - 1, key=f"{key}_position",
            format_func=lambda pos: plain(f"{pos}: {tokens[pos].display}"), help=md(position_help))
    else:  # a list of thousands of options costs the browser seconds on every rerun of the page
        position = int(pos_col.number_input("Position", min_value=0, max_value=len(tokens) - 1,
                                            value=len(tokens) - 1, key=f"{key}_long_position", help=md(position_help)))
        pos_col.caption(md(f"Token at position {position:,}: {tokens[position].display}"))
    k = int(k_col.number_input("Tokens listed", min_value=1, max_value=MAX_K, value=DEFAULT_K, key=f"{key}_k"))
    identity = str(model.identity)
    asked = (identity, prompt, component, position, k)
    memo = st.session_state.get(f"{key}_writes")
    named = f"head {label}" if component.is_head else label
    if (memo is not None and memo[0] == asked) or run_on_request(len(tokens), prompt, f"What {named} writes", key):
        try:
            writes = _memo(f"{key}_writes", asked, lambda: head_writes(model, prompt, component, position, k))
        except HeadscopeError as error:
            st.error(md(str(error)))
            return
        st.caption(f"{md(what)}'s output at position {position:d} through the final norm (its scale frozen from that "
                   "position's residual) and the unembedding: the tokens whose logits it raises and lowers most.")
        writes_tables(writes)
    if not component.is_head:
        return

    st.markdown(f"**OV view of head {md(label)}**")
    chosen = tokens[position]
    token = st.text_input(
        "Input token", value="" if chosen.special else chosen.text, key=f"{key}_ov_token_{position}",
        help="what the head writes when it attends fully to this token (its OV circuit, then the unembedding): a "
             "copying head promotes the token itself, a successor head the next one. Defaults to the token at the "
             "chosen position.")
    if not token:
        st.caption("Type a token to see its OV view.")
        return
    try:
        ov = _memo(f"{key}_ov", (identity, component, token, k), lambda: ov_view(model, component, token, k))
    except HeadscopeError as error:
        st.error(md(str(error)))
        return
    writes_tables(ov)
