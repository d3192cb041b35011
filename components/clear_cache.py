"""Removing cached results from a page: only this model's results of one kind, said in the button, after a
confirmation; on a server reachable from the network only where its operator allows it (HEADSCOPE_ALLOW_CLEAR=1), so
that no colleague's click deletes the sweeps precomputed for a meeting."""

from __future__ import annotations

import streamlit as st

from components.access import network_mode
from components.text import md, plural
from headscope.errors import HeadscopeError
from headscope.results_cache import ResultsCache
from headscope.settings import ALLOW_CLEAR, flag_env


def clearing_allowed() -> tuple[bool, str]:
    """(allowed, why not): always on localhost; in network mode only with HEADSCOPE_ALLOW_CLEAR=1."""
    if not network_mode():
        return True, ""
    try:
        allowed = flag_env(ALLOW_CLEAR)
    except HeadscopeError as error:
        return False, str(error)
    return allowed, "" if allowed else (f"This server is shared: cached results are removed only where its operator "
                                        f"allows it ({ALLOW_CLEAR}=1).")


def clear_cached_button(container, cache: ResultsCache, kind: str, model, noun: str, *, key: str,
                        forget: tuple[str, ...] = ()) -> None:
    """A "Clear this model's cached <noun>s…" button; its click asks to confirm (with how many go), and the
    confirmation removes this model's entries of `kind` only (and `forget`'s session values)."""
    name = model.info.name
    allowed, why_not = clearing_allowed()
    asking = f"{key}_confirm"
    container.button(md(f"Clear this model's cached {noun}s…"), key=key, disabled=not allowed,
                     help=md(why_not or f"Removes the cached {noun}s of {name} only, after asking."),
                     on_click=lambda: st.session_state.update({asking: True}))
    if not allowed or not st.session_state.get(asking):
        return
    count = len(cache.entries(kind, model.identity))
    if not count:
        st.session_state.pop(asking, None)
        st.toast(md(f"No cached {noun}s of {name} to remove."))
        return
    with st.container(border=True):
        st.warning(md(f"Remove {plural(count, f'cached {noun}')} of {name} (every task and method, on this "
                      f"{model.info.device})? Other models' results stay. This cannot be undone."),
                   icon=":material/delete:")
        yes_col = no_col = st.container(horizontal=True, wrap=True)
        confirmed = yes_col.button(f"Remove {plural(count, noun)}", type="primary", key=f"{key}_yes")
        if no_col.button("Keep them", key=f"{key}_no"):
            st.session_state.pop(asking, None)
            st.rerun()
    if confirmed:
        st.session_state.pop(asking, None)
        removed = cache.remove(kind, model.identity)
        for state_key in forget:
            st.session_state.pop(state_key, None)
        st.toast(md(f"Removed {plural(removed, f'cached {noun}')} of {name}."))
        st.rerun()
