"""Shareable views: a page opened with query parameters shows that view; the parameters it shows in its "Copy link"
reopen the same view in a fresh session; state survives switching pages.

(The browser writes a changed widget's value into the URL; AppTest has no browser, so that direction is covered in
tests/e2e/test_shared_links_browser.py.)"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.linked import TIMEOUT, open_page
from tests.shown import shown


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _link_params(app: AppTest) -> dict[str, str]:
    """The query parameters of the page's "Copy link" box."""
    (link,) = [code.value for code in app.code if "?" in code.value or code.value == ""]
    return dict(parse_qsl(urlsplit(link).query, keep_blank_values=True))


def _frames(app: AppTest) -> list:
    return [frame.value for frame in app.dataframe]


def test_prompt_tester_opens_the_linked_view_and_its_link_reopens_it():
    params = {"prompt": "Monday Tuesday Wednesday", "answer": " Thursday", "contrast": " Friday", "top_k": "7",
              "position": "2"}
    app = open_page("pages/prompt_tester.py", params)
    assert not app.exception and not app.error
    assert app.text_area(key="prompt").value == "Monday Tuesday Wednesday"
    assert (app.text_input(key="answer").value, app.text_input(key="contrast").value) == (" Thursday", " Friday")
    assert (app.number_input(key="top_k").value, app.number_input(key="position").value) == (7, 2)
    topk = next(frame for frame in _frames(app) if "logprob" in frame.columns)
    assert len(topk) == 7
    assert shown(app.subheader[1].value).startswith("Next token after position 2 ")
    assert _link_params(app) == params

    again = open_page("pages/prompt_tester.py", _link_params(app))
    assert [f.to_dict() for f in _frames(again)] == [f.to_dict() for f in _frames(app)]
    assert [m.value for m in again.metric] == [m.value for m in app.metric]


def test_prompt_tester_ignores_parameters_that_do_not_fit():
    app = open_page("pages/prompt_tester.py", {"top_k": "100000", "position": "many"})
    assert not app.exception
    assert app.number_input(key="top_k").value == 10  # the defaults, not an error
    assert app.number_input(key="position").value == -1


def test_ablation_opens_the_linked_sweep_with_its_selected_head():
    first = open_page("pages/ablation.py", {"n": "3", "seed": "1", "method": "zero"})
    first.button(key="ab_preview").click().run(timeout=TIMEOUT)  # stored in the results cache
    assert not first.exception and not first.error

    params = {"task": "digits", "n": "3", "seed": "1", "method": "zero", "show": "change from clean",
              "head": "2.1"}
    app = open_page("pages/ablation.py", params)  # a new session: the sweep comes from the cache
    assert not app.exception and not app.error
    assert (app.selectbox(key="method").value, app.selectbox(key="show").value) == ("zero", "change from clean")
    assert (app.number_input(key="n").value, app.number_input(key="seed").value) == (3, 1)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Prompts"] == "3" and app.metric[-1].proto.delta == "cached"
    detail = [shown(m.value) for m in app.markdown if "Head" in m.value]
    assert detail and detail[0].startswith("Head 2.1 (KV head 0): ablated LD")
    assert any("Attention pattern of head 2.1" in shown(h.value) for h in app.subheader)
    assert "\\u0394 LD" in app.get("plotly_chart")[0].proto.spec  # the colour bar of "change from clean" (Δ LD)
    assert app.query_params.get("head") == "2.1"
    assert _link_params(app)["head"] == "2.1"

    again = open_page("pages/ablation.py", _link_params(app))
    assert [shown(m.value) for m in again.markdown] == [shown(m.value) for m in app.markdown]


def test_ablation_drops_a_head_that_does_not_exist():
    app = open_page("pages/ablation.py", {"head": "99.99"})
    assert not app.exception
    assert "head" not in app.query_params


def test_attention_opens_the_linked_heads_and_score():
    params = {"heads": "23.3", "prompt": "1 2 3 4 5 ", "score": "induction", "scored_on": "The prompt above"}
    app = open_page("pages/attention.py", params)
    assert not app.exception and not app.error
    assert app.text_input(key="heads").value == "23.3"
    assert app.text_area(key="prompt").value == "1 2 3 4 5 "
    assert (app.selectbox(key="score").value, app.radio(key="scored_on").value) == ("induction", "The prompt above")
    grid = app.get("iframe")[0].proto.srcdoc
    assert "L23H3 (KV 1)" in grid and grid.count("(KV ") == 1
    assert shown(app.subheader[0].value) == "1 head on 11 tokens"
    assert _link_params(app) == params


