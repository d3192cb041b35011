"""circuitsvis views in the app: each view is one complete offline page (circuitsvis' bundle inlined once) shown in
an iframe. Nothing is loaded from a CDN, so the views work without internet access.

st.iframe is the current API for HTML in an iframe (st.components.v1.html is deprecated); the page's scripts run in
the frame, never in the app itself. With height "content" (the default) the frame follows the drawn view, which is
what the views need: circuitsvis draws after the frame loads and its size depends on the number of heads and tokens.
"""

from __future__ import annotations

from typing import Literal

import streamlit as st

from headscope.patterns import CircuitsView, view_page

GRID_MAX_WIDTH = 760  # px: the zoomed pattern is square, so width also sets its height
SINGLE_MAX_WIDTH = 620

FrameHeight = int | Literal["content"]


def circuits_frame(
    view: CircuitsView,
    height: FrameHeight = "content",
    description: str = "circuitsvis attention view",
    *,
    max_width: int = GRID_MAX_WIDTH,
) -> None:
    """One circuitsvis view in its own frame; `description` names the frame for screen readers (and tests)."""
    st.iframe(view_page([view], max_width=max_width), height=height, alt=description)
