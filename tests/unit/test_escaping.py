"""Token strings reach the page escaped: a prompt holding HTML shows as text."""

from types import SimpleNamespace

from components.token_view import token_frame, token_strip_html
from headscope.predict import Prediction
from headscope.tokens import TokenInfo, TokenizedPrompt


def _analysis(texts):
    tokens = tuple(
        TokenInfo(i, i, t, t, t, False, 0, len(t)) for i, t in enumerate(texts)
    )
    predictions = tuple(Prediction(1, 99, "<b>x</b>", "<b>x</b>", 1.0, 0.5, -0.7) for _ in texts)
    return SimpleNamespace(
        tokens=tokens, tokenized=TokenizedPrompt("".join(texts), tokens, False), position=len(texts) - 1,
        top1_per_position=predictions,
    )


def test_token_strip_escapes_html_and_script():
    html = token_strip_html(_analysis(["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "&amp;"]))
    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&amp;amp;" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html  # predictions are escaped too


def test_token_strip_marks_the_chosen_position():
    html = token_strip_html(_analysis(["a", "b", "c"]))
    assert html.count("chosen") == 2  # the CSS rule and the one chip


def test_token_table_keeps_raw_text_for_plain_rendering():
    frame = token_frame(_analysis(["<script>", "b"]))
    assert list(frame["token"]) == ["<script>", "b"]
    assert len(frame) == 2
