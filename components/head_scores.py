"""A head-type score over every head: what it was computed on, a clickable layer×head heatmap and a sortable table.

Clicking a heatmap cell or selecting table rows picks heads; the page adds them to its pattern view.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components.heatmap import clickable_heatmap
from components.text import md, plain
from headscope.component import Component
from headscope.figures import scores_figure
from headscope.results_cache import key_digest
from headscope.scores import HeadScores


def list_usage_table(result: HeadScores) -> None:
    """Which ordinal lists the successor and copying scores could use for this tokenizer, and why not."""
    # a static table: its cells wrap, where a dataframe's cut a reason short ("200 of 200 members are several token…")
    st.table(pd.DataFrame([{"list": plain(usage.name), "members": len(usage.members),
                            "usable": "yes" if usage.usable else "no", "why not": plain(usage.reason)}
                           for usage in result.lists]), hide_index=True)


def head_scores_panel(result: HeadScores, key: str) -> list[Component]:
    """Render the score; returns the heads newly picked in this run (a heatmap click, table rows selected)."""
    origin = "Loaded from the results cache" if result.cached else f"Computed in {result.compute_seconds:.1f} s"
    st.caption(md(f"{result.title} on {result.inputs}.") + " " + md(origin) + ". Click a cell of the map (or select "
               "rows of the table) to add that head to the pattern view.")
    for note in result.notes:
        st.caption(":material/info: " + md(note))
    if result.lists:
        list_usage_table(result)
    figure = scores_figure(result)  # the notebook's figure too (headscope.figures)
    # the widgets' keys name what was scored: a row selection (an index) never carries over to a table of other
    # inputs, where the same index is another head
    scored = f"{result.score}_{key_digest(result.key or {'inputs': result.inputs})[:12]}"
    click = clickable_heatmap(figure, key=f"{key}_heatmap_{scored}", filename=f"{result.score}-scores")
    rows = result.rows()
    event = st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        height=320,
        on_select="rerun",
        selection_mode="multi-row",
        key=f"{key}_table_{scored}",
        column_config={"score": st.column_config.NumberColumn(format="%.4f")},
    )
    picked = [click.component] if click is not None else []
    try:
        selected_rows = list(event.selection.rows)
    except AttributeError:
        selected_rows = []
    picked += [Component(rows[i]["layer"], rows[i]["head"]) for i in selected_rows if 0 <= i < len(rows)]
    # A selection persists across reruns: report only what was not picked in the previous run.
    seen_key = f"{key}_seen_{result.score}"
    previous = st.session_state.get(seen_key, frozenset())
    st.session_state[seen_key] = frozenset(picked)
    return [head for head in picked if head not in previous]
