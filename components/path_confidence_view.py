"""The Paths page's confidence section: each strong path's effect with its 95 % bootstrap interval, the paths whose
interval reaches "no effect", and how stable the top-10 is across resamples (headscope.path_confidence), drawn by
the interval display the ablation page's sections share (components.confidence_view).

Its per-prompt effects need each prompt's LD in the run with nothing patched: one forward of the run's prompts, kept
in the session per model, prompts and direction, so reruns and clicks do not repeat it."""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from components.confidence_view import INTERVAL_COLUMNS, cells_frame, show_intervals
from components.path_view import file_stem, path_intervals_csv
from components.text import md
from headscope.backends.base import Backend
from headscope.confidence import DEFAULT_TOP_K, RankingConfidence
from headscope.errors import HeadscopeError
from headscope.path_confidence import path_confidence, run_prompt_lds
from headscope.path_patching import PathResult
from headscope.tasks import EncodedDataset

RUN_LDS = "pa_run_lds"  # {(model identity, dataset hash, n prompts, direction): ld[prompt]}
SHOWN_ROWS = 12  # as the top paths table
COLUMNS = {**INTERVAL_COLUMNS, "change": st.column_config.NumberColumn(
    "change", format="%+.3f", help="mean over prompts of (patched − the run's LD) for that prompt")}


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
    """An expander under the map: the strongest paths (the top paths table's rows) with their intervals, a chart of
    them, and every partner's interval as CSV."""
    with st.expander(md(f"Confidence: 95% intervals and top-{DEFAULT_TOP_K} stability"), icon=":material/query_stats:"):
        confidence = _confidence(model, result, encoded, dataset_hash)
        if isinstance(confidence, str):
            st.caption(md(confidence))
            return
        heads_per_kv = model.info.heads_per_kv
        frame = cells_frame([(head.label, (head.layer, head.head)) for head, _ld in result.top_paths(SHOWN_ROWS)],
                            confidence)
        frame.insert(1, "KV", [int(label.split(".")[1]) // heads_per_kv for label in frame["cell"]])
        grouped = result.kv_grouped and heads_per_kv > 1
        table_col = show_intervals(frame, confidence, "change", "change in LD (patched − the run's LD)", COLUMNS, "pa",
                                   "KV groups' paths" if grouped else "paths", heads_per_kv if grouped else 1)
        with table_col:
            st.download_button("Download intervals (CSV)", path_intervals_csv(result, confidence),
                               file_name=f"intervals-{file_stem(result)}.csv", mime="text/csv",
                               key="pa_intervals_csv", on_click="ignore", icon=":material/table:")
