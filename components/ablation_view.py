"""Pieces of the ablation page: the summary, the values a normalization shows, the top-effects table, exports."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st

from components.text import md, plain, quoted
from headscope.ablation import SweepResult
from headscope.errors import HeadscopeError

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
    cols[5].metric("Time", f"{result.seconds:.1f} s", "from cache" if result.cached else None, delta_color="off",
                   delta_arrow="off")
    with st.expander(f"Prompts and notes · first prompt {quoted(result.first_prompt)}"):
        st.text(plain("Tokens of the first prompt (BOS included): " + " | ".join(result.token_labels)))
        for note in result.notes:
            st.caption(md(note))


def top_effects_frame(result: SweepResult, heads_per_kv: int, k: int = 12) -> pd.DataFrame:
    normalized = result.normalized
    rows = []
    for layer, head in result.top_heads(k):
        row = {
            "head": f"{layer}.{head}",
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

    try:
        patterns = shared_pattern_memo().patterns(model, prompt, [(layer, head)])
    except HeadscopeError as error:
        st.error(md(str(error)))
        return
    circuits_frame(single_head_view(patterns, 0), description=f"attention pattern of head {layer}.{head}",
                   max_width=SINGLE_MAX_WIDTH)
