"""A layer×head heatmap whose cells can really be clicked.

Plotly heatmaps (go.Heatmap, px.imshow) send no selection events to Streamlit, so the grid is drawn as a scatter of
square markers, one per cell, with the (layer, head) in customdata: a click selects a point, and
st.plotly_chart(on_select="rerun") returns it. An optional extra column (e.g. each layer's MLP) sits to the right.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from components.text import plotly_text

EXTRA = -1  # the head index reported for a click in the extra column


@dataclass(frozen=True)
class CellClick:
    layer: int
    head: int  # EXTRA for the extra column


# Pixel layout: one data unit is `cell` px on both axes, so markers of `cell` px are squares that tile the grid.
_PLOT_MAX_HEIGHT = 640
_PLOT_MAX_WIDTH = 560
_MARGIN_LEFT, _MARGIN_BOTTOM = 56, 50
_COLORBAR_SPACE = 120  # right margin: colour bar (its title written sideways) and its tick labels
_TITLE_CHAR_PX = 7.6  # a 14 px title character, for widening the margin so the title is not cut off


@dataclass(frozen=True)
class GridLayout:
    """Cell size and figure size in pixels for an n_layers × n_columns grid (x and y spans in data units)."""

    cell: int
    x_span: float
    y_span: float
    width: int
    height: int
    margin_right: int
    margin_top: int


def grid_layout(n_layers: int, n_heads: int, extra_column: bool, title: str = "") -> GridLayout:
    """Square cells: the plot area is `cell` px per unit on both axes; a long title widens the right margin, never
    the plot, so the cells stay square."""
    x_span = n_heads + (2.0 if extra_column else 0.4)  # ranges below: [-0.7, n_heads + 1.3] or [-0.7, n_heads - 0.3]
    y_span = n_layers + 0.4
    cell = int(max(8, min(28, _PLOT_MAX_HEIGHT / y_span, _PLOT_MAX_WIDTH / x_span)))
    plot_width, plot_height = round(cell * x_span), round(cell * y_span)
    margin_top = 60 if title else 24
    margin_right = max(_COLORBAR_SPACE, round(len(title) * _TITLE_CHAR_PX) - plot_width - _MARGIN_LEFT + 20)
    return GridLayout(cell, x_span, y_span, _MARGIN_LEFT + plot_width + margin_right,
                      margin_top + plot_height + _MARGIN_BOTTOM, margin_right, margin_top)


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
    diverging: bool = True,
) -> go.Figure:
    """values[layer, head] as square markers, layer 0 at the bottom; a diverging scale centred on `center`.

    `title` and `colorbar_title` are shown as typed (Plotly's pseudo-HTML escaped)."""
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
    shown_title = plotly_text(title)
    shown_bar_title = plotly_text(colorbar_title)
    layout = grid_layout(n_layers, n_heads, extra_column is not None, title)
    cell = layout.cell
    hover = (
        "layer %{customdata[0]:.0f}, head %{customdata[1]:.0f}<br>" f"{shown_bar_title or 'value'} "
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
                "size": max(cell - 1, 4),  # a 1 px seam between cells
                "color": colors,
                **color_range,
                "colorbar": {"title": {"text": shown_bar_title, "side": "right"}, "thickness": 14, "x": 1.0,
                             "xanchor": "left", "xpad": 12, "len": 1.0},
                "line": {"width": 0},
            },
            selected={"marker": {"opacity": 1.0}},
            unselected={"marker": {"opacity": 1.0}},
        )
    )
    if extra_column is not None:
        figure.add_annotation(x=n_heads + 0.6, y=n_layers - 0.3, text=plotly_text(extra_label), showarrow=False,
                              yshift=14)
    if selected is not None:
        sel_layer, sel_head = selected
        sel_x = n_heads + 0.6 if sel_head == EXTRA else sel_head
        figure.add_trace(go.Scatter(
            x=[sel_x], y=[sel_layer], mode="markers", hoverinfo="skip", showlegend=False,
            marker={"symbol": "square-open", "size": cell + 2, "color": "#111", "line": {"width": 2}},
        ))
    tick_x = list(range(n_heads)) + ([n_heads + 0.6] if extra_column is not None else [])
    tick_text = [str(h) for h in range(n_heads)] + ([plotly_text(extra_label)] if extra_column is not None else [])
    figure.update_layout(
        title={"text": shown_title, "x": 0, "xref": "paper", "xanchor": "left", "font": {"size": 14}},
        width=layout.width,
        height=layout.height,
        margin={"l": _MARGIN_LEFT, "r": layout.margin_right, "t": layout.margin_top, "b": _MARGIN_BOTTOM,
                "autoexpand": False},
        xaxis={"title": "head", "tickvals": tick_x, "ticktext": tick_text, "showgrid": False, "zeroline": False,
               "range": [-0.7, (n_heads + 1.3) if extra_column is not None else n_heads - 0.3], "fixedrange": True},
        yaxis={"title": "layer", "showgrid": False, "zeroline": False, "range": [-0.7, n_layers - 0.3],
               "dtick": 1 if n_layers <= 40 else 4, "fixedrange": True},
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
        width="content",  # the figure's own width: cells stay square
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


@functools.lru_cache(maxsize=16)
def figure_png(figure_json: str) -> bytes:
    """The figure as a PNG (kaleido, headless Chromium), at its own size ×2; cached per figure (the download runs in
    the server's request thread, outside any script run)."""
    import plotly.io as pio

    figure = pio.from_json(figure_json)
    return pio.to_image(figure, format="png", scale=2)


def png_download(container, figure: go.Figure, file_name: str, key: str) -> None:
    """A PNG of the figure, rendered server-side when the button is clicked (the chart's camera icon also saves one).

    The button does not rerun the page (on_click="ignore"), and neither does the page's CSV button: a rerun gives
    every deferred download a new file id, and a click on the old id in between fails ("Deferred file not found").
    """
    figure_json = figure.to_json()
    container.download_button("Download figure (PNG)", lambda: figure_png(figure_json), file_name=file_name,
                              mime="image/png", key=key, on_click="ignore", icon=":material/image:")


def parse_head(text: str, n_layers: int, n_heads: int) -> tuple[int, int] | None:
    """'23.3' -> (23, 3); 'mlp12' -> (12, EXTRA); anything else or out of range -> None."""
    text = text.strip().lower()
    try:
        if text.startswith("mlp"):
            layer, head = int(text[3:]), EXTRA
        else:
            layer_text, head_text = text.split(".")
            layer, head = int(layer_text), int(head_text)
    except ValueError:
        return None
    if not 0 <= layer < n_layers or not (head == EXTRA or 0 <= head < n_heads):
        return None
    return layer, head


def show_head(selected: tuple[int, int]) -> str:
    layer, head = selected
    return f"mlp{layer}" if head == EXTRA else f"{layer}.{head}"
