"""A long prompt's extra forwards on request. A page answers a long prompt with the one forward its result needs (the
prompt tester's predictions, the attention page's patterns); a panel that needs another forward over the whole
prompt (the logit lens, what a head writes) waits for a click that says what it costs. Measured on a 4,343-token
prompt (2 cores): the lens and the head writes each took one more forward, about as long as the page's own, so each
page took two forwards where issue 20 asks for at most 1.2 of one."""

from __future__ import annotations

import hashlib

import streamlit as st

from components.text import md

LONG_PROMPT_TOKENS = 1024  # above this, a forward over the prompt takes seconds on a CPU: the extra ones wait


def run_on_request(n_tokens: int, prompt: str, what: str, key: str) -> bool:
    """True when a panel may run its own forward over the prompt now: a short prompt, or a long one whose panel was
    asked for (its button, in this session, for this very prompt). Otherwise it says why it waits and shows the
    button."""
    if n_tokens <= LONG_PROMPT_TOKENS:
        return True
    asked = f"{key}_long_prompt"
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    if st.session_state.get(asked) == digest:
        return True
    st.caption(md(f"{what} needs one more forward over all {n_tokens:,} tokens of this prompt, as long as the one "
                  "above: it runs when asked."))
    if st.button(md(f"Show {what[0].lower()}{what[1:]}"), key=f"{asked}_button"):
        st.session_state[asked] = digest
        return True
    return False
