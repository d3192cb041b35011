"""Pieces of the Paths page: the views (sender → receivers, receiver ← senders, every head → logits), the head a
view is centred on and why a head cannot be one, the values the grid shows, the grid itself (invalid partners left
blank), the top-paths table, its intervals and the CSV exports. Free of page state, so each piece is tested on
its own."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from headscope.component import Component
from headscope.errors import InputError
from headscope.figures import layer_head_figure, plotly_text

if TYPE_CHECKING:
    from headscope.confidence import RankingConfidence
    from headscope.path_patching import PathQuery, PathResult

TITLE_LINE_PX = 18  # a 14 px title line
PathView = Literal["sender", "receiver", "logits"]
VIEWS: dict[PathView, str] = {
    "sender": "Sender → receivers",
    "receiver": "Receiver ← senders",
    "logits": "Every head → logits (direct effect)",
}
VIEW_HELP = (
    "Sender → receivers: one head S, and for each later head R the LD when only the path S → R carries S's changed "
    "value · Receiver ← senders: one head R, and each earlier head as the sender · Every head → logits: each head's "
    "path straight to the unembedding only (its direct effect)"
)
INTO_HELP = "which input of the receiving head the path feeds: its query, key or value (before the attention norm)"
INTO_GQA_NOTE = (
    "On this grouped-query model a head's key and value inputs are shared by its KV group ({group} query heads per "
    "key/value head): k and v patch the whole group's input (TransformerLens refuses k and v here). q stays per head."
)
DIRECTION_HELP = (
    "noise: run the clean prompts; the path carries the sender's ablated value (by the method), consistent with the "
    "ablation page · denoise: run the corrupted prompts; the path carries the sender's clean value (TransformerLens' "
    "convention, as its get_act_patch_direct_path)"
)


@dataclass(frozen=True)
class Shown:
    """What the grid shows: its name in the *Show* box, the colour bar's label, the value of "no effect" and the
    number format."""

    label: str
    no_effect: Literal["baseline", "one", "none"]
    value_format: str


SHOWN: dict[str, Shown] = {
    "change": Shown("Δ LD (patched − the run's LD)", "baseline", "+.3f"),
    "patched LD": Shown("LD with the path patched", "none", ".3f"),
    "normalized": Shown("(LD_patched − LD_corr)/(LD_clean − LD_corr)", "one", ".3f"),
}
SHOWN_HELP = (
    "change: the LD with the path patched minus the LD of the run it patches (the clean LD for noise, the corrupted "
    "LD for denoise); 0 = the path carries nothing · patched LD: the raw value · normalized: (LD_patched − LD_corr) "
    "/ (LD_clean − LD_corr), 1 = as clean, 0 = as corrupted (needs corrupted prompts)"
)


def default_head(view: PathView, n_layers: int) -> str:
    """The head a view starts on: a sender in the middle layer (later heads to receive from it), a receiver in the
    last layer (every earlier head can send to it)."""
    return f"{n_layers // 2}.0" if view == "sender" else f"{n_layers - 1}.0"


def read_head(view: PathView, text: str, n_layers: int, n_heads: int) -> tuple[Component | None, str | None]:
    """(the view's head, None), or (None, why `text` cannot be it: in words a user can act on)."""
    try:
        head = Component.parse(text)
    except ValueError:
        return None, f"Cannot read {text!r} as a {view} head: write it as layer.head, e.g. " \
                     f"{default_head(view, n_layers)}."
    try:
        query_for(view, head).check(n_layers, n_heads)
    except InputError as error:
        return None, str(error)
    return head, None


def query_for(view: PathView, head: Component | None, into: str = "q", direction: str = "noise",
              method: str = "resample") -> PathQuery:
    """The query of a view centred on `head` (none for every head → logits); method only where it applies (noise)."""
    from headscope.path_patching import PathQuery

    return PathQuery(sender=head if view == "sender" else None, receiver=head if view == "receiver" else None,
                     to_logits=view == "logits", into="q" if view == "logits" else into, direction=direction,
                     method=method if direction == "noise" else "resample")


def notebook_arguments(query: PathQuery) -> dict[str, object]:
    """The query as keyword arguments of the notebook's `model.paths(...)` (hs.Model.paths): heads as (layer, head)
    pairs, the logits by name, defaults left out (None)."""
    def pair(head: Component | None) -> tuple[int, int] | None:
        return None if head is None else (head.layer, head.head)

    return {"sender": pair(query.sender), "receiver": "logits" if query.to_logits else pair(query.receiver),
            "into": None if query.to_logits or query.into == "q" else query.into,
            "direction": None if query.direction == "noise" else query.direction,
            "method": None if query.method == "resample" else query.method}


def grouped_note(query: PathQuery, heads_per_kv: int) -> str:
    """What a K/V result on a grouped-query model means for the grid of its view."""
    if query.receiver is not None:
        first = query.receiver.head - query.receiver.head % heads_per_kv
        group = ", ".join(f"{query.receiver.layer}.{h}" for h in range(first, first + heads_per_kv))
        return (f"Grouped-query model: the {query.into} input of {query.receiver.label} is its KV group's ({group}): "
                "each path patches that group's input, so the values are those of every head of the group.")
    return (f"Grouped-query model: the {query.into} input is shared by a KV group of {heads_per_kv} query heads, so "
            "each path patches a group's input and every head of a group shows the group's value.")


def signed_change(value: float) -> str:
    """A change in LD with its sign, three decimals; one that rounds to zero keeps two significant digits instead of
    reading "-0.000"."""
    if value != 0 and abs(value) < 0.0005:
        return f"{value:+.2g}"
    return f"{value:+.3f}"


def centre_of(query: PathQuery) -> Component | None:
    """The head a result's view is centred on (None for every head → logits)."""
    return query.sender if query.sender is not None else query.receiver


def shown_values(result: PathResult, show: str) -> tuple[np.ndarray, float | None, Shown] | None:
    """(values[layer, head], the value of no effect, how it is shown); None where `show` needs what the result
    lacks (normalized without corrupted prompts)."""
    shown = SHOWN[show]
    if shown.no_effect == "baseline":
        return result.change, 0.0, shown
    if shown.no_effect == "one":
        if result.corrupt_ld is None or result.clean_ld == result.corrupt_ld:
            return None
        return (result.ld - result.corrupt_ld) / (result.clean_ld - result.corrupt_ld), 1.0, shown
    return result.ld, result.run_ld, shown


def describe(query: PathQuery) -> str:
    """The query in one line: which paths, into which input, which direction and method."""
    kind = (f"{query.method} ablation of the sender" if query.direction == "noise"
            else "the sender's clean value on the corrupted run")
    if query.to_logits:
        return f"every head → logits (direct effect) · {query.direction}: {kind}"
    where = f"{query.into} input"
    if query.sender is not None:
        return f"sender {query.sender.label} → each later head's {where} · {query.direction}: {kind}"
    return f"each earlier head → receiver {query.receiver.label}'s {where} · {query.direction}: {kind}"


def grid_title(result: PathResult) -> tuple[str, str]:
    """The grid's title in two lines (model and task; which paths): on one line it was wider than the page's map
    column at 1280 px and Plotly cut it (a Plotly title does not wrap)."""
    query = result.query
    if query.to_logits:
        what = "every head → logits"
    elif query.sender is not None:
        what = f"{query.sender.label} → receivers ({query.into})"
    else:
        what = f"senders → {query.receiver.label} ({query.into})"
    return f"{result.model} · {result.task}", f"{what} · {query.direction}"


def path_figure(result: PathResult, show: str = "change", selected: Component | None = None) -> go.Figure:
    """The layer × head grid of a path result: one square per valid partner, nothing drawn where a head is not one
    (the sender's own and earlier layers, ...); the head the view is centred on drawn as a black diamond."""
    values, no_effect, shown = shown_values(result, show) or shown_values(result, "patched LD")
    lines = grid_title(result)
    figure = layer_head_figure(values, title=max(lines, key=len), colorbar_title=shown.label, center=no_effect,
                               selected=selected, value_format=shown.value_format, diverging=no_effect is not None)
    # sized for its longer line; the second line gets a line's room above the plot
    figure.update_layout(title_text="<br>".join(plotly_text(line) for line in lines),
                         height=figure.layout.height + TITLE_LINE_PX,
                         margin_t=figure.layout.margin.t + TITLE_LINE_PX)
    cells = figure.data[0]
    valid = np.isfinite(np.asarray(cells.marker.color, dtype=float))
    cells.update(x=np.asarray(cells.x)[valid], y=np.asarray(cells.y)[valid],
                 customdata=np.asarray(cells.customdata)[valid],
                 marker={"color": np.asarray(cells.marker.color, dtype=float)[valid]})
    centre = centre_of(result.query)
    if centre is not None:
        figure.add_trace(go.Scatter(
            x=[centre.head], y=[centre.layer], mode="markers", hoverinfo="skip", showlegend=False,
            marker={"symbol": "diamond", "size": 12, "color": "#111"},
        ))
    return figure


def top_paths_frame(result: PathResult, heads_per_kv: int, k: int = 12) -> pd.DataFrame:
    """The k valid partners whose path moves the LD most (either sign)."""
    rows = [{"head": head.label, "KV": head.head // heads_per_kv, "patched LD": round(ld, 3),
             "change": round(ld - result.run_ld, 3)} for head, ld in result.top_paths(k)]
    return pd.DataFrame(rows, columns=["head", "KV", "patched LD", "change"])


def paths_csv(result: PathResult) -> str:
    """One row per head: its LD with its path patched and the change, empty where it is not a valid partner."""
    rows = []
    n_layers, n_heads = result.ld.shape
    for layer in range(n_layers):
        for head in range(n_heads):
            value = float(result.ld[layer, head])
            valid = bool(np.isfinite(value))
            rows.append({"layer": layer, "head": head, "valid_partner": valid,
                         "patched_ld": value if valid else None,
                         "change": value - result.run_ld if valid else None})
    query = result.query
    buffer = io.StringIO()
    centre = centre_of(query)
    buffer.write(f"# model={result.model} task={result.task} view={query.view} "
                 f"head={'' if centre is None else centre.label} into={query.into} direction={query.direction} "
                 f"method={query.method} n_prompts={result.n_prompts} clean_ld={result.clean_ld:.6f} "
                 f"corrupt_ld={result.corrupt_ld} kv_grouped={result.kv_grouped}\n")
    pd.DataFrame(rows).to_csv(buffer, index=False)
    return buffer.getvalue()


def file_stem(result: PathResult) -> str:
    query = result.query
    centre = centre_of(query)
    head = "" if centre is None else f"-{centre.layer}.{centre.head}"
    into = "" if query.to_logits else f"-{query.into}"
    return f"paths-{result.task}-{query.view}{head}{into}-{query.direction}-{query.method}"


def path_intervals_csv(result: PathResult, confidence: RankingConfidence) -> str:
    """Every partner's interval and top-k share, one row each (non-partners left out), how they were drawn in a
    comment line."""
    intervals, stability = confidence.intervals, confidence.stability
    n_layers, n_heads = result.ld.shape
    rows = [{"layer": layer, "head": head, "change": intervals.mean[layer, head], "low": intervals.low[layer, head],
             "high": intervals.high[layer, head], "crosses_zero": bool(intervals.crosses_zero[layer, head]),
             f"in_top_{stability.k}": stability.frequency[layer, head]}
            for layer in range(n_layers) for head in range(n_heads) if np.isfinite(intervals.mean[layer, head])]
    query = result.query
    centre = centre_of(query)
    return (f"# model={result.model} task={result.task} view={query.view} "
            f"head={'' if centre is None else centre.label} into={query.into} direction={query.direction} "
            f"method={query.method}; change = patched − run LD per prompt; {intervals.how}\n"
            + pd.DataFrame(rows).to_csv(index=False))
