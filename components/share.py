"""Shareable views: each page's inputs live in the URL, so a reload or a pasted link reopens the same view.

Widgets hold their own query parameter (`bind="query-params"`, the widget key is the parameter name) and keep their
value across page switches (`persist_state="session"`); `BOUND` is what every such widget passes. State that is not a
widget (a head selected by clicking the heatmap) is mirrored by `url_value`. `copy_link` shows the page's link.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import streamlit as st

from components.text import md
from headscope.results_cache import ResultsCache

BOUND: dict[str, Any] = {"bind": "query-params", "persist_state": "session"}
T = TypeVar("T")
PROMPT = "prompt"  # the prompt box's key, and its URL parameter while the prompt is short
PROMPT_ID = "prompt_id"  # the URL parameter naming a long prompt stored in the results cache
PROMPT_KIND = "prompt-texts"  # results-cache kind of those prompts, keyed by their content hash
LONG_LINK_CHARS = 2_000  # a prompt longer than this in the URL (encoded) goes by its hash: proxies refuse ~8 KB URLs
_TEXT = "_hs_prompt_text"  # the prompt box's text, kept across page switches (the widget's own state is not)
_IN_URL = "_hs_prompt_in_url"  # (prompt, prompt_id) as this session last wrote them to the URL


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
            say_dropped(param, raw, "does not fit this view")
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


def prompt_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def prompt_box(target: Any, default: str, **widget_args: Any) -> str:
    """The prompt box the prompt tester and the attention page share, mirrored in the URL: a short prompt as
    `prompt=`, a long one (its encoded form over LONG_LINK_CHARS) as `prompt_id=<content hash>`, the text stored in
    the results cache beside the results, so that a link stays short enough for any reverse proxy.

    A link's prompt (pasted, reloaded) fills the box; the box's own edits win after that (the URL then holds what this
    session wrote)."""
    in_url = (st.query_params.get(PROMPT), st.query_params.get(PROMPT_ID))
    if any(in_url) and in_url != st.session_state.get(_IN_URL):
        text = in_url[0]
        if text is None:
            text = ResultsCache().load(PROMPT_KIND, {"sha256": in_url[1]})
            if not isinstance(text, str):
                text = None
                st.warning(md(f"This link names a long prompt ({PROMPT_ID}={in_url[1]}) that is not in this "
                              "server's results cache: paste the prompt instead."), icon=":material/link_off:")
        if text is not None:
            st.session_state[PROMPT] = text
    # the text is kept under a key of its own too: a page switch removes the other page's widget state, and the box
    # is then filled from that copy (or the page's default), set before the widget is made
    current = st.session_state.get(PROMPT)
    st.session_state[PROMPT] = current if isinstance(current, str) else st.session_state.get(_TEXT, default)
    text = target.text_area("Prompt", key=PROMPT, **widget_args)
    st.session_state[_TEXT] = text
    _write_prompt(text, default)
    return text


def _write_prompt(text: str, default: str) -> None:
    short = len(quote(text, safe="")) <= LONG_LINK_CHARS
    wanted = (None, None) if text == default else (text, None) if short else (None, prompt_digest(text))
    if wanted[1] is not None:
        cache = ResultsCache()
        if cache.load(PROMPT_KIND, {"sha256": wanted[1]}) != text:
            cache.store(PROMPT_KIND, {"sha256": wanted[1]}, text)
    for param, value in zip((PROMPT, PROMPT_ID), wanted, strict=True):
        if value is None:
            if param in st.query_params:
                del st.query_params[param]
        elif st.query_params.get(param) != value:
            st.query_params[param] = value
    st.session_state[_IN_URL] = wanted


_SAID = "_hs_url_values_said"  # (param, value) pairs of links already said to be dropped in this session


def say_dropped(param: str, raw: str, why: str) -> None:
    """Say once per session and value that a link's parameter was not used (instead of dropping it silently)."""
    said = st.session_state.setdefault(_SAID, set())
    if (param, raw) in said:
        return
    said.add((param, raw))
    st.toast(md(f"This link's {param}={raw!r} {why}; it was left out."), icon=":material/link_off:")


def _same(raw: str, value: Any) -> bool:
    """Whether a URL text stands for a widget's value (Streamlit writes booleans, numbers and options its own way)."""
    if isinstance(value, bool):
        return raw.strip().lower() in ("true", "1") if value else raw.strip().lower() in ("false", "0")
    if isinstance(value, int | float):
        try:
            return float(raw) == float(value)
        except ValueError:
            return False
    if isinstance(value, list | tuple):
        return False  # multi-valued parameters are compared whole by the caller
    return str(value) == raw


def url_at_start() -> dict[str, list[str]]:
    """The query parameters as the run starts (before any widget has read, corrected or dropped one)."""
    return {key: st.query_params.get_all(key) for key in st.query_params}


def say_invalid_url_values(at_start: dict[str, list[str]]) -> None:
    """After a page has drawn its widgets: a widget's parameter that the link gave and Streamlit dropped or changed
    (not among the choices, out of range, not a number) is said once, instead of vanishing silently."""
    for key, values in at_start.items():
        if key not in st.session_state or key.startswith("_"):
            continue  # not a widget of this page
        now = st.query_params.get_all(key)
        if now == values:
            continue
        value = st.session_state[key]
        if isinstance(value, list | tuple):
            if [str(v) for v in value] == values:
                continue
        elif len(values) == 1 and _same(values[0], value):
            continue  # the same value (e.g. the default, which Streamlit leaves out of the URL)
        say_dropped(key, ", ".join(values), f"is not one of the choices here (now {value!r})")


_WRITTEN = "_hs_url_written"  # {param: the value this session last wrote to the URL}


def linked_choice(param: str, choices: list[str]) -> None:
    """Before an unbound choice widget keyed `param`: a value a link gave (one this session did not write itself) is
    chosen; one not among `choices` is said, and the widget keeps its own value. A value no longer among the choices
    (the head list changed) gives way to the first."""
    raw = st.query_params.get(param)
    if raw is not None and raw != st.session_state.get(_WRITTEN, {}).get(param):
        if raw in choices:
            st.session_state[param] = raw
        else:
            say_dropped(param, raw, "is not one of the choices here")
    if st.session_state.get(param) not in choices and choices:
        st.session_state[param] = choices[0]


def mirror_choice(param: str, value: str, default: str) -> None:
    """After that widget: its value in the URL (none for the default), written by the server on every run, so that
    Copy link holds it however the choices came about."""
    written = st.session_state.setdefault(_WRITTEN, {})
    if value == default:
        if param in st.query_params:
            del st.query_params[param]
        written[param] = None
        return
    if st.query_params.get(param) != value:
        st.query_params[param] = value
    written[param] = value
