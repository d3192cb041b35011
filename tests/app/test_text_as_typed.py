"""A prompt, answers and a file name holding Markdown, LaTeX, HTML, backticks and invisible characters are shown as
typed: each element's Markdown source (what AppTest sees) is read back through an independent CommonMark parser."""

from __future__ import annotations

import json

import pytest

from headscope.predict import analyze_prompt
from headscope.tokens import reveal_invisible
from tests.shown import shown

PROMPT = "**x** [link](javascript:alert(1)) <b>$15</b> __init__ `tick` \\ :red[r] -> \ufe0f"
ANSWER = " $15 each"
CONTRAST = "__init__"
FILE_NAME = "**x** $15 <b>__init__`[a](b).csv"


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def test_prompt_and_answers_are_shown_verbatim(run_page, embedded_model):
    app = run_page("pages/prompt_tester.py")
    app.text_area(key="prompt").input(PROMPT)
    app.text_input(key="answer").input(ANSWER)
    app.text_input(key="contrast").input(CONTRAST).run()
    app.toggle(key="compare").set_value(True).run()  # the compare section is shown on request
    assert not app.exception and not app.error
    expected = analyze_prompt(embedded_model, PROMPT, ANSWER, CONTRAST, 10)

    # warnings and notes: exactly the engine's text (invisible characters revealed), no markup applied
    assert len(expected.warnings) > 1 and len(app.warning) == 1  # one box holds them all
    listed = [line for line in shown(app.warning[0].value).split("\n") if line]
    assert listed == [reveal_invisible(w) for w in expected.warnings]
    notes = [shown(c.value).removeprefix(":material/info: ") for c in app.caption if ":material/info:" in c.value]
    assert notes == [reveal_invisible(n) for n in expected.notes]
    # the compare section quotes the answer with its leading space and dollar sign intact
    answer_lines = [shown(c.value) for c in app.caption if c.value.startswith("answer ")]
    assert answer_lines and all(line.startswith("answer ' $15 each': rank ") for line in answer_lines)
    # the chosen token in the subheader, and the invisible U+FE0F token as a visible chip
    chosen = expected.tokens[expected.position].display
    assert shown(app.subheader[1].value) == f"Next token after position {expected.position} ({chosen})"
    assert chosen == "⟨U+FE0F⟩"
    strip = next(h.proto.body for h in app.get("html") if "hs-token-strip" in h.proto.body)
    assert '<div class="hs-text">⟨U+FE0F⟩</div>' in strip
    assert '<div class="hs-text"></div>' not in strip  # no blank chip

    app.text_area(key="prompt").input("").run()  # an error: the last result stays, its prompt quoted exactly
    assert not app.exception
    last = next(shown(c.value) for c in app.caption if c.value.startswith("Showing the last result"))
    assert last == f"Showing the last result, for the prompt {reveal_invisible(PROMPT)!r}."


def test_a_file_name_is_shown_verbatim_in_errors_and_results(run_page):
    app = run_page("pages/ablation.py")
    app.radio(key="source").set_value("Upload a dataset").run()
    app.file_uploader(key="ab_upload").upload(FILE_NAME, b"", "text/csv").run()
    assert not app.exception
    assert [shown(e.value) for e in app.error] == [f"{FILE_NAME}: the file is empty."]

    rows = [{"prompt": f"{i} {i + 1} {i + 2} {i + 3} ", "correct": str(i + 4), "incorrect": str(i + 3),
             "corrupted_prompt": f"{i + 3} {i} {i + 2} {i + 1} "} for i in range(1, 5)]
    name = "$15 __init__ <b>.json"
    app.file_uploader(key="ab_upload").set_value((name, json.dumps(rows).encode(), "application/json")).run()
    assert not app.exception and not app.error
    app.button(key="ab_preview").click().run(timeout=300)
    assert not app.exception and not app.error
    spec = app.get("plotly_chart")[0].proto.spec
    assert "$15 __init__ &lt;b&gt;.json" in spec  # the figure title, Plotly's pseudo-HTML escaped
    expander = app.expander[0].label
    assert shown(expander) == "Prompts and notes · first prompt '1 2 3 4 '"
