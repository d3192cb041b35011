"""The logit lens on the prompt tester: the residual at the last position after the embeddings and after each layer,
through the final norm (recomputed on that residual) and the unembedding; the answer's rank, probability and logit
difference to the contrast answer per layer, and the first layer where the answer is the top-1 token.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components.presentation import present_figure
from components.text import quoted
from headscope.lens import LensResult


def layer_name(layer: int) -> str:
    """Layer -1 is the residual after the embeddings."""
    return "embed" if layer == -1 else str(layer)


def lens_frame(result: LensResult) -> pd.DataFrame:
    """A row per layer: rank (1 = top), probability, logit difference (empty without a contrast), top-1 marked."""
    rows = []
    for entry in result.layers:
        row = {"after": layer_name(entry.layer), "rank": entry.rank, "probability": entry.prob}
        if result.contrast is not None:
            row["logit difference"] = entry.logit_diff
        row["top-1"] = "✓ first" if entry.layer == result.first_top1_layer else "✓" if entry.rank == 1 else ""
        rows.append(row)
    return pd.DataFrame(rows)


LENS_COLUMNS = {
    "after": st.column_config.TextColumn("after", help="the residual after the embeddings (embed) or after that "
                                                       "layer"),
    "rank": st.column_config.NumberColumn("rank", format="%d", help="1 = the answer is the top-1 token"),
    "probability": st.column_config.NumberColumn("probability", format="%.3g"),
    "logit difference": st.column_config.NumberColumn("logit difference", format="%+.3f",
                                                      help="logit[answer] − logit[contrast]"),
    "top-1": st.column_config.TextColumn("top-1"),
}


ROW_GAP = 0.08  # between the lens figure's panels, in figure heights


def _axis(row: int) -> str:
    """Plotly's name of the y axis of panel `row` (0 on top): y, y2, y3."""
    return "y" if row == 0 else f"y{row + 1}"


def lens_figure(result: LensResult) -> go.Figure:
    """Rank (log scale), probability and logit difference against the layer, one panel each over one x axis; the
    first top-1 layer marked. Built as one layout (no make_subplots, add_vline): a third of the script's figure
    time on the prompt tester's Ctrl+Enter."""
    rows = 3 if result.contrast is not None else 2
    titles = ["rank of the answer (log scale)", "probability of the answer", "logit[answer] − logit[contrast]"]
    series = [[e.rank for e in result.layers], [e.prob for e in result.layers],
              [e.logit_diff for e in result.layers]]
    xs = [entry.layer for entry in result.layers]
    names = [layer_name(x) for x in xs]
    span = (1 - ROW_GAP * (rows - 1)) / rows
    tops = [1 - row * (span + ROW_GAP) for row in range(rows)]  # row 0 on top
    worst = max(entry.rank for entry in result.layers)
    decades = [10**power for power in range(len(str(worst)) + 1)]  # 1, 10, 100, … past the worst rank
    layout: dict = {
        "height": 170 * rows + 80, "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "showlegend": False,
        "xaxis": {"anchor": _axis(rows - 1), "range": [min(xs) - 0.5, max(xs) + 0.5],
                  "dtick": 1 if len(xs) <= 40 else 4, "title": {"text": "after layer (−1: embeddings)"}},
        "annotations": [{"text": title, "x": 0.5, "y": top, "xref": "paper", "yref": "paper", "xanchor": "center",
                         "yanchor": "bottom", "showarrow": False, "font": {"size": 16}}
                        for title, top in zip(titles, tops, strict=False)],
        "shapes": [] if result.first_top1_layer is None else [
            {"type": "line", "x0": result.first_top1_layer, "x1": result.first_top1_layer, "xref": "x",
             "y0": 0, "y1": 1, "yref": f"{_axis(row)} domain", "line": {"dash": "dot", "color": "#e4572e"}}
            for row in range(rows)],
    }
    own_axes = [{"type": "log", "autorange": "reversed", "tickvals": decades}, {"range": [0, 1]}, {}]
    for row in range(rows):
        layout["yaxis" if row == 0 else f"yaxis{row + 1}"] = {"domain": [max(tops[row] - span, 0.0), tops[row]],
                                                              "anchor": "x", **own_axes[row]}
    data = [go.Scatter(x=xs, y=ys, mode="lines+markers", customdata=names, yaxis=_axis(row),
                       hovertemplate="after %{customdata}<br>%{y}<extra></extra>")
            for row, ys in enumerate(series[:rows])]
    return go.Figure(data=data, layout=layout)


def show_first_top1(result: LensResult) -> None:
    """The line naming the first layer after which the answer is the top-1 token (the answer quoted as typed)."""
    layer = result.first_top1_layer
    if layer is None:
        st.markdown(f"The answer {quoted(result.answer)} is never the top-1 token at the last position.")
    elif layer == -1:
        st.markdown(f"The answer {quoted(result.answer)} is first the top-1 token after the embeddings.")
    else:
        st.markdown(f"The answer {quoted(result.answer)} is first the top-1 token after layer {layer:d}.")


def lens_panel(result: LensResult, key: str = "pt_lens_chart") -> None:
    """The lens of one prompt as a chart and a table. The prompt tester reads it from its own forward
    (analyze_prompt(lens=True)): it needs no TransformerLens hook and no forward of its own, on a long prompt too."""
    show_first_top1(result)
    chart_col, table_col = st.columns([3, 2])
    figure = lens_figure(result)
    with chart_col:
        st.plotly_chart(present_figure(figure), width="stretch", key=key)
    with table_col:  # as tall as the chart beside it
        st.dataframe(lens_frame(result), hide_index=True, width="stretch", column_config=LENS_COLUMNS,
                     height=int(figure.layout.height))
