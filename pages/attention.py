"""Attention patterns: what the candidate heads do on a prompt, and head-type scores to find such heads in any model.

The inputs live in the URL (prompt, preset, heads, single, score, scored_on, score_task): `/attention?heads=23.3`
opens head 23.3. The prompt is the prompt tester's: a prompt typed there is the one shown here.
"""

from __future__ import annotations

import streamlit as st

from components.circuits import SINGLE_MAX_WIDTH, circuits_frame
from components.datasets import chosen_prompts
from components.head_scores import head_scores_panel
from components.head_writes import head_writes_panel
from components.model_state import active_request, require_model
from components.presentation import controls, settings_line
from components.share import BOUND, copy_link, linked_choice, mirror_choice, prompt_box
from components.text import md, plain, plural, quoted
from headscope.ablation import cached_sweeps
from headscope.api import call_code, notebook_code
from headscope.component import Component
from headscope.errors import HeadscopeError, InputError
from headscope.heads import (
    PATTERN_SCORE_NAMES,
    SCORE_NAMES,
    SCORE_TITLES,
    format_heads,
    model_presets,
    parse_heads,
    scores_help,
)
from headscope.pattern_memo import shared_pattern_memo
from headscope.patterns import (
    DEFAULT_VIEW_TOKENS,
    MAX_VIEW_TOKENS,
    default_prompt,
    grid_view,
    patterns_csv,
    single_head_view,
    standalone_html,
)
from headscope.profile import timed
from headscope.scores import score_heads
from headscope.tasks import task_names

TOP_K = 8
HEADS_BOX = "heads"  # the heads box's key, and its URL parameter
PENDING_HEADS = "ap_pending_heads"  # set by a heatmap click; moved into the heads box before it is drawn
SCORED_ON = ("Generated sequences", "The prompt above")


def sweep_preset(sweep) -> str:
    """A cached sweep's preset name, one per sweep, in the words the user chose it with: task, method, prompts, seed
    (a sweep whose prompts nobody recorded, e.g. from the command line or an upload, is told apart by its prompts'
    content hash), only-correct."""
    only = " · only correct" if sweep.key.get("only_correct") else ""
    digest = sweep.key.get("dataset_hash", "")
    chosen = chosen_prompts(digest) or f"prompt set {digest[:6]}"
    kind = "estimate" if sweep.estimate else "exact"
    return (f"Top {TOP_K} by ablation: {sweep.task} · {sweep.method} · {sweep.n_prompts} prompts · {chosen}{only} · "
            f"{kind}")


def preset_heads(model, choice: str, sweeps: list) -> tuple[Component, ...]:
    """The heads of a preset; a score preset computes its score (or loads it from the results cache)."""
    for preset in model_presets(model.info):
        if choice == preset.name:
            return preset.heads
    for sweep in sweeps:
        if choice == sweep_preset(sweep):
            return tuple(sweep.top_heads(TOP_K))
    for score in SCORE_NAMES:
        if choice == f"Top {TOP_K} by {SCORE_TITLES[score].lower()}":
            with st.spinner(md(f"Scoring every head: {SCORE_TITLES[score].lower()}…")):
                return score_heads(model, score).top_heads(TOP_K)
    raise InputError(f"Unknown preset {choice!r}.")


title_col, link_col = st.columns([4, 1], vertical_alignment="bottom")
title_col.title("Attention patterns")
line = st.empty()  # presentation mode: the view's settings, in one line under the title
st.caption("Positions count the model's real input, BOS included. Whitespace is visible: space ·, newline ↵, tab →. "
           "Views are drawn offline (circuitsvis, inlined).")
with timed("attention: model"):
    model = require_model(hooks=True)
info = model.info
if PENDING_HEADS in st.session_state:
    st.session_state[HEADS_BOX] = st.session_state.pop(PENDING_HEADS)

