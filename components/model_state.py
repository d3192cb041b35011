"""The model picker in the sidebar and the one shared, loaded model every page reads."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import weakref

import streamlit as st

from components.access import network_mode, require_access, source_policy
from components.text import md
from headscope.backends import BACKEND_NAMES, BACKENDS
from headscope.backends.base import Backend
from headscope.backends.bos import BOS_CHOICES
from headscope.errors import HeadscopeError, ModelLoadError
from headscope.job_time import block_seconds
from headscope.loading import DEVICE_CHOICES, DTYPE_CHOICES, EMBEDDED, EMBEDDED_NAME, ModelRequest
from headscope.registry import ModelRegistry, shared_registry

ACTIVE = "active_model_request"  # the request of the model pages use; only replaced by a successful load
LOAD_ERROR = "model_load_error"
NDIF_KEY = "model_ndif_key"  # the NDIF API key typed in this session: in session state (memory) only


def model_registry() -> ModelRegistry:
    """One registry per server process: a model is loaded once and shared by every browser session (and by the
    preload that `make run` starts with the server, headscope.serve)."""
    return shared_registry()


def active_request() -> ModelRequest:
    return st.session_state.get(ACTIVE) or ModelRequest()


def backend_missing(name: str) -> str | None:
    """Why a backend cannot be used in this installation (a package its BackendSpec requires is missing), or None."""
    spec = BACKENDS[name]
    for package in spec.requires:
        if importlib.util.find_spec(package) is None:
            if package.startswith("headscope."):
                return (f"The {spec.label} backend is not part of this installation of headscope "
                        f"({package.replace('.', '/')}.py is missing). Choose {BACKENDS['bridge'].label}.")
            return (f"The {spec.label} backend needs the {package} package: `pip install {package}`, then restart "
                    f"the app. Choose another backend meanwhile.")
    return None


def _load_with_progress(request: ModelRequest) -> Backend:
    # One slot, loading or not: the elements after it keep their places from run to run (a status box present only
    # in the first run would shift them, and Streamlit would show each twice while the next run draws)
    slot = st.empty()
    registry = model_registry()
    cached = registry.loaded(request)
    if cached is not None:
        return cached
    label = EMBEDDED_NAME if request.source == EMBEDDED else request.source
    with slot.container(), st.status(md(f"Loading {label}…"), expanded=True) as status:
        bar = st.progress(0.0)

        def progress(stage: str, fraction: float) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=md(stage))

        try:
            # TransformerLens is set up on first need (require_model(hooks=True)) or in the background after this
            # run (app.py): the prompt tester is usable as soon as the weights are in memory
            model = registry.get(request, progress, source_policy(), hooks_later=True)
        except ImportError as error:  # a backend module or its package missing: say so, keep the previous model
            status.update(label=md(f"Could not load {label}"), state="error")
            raise ModelLoadError(f"The {BACKENDS[request.backend].label} backend cannot be imported here "
                                 f"({error}). Choose TransformerLens (local).") from error
        except HeadscopeError:
            status.update(label=md(f"Could not load {label}"), state="error")
            raise
        status.update(label=md(f"Loaded {model.info.name} in {model.info.load_seconds:.1f} s"), state="complete",
                      expanded=False)
    return model


def _ndif_key(sidebar) -> str | None:
    """The NDIF API key field: prefilled from NDIF_API_KEY on localhost. On a network the server's key is never sent
    to a browser: an empty field means "use the server's key" where one is set."""
    env_key = os.environ.get("NDIF_API_KEY") or None
    shared = network_mode()
    if NDIF_KEY not in st.session_state:
        st.session_state[NDIF_KEY] = "" if shared else (env_key or "")
    typed = sidebar.text_input(
        "NDIF API key", type="password", key=NDIF_KEY,
        placeholder="the server's NDIF_API_KEY" if shared and env_key else "your key from login.ndif.us",
        help="Kept in this browser session's memory only: never written to disk, logs, caches or the URL.",
    )
    if shared and env_key and not typed:
        sidebar.caption("Empty: the server's own NDIF key is used.")
    return typed or env_key


NDIF_LISTING = "model_ndif_listing"  # (host, NdifListing | None, error | None) of the last "Models on NDIF" click


def _ndif_models(sidebar) -> None:
    """NDIF's models on request (a click: no request to NDIF unasked): deployed ones, and cold ones marked as such
    (headscope sends jobs to those too; the first one waits while NDIF starts the model)."""
    clicked = sidebar.button("Models on NDIF", key="model_ndif_list",
                             help="Ask NDIF (NDIF_HOST) which models it runs now and which it lists as cold")
    if not clicked and NDIF_LISTING not in st.session_state:
        return  # nnsight (the host's default) not imported for nothing: it takes seconds
    from headscope.backends.ndif import ndif_host, probe_ndif, shown_host

    host = ndif_host()
    if clicked:
        try:
            st.session_state[NDIF_LISTING] = (host, probe_ndif(host), None)
        except ModelLoadError as error:
            st.session_state[NDIF_LISTING] = (host, None, str(error))
    shown = st.session_state[NDIF_LISTING]
    if shown[0] != host:
        return
    _host, listing, error = shown
    if error:
        sidebar.caption(md(error))
    elif listing is None:
        sidebar.caption(md(f"{shown_host(host)} did not list its models."))
    else:
        cold = ", ".join(listing.cold) or "none"
        sidebar.caption(md(f"Running on NDIF: {', '.join(listing.deployed) or 'none'}. Cold (the first job waits "
                           f"while NDIF starts it): {cold}."))


def model_sidebar() -> None:
    """Sidebar: model source (embedded preselected), backend, device, dtype, and a card of the loaded model.

    A failed load shows its message and keeps the previous model active, so nothing computed is lost.
    """
    sidebar = st.sidebar
    sidebar.header("Model")
    active = active_request()
    if "model_backend" not in st.session_state:
        st.session_state["model_backend"] = active.backend
    backend = sidebar.radio(
        "Backend", BACKEND_NAMES, format_func=lambda name: BACKENDS[name].label, key="model_backend",
        help=md(" · ".join(f"{spec.label}: {spec.help}" for spec in BACKENDS.values())),
    )
    remote = not BACKENDS[backend].local
    kind = "Hub id" if remote else sidebar.radio(
        "Source", ["Embedded (SmolLM2-135M-Instruct)", "Hub id or local folder"],
        index=0 if active.source == EMBEDDED else 1, key="model_kind",
    )
    text = ""
    if kind.startswith("Hub"):
        text = sidebar.text_input(
            "Hub id" if remote else "Hub id or folder",
            value="" if active.source == EMBEDDED else active.source,
            placeholder="meta-llama/Llama-2-7b-hf" if remote else "meta-llama/Llama-2-7b-hf or /path/to/model",
            key="model_source_text",
        )
    if kind.startswith("Hub") and network_mode():
        policy = source_policy()
        where = f"only inside {', '.join(policy.roots)}" if policy.roots else "none on this server"
        sidebar.caption(md(f"Local folders: {where}." + ("" if policy.allow_hub else " Hub loading is off.")))
    if remote:
        device, dtype = "auto", "auto"
        _ndif_models(sidebar)
        api_key = _ndif_key(sidebar)
    else:
        device = sidebar.selectbox("Device", DEVICE_CHOICES, index=DEVICE_CHOICES.index(active.device),
                                   key="model_device")
        dtype = sidebar.selectbox("Dtype", DTYPE_CHOICES, index=DTYPE_CHOICES.index(active.dtype), key="model_dtype",
                                  help="auto: float32 on the CPU, float16 on a GPU")
        api_key = None
    bos = sidebar.selectbox(
        "BOS", BOS_CHOICES, index=BOS_CHOICES.index(active.bos) if active.bos in BOS_CHOICES else 0, key="model_bos",
        help="Whether every input starts with the BOS token: auto decides it from the tokenizer and the config (the "
             "model card says why); prepend or none overrides it. Every backend feeds the model the same ids.")
    source = text.strip() if kind.startswith("Hub") else EMBEDDED
    wanted = ModelRequest(source, device, dtype, backend=backend, api_key=api_key, bos=bos)
    missing = backend_missing(backend)
    if missing:
        sidebar.error(md(missing))
    elif wanted.key != active.key:
        if sidebar.button("Load model", type="primary", key="model_load", disabled=not wanted.source):
            try:
                with sidebar:
                    _load_with_progress(wanted)
                st.session_state[ACTIVE] = wanted
                st.session_state.pop(LOAD_ERROR, None)
                active = wanted
            except HeadscopeError as error:
                st.session_state[LOAD_ERROR] = (wanted.key, str(error))
        elif wanted.source:
            sidebar.caption("Press *Load model* to switch; the current model stays active until then.")
    failed = st.session_state.get(LOAD_ERROR)
    if failed and failed[0] == wanted.key:
        sidebar.error(md(failed[1]))


def prepare_hooks_after_run() -> None:
    """Start the active model's remaining set-up (TransformerLens' hooks) in the background once a page is drawn, so
    the hook pages find it done; the prompt tester never waits for it. Then the other first-use costs (below)."""
    model = model_registry().loaded(active_request())
    if model is not None:
        model.prepare_hooks_in_background()
        warm_first_use_in_background(model)


_WARMED: weakref.WeakSet = weakref.WeakSet()
_WARM_GUARD = threading.Lock()


def warm_first_use_in_background(model: Backend) -> threading.Thread | None:
    """Once per loaded local model, on a background thread after its hooks are set up: one tiny pattern read (its
    first use checks the pattern route against TransformerLens' own, a full forward twice: 11.6 s of a 12.4 s first
    head click measured here, against 0.5 s for a later one) and the block cost that job-time estimates use, so that
    neither the first head click nor the first Run pays them. Returns the thread (None when nothing is left)."""
    if model.hf_model is None:  # a remote model: nothing to warm, and every call would be a request
        return None
    with _WARM_GUARD:
        if model in _WARMED:
            return None
        _WARMED.add(model)

    def warm() -> None:
        with contextlib.suppress(HeadscopeError):
            model.prepare_hooks()  # waits for the set-up started above
            model.reduce_attention_patterns(model.tensor([model.input_ids("1 2")]), lambda layer, pattern: None,
                                            layers=[0], heads={0: [0]})
            block_seconds(model, 16)

    # not a daemon, as the hooks' own set-up: a process ending meanwhile waits the few seconds for it (said outright:
    # a thread inherits its starter's flag, and this one is started from Streamlit's script thread, a daemon)
    thread = threading.Thread(target=warm, name=f"first use of {model.info.name}", daemon=False)
    thread.start()
    return thread


def leave_legacy_pages_mode() -> None:
    """Streamlit treats a pages/ folder beside app.py as a legacy multipage app until app.py's st.navigation has run
    once in the server process. A first visit straight to /ablation would then run that page alone (no sidebar
    picker, file-name labels); switching the process-wide flag off and rerunning lets app.py's navigation take over.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def require_model(hooks: bool = False) -> Backend:
    """The active model, loading it (with progress) if this process has not yet; stops the page on failure.

    hooks=True (pages that ablate, read patterns or weights): also TransformerLens' set-up, if the background one
    has not finished; where TransformerLens cannot serve the model the page says so and stops."""
    leave_legacy_pages_mode()
    require_access()  # app.py asks first; this covers a page run on its own
    request = active_request()
    try:
        model = _load_with_progress(request)
        if hooks and not model.hooks_ready:
            with st.spinner(md(f"Setting up TransformerLens' hooks on {model.info.name} (once per model, a few "
                               "seconds)…")):
                model.prepare_hooks()
    except HeadscopeError as error:
        st.error(md(str(error)))
        st.stop()
        raise  # unreachable: st.stop() ends the script run
    info = model.info
    st.sidebar.caption(f"**{md(info.name)}**" + md(
        f" · {info.backend_label} · {info.n_layers} layers × {info.n_heads} heads ({info.n_kv_heads} KV heads) · "
        f"d_head {info.d_head} · context {info.n_ctx:,} · {info.device}, {info.dtype} · "
        f"{info.memory_bytes / 2**20:,.0f} MiB of weights" + (f" · {info.bos_rule}" if info.bos_rule else "")
    ))
    for fallback in info.fallbacks:  # a load-time check chose a slower route: say which and why
        st.sidebar.caption(md(f"Slower route: {fallback}"))
    if info.backend == "ndif":  # NDIF listed the model COLD at load: until its first job has run
        from headscope.backends.ndif import starting_notice

        notice = starting_notice(model)
        if notice:
            st.sidebar.info(md(notice), icon=":material/hourglass_top:")
    return model
