"""Text as typed: every helper of components/text.py against an independent CommonMark parser (markdown-it-py).

A rendered string is turned back into the text a reader sees (tags dropped, entities decoded, no-break spaces read as
spaces, word joiners dropped) and compared with the input, its invisible characters shown as ⟨U+XXXX⟩.
"""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from components.text import WORD_JOINER, md, md_code, plain, plotly_text, plural, quoted
from headscope.tokens import display_form, reveal_invisible

NASTY = [
    " $15 each",
    "$x$ and $$y$$",
    "__init__",
    "_a_ *b* **c**",
    "**x** [link](javascript:alert(1))",
    "![img](x.png)",
    "<b>bold</b> <script>alert(1)</script>",
    "a `tick` and ``two`` b",
    "`",
    "back\\slash \\(x\\) \\[y\\] \\$",
    "x\ufe0fy",
    "zero\u200bwidth\u200d joiner",
    "rtl \u200fmark\u202e override",
    "\ufe0f",
    "# heading",
    "1. item",
    "- item",
    "> quote",
    "a | b",
    ":red[red] :smile: :streamlit: :material/home:",
    "a -> b --> c <-> d <- e",
    "x >= 1 <= 2 ~= 3 -- 4",
    "  two  spaces  ",
    "&amp; &lt;",
    "~~strike~~",
    "nbsp\u00a0here",
]

_parser = MarkdownIt("commonmark")


def seen(markdown: str) -> str:
    """What a reader sees of inline Markdown: the rendered HTML without tags, entities decoded."""
    rendered = _parser.renderInline(markdown)
    text = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    return text.replace("\u00a0", " ").replace(WORD_JOINER, "")


def expected(text: str) -> str:
    return reveal_invisible(text)


@pytest.mark.parametrize("text", NASTY)
def test_md_shows_the_text_as_typed(text):
    rendered = _parser.renderInline(md(text))
    assert "<" not in re.sub(r"<br ?/?>", "", rendered).replace("&lt;", ""), "no tag may be produced"
    assert seen(md(text)) == expected(text)


@pytest.mark.parametrize("text", NASTY)
def test_md_leaves_no_bare_dollar_or_streamlit_directive(text):
    escaped = md(text)
    assert re.search(r"(?<!\\)\$", escaped) is None  # every $ escaped: no LaTeX
    assert re.search(r"(?<!\\):[a-z]", escaped) is None  # no :red[...] / :material/...: directive survives
    assert ":material/" not in escaped and ":streamlit:" not in escaped


@pytest.mark.parametrize("text", NASTY)
def test_md_code_shows_the_text_as_typed(text):
    shown = seen(md_code(text))
    assert shown == expected(text)


def test_md_code_is_one_code_span_when_it_can_be():
    assert _parser.renderInline(md_code("a `b` c")) == "<code>a `b` c</code>"
    assert _parser.renderInline(md_code(" $15 each")) == "<code> $15 each</code>"
    assert _parser.renderInline(md_code("__init__")) == "<code>__init__</code>"


def test_md_keeps_lines_without_starting_blocks():
    rendered = _parser.render(md("first\n# second\n- third"))
    assert "<h1>" not in rendered and "<ul>" not in rendered
    assert rendered.count("<br") == 2


@pytest.mark.parametrize("text", NASTY)
def test_quoted_shows_python_repr_of_the_revealed_text(text):
    assert seen(quoted(text)) == repr(reveal_invisible(text))


def test_quoted_shows_the_boundaries_of_a_leading_space():
    assert seen(quoted(" $15 each")) == "' $15 each'"


@pytest.mark.parametrize("text", NASTY)
def test_plotly_text_has_no_markup(text):
    escaped = plotly_text(text)
    assert "<" not in escaped and ">" not in escaped
    assert html.unescape(escaped) == expected(text)


@pytest.mark.parametrize("text", NASTY)
def test_plain_reveals_invisible_characters_only(text):
    assert plain(text) == expected(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [("\ufe0f", "⟨U+FE0F⟩"), ("\u200b", "⟨U+200B⟩"), ("a\u200fb", "a⟨U+200F⟩b"), ("\u00a0", "⟨U+00A0⟩"),
     ("\u3164", "⟨U+3164⟩"), ("❤\ufe0f", "❤⟨U+FE0F⟩"), ("\U000e0001", "⟨U+E0001⟩"), (" \n\t", " \n\t")],
)
def test_reveal_invisible(text, shown):
    assert reveal_invisible(text) == shown


def test_invisible_token_is_a_visible_chip():
    assert display_form("\ufe0f") == "⟨U+FE0F⟩"
    assert display_form(" \u200b") == "·⟨U+200B⟩"
    assert display_form("é") == "é"  # visible text is left alone


@pytest.mark.parametrize(("count", "shown"), [(0, "0 heads"), (1, "1 head"), (2, "2 heads"), (1024, "1,024 heads")])
def test_plural(count, shown):
    assert plural(count, "head") == shown


def test_plural_with_an_irregular_form():
    assert plural(1, "query", "queries") == "1 query"
    assert plural(3, "query", "queries") == "3 queries"
