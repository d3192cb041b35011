"""User and token text shown as typed wherever it meets Markdown, LaTeX or Plotly's pseudo-HTML.

Streamlit renders captions, warnings, errors, info boxes, labels, metric labels and values, expander titles, toasts
and radio options as Markdown with LaTeX (`$…$`) and its own directives (`:red[…]`, `:material/icon:`). A prompt, an
answer, a token or a file name reaches those places only through one of these functions:

- `md(text)`: every ASCII punctuation character backslash-escaped (CommonMark shows each as itself), so `$15 each`,
  `__init__`, `**x** [link](javascript:…)`, `<b>`, backticks and `\\` show literally; invisible characters
  (U+FE0F, zero-width spaces, RTL marks) show as ⟨U+XXXX⟩ so nothing looks empty or reorders the line; leading,
  trailing and repeated spaces are kept (as no-break spaces); the few patterns Streamlit rewrites after parsing
  (`->`, `--`, `:streamlit:` …) get an invisible word joiner (U+2060) inside;
- `md_code(text)`: the same text as an inline code span (monospace, nothing inside interpreted);
- `quoted(text)`: a value inside a sentence, in quotes like Python's repr (newlines and tabs as \\n and \\t), escaped;
- `plotly_text(text)`: for Plotly titles, tick labels and hover text, which interpret `<b>`, `<br>` and `<a>`;
- `plain(text)`: for plain-text places (selectbox options, st.text): invisible characters revealed;
- `plural(n, noun)`: "1 head", "2 heads".

Whole messages made of plain text (errors, warnings from headscope) go through `md` as well: they quote user input.
"""

from __future__ import annotations

import re
import string

from headscope.figures import plotly_text as plotly_text  # one definition, shared with the notebook figures
from headscope.tokens import reveal_invisible

_PUNCTUATION = frozenset(string.punctuation)  # CommonMark: a backslash before any of these shows it literally
_BACKTICK_RUN = re.compile(r"`+")
# Streamlit rewrites some text after Markdown has been parsed, where a backslash no longer helps: ":streamlit:" becomes
# its logo, and " -> ", " <- ", " <-> ", " -- ", " >= ", " <= ", " ~= " become arrows, a dash and relations. A word
# joiner (U+2060, zero width) inside each breaks the pattern; the text still reads exactly as typed.
WORD_JOINER = "\u2060"
_REWRITTEN = re.compile(r":streamlit:|<->|->|<-|--|>=|<=|~=")
_SPACES = re.compile(r"(?:^ +| {2,}| +$)", re.MULTILINE)


def md(text: object) -> str:
    """`text` escaped for a Markdown body or label: shown exactly as typed (invisible characters revealed).

    Newlines become Markdown hard line breaks, so a multi-line message keeps its lines and no line can start a
    heading, a list or a quote.
    """
    revealed = reveal_invisible(str(text)).replace("\r\n", "\n")
    revealed = _REWRITTEN.sub(lambda match: match.group(0)[0] + WORD_JOINER + match.group(0)[1:], revealed)
    escaped = "".join(f"\\{ch}" if ch in _PUNCTUATION else ch for ch in revealed)
    # HTML collapses runs of spaces and Streamlit trims the body: leading, trailing and repeated spaces become
    # no-break spaces, written as entities (after escaping, so that they are the only unescaped '&')
    escaped = _SPACES.sub(lambda match: "&nbsp;" * len(match.group(0)), escaped)
    return escaped.replace("\n", "  \n")


def md_code(text: object) -> str:
    """`text` as an inline code span: a fence longer than any backtick run inside, padded where CommonMark would
    otherwise strip a space or merge a backtick with the fence. Invisible characters revealed, newlines as ↵."""
    body = reveal_invisible(str(text)).replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵")
    if ":material/" in body:  # Streamlit turns ":material/x:" into an icon even inside code: escape it instead
        return md(text)
    if body == "":
        return "` `"
    longest = max((len(run) for run in _BACKTICK_RUN.findall(body)), default=0)
    fence = "`" * (longest + 1)
    if body.startswith(("`", " ")) or body.endswith(("`", " ")):
        body = f" {body} "
    return f"{fence}{body}{fence}"


def quoted(text: object) -> str:
    """A user value inside a sentence: quoted like Python's repr (boundaries and escapes visible), then escaped."""
    return md(repr(reveal_invisible(str(text))))


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 head', '2 heads', '1,024 heads'."""
    word = noun if count == 1 else (plural_form or f"{noun}s")
    return f"{count:,} {word}"


def plain(text: object) -> str:
    """`text` for places Streamlit shows as plain text (selectbox options, st.text, table cells): only invisible
    characters need revealing there."""
    return reveal_invisible(str(text))


def md_list(items: tuple[str, ...] | list[str]) -> str:
    """Several texts as one Markdown list, each through md (one amber box, not a stack of them); one as itself."""
    if len(items) == 1:
        return md(items[0])
    return "\n".join(f"- {md(item)}" for item in items)
