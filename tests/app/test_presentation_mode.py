"""Presentation mode: present=1 in a link (or the sidebar's toggle) tucks the controls into an expander, puts the
view's settings in one line under the title, scales figures up, and stays in the link."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.shown import shown

TIMEOUT = 300


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _app(params: dict[str, str]) -> AppTest:
    app = AppTest.from_file("../../app.py", default_timeout=TIMEOUT)
    app.query_params.update(params)
    return app.run()


def test_a_presentation_link_tucks_the_controls_away_and_keeps_present_in_the_link():
    app = _app({"present": "1", "prompt": "1 2 3 4 "})
    assert not app.exception
    assert app.toggle(key="_hs_present").value is True
    assert "Prompt and answers" in [e.label for e in app.expander]  # the inputs, folded
    line = next(shown(m.value) for m in app.markdown if m.value.startswith(":material/tune:"))
    assert "prompt '1 2 3 4 '" in line and "top 10 at position" in line
    assert app.query_params.get("present") in ("1", ["1"])
    (link,) = [code.value for code in app.code if "?" in code.value]
    assert "present=1" in link  # Copy link keeps it
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["font"]["size"] >= 16  # figures' type readable from the back of a room

    app.toggle(key="_hs_present").set_value(False).run()  # off: back to the usual page, present= gone
    assert not app.exception and "present" not in app.query_params
    assert "Prompt and answers" not in [e.label for e in app.expander]
    assert not [m for m in app.markdown if m.value.startswith(":material/tune:")]
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert chart["layout"].get("font", {}).get("size") is None
