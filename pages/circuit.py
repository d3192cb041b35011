"""Circuit: the study's iterative pruning, exact, with the found circuit drawn and compared with others."""

import streamlit as st

from components.ablation_view import head_pattern, timing_metric
from components.circuit_view import (
    circuit_csv,
    circuit_grid,
    comparison_grid,
    component_status,
    counts_frame,
    jaccard_frame,
    kept_frame,
    layered_diagram,
    removal_frame,
    score_line,
)
from components.clear_cache import clear_cached_button
from components.datasets import (
    BUILT_IN,
    UPLOAD,
    chosen_prompts,
    encoded_choice,
    task_dataset,
    uploaded_dataset,
)
from components.head_writes import head_writes_panel
from components.heatmap import clickable_heatmap, parse_head, png_download, show_head
from components.long_run import progress_with_cancel, say_if_stopped, within_time_limit
from components.model_state import active_request, require_model
from components.preload import preload_result_elements
from components.presentation import controls, present_figure, settings_line
from components.share import BOUND, copy_link, set_url_value, task_arguments, url_value
from components.text import md, plural
from headscope.ablation import METHODS
from headscope.api import call_code, notebook_code
from headscope.circuit import (
    CACHE_KIND,
    DEFAULT_THRESHOLD,
    cached_circuits,
    load_circuit,
    run_circuit,
)
from headscope.circuit_compare import compare_circuits, letter, parse_circuit_json
from headscope.errors import HeadscopeError
from headscope.job_time import circuit_estimate
from headscope.methods import methods_help
from headscope.results_cache import ResultsCache

SELECTED = "ci_selected"  # a Component (head or MLP), mirrored in the URL as head=
ASKED = "ci_asked"  # "estimate" or "exact": what this session last asked for

title_col, link_col = st.columns([4, 1], vertical_alignment="bottom")
title_col.title("Circuit")
line = st.empty()  # presentation mode: the view's settings, in one line under the title
st.caption(
    "Components: every head and every MLP. A circuit C scores 100 · LD(C) / LD_clean, where LD(C) is the mean logit "
    "difference with every component outside C ablated at once. A pass visits layers from last to first (the MLP, "
    "then heads 0 … H−1) and removes a component for good when the circuit without it still scores ≥ the threshold; "
    "passes repeat until one removes nothing. Exact: every decision is the sequential algorithm's."
)
model = require_model(hooks=True)
info = model.info
cache = ResultsCache()

with controls():
    source_col, method_col = st.columns([2, 1])
    with source_col:
        source = st.radio("Source of prompts", [BUILT_IN, UPLOAD], horizontal=True, key="source", **BOUND)
        dataset = task_dataset(model) if source == BUILT_IN else uploaded_dataset("ci_upload")
    with method_col:
        method = st.selectbox("Method", METHODS, index=METHODS.index("mean"), key="method", **BOUND,
                              help=md(methods_help()))
        threshold = float(st.number_input("Threshold (% of clean LD)", min_value=0.0, max_value=100.0,
                                          value=DEFAULT_THRESHOLD, step=5.0, key="threshold", **BOUND))
        one_pass = st.checkbox("One pass only", value=False, key="one_pass", **BOUND,
                               help="stop after the first pass instead of repeating passes until one removes nothing")

    encoded, refused = encoded_choice(model, dataset, "ci_upload" if source == UPLOAD else None)

    buttons = st.container(horizontal=True, wrap=True)  # each button as wide as its label, wrapping: never cut
    run_col = estimate_col = clear_col = buttons
    run_exact = run_col.button("Find circuit", type="primary", disabled=encoded is None, key="ci_run")
    run_estimate = estimate_col.button("Instant estimate (attribution)", disabled=encoded is None, key="ci_estimate")
    clear_cached_button(clear_col, cache, CACHE_KIND, model, "circuit", key="ci_clear", forget=("ci_result",))

say_if_stopped("ci")

if encoded is not None:  # a search estimated above the time limit waits for "Run anyway"
    def expected_time(kind: str):
        cached = load_circuit(model, encoded, method, threshold, one_pass, kind == "estimate", cache)
        return None if cached is not None else circuit_estimate(model, encoded, method, one_pass, kind == "estimate")

    try:
        asked = within_time_limit("ci", "exact" if run_exact else "estimate" if run_estimate else None,
                                  expected_time)
    except HeadscopeError as error:
        st.error(md(str(error)))
        asked = None
    run_exact, run_estimate = asked == "exact", asked == "estimate"

