"""The ablation page's confidence displays: per-head bootstrap intervals with the heads whose interval reaches "no
effect" flagged, top-10 stability across resamples, and the estimate beside the exact sweep (a scatter with Spearman's
ρ and the heads the estimate ranks most wrongly). The numbers come from headscope.confidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components.presentation import present_figure
from components.text import md
from headscope.ablation import SweepResult
from headscope.confidence import (
    DEFAULT_TOP_K,
    EstimateAgreement,
    RankingConfidence,
    estimate_agreement,
    ranking_confidence,
)

SHOWN = 15  # rows of the interval table: the largest mean effects

INTERVAL_COLUMNS = {
    "change": st.column_config.NumberColumn("change", format="%+.3f", help="mean over prompts of ablated − clean LD"),
    "low": st.column_config.NumberColumn("95% low", format="%+.3f"),
    "high": st.column_config.NumberColumn("95% high", format="%+.3f"),
    "in top-10": st.column_config.ProgressColumn("in top-10", format="percent", min_value=0.0, max_value=1.0,
                                                 help="share of bootstrap resamples in which this cell is among the "
                                                      "10 largest |changes|"),
    "crosses 0": st.column_config.CheckboxColumn("crosses 0", help="the interval reaches 'no effect': these "
                                                                   "prompts do not settle the sign of the effect"),
}


@st.cache_data(show_spinner=False, max_entries=16)
def _confidence(change: np.ndarray) -> RankingConfidence:
    return ranking_confidence(change)


def cells_frame(cells: list[tuple[str, tuple[int, int]]], confidence: RankingConfidence,
                value: str = "change") -> pd.DataFrame:
    """One row per (label, cell index): the mean as `value`, its interval, whether it reaches 0, top-10 stability."""
    intervals, stability = confidence.intervals, confidence.stability
    return pd.DataFrame([{"cell": label, value: float(intervals.mean[at]), "low": float(intervals.low[at]),
                          "high": float(intervals.high[at]), "in top-10": float(stability.frequency[at]),
                          "crosses 0": bool(intervals.crosses_zero[at])} for label, at in cells])


def intervals_frame(result: SweepResult, confidence: RankingConfidence, rows: int = SHOWN) -> pd.DataFrame:
    """The cells with the largest |mean change|: interval, whether it reaches 0, top-10 stability."""
    return cells_frame([(result.cell_label(top.layer, top.head), (top.layer, top.head))
                        for top in result.top_heads(rows)], confidence)


def intervals_csv(result: SweepResult, confidence: RankingConfidence) -> str:
    """Every cell's interval and top-10 stability, one row each, how they were drawn in a comment line."""
    intervals, stability = confidence.intervals, confidence.stability
    rows = [{"layer": layer, "cell": result.cell_label(layer, index), "change": intervals.mean[layer, index],
             "low": intervals.low[layer, index], "high": intervals.high[layer, index],
             "crosses_zero": bool(intervals.crosses_zero[layer, index]),
             "in_top_10": stability.frequency[layer, index]}
            for layer in range(result.n_layers) for index in range(result.n_heads)]
    return f"# {result.label}; {intervals.how}\n" + pd.DataFrame(rows).to_csv(index=False)


def intervals_figure(frame: pd.DataFrame, how: str, value: str = "change",
                     axis_title: str = "change in LD (ablated − clean)") -> go.Figure:
    """Each listed cell's mean `value` with its interval as an error bar; grey where the interval reaches 0."""
    colors = ["#9e9e9e" if crosses else "#1f77b4" for crosses in frame["crosses 0"]]
    figure = go.Figure(go.Scatter(
        x=frame[value], y=frame["cell"], mode="markers", marker={"color": colors, "size": 9},
        error_x={"type": "data", "symmetric": False, "array": frame["high"] - frame[value],
                 "arrayminus": frame[value] - frame["low"], "color": "#555"},
        hovertemplate="%{y}: %{x:+.3f}<extra></extra>"))
    figure.add_vline(x=0, line_dash="dot", line_color="#888")
    figure.update_layout(height=120 + 22 * len(frame), margin={"l": 10, "r": 10, "t": 40, "b": 30},
                         title={"text": how, "font": {"size": 12}}, xaxis_title=axis_title,
                         yaxis={"autorange": "reversed", "type": "category"})
    return figure


def confidence_section(result: SweepResult) -> None:
    """Intervals and top-10 stability of an exact sweep, from its per-prompt values."""
    st.subheader("Confidence")
    change = result.per_prompt_change
    if change is None:
        st.caption("Intervals need each prompt's own LD: the exact sweep keeps them (the estimate has none).")
        return
    if result.n_prompts < 2:
        st.caption("Intervals need at least two prompts.")
        return
    confidence = _confidence(change)
    frame = intervals_frame(result, confidence)
    table_col = show_intervals(frame, confidence, "change", "change in LD (ablated − clean)", INTERVAL_COLUMNS, "ab",
                               "cells")
    with table_col:
        st.download_button("Download intervals (CSV)", intervals_csv(result, confidence),
                           file_name=f"intervals-{result.task}-{result.method}-{result.unit}.csv", mime="text/csv",
                           key="ab_intervals_csv", on_click="ignore", icon=":material/table:")


