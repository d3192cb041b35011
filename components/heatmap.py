"""A layer×head heatmap whose cells can really be clicked: the figure is headscope.figures' (square scatter markers
with the (layer, head) in customdata, the same in a notebook); st.plotly_chart(on_select="rerun") returns the click.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

from headscope.component import Component
from headscope.figures import EXTRA, cell_x, grid_layout, layer_head_figure

__all__ = ["EXTRA", "CellClick", "cell_x", "click_from_event", "clickable_heatmap", "grid_layout", "layer_head_figure",
           "parse_head", "png_download", "show_head"]


@dataclass(frozen=True)
class CellClick:
    layer: int
    head: int  # EXTRA for the extra column

    @property
    def component(self) -> Component:
        """The clicked head, or the layer's MLP for a click in the extra column."""
        return Component(self.layer, None if self.head == EXTRA else self.head)



def clickable_heatmap(figure: go.Figure, key: str, filename: str = "heatmap",
                      on_click: Callable[[CellClick], None] | None = None) -> CellClick | None:
    """Render the figure; returns the clicked cell (layer, head) or None.

    With `on_click`, a click is handed to it before the page's next run (a callback): the page then runs once per
    click, already with the new selection, instead of twice (one run to read the click, a second to show it)."""

    def clicked() -> None:
        cell = click_from_event(st.session_state.get(key))
        if cell is not None and on_click is not None:
            on_click(cell)

    event = st.plotly_chart(
        figure,
        key=key,
        on_select="rerun" if on_click is None else clicked,
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


def parse_head(text: str, n_layers: int, n_heads: int) -> Component | None:
    """'23.3' -> head 3 of layer 23; 'mlp12' -> layer 12's MLP; anything else or out of range -> None."""
    try:
        component = Component.parse(text)
    except ValueError:
        return None
    return component if component.within(n_layers, n_heads) else None


def show_head(selected: Component) -> str:
    """How the URL carries a component ('23.3', 'mlp12')."""
    return selected.url_text
