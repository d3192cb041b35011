"""The Paths page's confidence section: each strong path's effect with its 95 % bootstrap interval, the paths whose
interval reaches "no effect", and how stable the top-10 is across resamples (headscope.path_confidence).

Its per-prompt effects need each prompt's LD in the run with nothing patched: one forward of the run's prompts, kept
in the session per model, prompts and direction, so reruns and clicks do not repeat it."""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from components.confidence_view import intervals_figure
from components.path_view import centre_of, file_stem, path_intervals_csv, path_intervals_frame
from components.presentation import present_figure
from components.text import md
from headscope.backends.base import Backend
from headscope.confidence import DEFAULT_TOP_K, RankingConfidence
from headscope.errors import HeadscopeError
from headscope.path_confidence import path_confidence, run_prompt_lds
from headscope.path_patching import PathResult
from headscope.tasks import EncodedDataset

RUN_LDS = "pa_run_lds"  # {(model identity, dataset hash, n prompts, direction): ld[prompt]}
SHOWN_ROWS = 12
COLUMNS = {
    "change": st.column_config.NumberColumn("change", format="%+.3f",
                                            help="mean over prompts of (patched − the run's LD) for that prompt"),
    "low": st.column_config.NumberColumn("95% low", format="%+.3f"),
    "high": st.column_config.NumberColumn("95% high", format="%+.3f"),
    "in top-k": st.column_config.ProgressColumn(f"in top-{DEFAULT_TOP_K}", format="percent", min_value=0.0,
                                                max_value=1.0, help="share of bootstrap resamples in which this path "
                                                                    f"is among the {DEFAULT_TOP_K} largest |changes|"),
    "crosses 0": st.column_config.CheckboxColumn("crosses 0", help="the interval reaches 'no effect': these prompts "
                                                                   "do not settle the sign of the path's effect"),
}


def _run_lds(model: Backend, encoded: EncodedDataset, direction: str) -> np.ndarray:
    key = (json.dumps(model.identity, sort_keys=True, default=str), encoded.dataset.content_hash, encoded.n_prompts,
           direction)
    memo = st.session_state.setdefault(RUN_LDS, {})
    if key not in memo:
        memo[key] = run_prompt_lds(model, encoded, direction)
    return memo[key]


def _confidence(model: Backend, result: PathResult, encoded: EncodedDataset | None,
                dataset_hash: str) -> RankingConfidence | str:
    """The result's confidence, or why it cannot be shown."""
    if result.n_prompts < 2:
        return "Intervals need at least two prompts."
    if encoded is None or encoded.dataset.content_hash != dataset_hash or encoded.n_prompts != result.n_prompts:
        return ("Intervals need the result's prompts (each prompt's LD in the run): choose them above (upload the "
                "file again for a linked dataset).")
    try:
        return path_confidence(result, _run_lds(model, encoded, result.query.direction), model.info.heads_per_kv)
    except (HeadscopeError, ValueError) as error:
        return str(error)


def path_confidence_section(model: Backend, result: PathResult, encoded: EncodedDataset | None,
                            dataset_hash: str) -> None:
    """An expander under the map: the strongest paths with their intervals, a chart of them, and every partner's
    interval as CSV."""
    with st.expander(md(f"Confidence: 95% intervals and top-{DEFAULT_TOP_K} stability"), icon=":material/query_stats:"):
        confidence = _confidence(model, result, encoded, dataset_hash)
        if isinstance(confidence, str):
            st.caption(md(confidence))
            return
        intervals, stability = confidence.intervals, confidence.stability
        frame = path_intervals_frame(result, confidence, model.info.heads_per_kv, SHOWN_ROWS)
        crossing = int(frame["crosses 0"].sum())
        group = model.info.heads_per_kv if result.kv_grouped else 1  # a KV group's heads share one path
        stable = int((stability.frequency[:, ::group] >= 0.9).sum())
        unit = "KV groups' paths" if group > 1 else "paths"
        cols = st.columns(3)
        cols[0].metric("Resamples", f"{intervals.resamples:d}", help=md(intervals.how))
        cols[1].metric("Listed paths crossing 0", f"{crossing:d} of {len(frame):d}",
                       help="paths among those listed whose 95% interval reaches no effect")
        cols[2].metric(f"Stable in the top-{stability.k:d}", f"{stable:d}",
                       help=md(f"{unit} in the top-{stability.k:d} in at least 90% of resamples"))
        chart_col, table_col = st.columns([1, 1])
        with chart_col:
            figure = intervals_figure(frame.rename(columns={"head": "cell"}), intervals.how)
            centre = centre_of(result.query)
            figure.update_layout(xaxis_title="change in LD (patched − the run's LD)",
                                 yaxis_title="receiver" if result.query.sender is not None
                                 else "sender" if centre is not None else "head")
            st.plotly_chart(present_figure(figure), key="pa_intervals", config={"displaylogo": False})
        with table_col:
            st.dataframe(frame, hide_index=True, width="stretch", column_config=COLUMNS, key="pa_interval_table")
            st.caption(md(f"{intervals.how}. Each prompt's change is its LD with the path patched minus its own LD in "
                          "the run. Grey points and ticked rows: the interval reaches 0."))
            st.download_button("Download intervals (CSV)", path_intervals_csv(result, confidence),
                               file_name=f"intervals-{file_stem(result)}.csv", mime="text/csv",
                               key="pa_intervals_csv", on_click="ignore", icon=":material/table:")
