"""What a reader sees of Streamlit Markdown: tests read an element's Markdown source (AppTest gives the source) and
compare the text it shows with the text typed, through an independent CommonMark parser (markdown-it-py)."""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

_parser = MarkdownIt("commonmark")
WORD_JOINER = "\u2060"


def shown(markdown: str) -> str:
    """The visible text of Markdown: tags dropped, entities decoded, no-break spaces read as spaces, word joiners
    (which the text helper puts inside patterns Streamlit would rewrite) dropped."""
    rendered = _parser.render(markdown)
    text = html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip("\n")
    return text.replace("\u00a0", " ").replace(WORD_JOINER, "")
