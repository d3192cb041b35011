"""Paths: how heads connect. Path patching for one sender and every later head (or one receiver and every earlier
head, or every head straight to the logits): the LD when only that one path carries the sender's changed value.

The inputs live in the URL (source, task, n, seed, view, sender, receiver, into, direction, method, show) and so does
the selected cell (`head=12.3`): a link reopens the view, its result read back from the results cache.
"""

from urllib.parse import quote, urlencode

import numpy as np
import streamlit as st

from components.ablation_view import head_pattern, timing_metric
from components.clear_cache import clear_cached_button
from components.datasets import (
    BUILT_IN,
    UPLOAD,
    chosen_prompts,
    encoded_choice,
    task_dataset,
    upload_in_url,
    uploaded_dataset,
)
from components.heatmap import clickable_heatmap, parse_head, png_download, show_head
from components.long_run import progress_with_cancel, say_if_stopped, within_time_limit
from components.model_state import active_request, require_model
from components.path_confidence_view import path_confidence_section
from components.path_view import (
    DIRECTION_HELP,
    INTO_GQA_NOTE,
    INTO_HELP,
    SHOWN,
    SHOWN_HELP,
    VIEW_HELP,
    VIEWS,
    centre_of,
    default_head,
    describe,
    file_stem,
    grouped_note,
    notebook_arguments,
    path_figure,
    paths_csv,
    query_for,
    read_head,
    shown_values,
    signed_change,
    top_paths_frame,
)
from components.presentation import controls, present_figure, settings_line
from components.share import BOUND, copy_link, set_url_value, task_arguments, url_value
from components.text import md, plural, quoted
from headscope.ablation import METHODS
from headscope.api import call_code, notebook_code
from headscope.backends.interventions import UnsupportedIntervention
from headscope.errors import HeadscopeError
from headscope.job_time import paths_estimate
from headscope.methods import methods_help
from headscope.path_patching import CACHE_KIND, DIRECTIONS, INTO, PathResult, load_paths, run_paths
from headscope.results_cache import ResultsCache, stored_results

SELECTED = "pa_selected"  # the clicked head (a Component), mirrored in the URL as head=
LAST = "pa_result"  # (model identity, the last result shown, its first prompt, its prompts' content hash): shown
# again only under the same model
RECENTRE = "pa_recentre"  # (view, head text) from "its own paths": set into the controls before they are drawn
RUN_NOW = "pa_run_now"  # a re-centring asks for its result at once, as the Run button does
HEAD_KEYS = {"sender": "sender", "receiver": "receiver"}  # a view's head box: widget key and URL parameter

title_col, link_col = st.columns([4, 1], vertical_alignment="bottom")
title_col.title("Paths")
line = st.empty()  # presentation mode: the view's settings, in one line under the title
st.caption(
    "Path patching: the sender's write into the residual stream is changed (its ablated value for noise, its clean "
    "value for denoise) and only one reader sees the change: the receiver's query, key or value input (through "
    "its attention norm, recomputed as TransformerLens does), or the logits directly (final norm scale frozen). Every "
    "other reader of the sender sees the unchanged "
    "value; the receiver's own changed output flows on to the logits. LD = mean over prompts of logit[correct] − "
    "logit[incorrect] at the last position."
)
model = require_model(hooks=True)
info = model.info
cache = ResultsCache()

say_if_stopped("pa")

if RECENTRE in st.session_state:  # "its own paths": the clicked head becomes the view's centre
    recentred_view, recentred_head = st.session_state.pop(RECENTRE)
    st.session_state["view"] = VIEWS[recentred_view]
    st.session_state[HEAD_KEYS[recentred_view]] = recentred_head
    set_url_value("head", SELECTED, None, show_head)
    st.session_state[RUN_NOW] = True

