"""circuitsvis views in the app: each view is one complete offline page (circuitsvis' bundle inlined once) shown in
an iframe. Nothing is loaded from a CDN, so the views work without internet access.

st.iframe is the current API for HTML in an iframe (st.components.v1.html is deprecated); the page's scripts run in
the frame, never in the app itself. With height "content" (the default) the frame follows the drawn view, which is
what the views need: circuitsvis draws after the frame loads and its size depends on the number of heads and tokens.

Streamlit measures "content" as the largest of the document's heights, and a document is never shorter than its
frame: circuitsvis' first layout is about twice its final height, so the frame grew to that and kept ~1,200 px of
blank space. FIT_SCRIPT reports the document's own height (Streamlit's resize message, from inside the frame) once
the layout settles, so the frame shrinks to the view.
"""

from __future__ import annotations

from typing import Literal

import streamlit as st

from headscope.patterns import CircuitsView, view_page

# circuitsvis labels each thumbnail with an h4 laid over its top-right corner, as wide as the thumbnail: a name like
# "L23H3 (KV 1)" wrapped onto two lines ("L23H3 (KV" / "1)"); one line, smaller, extending to the left instead
LABEL_CSS = "<style>h4 { white-space: nowrap; font-size: 11px !important; line-height: 1.25; }</style>"
FIT_SCRIPT = """<script>
(function () {
  function fit() {
    var root = document.documentElement.getBoundingClientRect();
    var height = Math.ceil(root.height);
    if (height > 0 && Math.abs(window.innerHeight - height) > 1) {
      window.parent.postMessage({type: "streamlit:iframe:setSize", width: Math.ceil(root.width), height: height}, "*");
    }
  }
  function soon() { setTimeout(fit, 60); }
  if (typeof ResizeObserver !== "undefined") { new ResizeObserver(soon).observe(document.documentElement); }
  window.addEventListener("resize", soon);
  window.addEventListener("load", soon);
})();
</script>"""
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
    page = view_page([view], max_width=max_width, preamble_html=LABEL_CSS + (FIT_SCRIPT if height == "content" else ""))
    st.iframe(page, height=height, alt=description)