with controls():
    with timed("attention: default prompt"):
        default = default_prompt(model)
    prompt = prompt_box(st, default, height=80,
                        help="Default: a digits prompt from the built-in task, fitted to this tokenizer. The prompt "
                             "tester shares this box.")
    with timed("attention: cached sweeps"):
        sweeps = cached_sweeps(model)
    # the presets every server has come first, so the default (the first) never depends on what happens to be cached
    preset_names = [preset.name for preset in model_presets(info)]
    score_presets = [f"Top {TOP_K} by {SCORE_TITLES[score].lower()}" for score in SCORE_NAMES]
    preset_names += sorted(score_presets, key=lambda name: "sequence" not in name)  # sequence-member first: cheap
    preset_names += [sweep_preset(sweep) for sweep in sweeps]
    preset_col, free_col = st.columns([1, 1])
    preset = preset_col.selectbox("Heads preset", preset_names, key="preset", format_func=plain, **BOUND,
                                  help="Published candidates for this model where there are any, the top heads by a "
                                       "head-type score, or by ablation effect from a cached sweep.")
    typed = free_col.text_input("Heads (layer.head, …) — overrides the preset", key=HEADS_BOX, **BOUND,
                                placeholder="e.g. 3.24, 5.25, 16.0, 20.17",
                                help=f"Layers 0–{info.n_layers - 1:d}, heads 0–{info.n_heads - 1:d}. Clicking a cell "
                                     "of a score heatmap below adds that head here.")

heads: tuple[Component, ...] = ()
failed = False
try:
    heads = parse_heads(typed, info) if typed.strip() else preset_heads(model, preset, sweeps)
    if not typed.strip():
        st.caption(f"Preset heads: {md(format_heads(heads))}")
except HeadscopeError as error:
    st.error(md(str(error)))
    failed = True

result = None
memo = st.session_state.get("ap_patterns")
window_start = st.session_state.get("ap_window")  # a long prompt's drawn window, as last chosen (None: the last)
window_size = int(st.session_state.get("ap_window_size", DEFAULT_VIEW_TOKENS))
if heads:
    memo_key = (str(model.identity), prompt, heads, window_start, window_size)
    try:
        if memo is not None and memo[0] == memo_key:
            result = memo[1]
        else:
            with timed("attention: patterns"):
                # one forward per prompt: a head change or a new window reuses it
                result = shared_pattern_memo().window(model, prompt, heads, window_start, window_size)
            st.session_state["ap_patterns"] = (memo_key, result)
    except HeadscopeError as error:
        st.error(md(str(error)))
        failed = True
if failed and memo is not None and memo[0][0] == str(model.identity):
    result = memo[1]  # nothing computed is lost: the last view stays, labelled as such
    st.caption(f"Showing the last view: heads {md(format_heads(result.heads))} on the prompt {quoted(result.prompt)}.")

