"""Bad input through the pages: each shows an error, the page keeps running, and nothing computed is lost (the last
result stays on the page, labelled as such)."""

from __future__ import annotations

import json
import re

import pytest

from tests.shown import shown


@pytest.fixture(autouse=True)
def private_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_RESULTS_DIR", str(tmp_path / "results"))


def _token_table(app):
    return next((df.value for df in app.dataframe if "top-1 next" in df.value.columns), None)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("prompt", "", "The prompt is empty"),
    ("prompt", "1 " * 5000, "context length"),
    ("position", 999, "Position 999 is outside the prompt"),
    ("position", -999, "Position -999 is outside the prompt"),
    ("answer", "\x00", None),  # a NUL answer is text like any other: no crash
])
def test_prompt_tester_bad_input_keeps_the_last_result(run_page, field, value, message):
    app = run_page("pages/prompt_tester.py")
    good = _token_table(app)
    widget = app.number_input(key=field) if field == "position" else (
        app.text_area(key=field) if field == "prompt" else app.text_input(key=field))
    (widget.set_value(value) if field == "position" else widget.input(value)).run()
    assert not app.exception
    if message is None:
        assert not app.error
        return
    assert any(message in shown(e.value) for e in app.error)
    assert _token_table(app).equals(good)  # the last good table is still there
    assert any(shown(c.value).startswith("Showing the last result, for the prompt '1 2 3 4 '") for c in app.caption)


DIGITS = [{"prompt": f"{i} {i + 1} {i + 2} {i + 3} ", "correct": str(i + 4), "incorrect": str(i + 3)}
          for i in range(1, 5)]
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"


@pytest.mark.parametrize(("name", "data", "message"), [
    ("empty.csv", b"", "empty.csv: the file is empty."),
    ("picture.csv", PNG, "picture.csv: this is not a text file"),
    ("latin.csv", "prompt,correct,incorrect\n\"café \",1,2\n".encode("latin-1"), "latin.csv: not UTF-8 text"),
    ("huge.csv", ("prompt,correct,incorrect\n" + '"1 2 3 4 ",5,4\n' * 2001).encode(),
     "huge.csv: 2,001 rows, more than the 2,000"),
    ("shape.json", b'{"rows": 3}', "shape.json: expected a list of objects"),
    ("columns.csv", b"question,answer\nx,y\n", "columns.csv: missing column(s) prompt, correct, incorrect"),
    ("uneven.json", json.dumps([*DIGITS[:2], {"prompt": "1 2 3 4 5 6 ", "correct": "7", "incorrect": "6"}]).encode(),
     "Prompts in one run must have equal token length"),
    ("same.json", json.dumps([{"prompt": "1 2 3 4 ", "correct": "5", "incorrect": "5"}]).encode(),
     "Row 1: correct and incorrect answers start with the same token"),
])
def test_ablation_bad_upload_shows_an_error_and_keeps_the_last_sweep(run_page, name, data, message):
    app = run_page("pages/ablation.py", n=2)
    app.button(key="ab_preview").click().run(timeout=300)
    assert app.metric and not app.error
    clean_ld = {m.label: m.value for m in app.metric}["Clean LD"]
    app.radio(key="source").set_value("Upload a dataset").run()
    app.file_uploader(key="ab_upload").upload(name, data, "text/csv").run()
    assert not app.exception
    assert [shown(e.value) for e in app.error if message in shown(e.value)], [e.value for e in app.error]
    assert app.button(key="ab_run").disabled and app.button(key="ab_preview").disabled
    # the sweep computed before is still on the page
    assert {m.label: m.value for m in app.metric}["Clean LD"] == clean_ld
    assert any("Showing the last sweep" in c.value for c in app.caption)


def test_ablation_upload_limits_are_stated_beside_the_uploader(run_page, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_UPLOAD_MAX_ROWS", "3")
    monkeypatch.setenv("HEADSCOPE_UPLOAD_MAX_MB", "1")
    app = run_page("pages/ablation.py")
    app.radio(key="source").set_value("Upload a dataset").run()
    assert any(shown(c.value) == "Limits on this server: at most 3 rows and 1 MB per dataset." for c in app.caption)
    app.file_uploader(key="ab_upload").upload("four.json", json.dumps(DIGITS).encode(), "application/json").run()
    assert [shown(e.value) for e in app.error] == [
        "four.json: 4 rows, more than the 3 a dataset may have here (HEADSCOPE_UPLOAD_MAX_ROWS): keep fewer rows."]


def test_ablation_a_bad_limit_setting_is_reported_and_the_defaults_used(run_page, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_UPLOAD_MAX_ROWS", "many")
    app = run_page("pages/ablation.py")
    app.radio(key="source").set_value("Upload a dataset").run()
    assert not app.exception
    assert any("HEADSCOPE_UPLOAD_MAX_ROWS must be a whole number above 0" in shown(e.value) for e in app.error)
    assert any("at most 2,000 rows" in shown(c.value) for c in app.caption)


def _views(app) -> list[str]:
    """The circuitsvis pages shown, without the random element ids circuitsvis gives each render."""
    return [re.sub(r"circuits-vis-[0-9a-f-]+", "", frame.proto.srcdoc) for frame in app.get("iframe")]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("heads", "99.0", "Head 99.0 is out of range"),
    ("heads", "a.b", "Cannot read 'a.b' as a head"),
    ("heads", ",".join(f"{layer}.{head}" for layer in range(10) for head in range(9)),
     "90 heads selected; show at most 64"),
    ("prompt", "", "The prompt is empty"),
    ("prompt", "1 " * 5000, "context length"),
])
def test_attention_bad_input_keeps_the_last_view(run_page, field, value, message):
    app = run_page("pages/attention.py")
    frames = _views(app)
    assert len(frames) == 2
    (app.text_input(key=field) if field == "heads" else app.text_area(key=field)).input(value).run()
    assert not app.exception
    assert any(message in shown(e.value) for e in app.error), [e.value for e in app.error]
    assert _views(app) == frames
    assert any(shown(c.value).startswith("Showing the last view: heads ") for c in app.caption)
