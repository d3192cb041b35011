"""The sidebar's list of NDIF's models: asked for by a click (no request to NDIF unasked), deployed models apart from
cold ones, which are marked as such (headscope sends them jobs too; the first waits while NDIF starts the model)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.shown import shown
from tests.unit.test_ndif import HOSTED, status_server  # noqa: F401 (the stand-in /status endpoint, a fixture)


def _sidebar():
    from components.model_state import model_sidebar

    model_sidebar()


def test_the_ndif_model_list_marks_cold_models(monkeypatch, status_server):  # noqa: F811
    monkeypatch.setenv("NDIF_HOST", status_server)
    app = AppTest.from_function(_sidebar, default_timeout=60).run()
    app.sidebar.radio(key="model_backend").set_value("ndif").run()
    assert not [c for c in app.sidebar.caption if "Running on NDIF" in c.value]  # nothing asked before the click
    app.sidebar.button(key="model_ndif_list").click().run()
    assert not app.exception
    listed = [shown(c.value) for c in app.sidebar.caption if "Running on NDIF" in c.value]
    assert listed == [f"Running on NDIF: {HOSTED}, openai-community/gpt2. Cold (the first job waits while NDIF "
                      "starts it): some/cold-model."]
