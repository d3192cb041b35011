"""Shareable views: each page's inputs live in the URL, so a reload or a pasted link reopens the same view.

Widgets hold their own query parameter (`bind="query-params"`, the widget key is the parameter name) and keep their
value across page switches (`persist_state="session"`); `BOUND` is what every such widget passes. State that is not a
widget (a head selected by clicking the heatmap) is mirrored by `url_value`. `copy_link` shows the page's link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import streamlit as st

from components.text import md

BOUND: dict[str, Any] = {"bind": "query-params", "persist_state": "session"}
T = TypeVar("T")


def url_value(param: str, state_key: str, parse: Callable[[str], T | None], show: Callable[[T], str]) -> T | None:
    """A value that is not a widget's, kept in session state under `state_key` and mirrored in the URL as `param`.

    A value in the URL wins (a pasted link, a reload); with none there (after a page switch Streamlit drops the
    parameters of other pages' widgets and every unbound one), the session's value is written back. A parameter that
    does not parse is dropped from the URL, and so is a session value that no longer does (a head the sweep now shown
    does not have)."""
    raw = st.query_params.get(param)
    if raw is not None:
        value = parse(raw)
        if value is None:
            del st.query_params[param]
            st.session_state.pop(state_key, None)
            return None
        st.session_state[state_key] = value
        return value
    value = st.session_state.get(state_key)
    if value is not None and parse(show(value)) is None:
        st.session_state.pop(state_key, None)
        return None
    if value is not None:
        st.query_params[param] = show(value)
    return value


def set_url_value(param: str, state_key: str, value: Any, show: Callable[[Any], str]) -> None:
    """Change a mirrored value (None removes it)."""
    if value is None:
        st.session_state.pop(state_key, None)
        if param in st.query_params:
            del st.query_params[param]
        return
    st.session_state[state_key] = value
    st.query_params[param] = show(value)


def page_link() -> str:
    """This page's address with its query parameters, as the browser shows it."""
    base = st.context.url or ""
    if base and base.count("/") == 2:  # "http://host:port": the root page
        base += "/"
    pairs = [(key, value) for key in st.query_params for value in st.query_params.get_all(key)]
    query = urlencode(pairs, quote_via=quote)
    return f"{base}?{query}" if query else base or "?"


def copy_link(container: Any = None, code: str | None = None) -> None:
    """A "Copy link" popover: the link of this exact view (the copy icon of the code box copies it); with `code`, a
    "Copy as code" popover beside it: the notebook lines that reproduce the view (headscope.api)."""
    target = container if container is not None else st
    with target.popover("Copy link", icon=":material/link:"):
        st.caption(md("This view as a link: the inputs and the selection. Open it to see the same view; results "
                      "come from the results cache where they were computed before."))
        st.code(page_link(), language=None, wrap_lines=True)
    if code is not None:
        with target.popover("Copy as code", icon=":material/code:"):
            st.caption(md("This view in a notebook (`pip install headscope`): the same results cache, so a result "
                          "computed here opens there at once, and the other way round."))
            st.code(code, language="python", wrap_lines=True)


def task_arguments(source_is_task: bool, dataset_name: str | None) -> dict[str, Any]:
    """The prompts of a sweep or circuit page as keyword arguments of the notebook call: the built-in task's widgets
    (task, step, n, seed) or the uploaded file's name (the notebook reads the file from its own disk)."""
    state = st.session_state
    if not source_is_task:
        return {"dataset": dataset_name or "your-dataset.csv"}
    from headscope.tasks import TASKS

    task = state.get("task", next(iter(TASKS)))
    step = state.get("step") if task in TASKS and TASKS[task].adjustable_stride else None
    return {"task": task, "step": None if step is None else int(step),
            "n_prompts": int(state.get("n", 16)), "seed": int(state.get("seed", 0))}
