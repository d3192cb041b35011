"""Ablation heatmap: which heads matter for a task, as a clickable layer×head map of a logit-difference metric."""

import numpy as np
import streamlit as st

from components.ablation_view import (
    NORMALIZATIONS,
    grid_values,
    head_pattern,
    results_csv,
    summary,
    top_effects_frame,
)
from components.heatmap import EXTRA, clickable_heatmap, layer_head_figure, png_download
from components.model_state import require_model
from headscope.ablation import CACHE_KIND, METHODS, SweepProgress, load_sweep, prepare_dataset, run_sweep
from headscope.errors import HeadscopeError
from headscope.results_cache import ResultsCache
from headscope.tasks import TASKS, build_task_dataset, load_dataset_text

st.title("Ablation heatmap")
st.caption(
    "LD = mean over prompts of logit[correct] − logit[incorrect] at the last input position (BOS included in the "
    "positions). Each cell ablates one head's output at every position; the MLP column ablates each layer's MLP."
)
model = require_model()
info = model.info
cache = ResultsCache()

source_col, method_col, view_col = st.columns([2, 1, 1])
with source_col:
    source = st.radio("Source of prompts", ["Built-in task", "Upload a dataset"], horizontal=True, key="ab_source")
    dataset = None
    try:
        if source == "Built-in task":
            task_col, n_col, seed_col = st.columns([2, 1, 1])
            task = task_col.selectbox("Task", list(TASKS), format_func=lambda name: f"{TASKS[name].title}: "
                                      f"{TASKS[name].example}", key="ab_task")
            n_prompts = n_col.number_input("Prompts", min_value=1, max_value=512, value=16, key="ab_n")
            seed = seed_col.number_input("Seed", min_value=0, value=0, key="ab_seed")
            dataset = build_task_dataset(task, int(n_prompts), seed=int(seed), model=model)
        else:
            upload = st.file_uploader(
                "CSV or JSON: prompt, correct, incorrect, optional corrupted_prompt", type=["csv", "json"],
                key="ab_upload",
            )
            if upload is not None:
                dataset = load_dataset_text(upload.getvalue().decode("utf-8", errors="replace"), upload.name)
    except HeadscopeError as error:
        st.error(str(error))
with method_col:
    method = st.selectbox("Method", METHODS, index=METHODS.index("mean"), key="ab_method",
                          help="zero: output set to 0 · mean: position-wise mean over the corrupted prompts (the "
                               "study's choice) · resample: the paired corrupted prompt's output (patching)")
    only_correct = st.checkbox("Only prompts the model gets right", value=False, key="ab_only_correct",
                               help="top-1 is the correct answer and P(correct) > 2·P(incorrect)")
with view_col:
    normalization = st.selectbox("Show", list(NORMALIZATIONS), key="ab_norm")

encoded = None
if dataset is not None:
    try:
        encoded = prepare_dataset(model, dataset)
    except HeadscopeError as error:
        st.error(str(error))

run_col, preview_col, clear_col, _ = st.columns([1, 1.3, 1, 2])
run_exact = run_col.button("Run exact sweep", type="primary", disabled=encoded is None, key="ab_run")
run_preview = preview_col.button("Instant estimate (attribution)", disabled=encoded is None, key="ab_preview")
if clear_col.button("Clear cached results", key="ab_clear"):
    removed = cache.clear(CACHE_KIND)
    st.session_state.pop("ab_result", None)
    st.toast(f"Removed {removed} cached sweep(s).")

