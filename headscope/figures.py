"""The figures of headscope's results, drawn the same on the pages and in a notebook: the layer × head map of a sweep or
a head score, the circuit on its grid, and the circuitsvis views of attention patterns. Free of Streamlit: the pages
(components/) render these figures, and the results of the Python API draw themselves with them (`_repr_html_`).

Grids are square scatter markers, one per cell, with the (layer, head) in customdata: Plotly heatmaps (go.Heatmap,
px.imshow) send no selection events to Streamlit, scatter points do. An optional extra column (each layer's MLP) sits
to the right; a click on it reports head EXTRA.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from headscope.component import Component, every_component
from headscope.tokens import reveal_invisible

if TYPE_CHECKING:
    from headscope.ablation import SweepResult
    from headscope.circuit import CircuitResult
    from headscope.circuit_compare import CircuitComparison
    from headscope.patterns import AttentionPatterns
    from headscope.scores import HeadScores


def plotly_text(text: object) -> str:
    """`text` for Plotly titles, axis tick labels and hover text: its pseudo-HTML (`<b>`, `<br>`, `<a href>`) and
    entities shown literally; invisible characters revealed."""
    return html.escape(reveal_invisible(str(text)), quote=False)


EXTRA = -1  # the head index a cell of the extra column carries in its customdata (Plotly holds numbers only)


def cell_x(component: Component, n_heads: int) -> float:
    """Where a component's cell sits on the x axis: its head index, or the extra column for an MLP."""
    return n_heads + 0.6 if component.head is None else float(component.head)


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
    selected: Component | None = None,
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
        figure.add_trace(go.Scatter(
            x=[cell_x(selected, n_heads)], y=[selected.layer], mode="markers", hoverinfo="skip", showlegend=False,
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


# name (what the "Show" box and the URL say) -> (what the colour bar says, the value of "no effect", number format)
NORMALIZATIONS = {
    "% of clean LD": ("% of clean LD", 100.0, ".1f"),
    "change from clean": ("Δ LD", 0.0, "+.3f"),
    "normalized": ("(LD_abl − LD_corr)/(LD_clean − LD_corr)", 1.0, ".3f"),
    "ablated LD": ("ablated LD", None, ".3f"),
}
NORMALIZATION_HELP = (
    "% of clean LD: the study's score, 100 · LD_ablated / LD_clean (100 = no effect) · change from clean: "
    "LD_ablated − LD_clean · normalized: (LD_abl − LD_corr) / (LD_clean − LD_corr), 1 = no effect, 0 = as bad as the "
    "corrupted prompts (needs corrupted prompts) · ablated LD: the raw value"
)


def grid_values(result: SweepResult, normalization: str):
    """(values[layer, head], mlp[layer], centre, colour-bar label, format); values None when unavailable."""
    label, center, fmt = NORMALIZATIONS[normalization]
    if normalization.startswith("%"):
        return result.percent_of_clean, result.mlp_percent_of_clean, center, label, fmt
    if normalization.startswith("change"):
        return result.change, result.mlp_ablated_ld - result.clean_ld, center, label, fmt
    if normalization.startswith("normalized"):
        return result.normalized, result.mlp_normalized, center, label, fmt
    return result.ablated_ld, result.mlp_ablated_ld, result.clean_ld, label, fmt


KEPT_COLOR = "#1f6fb4"
REMOVED_COLOR = "#e3e6ea"
MLP_KEPT_COLOR = "#d9822b"
SHARED_COLOR = "#2e7d32"
ONLY_COLORS = ["#1f6fb4", "#c62828", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037"]
SOME_COLOR = "#9e9d24"


def categorical_grid(
    n_layers: int,
    n_heads: int,
    categories: dict[Component, str],
    colors: dict[str, str],
    hover: dict[Component, str],
    *,
    title: str = "",
    selected: Component | None = None,
    background: str = "",
) -> go.Figure:
    """Every head and MLP as a square marker coloured by its category (one legend entry
    per category, in the order of `colors`); components without a category are drawn in `background`'s colour."""
    height = int(min(1100, max(380, 22 * n_layers + 140)))
    cell = max(6, min(40, int((height - 100) / max(n_layers, 1)) - 1))
    figure = go.Figure()
    everything = every_component(n_layers, n_heads)
    for name, color in colors.items():
        cells = [c for c in everything if categories.get(c, background) == name]
        if not cells:
            continue
        figure.add_trace(go.Scatter(
            x=[cell_x(c, n_heads) for c in cells],
            y=[c.layer for c in cells],
            mode="markers",
            name=html.escape(name),
            customdata=[[c.layer, EXTRA if c.head is None else c.head] for c in cells],
            hovertext=[html.escape(hover.get(c, c.label)) for c in cells],
            hovertemplate="%{hovertext}<extra></extra>",
            marker={"symbol": "square", "size": cell, "color": color, "line": {"width": 0}},
            selected={"marker": {"opacity": 1.0}},
            unselected={"marker": {"opacity": 1.0}},
        ))
    if selected is not None:
        figure.add_trace(go.Scatter(
            x=[cell_x(selected, n_heads)], y=[selected.layer], mode="markers", hoverinfo="skip",
            showlegend=False, marker={"symbol": "square-open", "size": cell + 2, "color": "#111", "line": {"width": 2}},
        ))
    figure.update_layout(
        title={"text": html.escape(title), "x": 0.01, "xanchor": "left", "font": {"size": 14}},
        height=height,
        margin={"l": 50, "r": 20, "t": 80 if title else 40, "b": 50},
        xaxis={"title": "head", "tickvals": [*range(n_heads), n_heads + 0.6],
               "ticktext": [str(h) for h in range(n_heads)] + ["MLP"], "showgrid": False, "zeroline": False,
               "range": [-0.7, n_heads + 1.3]},
        yaxis={"title": "layer", "showgrid": False, "zeroline": False, "range": [-0.7, n_layers - 0.3],
               "dtick": 1 if n_layers <= 40 else 4},
        plot_bgcolor="#f7f8fa",
        clickmode="event+select",
        dragmode=False,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
    )
    return figure


def component_status(result: CircuitResult, component: Component) -> str:
    """'kept; the circuit without it scores 61.2%' or 'removed at step 12 (pass 1), score after 83.0%'."""
    effect = result.effect_of(component)
    if effect is not None:
        return f"kept; the circuit without it scores {effect.score_without:.1f}%"
    removal = result.removal_of(component)
    if removal is not None:
        step, r = removal
        return f"removed at step {step} (pass {r.pass_number}), score after {r.score_after:.1f}%"
    return "not part of this model"


def circuit_grid(result: CircuitResult, selected: Component | None = None) -> go.Figure:
    """Kept heads, kept MLPs and removed components; hover says when each left and what each kept one is worth."""
    categories: dict[Component, str] = {}
    hover: dict[Component, str] = {}
    for component in every_component(result.n_layers, result.n_heads):
        kept = result.removal_of(component) is None
        categories[component] = "removed" if not kept else "kept head" if component.is_head else "kept MLP"
        hover[component] = f"{component.label}: {component_status(result, component)}"
    kind = " (estimate)" if result.estimate else ""
    return categorical_grid(
        result.n_layers, result.n_heads, categories,
        {"kept head": KEPT_COLOR, "kept MLP": MLP_KEPT_COLOR, "removed": REMOVED_COLOR}, hover,
        title=f"{result.model} · {result.task} · {result.method} · circuit{kind}: {len(result.heads)} heads, "
              f"{len(result.mlps)} MLPs, {result.score:.1f}%",
        selected=selected,
    )


def comparison_grid(comparison: CircuitComparison) -> go.Figure:
    """One grid: shared by all, only in one circuit (its letter), or in some of them."""
    from headscope.circuit_compare import letter

    n = len(comparison.circuits)
    colors = {"shared": SHARED_COLOR}
    for index in range(n):
        colors[f"only {letter(index)}"] = ONLY_COLORS[index % len(ONLY_COLORS)]
    for k in range(n - 1, 1, -1):
        colors[f"{k} of {n}"] = SOME_COLOR
    colors["in none"] = REMOVED_COLOR
    categories = {c: comparison.category(c) or "in none"
                  for c in every_component(comparison.n_layers, comparison.n_heads)}
    hover = {}
    for component, category in categories.items():
        holders = comparison.membership.get(component, frozenset())
        names = ", ".join(letter(i) for i in sorted(holders)) or "none"
        hover[component] = f"{component.label}: {category} (in {names})"
    return categorical_grid(comparison.n_layers, comparison.n_heads, categories, colors, hover,
                            title=f"Overlap of {n} circuits")


def sweep_figure(result: SweepResult, show: str = "% of clean LD", selected: Component | None = None
                 ) -> go.Figure:
    """The ablation page's map of a sweep: `show` is one of NORMALIZATIONS (the page's *Show*); "normalized" without
    corrupted prompts falls back to % of clean, as on the page."""
    values, mlp_values, center, label, fmt = grid_values(result, show)
    if values is None:
        values, mlp_values, center, label, fmt = grid_values(result, "% of clean LD")
    return layer_head_figure(values, colorbar_title=label, center=center, extra_column=mlp_values, selected=selected,
                             value_format=fmt, title=f"{result.model} · {result.task} · {result.method}"
                                                     f"{' · KV groups' if result.unit == 'kv-group' else ''}"
                                                     f"{' (estimate)' if result.estimate else ''}")


def scores_figure(result: HeadScores) -> go.Figure:
    """A head-type score over every head (not diverging: scores run from 0 up)."""
    return layer_head_figure(result.scores, title=result.title, colorbar_title=result.score, center=None,
                             diverging=False)


# ---------------------------------------------------------------------------------------------------------------
# In a notebook: a figure or a circuitsvis page as one self-contained frame (no CDN, no notebook extension)


def framed(page: str, height: int) -> str:
    """A whole HTML page inside an iframe (srcdoc): its scripts run the same in Jupyter, JupyterLab, VS Code and Colab,
    and nothing of it leaks into the notebook's own page."""
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width: 100%; height: {height}px; border: 0" '
            'sandbox="allow-scripts"></iframe>')


def figure_html(figure: go.Figure) -> str:
    """The figure as a notebook output, with plotly.js inlined (offline; about 4 MB per figure)."""
    page = figure.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    height = int(figure.layout.height or 500) + 30
    return framed(page, height)


def patterns_html(result: AttentionPatterns, single_index: int = 0) -> str:
    """The attention page's views (grid, single head, KV table) with circuitsvis' bundle inlined."""
    from headscope.patterns import standalone_html

    return framed(standalone_html(result, single_index), 1100)
