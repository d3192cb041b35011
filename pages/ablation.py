"""Ablation heatmap: which heads matter for a task, as a clickable layer×head map of a logit-difference metric.

The inputs live in the URL (source, task, n, seed, method, show, only_correct; for an upload the dataset's name and
content hash) and so does the selected head (`head=23.3`, `head=mlp12`): a link reopens the view, its sweep read
back from the results cache.
"""

import numpy as np
import streamlit as st

from components.ablation_view import (
    NORMALIZATION_HELP,
    NORMALIZATIONS,
    TOP_EFFECTS_COLUMNS,
    grid_values,
    head_pattern,
    results_csv,
    summary,
    top_effects_frame,
)
from components.clear_cache import clear_cached_button
from components.confidence_view import confidence_section, estimate_vs_exact
from components.datasets import (
    BUILT_IN,
    UPLOAD,
    chosen_prompts,
    encoded_choice,
    task_dataset,
    upload_in_url,
    uploaded_dataset,
)
from components.head_writes import head_writes_panel
from components.heatmap import clickable_heatmap, parse_head, png_download, show_head
from components.logit_attribution import (
    DIRECT,
    direct_effects,
    direct_vs_total,
    dla_code,
    dla_confidence_section,
    dla_csv,
    dla_figure,
    effect_choice,
    sum_check,
)
from components.long_run import progress_with_cancel, say_if_stopped, within_time_limit
from components.model_state import active_request, require_model
from components.preload import preload_result_elements
from components.presentation import controls, present_figure, settings_line
from components.share import BOUND, copy_link, set_url_value, task_arguments, url_value
from components.text import md, plural, quoted
from headscope.ablation import CACHE_KIND, METHODS, cached_sweeps, load_sweep, run_sweep
from headscope.api import call_code, notebook_code
from headscope.errors import HeadscopeError
from headscope.figures import sweep_figure
from headscope.job_time import sweep_estimate
from headscope.methods import methods_help
from headscope.results_cache import ResultsCache
from headscope.units import SWEEP_UNITS, UNIT_NAMES, units_help

SELECTED = "ab_selected"  # a Component (head or MLP), mirrored in the URL as head=
LAST = "ab_result"  # (model identity, the last sweep shown): shown again only under the same model
ASKED = "ab_asked"  # "estimate" or "exact": what this session last asked for


title_col, link_col = st.columns([4, 1], vertical_alignment="bottom")
title_col.title("Ablation heatmap")
line = st.empty()  # presentation mode: the view's settings, in one line under the title
st.caption(
    "LD = mean over prompts of logit[correct] − logit[incorrect] at the last input position (BOS included in the "
    "positions). Each cell ablates one head's output at every position; the MLP column ablates each layer's MLP."
)
model = require_model(hooks=True)
info = model.info
cache = ResultsCache()

say_if_stopped("ab")

with controls():
    source = st.radio("Source of prompts", [BUILT_IN, UPLOAD], horizontal=True, key="source", **BOUND)
    inputs_col, method_col, view_col = st.columns([3, 1, 1.3])
    dataset = None
    with inputs_col:
        dataset = task_dataset(model) if source == BUILT_IN else uploaded_dataset("ab_upload")
    with method_col:
        method = st.selectbox("Method", METHODS, index=METHODS.index("mean"), key="method", **BOUND,
                              help=md(methods_help()))
    with view_col:
        normalization = st.selectbox("Show", list(NORMALIZATIONS), key="show", help=md(NORMALIZATION_HELP), **BOUND)
    only_correct = st.checkbox("Only prompts the model gets right", value=False, key="only_correct", **BOUND,
                               help="top-1 is the correct answer and P(correct) > 2·P(incorrect)")
    unit = "head"  # a choice only where query heads share key/value heads (grouped-query attention)
    if info.n_kv_heads < info.n_heads:
        unit = st.radio("Unit", UNIT_NAMES, format_func=lambda name: SWEEP_UNITS[name].title, horizontal=True,
                        key="unit", help=md(units_help()), **BOUND)

    encoded, refused = encoded_choice(model, dataset, "ab_upload" if source == UPLOAD else None)

    linked_hash = upload_in_url(encoded, uploaded=source == UPLOAD)

    buttons = st.container(horizontal=True, wrap=True)  # each button as wide as its label, wrapping: never cut
    run_col = preview_col = clear_col = buttons
    run_exact = run_col.button("Run exact sweep", type="primary", disabled=encoded is None, key="ab_run")
    run_preview = preview_col.button("Instant estimate (attribution)", disabled=encoded is None, key="ab_preview")
    clear_cached_button(clear_col, cache, CACHE_KIND, model, "sweep", key="ab_clear", forget=(LAST,))

