"""A layer×head heatmap whose cells can really be clicked.

Plotly heatmaps (go.Heatmap, px.imshow) send no selection events to Streamlit, so the grid is drawn as a scatter of
square markers, one per cell, with the (layer, head) in customdata: a click selects a point, and
st.plotly_chart(on_select="rerun") returns it. An optional extra column (e.g. each layer's MLP) sits to the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st

EXTRA = -1  # the head index reported for a click in the extra column


@dataclass(frozen=True)
class CellClick:
    layer: int
    head: int  # EXTRA for the extra column


def layer_head_figure(
    values: np.ndarray,
    *,
    title: str = "",
    colorbar_title: str = "",
    center: float | None = 0.0,
    extra_column: np.ndarray | None = None,
    extra_label: str = "MLP",
    selected: tuple[int, int] | None = None,
    value_format: str = ".3f",
    height: int | None = None,
    diverging: bool = True,
) -> go.Figure:
    """values[layer, head] as square markers, layer 0 at the bottom; a diverging scale centred on `center`."""
    n_layers, n_heads = values.shape
    layers, heads = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    xs = heads.ravel().astype(float)
    ys = layers.ravel().astype(float)
    colors = values.ravel().astype(float)
    custom = np.stack([ys, xs, colors], axis=1)
    if extra_column is not None:
        extra_x = n_heads + 0.6
        xs = np.concatenate([xs, np.full(n_layers, extra_x)])
        ys = np.concatenate([ys, np.arange(n_layers, dtype=float)])
        colors = np.concatenate([colors, extra_column.astype(float)])
        custom = np.concatenate(
            [custom, np.stack([np.arange(n_layers), np.full(n_layers, EXTRA), extra_column], axis=1)]
        )
    finite = colors[np.isfinite(colors)]
    if diverging and center is not None:
        spread = float(np.max(np.abs(finite - center))) if finite.size else 1.0
        spread = spread or 1.0
        color_range = {"cmin": center - spread, "cmax": center + spread, "colorscale": "RdBu_r"}
    else:
        color_range = {"cmin": float(finite.min()) if finite.size else 0.0,
                       "cmax": float(finite.max()) if finite.size else 1.0, "colorscale": "Viridis"}
    height = height or int(min(1100, max(360, 22 * n_layers + 120)))
    plot_height = height - 90
    cell = max(6, min(40, int(plot_height / max(n_layers, 1)) - 1))
    hover = (
        "layer %{customdata[0]:.0f}, head %{customdata[1]:.0f}<br>" f"{colorbar_title or 'value'} "
        f"%{{customdata[2]:{value_format}}}<extra></extra>"
    )
    figure = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            customdata=custom,
            hovertemplate=hover,
            marker={
                "symbol": "square",
                "size": cell,
                "color": colors,
                **color_range,
                "colorbar": {"title": {"text": colorbar_title}},
                "line": {"width": 0},
            },
            selected={"marker": {"opacity": 1.0}},
            unselected={"marker": {"opacity": 1.0}},
        )
    )
    if extra_column is not None:
        figure.data[0].hovertemplate = hover  # the extra column's hover shows head -1; relabelled below
        figure.add_annotation(x=n_heads + 0.6, y=n_layers - 0.3, text=extra_label, showarrow=False, yshift=14)
    if selected is not None:
        sel_layer, sel_head = selected
        sel_x = n_heads + 0.6 if sel_head == EXTRA else sel_head
        figure.add_trace(go.Scatter(
            x=[sel_x], y=[sel_layer], mode="markers", hoverinfo="skip", showlegend=False,
            marker={"symbol": "square-open", "size": cell + 2, "color": "#111", "line": {"width": 2}},
        ))
    tick_x = list(range(n_heads)) + ([n_heads + 0.6] if extra_column is not None else [])
    tick_text = [str(h) for h in range(n_heads)] + ([extra_label] if extra_column is not None else [])
    figure.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 14}},
        height=height,
        margin={"l": 50, "r": 20, "t": 70 if title else 30, "b": 50},
        xaxis={"title": "head", "tickvals": tick_x, "ticktext": tick_text, "showgrid": False, "zeroline": False,
               "range": [-0.7, (n_heads + 1.3) if extra_column is not None else n_heads - 0.3]},
        yaxis={"title": "layer", "showgrid": False, "zeroline": False, "range": [-0.7, n_layers - 0.3],
               "dtick": 1 if n_layers <= 40 else 4},
        plot_bgcolor="#f4f5f7",
        clickmode="event+select",
        dragmode=False,
        showlegend=False,
    )
    return figure


def clickable_heatmap(figure: go.Figure, key: str, filename: str = "heatmap") -> CellClick | None:
    """Render the figure; returns the clicked cell (layer, head) or None."""
    event = st.plotly_chart(
        figure,
        key=key,
        on_select="rerun",
        selection_mode="points",
        width="stretch",
        config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}},
    )
    return click_from_event(event)


def click_from_event(event) -> CellClick | None:
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points:
        data = point.get("customdata")
        if isinstance(data, dict):  # Streamlit hands customdata back as {"0": layer, "1": head, ...}
            data = [data.get(str(i), data.get(i)) for i in range(len(data))]
        if data and len(data) >= 2 and data[0] is not None and data[1] is not None:
            return CellClick(round(float(data[0])), round(float(data[1])))
    return None


def png_download(container, figure: go.Figure, file_name: str, key: str) -> None:
    """A PNG of the figure, rendered server-side by kaleido (headless Chromium) when the button is clicked.

    The chart's own toolbar (camera icon) also saves a PNG, in the browser.
    """
    import plotly.io as pio

    def render() -> bytes:
        return pio.to_image(figure, format="png", width=1000, height=figure.layout.height or 700, scale=2)

    container.download_button("Download figure (PNG)", render, file_name=file_name, mime="image/png", key=key)