if result is not None:
    shown_prompt = result.prompt if len(result.prompt) <= 60 else f"{result.prompt[:57]}…"
    settings_line(line, f"{info.name} · heads {format_heads(result.heads)} · prompt {shown_prompt!r}")
    n_tokens = result.prompt_tokens or len(result.tokens)
    st.subheader(f"{plural(len(result.heads), 'head')} on {plural(n_tokens, 'token')}")
    if n_tokens > DEFAULT_VIEW_TOKENS or result.is_window:  # shown whenever it can matter, so that its choice stays
        widest = min(MAX_VIEW_TOKENS, n_tokens)
        if not 16 <= st.session_state.get("ap_window_size", 0) <= widest:
            st.session_state["ap_window_size"] = min(DEFAULT_VIEW_TOKENS, widest)
        size_col, start_col = st.columns(2)
        size_col.number_input(
            "Positions drawn", min_value=16, max_value=widest, step=16, key="ap_window_size",
            help=f"The browser draws every cell of every head: {MAX_VIEW_TOKENS:d} positions take seconds per view "
                 f"(about 15 s for four heads on a 2-core machine), {DEFAULT_VIEW_TOKENS:d} about one.")
    if result.is_window:
        drawn = len(result.tokens)
        last_start = n_tokens - drawn
        if st.session_state.get("ap_window") != result.first_position:  # first drawn, or another prompt's window
            st.session_state["ap_window"] = result.first_position
        start_col.number_input(
            f"Window: the {drawn:d} positions drawn start at", min_value=0, max_value=last_start,
            step=max(drawn // 2, 1), key="ap_window",
            help="A long prompt is drawn as a square window of its positions (destination and source); the "
                 "patterns were computed on the whole prompt.")
        st.caption(f"Drawing positions {result.first_position:,}–{result.last_position:,} of {result.prompt_tokens:,}"
                   f"; attention to earlier positions ({100 * result.outside_share():.0f}% of each row on average) is "
                   f"not drawn. The views number the drawn positions from 0: add {result.first_position:,}. The "
                   "downloads hold this window, with positions counted in the whole prompt.")
    with timed("attention: grid view"):
        circuits_frame(grid_view(result), description="Attention patterns of the selected heads")
    if result.grouped_query:
        st.caption(f"Grouped-query attention: {info.n_heads:d} query heads share {info.n_kv_heads:d} key/value "
                   "heads; each query head's KV head is in its name and below.")
        st.dataframe(result.kv_rows(), hide_index=True, width="stretch")
    labels = [head.label for head in result.heads]
    # not bound to the URL by Streamlit: after the head list changed, the browser stopped writing the choice there
    # (Copy link then opened the first head); the page mirrors it itself
    linked_choice("single", labels)
    single_label = st.selectbox("Single-head view", labels, key="single", persist_state="session",
                                help="layer.head; the grid above names each head with its KV head")
    mirror_choice("single", single_label, labels[0])
    single = labels.index(single_label) if single_label in labels else 0
    with timed("attention: single view"):
        circuits_frame(single_head_view(result, single), max_width=SINGLE_MAX_WIDTH,
                       description=plain(f"Attention pattern of head {result.head_name(single)} with token labels"))
    html_col = csv_col = st.container(horizontal=True, wrap=True)
    html_col.download_button(
        "Download view as offline HTML (for slides)",
        data=lambda: standalone_html(result, single),
        file_name="attention-patterns.html",
        mime="text/html",
        key="ap_download_html",
        on_click="ignore",
        icon=":material/download:",
    )
    csv_col.download_button(
        "Download pattern values (CSV)",
        data=lambda: patterns_csv(result),
        file_name="attention-patterns.csv",
        mime="text/csv",
        key="ap_download_csv",
        on_click="ignore",
        icon=":material/table:",
    )
    st.subheader(f"What head {md(result.heads[single].label)} writes")
    with timed("attention: head writes"):
        head_writes_panel(model, result.prompt, result.heads[single], key="ap_writes")

st.header("Head-type scores")
with controls("Score controls"):
    score_col, option_col = st.columns([2, 3])
    score = score_col.selectbox("Score", SCORE_NAMES, key="score", **BOUND,
                                help=md(scores_help()))
    score_prompt: str | None = None
    task = "digits"
    if score in PATTERN_SCORE_NAMES:
        scored_on = option_col.radio("Scored on", SCORED_ON, key="scored_on", horizontal=True, **BOUND,
                                     help="Generated sequences: 4 × (BOS + 20 random tokens repeated twice), seed 0")
        score_prompt = prompt if scored_on == SCORED_ON[1] else None
    elif score == "sequence":
        task = option_col.selectbox("Task prompts", task_names(), key="score_task", **BOUND)

single_shown = st.session_state.get("single")
copy_link(link_col, notebook_code(
    active_request(),
    *([call_code("patterns", prompt, heads=[(h.layer, h.head) for h in heads],
                 single=single_shown if heads and single_shown != heads[0].label else None)] if heads else []),
    call_code("scores", score, prompt=score_prompt, task=task if score == "sequence" else None)))
try:
    with timed("attention: scores"):
        scores = score_heads(model, score, prompt=score_prompt, task=task, compute=False)
    if scores is None:
        # message and button in one placeholder, cleared once the score is there
        pending = st.empty()
        with pending.container():
            st.info(f"{md(SCORE_TITLES[score])} has not been computed for {md(info.name)} on these inputs yet.")
            clicked = st.button("Compute", type="primary", key="ap_compute")
        if clicked:
            with st.spinner(f"Scoring all {plural(info.n_layers * info.n_heads, 'head')}…"):
                scores = score_heads(model, score, prompt=score_prompt, task=task)
            pending.empty()
except HeadscopeError as error:
    st.error(md(str(error)))
    scores = None

if scores is not None:
    picked = head_scores_panel(scores, key="ap_scores")
    current = list(heads)
    added = [head for head in picked if head not in current]
    if added:
        st.session_state[PENDING_HEADS] = format_heads(current + added)
        st.rerun()