with controls():
    source = st.radio("Source of prompts", [BUILT_IN, UPLOAD], horizontal=True, key="source", **BOUND)
    dataset = task_dataset(model) if source == BUILT_IN else uploaded_dataset("pa_upload")
    view_label = st.radio("View", list(VIEWS.values()), horizontal=True, key="view", help=md(VIEW_HELP), **BOUND)
    view = next(name for name, label in VIEWS.items() if label == view_label)
    head_col, into_col, direction_col, method_col, show_col = st.columns([1.2, 1, 1.1, 1, 1.3])
    problem = centre = None
    if view != "logits":
        head_key = HEAD_KEYS[view]
        if head_key not in st.session_state and head_key not in st.query_params:
            st.session_state[head_key] = default_head(view, info.n_layers)
        head_text = head_col.text_input("Sender head (layer.head)" if view == "sender"
                                        else "Receiver head (layer.head)", key=head_key, **BOUND,
                                        help=f"Layers 0–{info.n_layers - 1:d}, heads 0–{info.n_heads - 1:d}.")
        centre, problem = read_head(view, head_text, info.n_layers, info.n_heads)
    grouped = info.n_kv_heads < info.n_heads
    into = into_col.radio("Into", list(INTO), horizontal=True, key="into", disabled=view == "logits", **BOUND,
                          help=md(INTO_HELP + (" · " + INTO_GQA_NOTE.format(group=info.heads_per_kv)
                                               if grouped else "")))
    direction = direction_col.radio("Direction", list(DIRECTIONS), horizontal=True, key="direction",
                                    help=md(DIRECTION_HELP), **BOUND)
    method = method_col.selectbox("Method", METHODS, index=METHODS.index("resample"), key="method", **BOUND,
                                  disabled=direction == "denoise",
                                  help=md("noise only (denoise carries the clean value) · " + methods_help()))
    show = show_col.selectbox("Show", list(SHOWN), key="show", help=md(SHOWN_HELP), **BOUND)
    if grouped and into in ("k", "v") and view != "logits":
        st.caption(md(INTO_GQA_NOTE.format(group=info.heads_per_kv)))

    encoded, refused = encoded_choice(model, dataset, "pa_upload" if source == UPLOAD else None)
    linked_hash = upload_in_url(encoded, uploaded=source == UPLOAD)
    if problem is not None:
        st.error(md(problem))

    buttons = st.container(horizontal=True, wrap=True)  # each button as wide as its label, wrapping: never cut
    run_col = clear_col = buttons
    run = run_col.button("Run path patching", type="primary", disabled=encoded is None or problem is not None,
                         key="pa_run")
    clear_cached_button(clear_col, cache, CACHE_KIND, model, "path result", key="pa_clear", forget=(LAST,))

query = None if problem is not None else query_for(view, centre, into, direction, method)
run = (run or bool(st.session_state.pop(RUN_NOW, False))) and encoded is not None and query is not None
if encoded is not None and query is not None:  # a job estimated above the time limit waits for "Run anyway"
    def expected_time(_kind: str):
        return None if load_paths(model, encoded, query, cache) is not None else paths_estimate(model, encoded, query)

    run = within_time_limit("pa", "exact" if run else None, expected_time) == "exact"

result = None
first_prompt = dataset_hash = ""
if encoded is not None and query is not None:
    first_prompt, dataset_hash = encoded.dataset.items[0].prompt, encoded.dataset.content_hash
    try:  # a result on disk for exactly this configuration shows at once (e.g. precomputed from the CLI)
        result = load_paths(model, encoded, query, cache)
    except HeadscopeError as error:
        st.error(md(str(error)))
    if run:
        with progress_with_cancel("pa", "path patching") as progress:
            try:
                result = run_paths(model, encoded, query, cache=cache, progress=progress)
            except (HeadscopeError, UnsupportedIntervention) as error:  # the latter: a backend without paths
                st.error(md(str(error)))
    if result is not None:
        st.session_state[LAST] = (model.identity, result, first_prompt, dataset_hash)
elif linked_hash and query is not None:
    name = st.query_params.get("dataset", "the uploaded dataset")
    result = next((stored for stored in stored_results(cache, CACHE_KIND, PathResult, model.identity)
                   if stored.key.get("dataset_hash", "").startswith(linked_hash) and stored.query == query), None)
    if result is not None:
        dataset_hash = result.key["dataset_hash"]
        st.caption(f"The paths of {quoted(name)} from the results cache. Upload the file again to rerun them.")
    else:
        st.info(f"This link shows paths of {quoted(name)}, which are not in this server's results cache: upload the "
                "file to compute them.")

if result is None:
    identity, last, last_prompt, last_hash = st.session_state.get(LAST, (None, None, "", ""))
    if last is not None and identity == model.identity:
        result, first_prompt, dataset_hash = last, last_prompt, last_hash
        st.caption("Showing the last result (its configuration differs from the controls above).")
    elif last is not None:  # never another model's numbers under this model's name
        st.caption(f"The last result was of {quoted(last.model)}, not of the model loaded now: run one here.")

copy_link(link_col, None if query is None else notebook_code(active_request(), call_code(
    "paths", **task_arguments(source == BUILT_IN, dataset.name if dataset is not None else None),
    **notebook_arguments(query))))

if result is None:
    if not refused and problem is None:
        first = "Choose a task" if source == BUILT_IN else "Upload a dataset"
        st.info(f"{md(first)}, a view and its head, and press **Run path patching**. Results are cached on disk, so "
                "paths precomputed with `python -m headscope paths` appear here at once.")
    st.stop()

