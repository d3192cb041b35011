"""Serving a lab network, through app.py: the access token, local folders only under the configured roots (one
message for any other path), hub loading switched off, and the sidebar's backend choice."""

from __future__ import annotations

import importlib.util
import os

import pytest
from streamlit.testing.v1 import AppTest

from headscope.loading import SourcePolicy
from tests.shown import shown

TIMEOUT = 300
TOKEN = "correct horse battery staple"


def _gate_sidebar_and_prompt_tester():
    """What app.py composes around the default page (AppTest registers no button click in a script that calls
    st.navigation, so the clicks are tested on this composition; app.py itself is run below without clicks)."""
    import runpy

    from components.access import require_access
    from components.model_state import model_sidebar

    require_access()
    model_sidebar()
    runpy.run_path("pages/prompt_tester.py")


def _app() -> AppTest:
    return AppTest.from_function(_gate_sidebar_and_prompt_tester, default_timeout=TIMEOUT).run()


def _load(app: AppTest, source: str) -> list[str]:
    app.sidebar.radio(key="model_kind").set_value("Hub id or local folder").run()
    app.sidebar.text_input(key="model_source_text").input(source).run()
    app.sidebar.button(key="model_load").click().run()
    assert not app.exception
    return [shown(e.value) for e in app.sidebar.error]


def _values(state) -> list[str]:
    return [repr(state[key]) for key in state]


def test_app_asks_for_the_token_before_the_navigation_and_any_page(monkeypatch):
    monkeypatch.setenv("HEADSCOPE_ACCESS_TOKEN", TOKEN)
    app = AppTest.from_file("../../app.py", default_timeout=TIMEOUT).run()
    assert not app.exception
    assert [t.value for t in app.title] == ["headscope"]
    assert [box.key for box in app.text_input] == ["_hs_access_token_input"]
    assert not app.sidebar.radio and not app.dataframe and not app.get("iframe")


def test_the_access_token_is_asked_before_any_page(monkeypatch):
    monkeypatch.setenv("HEADSCOPE_ACCESS_TOKEN", TOKEN)
    app = _app()
    assert not app.exception
    assert [t.value for t in app.title] == ["headscope"]  # no page, no sidebar picker
    assert not app.sidebar.radio and not app.dataframe
    box = app.text_input(key="_hs_access_token_input")
    assert box.proto.type == box.proto.PASSWORD

    box.input("wrong")
    app.button[0].click().run()  # the form's submit button
    assert [e.value for e in app.error] == ["That is not the access token."]
    assert [t.value for t in app.title] == ["headscope"]

    app.text_input(key="_hs_access_token_input").input(TOKEN)
    app.button[0].click().run()
    assert not app.exception
    assert [t.value for t in app.title] == ["Prompt tester"]
    # the token is kept nowhere: not in session state (only a granted flag), not in the URL
    assert not any(TOKEN in value for value in _values(app.session_state))
    assert not any(TOKEN in str(value) for value in app.query_params.values())

    app.text_area(key="prompt").input("1 2 3").run()  # asked once: the session stays in
    assert [t.value for t in app.title] == ["Prompt tester"]


def test_without_a_token_nothing_is_asked(monkeypatch):
    monkeypatch.delenv("HEADSCOPE_ACCESS_TOKEN", raising=False)
    app = AppTest.from_file("../../app.py", default_timeout=TIMEOUT).run()
    assert [t.value for t in app.title] == ["Prompt tester"]


@pytest.fixture
def model_roots(tmp_path, monkeypatch):
    root = tmp_path / "models"
    (root / "empty").mkdir(parents=True)
    monkeypatch.setenv("HEADSCOPE_NETWORK_MODE", "1")
    monkeypatch.setenv("HEADSCOPE_MODEL_DIRS", str(root))
    return root


def test_on_a_network_folders_outside_the_roots_get_one_message(model_roots):
    app = _app()
    expected = SourcePolicy(roots=(os.path.realpath(model_roots),)).outside_message()
    for probe in ("/etc/passwd", "/root/.ssh", "/no/such/folder", f"{model_roots}/../.."):
        assert _load(app, probe) == [expected], probe
    assert "does not exist" in _load(app, str(model_roots / "missing"))[0]  # inside a root: the usual help
    assert "active_model_request" not in app.session_state  # the embedded model is still the one in use
    app.text_area(key="prompt").input("1 2 3 4 ").run()
    assert not app.exception and not app.main.error  # the page works on the embedded model


def test_hub_loading_switched_off(monkeypatch):
    monkeypatch.setenv("HEADSCOPE_ALLOW_HUB", "0")
    app = _app()
    (message,) = _load(app, "meta-llama/Llama-2-7b-hf")
    assert message.startswith("Loading from the Hugging Face hub is switched off here (HEADSCOPE_ALLOW_HUB=0)")


def test_the_model_card_names_the_backend():
    app = _app()
    card = next(shown(c.value) for c in app.sidebar.caption if "layers" in c.value)
    assert card.startswith("SmolLM2-135M-Instruct · TransformerLens (local) · 30 layers × 9 heads")


def test_backend_choice_offers_every_backend_and_an_unavailable_one_keeps_the_model():
    app = _app()
    backend = app.sidebar.radio(key="model_backend")
    assert backend.options == ["TransformerLens (local)", "nnsight (local)", "NDIF (remote)"]
    backend.set_value("nnsight").run()
    assert not app.exception
    if importlib.util.find_spec("headscope.backends.nnsight") is None:
        assert any("not part of this installation" in shown(e.value) for e in app.sidebar.error)
        assert not [b for b in app.sidebar.button if b.key == "model_load"]
    app.text_area(key="prompt").input("1 2 3 4 ").run()  # the page still runs on the model loaded before
    assert not app.exception and "active_model_request" not in app.session_state


def test_the_ndif_key_field_is_a_password_kept_in_memory(monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "ndif-secret-123")
    app = _app()
    app.sidebar.radio(key="model_backend").set_value("ndif").run()
    field = app.sidebar.text_input(key="model_ndif_key")
    assert field.proto.type == field.proto.PASSWORD
    assert field.value == "ndif-secret-123"  # on localhost: prefilled from NDIF_API_KEY
    assert not any("ndif-secret-123" in str(value) for value in app.query_params.values())


def test_on_a_network_the_servers_ndif_key_is_not_sent_to_the_browser(monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "ndif-secret-123")
    monkeypatch.setenv("HEADSCOPE_NETWORK_MODE", "1")
    app = _app()
    app.sidebar.radio(key="model_backend").set_value("ndif").run()
    assert app.sidebar.text_input(key="model_ndif_key").value == ""
    assert any("server's own NDIF key" in c.value for c in app.sidebar.caption)
