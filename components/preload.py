"""Hidden elements that make the browser load a page's chart, table and frame code before its results arrive.

Streamlit's browser code for a Plotly chart (≈ 0.9 s to evaluate on the 2-core development machine), a dataframe
(≈ 0.2 s) and a frame (≈ 0.1 s, a clicked head's pattern) is loaded the first time the page shows one. The ablation
page shows none until its sweep ends, so that cost used to fall after the sweep, between its last message and the
heatmap drawn (bench/trace_summary.py on a trace of `bench/app_jobs.py --trace`). Drawn hidden while the page waits
for a click, they move it to a moment when the user is still choosing. Nothing of them is visible; they take no space.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

KEY = "hs_preload"  # the container's key: its class is st-key-hs_preload
HIDDEN = f"<style>.st-key-{KEY} {{ display: none; }}</style>"


def is_preload(element_id: str | None) -> bool:
    """Whether a chart's id (AppTest: `chart.proto.id`) is the preloaded one's."""
    return KEY in (element_id or "")


def preload_result_elements(frame: bool = True) -> None:
    """A tiny chart, table and (with `frame`) frame in a hidden container (only their code matters)."""
    with st.container(key=KEY):
        st.html(HIDDEN)
        st.plotly_chart(go.Figure(layout={"width": 40, "height": 40}), key=f"{KEY}_chart", width="content",
                        config={"staticPlot": True, "displayModeBar": False})
        st.dataframe(pd.DataFrame({"": [0]}), key=f"{KEY}_table", hide_index=True)
        if frame:
            st.iframe("<p></p>", height=10, alt="preload")  # the frame that shows a clicked head's pattern
