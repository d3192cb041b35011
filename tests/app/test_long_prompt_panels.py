"""A long prompt's extra forwards wait for a click (issue 20: the prompt tester and the attention page each ran a
second forward over a 4,343-token prompt, the logit lens and what a head writes, taking about twice the one
forward their result needs). The length limit is lowered here so that a short prompt stands for a long one."""

from __future__ import annotations

import pytest

import components.long_prompt
from components.preload import is_preload
from tests.shown import shown


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setattr(components.long_prompt, "LONG_PROMPT_TOKENS", 4)  # "1 2 3 4 " is 9 tokens: long here


def _chart_keys(app) -> list[str]:
    return [chart.proto.id for chart in app.get("plotly_chart")]


def test_the_lens_on_a_long_prompt_needs_no_click(run_page, embedded_model):
    """The prompt tester's lens comes from its own forward: a long prompt shows it at once, with no second forward."""
    app = run_page("pages/prompt_tester.py")
    assert not app.exception
    shown_charts = [chart for chart in app.get("plotly_chart") if not is_preload(chart.proto.id)]
    assert len(shown_charts) == 2  # the top-k chart and the lens
    assert not any("one more forward" in caption.value for caption in app.caption)


def test_a_long_prompts_forward_lets_the_browser_load_the_chart_code_meanwhile(run_page, embedded_model,
                                                                              monkeypatch):
    """Opened by link, a long prompt's page showed no chart until its forward ended, and then the browser spent
    about 1 s loading its chart and table code: a hidden chart is drawn before a long forward, not before a short one
    (nor on a rerun that reuses the forward)."""
    app = run_page("pages/prompt_tester.py")
    assert not app.exception and any(is_preload(chart.proto.id) for chart in app.get("plotly_chart"))
    app.run()  # the same question: the forward is reused, nothing to wait for
    assert not any(is_preload(chart.proto.id) for chart in app.get("plotly_chart"))
    monkeypatch.setattr(components.long_prompt, "LONG_PROMPT_TOKENS", 1024)
    app = run_page("pages/prompt_tester.py")
    assert not app.exception and not any(is_preload(chart.proto.id) for chart in app.get("plotly_chart"))


def _writes_shown(app) -> bool:
    return any("output at position" in caption.value for caption in app.caption)


def test_what_a_head_writes_on_a_long_prompt_runs_when_asked(run_page, embedded_model):
    app = run_page("pages/attention.py", heads="3.4, 9.1")
    assert not app.exception and not _writes_shown(app)
    assert any("writes needs one more forward over all" in caption.value for caption in app.caption)
    # the OV view needs no forward over the prompt: it is there either way
    assert any("OV view of head" in block.value for block in app.markdown)
    app.button(key="ap_writes_long_prompt_button").click().run()
    assert not app.exception and _writes_shown(app)


def test_a_long_prompts_position_is_a_number_not_a_list_of_every_token(run_page, embedded_model):
    # a selectbox of 4,343 options cost the browser seconds on every rerun of the attention page
    app = run_page("pages/attention.py", heads="3.4")
    assert not app.exception
    assert not [box for box in app.selectbox if box.key == "ap_writes_position"]
    position = app.number_input(key="ap_writes_long_position")
    assert position.value == 8  # "1 2 3 4 " with BOS: the last of 9 positions
    assert any(shown(caption.value) == "Token at position 8: ·" for caption in app.caption)
    position.set_value(1).run()
    assert any(shown(caption.value) == "Token at position 1: 1" for caption in app.caption)
