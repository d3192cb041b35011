"""Pieces of the ablation page: the summary, the values a normalization shows, the top-effects table, exports."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st

from components.text import md, plain, quoted
from headscope.ablation import SweepResult
from headscope.component import Component
from headscope.errors import HeadscopeError
from headscope.figures import NORMALIZATION_HELP as NORMALIZATION_HELP
from headscope.figures import NORMALIZATIONS as NORMALIZATIONS
from headscope.figures import grid_values as grid_values


def summary(result: SweepResult) -> None:
    if result.estimate:
        st.warning("**Estimate** (attribution patching: one forward and one backward pass, a first-order "
                   "approximation). Run the exact sweep before drawing conclusions.", icon=":material/speed:")
    if result.caution:
        st.warning(md(result.caution), icon=":material/warning:")
    cols = st.columns(6)
    cols[0].metric("Clean LD", f"{result.clean_ld:.3f}")
    cols[1].metric("Corrupted LD", "n/a" if result.corrupt_ld is None else f"{result.corrupt_ld:.3f}")
    cols[2].metric("Prompts", f"{result.n_prompts:d}")
    cols[3].metric("Tokens each", f"{result.seq_len:d}", help="BOS included")
    cols[4].metric("Method", md(result.method), "estimate" if result.estimate else "exact", delta_color="off",
                   delta_arrow="off")
    timing_metric(cols[5], result.seconds, result.cached, result.key)
    with st.expander(f"Prompts and notes · first prompt {quoted(result.first_prompt)}"):
        st.text(plain("Tokens of the first prompt (BOS included): " + " | ".join(result.token_labels)))
        for note in result.notes:
            st.caption(md(note))


def timing_metric(column, seconds: float, cached: bool, key: dict | None) -> None:
    """How long the result took: "Time 33.3 s" when just computed; one read from the results cache says "Computed in
    33.3 s · cached" (its time is the original computation's, on the device its help names, not this wait's)."""
    if not cached:
        column.metric("Time", f"{seconds:.1f} s")
        return
    device = (key or {}).get("device")
    column.metric("Computed in", f"{seconds:.1f} s", "cached", delta_color="off", delta_arrow="off",
                  help=md(f"Computed in {seconds:.1f} s{f' on {device}' if device else ''}; read back from the "
                          "results cache now."))


def top_effects_frame(result: SweepResult, heads_per_kv: int, k: int = 12) -> pd.DataFrame:
    normalized = result.normalized
    rows = []
    for top in result.top_heads(k):
        layer, head = top.layer, top.head
        row = {
            "head": result.cell_label(layer, head),
            "KV": head // heads_per_kv,
            "ablated LD": round(float(result.ablated_ld[layer, head]), 3),
            "% of clean": round(float(result.percent_of_clean[layer, head]), 1),
            "change": round(float(result.change[layer, head]), 3),
        }
        if normalized is not None:
            row["normalized"] = round(float(normalized[layer, head]), 3)
        rows.append(row)
    return pd.DataFrame(rows)


TOP_EFFECTS_COLUMNS = {
    "head": st.column_config.TextColumn("head", width="small"),
    "KV": st.column_config.NumberColumn("KV", width="small", help="the key/value head serving this query head"),
    "ablated LD": st.column_config.NumberColumn("ablated LD", format="%.3f"),
    "% of clean": st.column_config.NumberColumn("% of clean", format="%.1f"),
    "change": st.column_config.NumberColumn("change", format="%+.3f"),
    "normalized": st.column_config.NumberColumn("normalized", format="%.3f"),
}


def results_csv(result: SweepResult) -> str:
    """The whole grid, one row per head and per MLP."""
    normalized, mlp_normalized = result.normalized, result.mlp_normalized
    rows = []
    for layer in range(result.n_layers):
        for head in range(result.n_heads):
            rows.append({"layer": layer, "component": f"head {head}", "head": head,
                         "ablated_ld": result.ablated_ld[layer, head],
                         "percent_of_clean": result.percent_of_clean[layer, head],
                         "change": result.change[layer, head],
                         "normalized": None if normalized is None else normalized[layer, head]})
        if not np.isnan(result.mlp_ablated_ld[layer]):
            rows.append({"layer": layer, "component": "mlp", "head": None,
                         "ablated_ld": result.mlp_ablated_ld[layer],
                         "percent_of_clean": result.mlp_percent_of_clean[layer],
                         "change": result.mlp_ablated_ld[layer] - result.clean_ld,
                         "normalized": None if mlp_normalized is None else mlp_normalized[layer]})
    frame = pd.DataFrame(rows)
    frame["head"] = frame["head"].astype("Int64")  # whole numbers, empty for the MLP rows (not 3.0)
    buffer = io.StringIO()
    buffer.write(f"# model={result.model} task={result.task} method={result.method} estimate={result.estimate} "
                 f"n_prompts={result.n_prompts} clean_ld={result.clean_ld:.6f} corrupt_ld={result.corrupt_ld}\n")
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()


def head_pattern(model, prompt: str, layer: int, head: int) -> None:
    """The attention pattern of one head on a prompt (circuitsvis, inlined, offline)."""
    from components.circuits import SINGLE_MAX_WIDTH, circuits_frame
    from headscope.pattern_memo import shared_pattern_memo
    from headscope.patterns import single_head_view

    try:  # the first call on a model can take seconds: say what is being done meanwhile
        with st.spinner(f"Computing the attention pattern of head {layer:d}.{head:d}…", show_time=True):
            patterns = shared_pattern_memo().patterns(model, prompt, [Component(layer, head)])
    except HeadscopeError as error:
        st.error(md(str(error)))
        return
    circuits_frame(single_head_view(patterns, 0), description=f"attention pattern of head {layer}.{head}",
                   max_width=SINGLE_MAX_WIDTH)
