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
        top1_per_position=predictions, top1_at=lambda position: predictions[position],
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


def test_a_window_keeps_the_chosen_position_and_what_it_reads():
    from headscope.predict import TOP1_AFTER_CHOSEN, window_around

    assert window_around(40, 39, 64) == range(40)  # a short prompt: every position
    assert window_around(1000, 999, 64) == range(936, 1000)  # the last position: the 64 up to it
    assert window_around(1000, 500, 64) == range(500 + TOP1_AFTER_CHOSEN + 1 - 64, 500 + TOP1_AFTER_CHOSEN + 1)
    assert window_around(1000, 3, 64) == range(64)  # near the start: from position 0


def test_token_strip_html_draws_only_its_window():
    analysis = _analysis([f"t{i}" for i in range(10)])
    html = token_strip_html(analysis, window=range(6, 10))
    assert html.count('class="hs-pos"') == 4
    assert '<div class="hs-pos">6</div>' in html and '<div class="hs-pos">5</div>' not in html
    assert html.count("chosen") == 2  # position 9 is in the window
