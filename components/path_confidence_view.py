"""The Paths page's confidence section: each strong path's effect with its 95 % bootstrap interval, the paths whose
interval reaches "no effect", and how stable the top-10 is across resamples (headscope.path_confidence), drawn by
the interval display the ablation page's sections share (components.confidence_view).

Its per-prompt effects use each prompt's LD in the run with nothing patched, which the result keeps (the same
evaluation as its paths)."""

from __future__ import annotations

import streamlit as st

from components.confidence_view import INTERVAL_COLUMNS, cells_frame, show_intervals
from components.path_view import file_stem, path_intervals_csv
from components.text import md
from headscope.backends.base import Backend
from headscope.confidence import DEFAULT_TOP_K, RankingConfidence
from headscope.errors import HeadscopeError
from headscope.path_confidence import path_confidence
from headscope.path_patching import PathResult

SHOWN_ROWS = 12  # as the top paths table
COLUMNS = {**INTERVAL_COLUMNS, "change": st.column_config.NumberColumn(
    "change", format="%+.3f", help="mean over prompts of (patched − the run's LD) for that prompt")}


def _confidence(model: Backend, result: PathResult) -> RankingConfidence | str:
    """The result's confidence, or why it cannot be shown."""
    if result.n_prompts < 2:
        return "Intervals need at least two prompts."
    try:
        return path_confidence(result, model.info.heads_per_kv)
    except (HeadscopeError, ValueError) as error:
        return str(error)


def path_confidence_section(model: Backend, result: PathResult) -> None:
    """An expander under the map: the strongest paths (the top paths table's rows) with their intervals, a chart of
    them, and every partner's interval as CSV."""
    with st.expander(md(f"Confidence: 95% intervals and top-{DEFAULT_TOP_K} stability"), icon=":material/query_stats:"):
        confidence = _confidence(model, result)
        if isinstance(confidence, str):
            st.caption(md(confidence))
            return
        heads_per_kv = model.info.heads_per_kv
        frame = cells_frame([(head.label, (head.layer, head.head)) for head, _ld in result.top_paths(SHOWN_ROWS)],
                            confidence)
        frame.insert(1, "KV", [int(label.split(".")[1]) // heads_per_kv for label in frame["cell"]])
        grouped = result.cells_per_group and heads_per_kv > 1
        table_col = show_intervals(frame, confidence, "change", "change in LD (patched − the run's LD)", COLUMNS, "pa",
                                   "KV groups' paths" if grouped else "paths", heads_per_kv if grouped else 1)
        with table_col:
            st.download_button("Download intervals (CSV)", path_intervals_csv(result, confidence),
                               file_name=f"intervals-{file_stem(result)}.csv", mime="text/csv",
                               key="pa_intervals_csv", on_click="ignore", icon=":material/table:")