def show_intervals(frame: pd.DataFrame, confidence: RankingConfidence, value: str, axis_title: str,
                   columns: dict, key: str, noun: str, group: int = 1):
    """The metrics, the error-bar chart and the table of a cells_frame; returns the table's column. `group`: cells
    along the last axis that share one value (a KV group's heads on a path grid), counted once as stable."""
    crossing = int(frame["crosses 0"].sum())
    stable = int((confidence.stability.frequency[..., ::group] >= 0.9).sum())
    cols = st.columns(3)
    cols[0].metric("Resamples", f"{confidence.intervals.resamples:d}", help=md(confidence.intervals.how))
    cols[1].metric(md(f"Listed {noun} crossing 0"), f"{crossing:d} of {len(frame):d}",
                   help=md(f"{noun} among those listed whose 95% interval reaches no effect"))
    cols[2].metric(f"Stable in the top-{DEFAULT_TOP_K:d}", f"{stable:d}",
                   help=md(f"{noun} in the top-{DEFAULT_TOP_K:d} in at least 90% of resamples"))
    chart_col, table_col = st.columns([1, 1])
    with chart_col:
        st.plotly_chart(present_figure(intervals_figure(frame, confidence.intervals.how, value, axis_title)),
                        key=f"{key}_intervals", config={"displaylogo": False})
    with table_col:
        st.dataframe(frame, hide_index=True, width="stretch", column_config=columns, key=f"{key}_interval_table")
        st.caption(md(f"{confidence.intervals.how}. Grey points and ticked rows: the interval reaches 0."))
    return table_col


def agreement_figure(estimate: SweepResult, exact: SweepResult, agreement: EstimateAgreement) -> go.Figure:
    """Estimate (x) against exact (y) change per cell, the worst-ranked cells labelled."""
    x, y = estimate.change.ravel(), exact.change.ravel()
    labels = [exact.cell_label(layer, head) for layer in range(exact.n_layers) for head in range(exact.n_heads)]
    worst = {exact.cell_label(*cell) for cell in agreement.worst}
    figure = go.Figure(go.Scatter(
        x=x, y=y, mode="markers", marker={"size": 6, "color": ["#d62728" if label in worst else "#1f77b4"
                                                                for label in labels]},
        text=labels, hovertemplate="%{text}: estimate %{x:+.3f}, exact %{y:+.3f}<extra></extra>"))
    finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        figure.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", line={"dash": "dot", "color": "#888"},
                                    hoverinfo="skip", showlegend=False))
    figure.update_layout(height=420, showlegend=False, margin={"l": 10, "r": 10, "t": 40, "b": 30},
                         title={"text": f"Spearman's ρ = {agreement.spearman:.3f}", "font": {"size": 13}},
                         xaxis_title="estimate: change in LD", yaxis_title="exact: change in LD")
    return figure


def worst_ranked_frame(exact: SweepResult, agreement: EstimateAgreement) -> pd.DataFrame:
    return pd.DataFrame([{"cell": exact.cell_label(*cell), "exact rank": int(agreement.exact_rank[cell]),
                          "estimate rank": int(agreement.estimate_rank[cell]),
                          "exact change": round(float(exact.change[cell]), 3)} for cell in agreement.worst])


def estimate_vs_exact(result: SweepResult, counterpart: SweepResult | None) -> None:
    """The estimate beside the exact sweep of the same configuration, when the results cache holds both."""
    if counterpart is None or counterpart.estimate == result.estimate:
        return
    exact, estimate = (counterpart, result) if result.estimate else (result, counterpart)
    if exact.change.shape != estimate.change.shape:
        return
    agreement = estimate_agreement(estimate.change, exact.change)
    st.subheader("Estimate vs exact")
    st.caption("Each point is one cell: the attribution estimate's change in LD against the exact sweep's. Spearman's "
               "ρ compares the two rankings; red points are the cells whose rank by |change| the estimate gets most "
               "wrong (rank 1 = the largest effect).")
    plot_col, table_col = st.columns([3, 2])
    with plot_col:
        st.plotly_chart(present_figure(agreement_figure(estimate, exact, agreement)), key="ab_agreement",
                        config={"displaylogo": False})
    with table_col:
        st.metric("Spearman's ρ", f"{agreement.spearman:.3f}")
        st.dataframe(worst_ranked_frame(exact, agreement), hide_index=True, width="stretch", key="ab_worst_ranked")
