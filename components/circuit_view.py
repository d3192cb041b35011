"""Pieces of the circuit page: the circuit on the layer×head grid, the layered diagram of kept components, the score
line, the tables and exports, and the overlap of several circuits.

Grids are square scatter markers (as in components.heatmap): Plotly heatmaps send no clicks to Streamlit. Each cell's
customdata starts with (layer, head), head = EXTRA for the MLP column, so components.heatmap.click_from_event reads a
click on any of them. User text (task names of uploaded datasets, labels of uploaded circuits) goes only into Plotly
hover/legend text and dataframes, which Streamlit does not read as Markdown.
"""

from __future__ import annotations

import io

import pandas as pd
import plotly.graph_objects as go

from headscope.circuit import CircuitResult
from headscope.circuit_compare import CircuitComparison, letter
from headscope.figures import (
    KEPT_COLOR,
    categorical_grid,
    cell_x,
    circuit_grid,
    comparison_grid,
    component_status,
)
from headscope.frames import circuit_frame

__all__ = ["categorical_grid", "circuit_csv", "circuit_grid", "comparison_grid", "component_status", "jaccard_frame",
           "kept_frame", "layered_diagram", "removal_frame", "score_line"]


def layered_diagram(result: CircuitResult) -> go.Figure:
    """The kept components, one row per layer that keeps any (layer 0 at the bottom): heads at their head index,
    the MLP at the right; a marker's size and colour say how much the circuit loses without it."""
    rows = sorted({h.layer for h in result.heads} | set(result.mlps))
    xs, ys, texts, hovers, losses, symbols = [], [], [], [], [], []
    for effect in result.kept_effects:
        loss = max(0.0, result.score - effect.score_without)
        xs.append(cell_x(effect.component, result.n_heads))
        ys.append(rows.index(effect.layer))
        texts.append(effect.label)
        hovers.append(f"{effect.label}: the circuit without it scores {effect.score_without:.1f}% "
                      f"({-loss:+.1f} points)")
        losses.append(loss)
        symbols.append("diamond" if effect.head is None else "circle")
    top = max(losses, default=1.0) or 1.0
    figure = go.Figure()
    for row in range(len(rows)):  # the residual stream each row reads from and writes to
        figure.add_shape(type="line", x0=-0.6, x1=result.n_heads + 1.2, y0=row, y1=row,
                         line={"color": "#d0d4da", "width": 1})
    figure.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers+text", text=texts, textposition="top center", hovertext=hovers,
        hovertemplate="%{hovertext}<extra></extra>",
        marker={"size": [12 + 22 * (loss / top) for loss in losses], "color": losses, "colorscale": "OrRd",
                "cmin": 0, "cmax": top, "symbol": symbols, "line": {"width": 1, "color": "#444"},
                "colorbar": {"title": {"text": "points lost<br>without it"}}},
    ))
    figure.update_layout(
        title={"text": "Kept components by layer (circle: head, diamond: MLP)", "x": 0.01, "font": {"size": 14}},
        height=int(min(1000, max(300, 46 * len(rows) + 120))),
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        xaxis={"title": "head", "tickvals": [*range(result.n_heads), result.n_heads + 0.6],
               "ticktext": [str(h) for h in range(result.n_heads)] + ["MLP"], "range": [-0.9, result.n_heads + 1.9],
               "showgrid": False, "zeroline": False},
        yaxis={"title": "layer", "tickvals": list(range(len(rows))), "ticktext": [str(r) for r in rows],
               "range": [-0.6, len(rows) - 0.3], "showgrid": False, "zeroline": False},
        plot_bgcolor="#fbfbfc",
        showlegend=False,
    )
    return figure


def score_line(result: CircuitResult) -> go.Figure:
    """The circuit's score after each removal (step 0: the whole model, 100%), the threshold, pass boundaries."""
    steps = list(range(len(result.removals) + 1))
    scores = [100.0] + [r.score_after for r in result.removals]
    labels = ["whole model"] + [f"without {r.label} (pass {r.pass_number})" for r in result.removals]
    figure = go.Figure(go.Scatter(x=steps, y=scores, mode="lines+markers", hovertext=labels,
                                  hovertemplate="step %{x}: %{y:.1f}%<br>%{hovertext}<extra></extra>",
                                  marker={"size": 4}, line={"color": KEPT_COLOR}))
    figure.add_hline(y=result.threshold, line={"dash": "dash", "color": "#c62828"},
                     annotation_text=f"threshold {result.threshold:g}%", annotation_position="bottom left")
    for step, (before, after) in enumerate(zip(result.removals, result.removals[1:], strict=False), start=1):
        if after.pass_number != before.pass_number:
            figure.add_vline(x=step + 0.5, line={"dash": "dot", "color": "#888"},
                             annotation_text=f"pass {after.pass_number}")
    figure.update_layout(
        title={"text": "Circuit score as components are removed", "x": 0.01, "font": {"size": 14}},
        xaxis={"title": "components removed"}, yaxis={"title": "% of clean LD"}, height=360,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return figure


def removal_frame(result: CircuitResult) -> pd.DataFrame:
    return pd.DataFrame([{"step": step, "component": r.label, "layer": r.layer,
                          "head": "MLP" if r.head is None else str(r.head), "pass": r.pass_number,
                          "score after (%)": round(r.score_after, 2), "LD after": round(r.ld_after, 4)}
                         for step, r in enumerate(result.removals, 1)])


def kept_frame(result: CircuitResult) -> pd.DataFrame:
    rows = [{"component": e.label, "score without it (%)": round(e.score_without, 2),
             "points lost": round(result.score - e.score_without, 2)} for e in result.kept_effects]
    frame = pd.DataFrame(rows)
    return frame.sort_values("points lost", ascending=False) if len(frame) else frame


def circuit_csv(result: CircuitResult) -> str:
    """One row per component: kept or removed, when, and the scores (headscope.frames.circuit_frame)."""
    buffer = io.StringIO()
    buffer.write(f"# model={result.model} task={result.task} method={result.method} threshold={result.threshold:g} "
                 f"one_pass={result.one_pass} estimate={result.estimate} clean_ld={result.clean_ld:.6f} "
                 f"score={result.score:.4f} passes={result.passes}\n")
    circuit_frame(result).to_csv(buffer, index=False)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Comparing circuits


def counts_frame(comparison: CircuitComparison) -> pd.DataFrame:
    """One row per circuit; what only it holds in one column ("only in it"), not one column per circuit that is
    empty (None) in every other row."""
    rows = []
    for index, row in enumerate(comparison.counts()):
        only = row.pop(f"only {letter(index)}")
        rows.append({**row, "only in it": only})
    return pd.DataFrame(rows)


def jaccard_frame(comparison: CircuitComparison) -> pd.DataFrame:
    letters = [letter(i) for i in range(len(comparison.circuits))]
    return pd.DataFrame(comparison.jaccard.round(3), index=letters, columns=letters)
