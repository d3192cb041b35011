"""AppTest of the prompt tester page and of the sidebar model picker (through app.py)."""

import html
import re
import time

import pytest
import torch

from headscope.tokens import tokenize_prompt
from tests.pinned import EMBEDDED_ON_CPU
from tests.shown import shown


def _token_table(app):
    return next(df.value for df in app.dataframe if "top-1 next" in df.value.columns)


def test_prompt_gives_one_table_row_per_token(run_page, embedded_model):
    app = run_page("pages/prompt_tester.py")
    assert not app.exception
    app.text_area(key="prompt").input("January February March April").run()
    assert not app.exception and not app.error
    table = _token_table(app)
    expected = tokenize_prompt(embedded_model, "January February March April")
    assert len(table) == len(expected) == 5
    assert list(table["token"]) == [t.display for t in expected.tokens]
    assert app.subheader[0].value == "5 tokens"


def test_top_k_table_and_chart_follow_the_chosen_k(run_page):
    app = run_page("pages/prompt_tester.py")
    app.number_input(key="top_k").set_value(7).run()
    topk = next(df.value for df in app.dataframe if "logprob" in df.value.columns)
    assert len(topk) == 7
    charts = app.get("plotly_chart")
    assert charts, "the top-k bar chart is missing"


def test_default_prompt_shows_answer_rank_one_and_its_logit_diff(run_page, embedded_reference,
                                                                 embedded_hf_tokenizer):
    app = run_page("pages/prompt_tester.py")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Rank of answer"] == "1"
    # "1 2 3 4 ", answer "5" against "4": logit difference from an untouched transformers copy, tokenized here
    tokenizer = embedded_hf_tokenizer
    ids = [tokenizer.bos_token_id, *tokenizer("1 2 3 4 ", add_special_tokens=False).input_ids]
    five, four = (tokenizer(text, add_special_tokens=False).input_ids[0] for text in ("5", "4"))
    with torch.no_grad():
        logits = embedded_reference(torch.tensor([ids])).logits[0, -1]
    # shown to 3 decimals: half a unit of the last digit plus float32's error
    assert float(metrics["Logit difference"]) == pytest.approx(float(logits[five] - logits[four]), abs=6e-4)


def test_empty_prompt_shows_an_error_and_keeps_the_last_result(run_page):
    app = run_page("pages/prompt_tester.py")
    app.text_area(key="prompt").input("").run()
    assert not app.exception
    assert any("empty" in e.value for e in app.error)
    assert _token_table(app) is not None  # the last good result stays on the page
    app.text_area(key="prompt").input("1 2 3").run()
    assert not app.error and len(_token_table(app)) == 6


def test_a_failed_prompt_never_shows_another_models_last_result(run_page):
    # the last good result is kept with the model it came from: after a model switch it is not shown as this one's
    app = run_page("pages/prompt_tester.py")
    identity, analysis = app.session_state["pt_last_good"]
    app.session_state["pt_last_good"] = ({**identity, "model_source": "another/model"}, analysis)
    app.text_area(key="prompt").input("").run()
    assert not app.exception and any("empty" in e.value for e in app.error)
    assert not any(df for df in app.dataframe if "top-1 next" in df.value.columns)
    assert not any("Showing the last result" in c.value for c in app.caption)


def test_the_compare_reads_both_variants_at_their_last_position(run_page, embedded_model):
    from headscope.predict import analyze_prompt

    app = run_page("pages/prompt_tester.py")
    app.number_input(key="position").set_value(3).run()
    app.number_input(key="top_k").set_value(3).run()
    app.toggle(key="compare").set_value(True).run()
    assert not app.exception and not app.error
    main, left, right = [df.value for df in app.dataframe if "logprob" in df.value.columns]
    assert len(main) == 3 and len(left) == len(right) == 5
    for table, prompt in ((left, "1 2 3 4 "), (right, "1 2 3 4")):
        expected = analyze_prompt(embedded_model, prompt, top_k=5)  # the last position
        assert list(table["id"]) == [p.id for p in expected.top_k]
    assert list(main["id"]) != list(left["id"])  # position 3 reads something else


