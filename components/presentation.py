"""Presentation mode, for showing results on a projector (1920×1080 or 1280×720) in a lab meeting: larger type for
figures and tables, the sidebar folded, figures' markers, colour bars and fonts scaled up, the current view's settings
as one line under the title, and the controls that are not needed for showing tucked into an expander.

On with the sidebar's toggle or `present=1` in the URL; the page keeps `present=1` in the URL itself (so Copy link
holds it, and it survives a page switch, after which Streamlit drops every parameter no widget of the new page is
bound to).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from components.text import md

PARAM = "present"  # the URL parameter
TOGGLE = "_hs_present"  # the toggle's key (session state), mirrored in the URL by the page
_WRITTEN = "_hs_present_written"  # what this session last wrote to the URL: a link's value differs from it
SCALE = 1.35  # figures: sizes in pixels (markers, fixed widths and heights, margins) and fonts
BASE_FONT = 17  # px, figures' text in presentation mode (Plotly's default is 12)
TITLE_FONT = 17

CSS = """<style>
/* larger type for the text, metrics, tables and controls of the page (the figures are scaled by their layout) */
[data-testid="stMainBlockContainer"] { max-width: 100%; padding-top: 2.5rem; }
[data-testid="stMainBlockContainer"] p, [data-testid="stMainBlockContainer"] li,
[data-testid="stMainBlockContainer"] label, [data-testid="stMainBlockContainer"] button { font-size: 1.2rem; }
[data-testid="stMainBlockContainer"] [data-testid="stCaptionContainer"] p { font-size: 1.1rem; }
[data-testid="stMetricValue"], [data-testid="stMetricValue"] * { font-size: 2.4rem; }
[data-testid="stMetricLabel"] p { font-size: 1.2rem; }
[data-testid="stTable"] td, [data-testid="stTable"] th { font-size: 1.15rem; }
</style>"""


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


def linked_presentation() -> bool:
    """Before the page config is set: whether this run shows the presentation mode (a link's present=1, or the
    session's toggle)."""
    raw = st.query_params.get(PARAM)
    if raw is not None and raw != st.session_state.get(_WRITTEN):
        st.session_state[TOGGLE] = _truthy(raw)
    return bool(st.session_state.get(TOGGLE, False))


def presentation_toggle() -> bool:
    """The sidebar's toggle; writes present=1 to the URL while on (removes it when off) and styles the page."""
    on = st.sidebar.toggle("Presentation mode", key=TOGGLE,
                           help="For a projector: larger type and figures, the sidebar folded, the controls in an "
                                "expander; present=1 in the link.")
    if on:
        if st.query_params.get(PARAM) != "1":
            st.query_params[PARAM] = "1"
        st.session_state[_WRITTEN] = "1"
        st.html(CSS)
    else:
        if PARAM in st.query_params:
            del st.query_params[PARAM]
        st.session_state[_WRITTEN] = None
    return on


def presenting() -> bool:
    return bool(st.session_state.get(TOGGLE, False))


@contextlib.contextmanager
def controls(label: str = "Controls") -> Iterator[Any]:
    """The block of a page's inputs: as it is normally, in a folded expander in presentation mode."""
    if presenting():
        with st.expander(md(label), expanded=False, icon=":material/tune:") as box:
            yield box
    else:
        with st.container() as box:
            yield box


def settings_line(slot: Any, text: str) -> None:
    """The view's settings as one line under the title (presentation mode only; `slot` is an st.empty() there)."""
    if presenting() and text:
        slot.markdown(f":material/tune: **{md(text)}**")


def present_figure(figure: go.Figure) -> go.Figure:
    """The figure for a projector (in presentation mode; unchanged otherwise): fonts larger; fixed pixel sizes,
    markers and colour bars scaled by SCALE, so square cells stay square and readable from the back of a room."""
    if not presenting():
        return figure
    layout = figure.layout
    updates: dict[str, Any] = {"font": {"size": BASE_FONT}}
    if layout.width:
        updates["width"] = round(layout.width * SCALE)
    if layout.height:
        updates["height"] = round(layout.height * SCALE)
    margin = layout.margin
    if margin is not None:
        updates["margin"] = {side: round(getattr(margin, side) * SCALE) for side in ("l", "r", "t", "b")
                             if getattr(margin, side) is not None}
    if layout.title is not None and layout.title.text:
        # a figure of fixed width made room for its title at its own size: scaled with it; one as wide as its column
        # gets a moderate size (a Plotly title does not wrap)
        own = layout.title.font.size if layout.title.font is not None and layout.title.font.size else 14
        updates["title_font_size"] = round(own * SCALE) if layout.width else TITLE_FONT
    figure.update_layout(**updates)
    for trace in figure.data:
        marker = getattr(trace, "marker", None)
        if marker is None:
            continue
        # square cells tile a grid sized by the figure: they grow with it only where its width is fixed too
        tiles = str(getattr(marker, "symbol", "") or "").startswith("square")
        size = getattr(marker, "size", None)  # (a bar's marker has none)
        if tiles and not layout.width:
            pass
        elif isinstance(size, int | float):
            marker.size = size * SCALE
        elif size is not None and not isinstance(size, str):
            marker.size = [s * SCALE for s in size]
        colorbar = getattr(marker, "colorbar", None)
        if colorbar is not None and colorbar.to_plotly_json():  # only a colour bar the figure has (none is made)
            colorbar.thickness = round((colorbar.thickness or 14) * SCALE)
    for annotation in figure.layout.annotations or ():
        annotation.font.size = BASE_FONT
    figure.update_xaxes(tickfont_size=BASE_FONT)
    figure.update_yaxes(tickfont_size=BASE_FONT - 2 if layout.height and layout.height > 900 else BASE_FONT)
    return figure
