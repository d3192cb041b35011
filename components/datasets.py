"""Where a page's prompts come from, the same on every page that sweeps or searches: a built-in task (name, step,
prompts, seed, all in the URL by name) or an uploaded dataset (checked and limited as one, remembered for the session).
"""

from __future__ import annotations

import math

import streamlit as st

from components.share import BOUND
from components.text import md, md_code, quoted
from headscope.errors import HeadscopeError
from headscope.results_cache import ResultsCache
from headscope.tasks import STEP_RANGE, TASKS, Dataset, UploadLimits, build_task_dataset, load_dataset_bytes

BUILT_IN, UPLOAD = "Built-in task", "Upload a dataset"
UPLOADED = "hs_uploaded"  # the last uploaded dataset of this session (an uploader forgets its file on a page switch)
CHOICE_KIND = "dataset-choices"  # results-cache kind: what a user chose to build a built-in task's prompts


CHOSEN = "hs_task_choice"  # (content hash, what built those prompts) of the task dataset drawn last


def remember_choice(asked: Dataset, encoded: Dataset, cache: ResultsCache | None = None) -> None:
    """File what built a built-in task's prompts (task, step, seed) under the content hash of the prompts a result is
    computed on (`encoded`: those fitted to the tokenizer), so that results can be named by what the user chose, not
    by a hash. Written once per set of prompts; nothing for an upload."""
    digest, choice = st.session_state.get(CHOSEN, (None, None))
    if digest != asked.content_hash:
        return
    cache = cache or ResultsCache()
    key = {"dataset_hash": encoded.content_hash}
    if cache.load(CHOICE_KIND, key) is None:
        cache.store(CHOICE_KIND, key, choice)


def chosen_prompts(dataset_hash: str, cache: ResultsCache | None = None) -> str | None:
    """'seed 0' (or 'step 3, seed 0') for the built-in task's prompts behind a content hash: None where nobody recorded
    them (a sweep computed from the command line, an upload)."""
    choice = (cache or ResultsCache()).load(CHOICE_KIND, {"dataset_hash": dataset_hash})
    if not isinstance(choice, dict):
        return None
    step = f"step {choice['step']}, " if choice.get("step") is not None else ""
    return f"{step}seed {choice.get('seed')}"


def upload_limits() -> UploadLimits:
    """HEADSCOPE_UPLOAD_MAX_ROWS/MB, and no more bytes than Streamlit's server.maxUploadSize accepts."""
    try:
        limits = UploadLimits.from_env()
    except HeadscopeError as error:
        st.error(md(f"{error} Using the defaults."))
        limits = UploadLimits()
    server_bytes = int(st.get_option("server.maxUploadSize") * 2**20)
    return UploadLimits(limits.max_rows, min(limits.max_bytes, server_bytes))


def uploaded_dataset(key: str) -> Dataset | None:
    """The uploader with its limits stated; a file that is not a usable dataset gets a message naming the problem
    (binary, not UTF-8, over a limit, missing columns), and none is used."""
    limits = upload_limits()
    upload = st.file_uploader(
        "CSV or JSON: prompt, correct, incorrect, optional corrupted_prompt", type=["csv", "json"], key=key,
        max_upload_size=max(1, math.ceil(limits.max_bytes / 2**20)),
    )
    st.caption(md(f"Limits on this server: {limits.describe()} per dataset."))
    if upload is None:  # none now (e.g. after a page switch): the last one uploaded in this session, if any
        st.session_state.pop(f"{key}_failed", None)
        previous = st.session_state.get(UPLOADED)
        if previous is not None:
            note_col, forget_col = st.columns([4, 1], vertical_alignment="center")
            note_col.caption(f"Using {quoted(previous.name)}, uploaded earlier in this session; upload a file to "
                             "replace it.")
            forget_col.button("Forget it", key=f"{key}_forget", on_click=lambda: st.session_state.pop(UPLOADED))
        return previous
    try:
        dataset = load_dataset_bytes(upload.getvalue(), upload.name, limits)
    except HeadscopeError as error:
        st.error(md(str(error)))
        st.session_state[f"{key}_failed"] = True
        return None
    st.session_state.pop(f"{key}_failed", None)
    st.session_state[UPLOADED] = dataset
    return dataset


def upload_failed(key: str) -> bool:
    """Whether the file in uploader `key` was refused in this run (its message is shown; no hint to add below it)."""
    return bool(st.session_state.get(f"{key}_failed"))


def task_dataset(model) -> Dataset | None:
    """A built-in task's prompts for this model: task (by name in the URL: task=months), step where the task has one,
    number of prompts and seed."""
    task_col, step_col, n_col, seed_col = st.columns([2, 1, 1, 1])
    task = task_col.selectbox("Task", list(TASKS), key="task", **BOUND,
                              help=md(" · ".join(f"{name}: {spec.example}" for name, spec in TASKS.items())))
    step = None
    if TASKS[task].adjustable_stride:
        step = int(step_col.number_input("Step", min_value=STEP_RANGE[0], max_value=STEP_RANGE[1],
                                         value=TASKS[task].stride, key="step", **BOUND))
    n_prompts = n_col.number_input("Prompts", min_value=1, max_value=512, value=16, key="n", **BOUND)
    seed = seed_col.number_input("Seed", min_value=0, value=0, key="seed", **BOUND)
    chosen = f"; this run: step {step}" if step is not None and step != TASKS[task].stride else ""
    # the example as a code span: Streamlit rewrites "->" in Markdown text, and md() would keep it only with an
    # invisible U+2060 inside, which a reader copying the caption copies too
    st.caption(f"{md(TASKS[task].title)}: {md_code(TASKS[task].example)}{md(chosen)}")
    try:
        dataset = build_task_dataset(task, int(n_prompts), seed=int(seed), model=model, step=step)
    except HeadscopeError as error:
        st.error(md(str(error)))
        return None
    st.session_state[CHOSEN] = (dataset.content_hash, {"task": task, "n": int(n_prompts), "seed": int(seed),
                                                       "step": step})
    return dataset


def encoded_choice(model, dataset: Dataset | None, upload_key: str | None):
    """The chosen prompts encoded for the model (None when there are none or they are refused, the reason shown) and
    whether the page was refused its inputs (an upload error or an encoding error: no "press Run" hint below it)."""
    from headscope.ablation import prepare_dataset

    refused = upload_key is not None and upload_failed(upload_key)  # its message is shown already
    if dataset is None:
        return None, refused
    try:
        encoded = prepare_dataset(model, dataset)
    except HeadscopeError as error:
        st.error(md(str(error)))
        return None, True
    remember_choice(dataset, encoded.dataset)
    return encoded, refused


def upload_in_url(encoded, uploaded: bool) -> str | None:
    """An uploaded dataset named in the URL by its name and the start of its content hash, so a link opens its result
    from the results cache; the hash a link carries (None for a built-in task, whose parameters are removed)."""
    if not uploaded:
        for param in ("dataset", "data"):
            if param in st.query_params:
                del st.query_params[param]
        return None
    if encoded is not None:
        st.query_params["dataset"] = encoded.dataset.name
        st.query_params["data"] = encoded.dataset.content_hash[:12]
    return st.query_params.get("data")