if encoded is not None:  # a job estimated above the time limit waits for "Run anyway"
    def expected_time(kind: str):
        cached = load_sweep(model, encoded, method, kind == "estimate", only_correct, cache, unit)
        return None if cached is not None else sweep_estimate(model, encoded, method, kind == "estimate")

    asked = within_time_limit("ab", "exact" if run_exact else "estimate" if run_preview else None, expected_time)
    run_exact, run_preview = asked == "exact", asked == "estimate"

result = None
if encoded is not None:
    # A sweep already on disk for exactly this configuration shows at once (e.g. precomputed from the CLI).
    # what this session last asked for (estimate or exact) is looked up first: a click elsewhere keeps it on screen
    if run_exact or run_preview:
        st.session_state[ASKED] = "estimate" if run_preview else "exact"
    estimate_first = st.session_state.get(ASKED) == "estimate"
    result = (load_sweep(model, encoded, method, estimate_first, only_correct, cache, unit)
              or load_sweep(model, encoded, method, not estimate_first, only_correct, cache, unit))
    if run_exact or run_preview:
        with progress_with_cancel("ab", "estimate" if run_preview else "sweep") as progress:
            try:
                result = run_sweep(model, encoded, method, estimate=bool(run_preview), only_correct=only_correct,
                                   cache=cache, progress=progress, unit=unit)
            except HeadscopeError as error:
                st.error(md(str(error)))
    if result is not None:
        st.session_state[LAST] = (model.identity, result)
elif linked_hash:
    name = st.query_params.get("dataset", "the uploaded dataset")
    matches = [sweep for sweep in cached_sweeps(model, cache)
               if sweep.key.get("dataset_hash", "").startswith(linked_hash) and sweep.method == method
               and bool(sweep.key.get("only_correct")) == only_correct and sweep.unit == unit]
    result = min(matches, key=lambda sweep: sweep.estimate, default=None)  # exact before estimate
    if result is not None:
        st.caption(f"The sweep of {quoted(name)} from the results cache. Upload the file again to rerun it.")
    else:
        st.info(f"This link shows a sweep of {quoted(name)}, which is not in this server's results cache: upload "
                "the file to compute it.")

if result is None:
    identity, last = st.session_state.get(LAST, (None, None))
    if last is not None and identity == model.identity:
        result = last
        st.caption("Showing the last sweep (its configuration differs from the controls above).")
    elif last is not None:  # never another model's numbers under this model's name, heads and patterns
        st.caption(f"The last sweep was of {quoted(last.model)}, not of the model loaded now: run one here.")

# a head is one of the sweep's (a link made for another model may name one it does not have)
shape = (result.n_layers, result.n_heads) if result is not None else (info.n_layers, info.n_heads)
selected = url_value("head", SELECTED, lambda text: parse_head(text, *shape), show_head)
copy_link(link_col, notebook_code(active_request(), call_code(
    "sweep", **task_arguments(source == BUILT_IN, dataset.name if dataset is not None else None),
    method=method, only_correct=only_correct or None, unit=None if unit == "head" else unit,
    estimate=True if result is not None and result.estimate else None),
    *dla_code(task_arguments(source == BUILT_IN, dataset.name if dataset is not None else None), only_correct)))

if result is None:
    if not refused:  # under an error message, a hint to press Run would only repeat that nothing can run
        first = "Choose a task" if source == BUILT_IN else "Upload a dataset"
        st.info(f"{md(first)} and press **Run exact sweep** (or the instant estimate). Results are cached on disk, so "
                "a sweep precomputed with `python -m headscope ablate` appears here at once.")
    preload_result_elements()  # the browser loads the chart and table code now, not after the sweep
    if encoded is not None:  # this machine's cost of a block, measured once per model and prompt length: now, not
        sweep_estimate(model, encoded, method, False)  # after the click on Run (the time limit's estimate)
    st.stop()

summary(result)
chosen = "" if not result.key.get("dataset_hash") else chosen_prompts(result.key["dataset_hash"])
settings_line(line, f"{result.model} · {result.task}, {plural(result.n_prompts, 'prompt')}"
                    f"{f', {chosen}' if chosen else ''} · {result.method} ablation"
                    f"{' (estimate)' if result.estimate else ''}"
                    f"{' · only prompts it gets right' if result.key.get('only_correct') else ''} · {normalization}")
if grid_values(result, normalization)[0] is None:
    st.warning("Normalization to the corrupted baseline needs corrupted prompts; showing % of clean instead.")