def test_state_survives_switching_pages():
    app = AppTest.from_file("../../app.py", default_timeout=TIMEOUT).run()
    app.text_area(key="prompt").input("Monday Tuesday").run()
    app.number_input(key="top_k").set_value(5).run()
    app.switch_page("pages/ablation.py").run()
    app.selectbox(key="method").set_value("zero").run()
    app.number_input(key="n").set_value(4).run()
    app.switch_page("pages/attention.py").run()
    assert app.text_area(key="prompt").value == "Monday Tuesday"  # the prompt tester's prompt is shown here
    app.text_input(key="heads").input("4.4").run()
    app.switch_page("pages/prompt_tester.py").run()
    assert not app.exception
    assert (app.text_area(key="prompt").value, app.number_input(key="top_k").value) == ("Monday Tuesday", 5)
    app.switch_page("pages/ablation.py").run()
    assert (app.selectbox(key="method").value, app.number_input(key="n").value) == ("zero", 4)
    app.switch_page("pages/attention.py").run()
    assert app.text_input(key="heads").value == "4.4"


def test_a_long_prompt_makes_a_short_link_that_reopens_it():
    long_prompt = "The cat sat on the mat; the dog & the bird watched it (a long story). " * 40  # 2,800 chars
    app = open_page("pages/prompt_tester.py", {"top_k": "5"})
    app.text_area(key="prompt").input(long_prompt).run()
    assert not app.exception
    (link,) = [code.value for code in app.code if "?" in code.value]
    assert len(link.encode()) < 200  # the text goes by its hash, far under the 8 KB a usual reverse proxy accepts
    params = _link_params(app)
    assert "prompt" not in params and len(params["prompt_id"]) == 32 and params["top_k"] == "5"

    again = open_page("pages/prompt_tester.py", params)  # a fresh session
    assert not again.exception
    assert again.text_area(key="prompt").value == long_prompt
    short = open_page("pages/prompt_tester.py", {"prompt": "1 2 3 "})  # a short prompt stays readable in its link
    assert _link_params(short)["prompt"] == "1 2 3 " and "prompt_id" not in _link_params(short)
    unknown = open_page("pages/prompt_tester.py", {"prompt_id": "0" * 32})
    assert any("not in this server's results cache" in shown(w.value) for w in unknown.warning)


def test_the_single_head_chosen_after_typing_heads_is_in_the_link():
    # seen in Chromium: opened without heads=, heads typed, a head chosen in the single-head view: no single= in the
    # URL, so Copy link opened the view on the first head
    app = open_page("pages/attention.py", {})
    app.text_input(key="heads").input("4.4, 2.1, 7.3").run()
    app.selectbox(key="single").set_value("7.3").run()
    assert not app.exception
    params = _link_params(app)
    assert params["single"] == "7.3"  # (heads= is the browser's to write: a bound widget)
    again = open_page("pages/attention.py", {**params, "heads": "4.4, 2.1, 7.3"})
    assert again.selectbox(key="single").value == "7.3"


def test_a_link_value_that_is_not_among_the_choices_is_said_once():
    app = AppTest.from_file("../../app.py", default_timeout=TIMEOUT)
    app.query_params.update({"position": "many", "top_k": "7"})
    app.run()
    assert not app.exception
    said = [shown(t.value) for t in app.toast]
    assert len(said) == 1 and said[0].startswith("This link's position='many' is not one of the choices here"), said
    assert app.number_input(key="top_k").value == 7  # the valid value is used, and not mentioned
    app.run()
    assert not app.toast  # said once


def test_a_head_in_a_link_that_does_not_fit_is_said():
    app = open_page("pages/attention.py", {"heads": "4.4, 2.1", "single": "9.9"})
    assert not app.exception and app.selectbox(key="single").value == "4.4"
    assert any("single='9.9'" in shown(t.value) for t in app.toast)
