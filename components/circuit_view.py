"""Pieces of the circuit page: the circuit on the layer×head grid, the layered diagram of kept components, the score
line, the tables and exports, and the overlap of several circuits.

Grids are square scatter markers (as in components.heatmap): Plotly heatmaps send no clicks to Streamlit. Each cell's
customdata starts with (layer, head), head = EXTRA for the MLP column, so components.heatmap.click_from_event reads a
click on any of them. User text (task names of uploaded datasets, labels of uploaded circuits) goes only into Plotly
hover/legend text and dataframes, which Streamlit does not read as Markdown.
"""

from __future__ import annotations

import html
import io

import pandas as pd
import plotly.graph_objects as go

from components.heatmap import EXTRA
from headscope.circuit import CircuitComparison, CircuitResult, Component, component_label, letter

KEPT_COLOR = "#1f6fb4"
REMOVED_COLOR = "#e3e6ea"
MLP_KEPT_COLOR = "#d9822b"
SHARED_COLOR = "#2e7d32"
ONLY_COLORS = ["#1f6fb4", "#c62828", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037"]
SOME_COLOR = "#9e9d24"


def _x(head: int | None, n_heads: int) -> float:
    return n_heads + 0.6 if head is None else float(head)


def categorical_grid(
    n_layers: int,
    n_heads: int,
    categories: dict[Component, str],
    colors: dict[str, str],
    hover: dict[Component, str],
    *,
    title: str = "",
    selected: tuple[int, int] | None = None,
    background: str = "",
) -> go.Figure:
    """Every head (layer, head) and MLP (layer, None) as a square marker coloured by its category (one legend entry
    per category, in the order of `colors`); components without a category are drawn in `background`'s colour."""
    height = int(min(1100, max(380, 22 * n_layers + 140)))
    cell = max(6, min(40, int((height - 100) / max(n_layers, 1)) - 1))
    figure = go.Figure()
    everything = [(layer, head) for layer in range(n_layers) for head in [*range(n_heads), None]]
    for name, color in colors.items():
        cells = [c for c in everything if categories.get(c, background) == name]
        if not cells:
            continue
        figure.add_trace(go.Scatter(
            x=[_x(head, n_heads) for _, head in cells],
            y=[layer for layer, _ in cells],
            mode="markers",
            name=html.escape(name),
            customdata=[[layer, EXTRA if head is None else head] for layer, head in cells],
            hovertext=[html.escape(hover.get(c, component_label(c))) for c in cells],
            hovertemplate="%{hovertext}<extra></extra>",
            marker={"symbol": "square", "size": cell, "color": color, "line": {"width": 0}},
            selected={"marker": {"opacity": 1.0}},
            unselected={"marker": {"opacity": 1.0}},
        ))
    if selected is not None:
        layer, head = selected
        figure.add_trace(go.Scatter(
            x=[n_heads + 0.6 if head == EXTRA else head], y=[layer], mode="markers", hoverinfo="skip",
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


def circuit_grid(result: CircuitResult, selected: tuple[int, int] | None = None) -> go.Figure:
    """Kept heads, kept MLPs and removed components; hover says when each left and what each kept one is worth."""
    categories: dict[Component, str] = {}
    hover: dict[Component, str] = {}
    for layer in range(result.n_layers):
        for head in [*range(result.n_heads), None]:
            component = (layer, head)
            kept = result.removal_of(component) is None
            categories[component] = "removed" if not kept else "kept head" if head is not None else "kept MLP"
            hover[component] = f"{component_label(component)}: {component_status(result, component)}"
    kind = " (estimate)" if result.estimate else ""
    return categorical_grid(
        result.n_layers, result.n_heads, categories,
        {"kept head": KEPT_COLOR, "kept MLP": MLP_KEPT_COLOR, "removed": REMOVED_COLOR}, hover,
        title=f"{result.model} · {result.task} · {result.method} · circuit{kind}: {len(result.heads)} heads, "
              f"{len(result.mlps)} MLPs, {result.score:.1f}%",
        selected=selected,
    )


def layered_diagram(result: CircuitResult) -> go.Figure:
    """The kept components, one row per layer that keeps any (layer 0 at the bottom): heads at their head index,
    the MLP at the right; a marker's size and colour say how much the circuit loses without it."""
    rows = sorted({layer for layer, _ in result.heads} | set(result.mlps))
    xs, ys, texts, hovers, losses, symbols = [], [], [], [], [], []
    for effect in result.kept_effects:
        layer, head = effect.component
        loss = max(0.0, result.score - effect.score_without)
        xs.append(_x(head, result.n_heads))
        ys.append(rows.index(layer))
        texts.append(effect.label)
        hovers.append(f"{effect.label}: the circuit without it scores {effect.score_without:.1f}% "
                      f"({-loss:+.1f} points)")
        losses.append(loss)
        symbols.append("diamond" if head is None else "circle")
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
    """One row per component: kept or removed, when, and the scores."""
    rows = []
    for layer in range(result.n_layers):
        for head in [*range(result.n_heads), None]:
            component = (layer, head)
            removal = result.removal_of(component)
            effect = result.effect_of(component)
            rows.append({
                "layer": layer, "component": "mlp" if head is None else f"head {head}", "head": head,
                "kept": removal is None,
                "removal_step": None if removal is None else removal[0],
                "pass": None if removal is None else removal[1].pass_number,
                "score_after_removal": None if removal is None else removal[1].score_after,
                "score_without_it": None if effect is None else effect.score_without,
            })
    buffer = io.StringIO()
    buffer.write(f"# model={result.model} task={result.task} method={result.method} threshold={result.threshold:g} "
                 f"one_pass={result.one_pass} estimate={result.estimate} clean_ld={result.clean_ld:.6f} "
                 f"score={result.score:.4f} passes={result.passes}\n")
    pd.DataFrame(rows).to_csv(buffer, index=False)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Comparing circuits


def comparison_grid(comparison: CircuitComparison) -> go.Figure:
    """One grid: shared by all, only in one circuit (its letter), or in some of them."""
    n = len(comparison.circuits)
    colors = {"shared": SHARED_COLOR}
    for index in range(n):
        colors[f"only {letter(index)}"] = ONLY_COLORS[index % len(ONLY_COLORS)]
    for k in range(n - 1, 1, -1):
        colors[f"{k} of {n}"] = SOME_COLOR
    colors["in none"] = REMOVED_COLOR
    categories = {c: comparison.category(c) or "in none" for layer in range(comparison.n_layers)
                  for c in [(layer, h) for h in [*range(comparison.n_heads), None]]}
    hover = {}
    for component, category in categories.items():
        holders = comparison.membership.get(component, frozenset())
        names = ", ".join(letter(i) for i in sorted(holders)) or "none"
        hover[component] = f"{component_label(component)}: {category} (in {names})"
    return categorical_grid(comparison.n_layers, comparison.n_heads, categories, colors, hover,
                            title=f"Overlap of {n} circuits")


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