result = None
if encoded is not None:
    # a circuit already on disk for exactly this configuration shows at once (e.g. precomputed from the CLI)
    try:
        if run_exact or run_estimate:  # what this session asked for last is looked up first
            st.session_state[ASKED] = "estimate" if run_estimate else "exact"
        estimate_first = st.session_state.get(ASKED) == "estimate"
        result = (load_circuit(model, encoded, method, threshold, one_pass, estimate_first, cache)
                  or load_circuit(model, encoded, method, threshold, one_pass, not estimate_first, cache))
    except HeadscopeError as error:
        st.error(md(str(error)))
    if run_exact or run_estimate:
        with progress_with_cancel("ci", "estimate" if run_estimate else "search") as progress:
            try:
                result = run_circuit(model, encoded, method, threshold, one_pass=one_pass,
                                     estimate=bool(run_estimate), cache=cache, progress=progress)
            except HeadscopeError as error:
                st.error(md(str(error)))
    if result is not None:
        st.session_state["ci_result"] = result

if result is None:
    result = st.session_state.get("ci_result")
    if result is not None:
        st.caption("Showing the last circuit (its configuration differs from the controls above).")

if result is None and not refused:
    first = "Choose a task" if source == BUILT_IN else "Upload a dataset"
    st.info(f"{md(first)} and press **Find circuit** (or the instant estimate). Circuits are cached on disk, so one "
            "precomputed with `python -m headscope circuit` appears here at once.")
    preload_result_elements()  # the browser loads the chart and table code now, not after the search
elif result is not None:
    if result.estimate:
        st.warning("**Estimate** (attribution-ranked greedy pruning: one forward and one backward pass, effects "
                   "taken as additive). It guides; it is not the circuit. Run *Find circuit* for the exact result.",
                   icon=":material/speed:")
    chosen = chosen_prompts(result.key.get("dataset_hash", "")) if result.key.get("dataset_hash") else None
    settings_line(line, f"{result.model} · {result.task}, {plural(result.n_prompts, 'prompt')}"
                        f"{f', {chosen}' if chosen else ''} · {result.method} ablation · threshold "
                        f"{result.threshold:g}% · {'one pass' if result.one_pass else 'passes until stable'}"
                        f"{' (estimate)' if result.estimate else ''}")
    cols = st.columns(6)
    cols[0].metric("Clean LD", f"{result.clean_ld:.3f}")
    cols[1].metric("Circuit score", f"{result.score:.1f}%", f"threshold {result.threshold:g}%", delta_color="off")
    cols[2].metric("Heads kept", f"{len(result.heads):d} / {result.n_layers * result.n_heads:d}")
    cols[3].metric("MLPs kept", f"{len(result.mlps):d} / {result.n_layers:d}")
    cols[4].metric("Passes", f"{result.passes:d}", "one pass" if result.one_pass else "until stable",
                   delta_color="off")
    timing_metric(cols[5], result.seconds, result.cached, result.key)
    with st.expander(f"Task, prompts ({result.n_prompts:d} × {result.seq_len:d} tokens) and notes"):
        st.text(f"task: {result.task} · method: {result.method} · first prompt: {result.first_prompt!r}")
        st.text("Tokens of the first prompt (BOS included): " + " | ".join(result.token_labels))
        for note in result.notes:
            st.text(note)

    same_model = (result.n_layers, result.n_heads) == (info.n_layers, info.n_heads) and result.model == info.name
    selected = url_value("head", SELECTED, lambda text: parse_head(text, result.n_layers, result.n_heads), show_head)
    figure = circuit_grid(result, selected)
    grid_col, diagram_col = st.columns([3, 2])
    with grid_col:
        chart_key = f"ci_map_{result.key.get('dataset_hash', '')[:12]}_{result.method}_{result.threshold:g}_" \
                    f"{result.one_pass}_{result.estimate}"
        click = clickable_heatmap(present_figure(figure), key=chart_key,
                                  filename=f"circuit-{result.task}-{result.method}")
        if click is not None and click.component != selected:
            set_url_value("head", SELECTED, click.component, show_head)
            st.rerun()
        name = f"circuit-{result.task}-{result.method}-{result.threshold:g}{'-estimate' if result.estimate else ''}"
        down_json = down_csv = down_png = st.container(horizontal=True, wrap=True)
        down_json.download_button("Download circuit (JSON)", result.download_json(), file_name=f"{name}.json",
                                  mime="application/json", key="ci_json")
        down_csv.download_button("Download table (CSV)", circuit_csv(result), file_name=f"{name}.csv",
                                 mime="text/csv", key="ci_csv")
        png_download(down_png, figure, f"{name}.png", key="ci_png")
    with diagram_col:
        if result.size:
            st.plotly_chart(present_figure(layered_diagram(result)), key="ci_diagram", width="stretch")
        else:
            st.info("Every component was removed: the empty circuit still scores above the threshold.")

    if selected is not None:
        component = selected
        layer, head = component.layer, component.head
        if head is None:
            st.markdown(f"**MLP {layer:d}**: {md(component_status(result, component))}")
        elif same_model and layer < info.n_layers and head < info.n_heads:
            st.subheader(f"Attention pattern of head {layer:d}.{head:d}")
            st.markdown(f"Head {layer:d}.{head:d} (KV head {head // info.heads_per_kv:d}): "
                        f"{md(component_status(result, component))}. On the first prompt of the task:")
            st.text(repr(result.first_prompt))
            head_pattern(model, result.first_prompt, layer, head)
            st.subheader(f"What head {layer:d}.{head:d} writes")
            head_writes_panel(model, result.first_prompt, component, key="ci_writes")
        else:
            st.info("This circuit was found on another model than the one loaded: load that model to see the "
                    "head's attention pattern.")
    else:
        st.caption("Click a head on the grid to see its attention pattern on the first prompt.")

    line_col, table_col = st.columns([3, 2])
    with line_col:
        st.plotly_chart(present_figure(score_line(result)), key="ci_line", width="stretch")
    with table_col:
        st.markdown("**Kept components**, each removed alone from the final circuit")
        st.dataframe(kept_frame(result), hide_index=True, width="stretch", height=320)
    with st.expander(f"Removal table ({plural(len(result.removals), 'removal')}, in order)"):
        st.dataframe(removal_frame(result), hide_index=True, width="stretch")

