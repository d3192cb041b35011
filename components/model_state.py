"""The model picker in the sidebar and the one shared, loaded model every page reads."""

from __future__ import annotations

import streamlit as st

from headscope.backends.base import Backend
from headscope.errors import HeadscopeError
from headscope.loading import DEVICE_CHOICES, DTYPE_CHOICES, EMBEDDED, EMBEDDED_NAME, ModelRequest
from headscope.registry import ModelRegistry

ACTIVE = "active_model_request"  # the request of the model pages use; only replaced by a successful load
LOAD_ERROR = "model_load_error"


@st.cache_resource(show_spinner=False)
def model_registry() -> ModelRegistry:
    """One registry per server process: a model is loaded once and shared by every browser session."""
    return ModelRegistry()


def active_request() -> ModelRequest:
    return st.session_state.get(ACTIVE) or ModelRequest()


def _load_with_progress(request: ModelRequest) -> Backend:
    registry = model_registry()
    cached = registry.loaded(request)
    if cached is not None:
        return cached
    label = EMBEDDED_NAME if request.source == EMBEDDED else request.source
    with st.status(f"Loading {label}…", expanded=True) as status:
        bar = st.progress(0.0)

        def progress(stage: str, fraction: float) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=stage)

        try:
            model = registry.get(request, progress)
        except HeadscopeError:
            status.update(label=f"Could not load {label}", state="error")
            raise
        status.update(label=f"Loaded {model.info.name} in {model.info.load_seconds:.1f} s", state="complete",
                      expanded=False)
    return model


def model_sidebar() -> None:
    """Sidebar: model source (embedded preselected), device, dtype, and a card of the loaded model.

    A failed load shows its message and keeps the previous model active, so nothing computed is lost.
    """
    sidebar = st.sidebar
    sidebar.header("Model")
    active = active_request()
    kind = sidebar.radio(
        "Source",
        ["Embedded (SmolLM2-135M-Instruct)", "Hub id or local folder"],
        index=0 if active.source == EMBEDDED else 1,
        key="model_kind",
    )
    text = ""
    if kind.startswith("Hub"):
        text = sidebar.text_input(
            "Hub id or folder",
            value="" if active.source == EMBEDDED else active.source,
            placeholder="meta-llama/Llama-2-7b-hf or /path/to/model",
            key="model_source_text",
        )
    device = sidebar.selectbox("Device", DEVICE_CHOICES, index=DEVICE_CHOICES.index(active.device), key="model_device")
    dtype = sidebar.selectbox("Dtype", DTYPE_CHOICES, index=DTYPE_CHOICES.index(active.dtype), key="model_dtype",
                              help="auto: float32 on the CPU, float16 on a GPU")
    wanted = ModelRequest(text.strip() if kind.startswith("Hub") else EMBEDDED, device, dtype)
    if wanted.key != active.key:
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
        sidebar.error(failed[1])


def leave_legacy_pages_mode() -> None:
    """Streamlit treats a pages/ folder beside app.py as a legacy multipage app until app.py's st.navigation has run
    once in the server process. A first visit straight to /ablation would then run that page alone (no sidebar
    picker, file-name labels); switching the process-wide flag off and rerunning lets app.py's navigation take over.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def require_model() -> Backend:
    """The active model, loading it (with progress) if this process has not yet; stops the page on failure."""
    leave_legacy_pages_mode()
    request = active_request()
    try:
        model = _load_with_progress(request)
    except HeadscopeError as error:
        st.error(str(error))
        st.stop()
        raise  # unreachable: st.stop() ends the script run
    info = model.info
    st.sidebar.caption(
        f"**{info.name}** · {info.n_layers} layers × {info.n_heads} heads ({info.n_kv_heads} KV heads) · "
        f"d_head {info.d_head} · context {info.n_ctx:,} · {info.device}, {info.dtype} · "
        f"{info.memory_bytes / 2**20:,.0f} MiB of weights"
    )
    return model