result = None
if encoded is not None:
    # A sweep already on disk for exactly this configuration shows at once (e.g. precomputed from the CLI).
    result = (load_sweep(model, encoded, method, False, only_correct, cache)
              or load_sweep(model, encoded, method, True, only_correct, cache))
    if st.session_state.pop("ab_cancelled", False):
        st.info("The sweep was cancelled; nothing was stored.")
    if run_exact or run_preview:
        bar = st.progress(0.0, text="Starting…")
        # A click reruns the page, which stops the running sweep at its next progress report.
        cancel_slot = st.empty()
        cancel_slot.button("Cancel", key="ab_cancel", on_click=lambda: st.session_state.update(ab_cancelled=True))

        def progress(update: SweepProgress) -> None:
            eta = f" · about {update.eta_seconds:.0f} s left" if update.eta_seconds is not None else ""
            bar.progress(update.fraction, text=f"{100 * update.fraction:.0f}%{eta} · {update.message}")

        try:
            result = run_sweep(model, encoded, method, estimate=bool(run_preview), only_correct=only_correct,
                               cache=cache, progress=progress)
        except HeadscopeError as error:
            st.error(str(error))
        bar.empty()
        cancel_slot.empty()  # the run is over: nothing left to cancel
    if result is not None:
        st.session_state["ab_result"] = result

if result is None:
    result = st.session_state.get("ab_result")
    if result is not None:
        st.caption("Showing the last sweep (its configuration differs from the controls above).")

if result is None:
    st.info("Choose a task and press **Run exact sweep** (or the instant estimate). Results are cached on disk, so "
            "a sweep precomputed with `python -m headscope ablate` appears here at once.")
    st.stop()

summary(result)
values, mlp_values, center, label, fmt = grid_values(result, normalization)
if values is None:
    st.warning("Normalization to the corrupted baseline needs corrupted prompts; showing % of clean instead.")
    values, mlp_values, center, label, fmt = grid_values(result, "% of clean LD (study's score)")

selected = st.session_state.get("ab_selected")
figure = layer_head_figure(values, colorbar_title=label, center=center, extra_column=mlp_values,
                           selected=selected, value_format=fmt,
                           title=f"{result.model} · {result.task} · {result.method}"
                                 f"{' (estimate)' if result.estimate else ''}")
map_col, detail_col = st.columns([3, 2])
with map_col:
    # one chart key per sweep, the same whether the sweep was just computed or read back from the cache
    chart_key = f"ab_map_{result.key.get('dataset_hash', '')[:16]}_{result.method}_{result.estimate}"
    click = clickable_heatmap(figure, key=chart_key,
                              filename=f"ablation-{result.task}-{result.method}")
    if click is not None and (click.layer, click.head) != selected:
        st.session_state["ab_selected"] = (click.layer, click.head)
        st.rerun()
    grid_name = f"ablation-{result.task}-{result.method}{'-estimate' if result.estimate else ''}"
    down_csv, down_png = st.columns(2)
    down_csv.download_button("Download grid (CSV)", results_csv(result), file_name=f"{grid_name}.csv",
                             mime="text/csv", key="ab_csv")
    png_download(down_png, figure, f"{grid_name}.png", key="ab_png")
with detail_col:
    st.markdown("**Largest effects**")
    st.dataframe(top_effects_frame(result, info.n_heads // info.n_kv_heads, 12), hide_index=True, width="stretch")
    if selected is None:
        st.caption("Click a cell to see that head's attention pattern on the first prompt.")
    elif selected[1] == EXTRA:
        layer = selected[0]
        st.markdown(f"**MLP {layer}**: ablated LD {result.mlp_ablated_ld[layer]:.3f} "
                    f"({result.mlp_percent_of_clean[layer]:.1f}% of clean)")
    else:
        layer, head = selected
        st.markdown(f"**Head {layer}.{head}** (KV head {head // (info.n_heads // info.n_kv_heads)}): ablated LD "
                    f"{result.ablated_ld[layer, head]:.3f}, {result.percent_of_clean[layer, head]:.1f}% of clean, "
                    f"change {result.change[layer, head]:+.3f}")

if selected is not None and selected[1] != EXTRA and result.first_prompt:
    layer, head = selected
    if layer < info.n_layers and head < info.n_heads and not np.isnan(result.ablated_ld[layer, head]):
        st.subheader(f"Attention pattern of head {layer}.{head} on {result.first_prompt!r}")
        head_pattern(model, result.first_prompt, layer, head)