def test_overlong_prompt_shows_an_error_and_the_app_keeps_working(run_page, embedded_model):
    app = run_page("pages/prompt_tester.py")
    app.text_area(key="prompt").input("1 " * (embedded_model.info.n_ctx // 2 + 50)).run()
    assert not app.exception
    assert any("context length" in e.value for e in app.error)
    app.text_area(key="prompt").input("one two").run()
    assert not app.error and len(_token_table(app)) == 3


def _sidebar_and_prompt_tester():
    """What app.py composes for the default page (AppTest cannot follow st.navigation across reruns)."""
    import runpy

    from components.model_state import model_sidebar

    model_sidebar()
    runpy.run_path("pages/prompt_tester.py")


def test_unknown_model_id_shows_an_error_and_the_previous_model_stays():
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_function(_sidebar_and_prompt_tester, default_timeout=180).run()
    assert not app.exception
    app.sidebar.radio(key="model_kind").set_value("Hub id or local folder").run()
    app.sidebar.text_input(key="model_source_text").input("nobody-here/no-such-model").run()
    app.sidebar.button(key="model_load").click().run()
    assert not app.exception
    errors = [shown(e.value) for e in app.sidebar.error]
    assert any("nobody-here/no-such-model" in e and "local cache" in e for e in errors)
    assert "active_model_request" not in app.session_state  # still the default (embedded) model
    app.text_area(key="prompt").input("1 2 3 4 ").run()  # the page still works on the embedded model
    assert not app.exception and len(_token_table(app)) == 9


def test_html_prompt_is_shown_as_text(run_page):
    app = run_page("pages/prompt_tester.py")
    app.text_area(key="prompt").input("<b>bold</b><script>x</script>").run()
    assert not app.exception
    strip = next(h.proto.body for h in app.get("html") if "hs-token-strip" in h.proto.body)
    assert "<script>" not in strip and "<b>" not in strip
    shown = re.findall(r'<div class="hs-text">(.*?)</div>', strip)
    assert "".join(html.unescape(text) for text in shown[1:]) == "<b>bold</b><script>x</script>"


def test_app_entry_runs_the_default_page():
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file("../../app.py", default_timeout=180).run()
    assert not app.exception
    assert app.title[0].value == "Prompt tester"
    assert [s.key for s in app.sidebar.selectbox] == ["model_device", "model_dtype", "model_bos"]
    assert app.sidebar.selectbox(key="model_bos").value == "auto"


def test_a_long_prompts_progress_bar_goes_when_the_result_is_there(run_page):
    """A forward over half a second shows a progress bar while it runs (~1,500 tokens here take seconds); the
    finished page shows the result, not a bar stuck at 100 %."""
    app = run_page("pages/prompt_tester.py")
    app.text_area(key="prompt").input("one two three four five six seven eight nine ten " * 150).run()
    assert not app.exception and not app.error
    assert app.subheader[0].value.endswith(" tokens") and int(app.subheader[0].value.split()[0].replace(",", "")) > 1000
    assert not app.get("progress")
    # the strip draws the 256 positions up to the chosen (last) one; the token table keeps every position, sent when
    # it is opened
    n_tokens = int(app.subheader[0].value.split()[0].replace(",", ""))
    assert not [df for df in app.dataframe if "top-1 next" in df.value.columns]
    strip = next(h.proto.body for h in app.get("html") if "hs-token-strip" in h.proto.body)
    drawn = [int(p) for p in re.findall(r'<div class="hs-pos">(\d+)</div>', strip)]
    assert drawn == list(range(n_tokens - 256, n_tokens))
    assert any(c.value.startswith(f"Drawn: positions {n_tokens - 256:,}–{n_tokens - 1:,} of {n_tokens:,}")
               for c in app.caption)
    # only the drawn window's top-1 predictions were unembedded, and each drawn chip has its own
    windowed = app.session_state["pt_memo"][1]
    assert windowed.top1_start == n_tokens - 256 and len(windowed.top1_per_position) == 256
    assert strip.count('class="hs-next') == 256
    assert [e.label for e in app.expander if e.label.startswith("Token table")] == [
        f"Token table (all {n_tokens:,} positions)"]
    assert any("opening it runs the model again" in c.value for c in app.caption)
    app.session_state["pt_token_table"] = True  # the table opened: every position's row, with its top-1
    app.run()
    assert not app.exception
    table = _token_table(app)
    full = app.session_state["pt_memo"][1]
    assert full.top1_start == 0 and len(table) == n_tokens and table["top-1 next"].ne("").all()
    # the window read the same predictions
    assert [p.id for p in full.top1_per_position[-256:]] == [p.id for p in windowed.top1_per_position]
    app.run()  # a rerun with the table still open reuses that forward
    assert app.session_state["pt_memo"][1] is full


def test_the_prompt_tester_answers_before_transformerlens_is_set_up(run_page, monkeypatch):
    """On a fresh server the prompt tester's first result comes from the model as transformers loaded it (usable
    seconds sooner); a page that needs hooks sets TransformerLens up when it opens, and app.py starts that set-up in
    the background once a page is drawn."""
    from headscope import registry

    fresh = registry.ModelRegistry()
    monkeypatch.setattr(registry, "_SHARED", fresh)
    app = run_page("pages/prompt_tester.py")
    assert not app.exception and not app.error
    model = fresh.loaded(EMBEDDED_ON_CPU)
    assert model is not None and not model.hooks_ready
    assert {m.label: m.value for m in app.metric}["Rank of answer"] == "1"

    ablation = run_page("pages/ablation.py")
    assert not ablation.exception and not ablation.error
    assert model.hooks_ready
    assert any(button.label == "Run exact sweep" for button in ablation.button)


def test_app_sets_transformerlens_up_in_the_background_after_the_first_page(run_page, monkeypatch):
    from headscope import registry

    fresh = registry.ModelRegistry()
    monkeypatch.setattr(registry, "_SHARED", fresh)
    app = run_page("app.py")
    assert not app.exception and not app.error
    model = fresh.loaded(EMBEDDED_ON_CPU)
    deadline = time.monotonic() + 120
    while not model.hooks_ready and time.monotonic() < deadline:
        time.sleep(0.2)
    assert model.hooks_ready


def test_several_warnings_are_one_list_in_one_box(run_page):
    # seen: one prompt stacked up to six amber boxes
    app = run_page("pages/prompt_tester.py")
    app.text_area(key="prompt").input("1 2 3 4")  # the top prediction is a space
    app.text_input(key="answer").input("Paris London")  # several tokens
    app.text_input(key="contrast").input("Paris Berlin").run()  # several tokens, and the same first token
    assert not app.exception and not app.error
    assert len(app.warning) == 1
    items = [line for line in shown(app.warning[0].value).split("\n") if line]
    assert len(items) >= 3 and any("whitespace token" in item for item in items)
    assert any("same token" in item for item in items)