copy_link(link_col, notebook_code(active_request(), call_code(  # after the selection is in the URL
    "circuit", **task_arguments(source == BUILT_IN, dataset.name if dataset is not None else None), method=method,
    threshold=None if threshold == DEFAULT_THRESHOLD else threshold, one_pass=one_pass or None,
    estimate=True if result is not None and result.estimate else None)))

# ---------------------------------------------------------------------------------------------------------------
st.divider()
st.header("Compare circuits")
st.caption("Pick two or more cached circuits (other tasks, methods or models) or upload a circuit JSON "
           '({"heads": [[layer, head], …], "mlps": [layer, …]}, 0-based, e.g. a published one).')
stored = cached_circuits(cache)
labels = {f"{c.label} · {c.n_prompts} prompts · "
          f"{chosen_prompts(c.key.get('dataset_hash', '')) or 'prompt set ' + c.key.get('dataset_hash', '')[:6]}": c
          for c in stored}
if st.session_state.get("ci_compare_touched"):  # keep the user's pick, less circuits no longer cached
    st.session_state["ci_compare_pick"] = [v for v in st.session_state.get("ci_compare_pick", []) if v in labels]
else:  # until the user picks: the two newest
    st.session_state["ci_compare_pick"] = list(labels)[:2]
picked = st.multiselect("Cached circuits", list(labels), key="ci_compare_pick",
                        on_change=lambda: st.session_state.update(ci_compare_touched=True))
uploads = st.file_uploader("Circuit JSON files", type=["json"], accept_multiple_files=True, key="ci_compare_upload",
                           max_upload_size=1)
circuits = [labels[name].circuit_set() for name in picked]
for upload in uploads or []:
    try:
        circuits.append(parse_circuit_json(upload.getvalue().decode("utf-8", errors="replace"), upload.name))
    except HeadscopeError as error:
        st.error(md(str(error)))
if len(circuits) < 2:
    st.info("Pick at least two circuits to compare (run more, or upload one).")
else:
    comparison = compare_circuits(circuits)
    for index, circuit in enumerate(circuits):  # labels may be user text: shown as plain text
        st.text(f"{letter(index)}: {circuit.label} — {len(circuit.heads)} heads, {len(circuit.mlps)} MLPs")
    cols = st.columns(4)
    cols[0].metric("Shared by all", f"{len(comparison.shared):d}")
    if len(circuits) == 2:
        cols[1].metric("Jaccard (A, B)", f"{comparison.jaccard[0, 1]:.3f}")
        cols[2].metric("Only A", f"{len(comparison.only(0)):d}")
        cols[3].metric("Only B", f"{len(comparison.only(1)):d}")
    compare_figure = comparison_grid(comparison)
    st.plotly_chart(present_figure(compare_figure), key="ci_compare_grid", width="stretch")
    if len(circuits) > 2:
        st.markdown("**Jaccard index of every pair** (|A ∩ B| / |A ∪ B|, heads and MLPs together)")
        st.dataframe(jaccard_frame(comparison), width="stretch")
    st.dataframe(counts_frame(comparison), hide_index=True, width="stretch")
    png_download(st, compare_figure, "circuit-overlap.png", key="ci_compare_png")