effect = effect_choice()  # over the map: the sweep's total effects, or the direct effects (DLA) of its prompts
dla = direct_effects(model, result, encoded, cache) if effect == DIRECT else None
figure = (sweep_figure(result, normalization, selected)  # the notebook's figure too (headscope.figures)
          if dla is None else dla_figure(dla, selected))
map_col, detail_col = st.columns([1, 1])
with map_col:
    # one chart key per sweep, the same whether the sweep was just computed or read back from the cache
    chart_key = f"ab_map_{result.key.get('dataset_hash', '')[:16]}_{result.method}_{result.estimate}{dla is None}"
    # a click selects its cell before the next run (one run per click, not a run to read it and one to show it)
    clickable_heatmap(present_figure(figure), key=chart_key, filename=f"ablation-{result.task}-{result.method}",
                      on_click=lambda cell: set_url_value("head", SELECTED, cell.component, show_head))
    grid_name = f"ablation-{result.task}-{result.method}{'-estimate' if result.estimate else ''}"
    if dla is not None:
        grid_name = f"direct-effects-{result.task}"
    down_csv = down_png = st.container(horizontal=True, wrap=True)
    down_csv.download_button("Download grid (CSV)", results_csv(result) if dla is None else dla_csv(dla),
                             file_name=f"{grid_name}.csv",
                             mime="text/csv", key="ab_csv", on_click="ignore", icon=":material/table:")
    png_download(down_png, figure, f"{grid_name}.png", key="ab_png")
with detail_col:
    st.markdown("**Largest effects**")
    per_kv = 1 if result.unit == "kv-group" else info.n_heads // info.n_kv_heads  # the KV column: the group itself
    st.dataframe(top_effects_frame(result, per_kv, 12), hide_index=True, width="stretch",
                 column_config=TOP_EFFECTS_COLUMNS)
    if selected is None:
        st.caption("Click a cell to see that head's attention pattern on the first prompt.")
    elif selected.is_mlp:
        layer = selected.layer
        st.markdown(f"**MLP {layer:d}**: ablated LD {result.mlp_ablated_ld[layer]:.3f} "
                    f"({result.mlp_percent_of_clean[layer]:.1f}% of clean)")
    elif result.unit == "kv-group":
        layer, group = selected.layer, selected.head
        per_kv = info.n_heads // info.n_kv_heads
        st.markdown(f"**KV group {layer:d}.kv{group:d}** (query heads {group * per_kv:d}–"
                    f"{(group + 1) * per_kv - 1:d} ablated together): ablated LD "
                    f"{result.ablated_ld[layer, group]:.3f}, {result.percent_of_clean[layer, group]:.1f}% of clean, "
                    f"change {result.change[layer, group]:+.3f}")
    else:
        layer, head = selected.layer, selected.head
        st.markdown(f"**Head {layer:d}.{head:d}** (KV head {head // (info.n_heads // info.n_kv_heads):d}): ablated LD "
                    f"{result.ablated_ld[layer, head]:.3f}, {result.percent_of_clean[layer, head]:.1f}% of clean, "
                    f"change {result.change[layer, head]:+.3f}"
                    f"{'' if dla is None else f'; direct effect {dla.head_dla[layer, head]:+.3f}'}")

if dla is not None:
    sum_check(dla, result)
    point = direct_vs_total(result, dla, selected, key=f"{chart_key}_scatter")
    if point is not None and point.component != selected:
        set_url_value("head", SELECTED, point.component, show_head)
        st.rerun()
    dla_confidence_section(dla)

confidence_section(result)
estimate_vs_exact(result, None if encoded is None else load_sweep(model, encoded, result.method, not result.estimate,
                                                                  bool(result.key.get("only_correct")), cache,
                                                                  result.unit))

if selected is not None and selected.head is not None and result.first_prompt and result.unit == "head":
    layer, head = selected.layer, selected.head
    if layer < result.n_layers and head < result.n_heads and not np.isnan(result.ablated_ld[layer, head]):
        st.subheader(f"Attention pattern of head {layer:d}.{head:d} on {quoted(result.first_prompt)}")
        head_pattern(model, result.first_prompt, layer, head)
        st.subheader(f"What head {layer:d}.{head:d} writes on {quoted(result.first_prompt)}")
        head_writes_panel(model, result.first_prompt, selected, key="ab_writes")
elif selected is not None and selected.is_mlp and result.first_prompt and selected.layer < result.n_layers:
    st.subheader(f"What MLP {selected.layer:d} writes on {quoted(result.first_prompt)}")
    head_writes_panel(model, result.first_prompt, selected, key="ab_writes")