shape = result.ld.shape
selected = url_value("head", SELECTED, lambda text: parse_head(text, *shape), show_head)
if selected is not None and selected.is_mlp:
    set_url_value("head", SELECTED, None, show_head)
    selected = None

query = result.query
chosen = chosen_prompts(dataset_hash) if dataset_hash else None
settings_line(line, f"{result.model} · {result.task}, {plural(result.n_prompts, 'prompt')}"
                    f"{f', {chosen}' if chosen else ''} · {describe(query)}")
st.markdown(md(describe(query)))
cols = st.columns(6)
cols[0].metric("Clean LD", f"{result.clean_ld:.3f}")
cols[1].metric("Corrupted LD", "n/a" if result.corrupt_ld is None else f"{result.corrupt_ld:.3f}")
cols[2].metric("Prompts", f"{result.n_prompts:d}")
cols[3].metric("Run's LD", f"{result.run_ld:.3f}",
               help=md(f"the LD of the run every path is patched into, with no path patched: the "
                       f"{'clean' if query.direction == 'noise' else 'corrupted'} prompts ({query.direction})"))
if result.to_logits_ld is not None:
    cols[4].metric(md(f"{centre_of(query).label} → logits"), f"{result.to_logits_ld:.3f}",
                   help=md("the LD with only the sender's direct path to the logits patched"))
timing_metric(cols[5], result.seconds, result.cached, result.key)
if result.kv_grouped:
    st.info(md(grouped_note(query, info.heads_per_kv)), icon=":material/group_work:")
if shown_values(result, show) is None:
    st.warning("This view needs corrupted prompts with an LD that differs from the clean one; showing the patched LD.")

figure = path_figure(result, show, selected)
map_col, detail_col = st.columns([1, 1])
with map_col:
    centre = centre_of(query)
    chart_key = f"pa_map_{file_stem(result)}_{result.n_prompts}"
    click = clickable_heatmap(present_figure(figure), key=chart_key, filename=file_stem(result))
    if click is not None and click.component != selected and click.component.is_head:
        set_url_value("head", SELECTED, click.component, show_head)
        st.rerun()
    down_csv = down_png = st.container(horizontal=True, wrap=True)
    down_csv.download_button("Download grid (CSV)", paths_csv(result), file_name=f"{file_stem(result)}.csv",
                             mime="text/csv", key="pa_csv", on_click="ignore", icon=":material/table:")
    png_download(down_png, figure, f"{file_stem(result)}.png", key="pa_png")
with detail_col:
    partners = "receivers" if query.view == "sender" else "senders"
    st.markdown(f"**Strongest paths** (the {md(partners)} whose one path moves the LD most)")
    st.dataframe(top_paths_frame(result, info.heads_per_kv), hide_index=True, width="stretch")
    if selected is None:
        st.caption("Click a cell: that head's attention pattern on the first prompt, and a button to centre the "
                   "page on its own paths.")
    else:
        value = result.ld[selected.layer, selected.head]
        if np.isnan(value):  # not a partner of this view
            st.markdown(f"**Head {md(selected.label)}** is not a {md(partners[:-1])} of this view.")
        else:
            st.markdown(f"**Head {md(selected.label)}** (KV head {selected.head // info.heads_per_kv:d}): LD with its "
                        f"path patched {value:.3f}, change {md(signed_change(value - result.run_ld))}")
        as_sender = read_head("sender", selected.label, info.n_layers, info.n_heads)[1]
        as_receiver = read_head("receiver", selected.label, info.n_layers, info.n_heads)[1]
        own = st.container(horizontal=True, wrap=True)
        own.button(md(f"Paths from {selected.label}"), key="pa_from", disabled=as_sender is not None,
                   help=md(as_sender or f"centre the page on {selected.label} as the sender"),
                   on_click=lambda: st.session_state.update({RECENTRE: ("sender", selected.label)}))
        own.button(md(f"Paths into {selected.label}"), key="pa_into", disabled=as_receiver is not None,
                   help=md(as_receiver or f"centre the page on {selected.label} as the receiver"),
                   on_click=lambda: st.session_state.update({RECENTRE: ("receiver", selected.label)}))

if (result.model, shape) == (info.name, (info.n_layers, info.n_heads)):
    path_confidence_section(model, result)

if selected is not None and first_prompt and (result.model, shape) == (info.name, (info.n_layers, info.n_heads)):
    st.subheader(f"Attention pattern of head {md(selected.label)} on {quoted(first_prompt)}")
    link = urlencode({"heads": selected.url_text, "prompt": first_prompt}, quote_via=quote)
    st.link_button(md(f"Open head {selected.label} on the attention page"), f"attention?{link}",
                   icon=":material/visibility:", help="the attention page with this head and this prompt")
    head_pattern(model, first_prompt, selected.layer, selected.head)
