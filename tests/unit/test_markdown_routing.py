"""Every place in pages/, components/ and app.py where text meets Streamlit's Markdown is routed through
components/text.py: a literal written by us, a call of a text helper, or a number with a format spec. A variable, a
`!r` or a bare `{name}` in an f-string there fails this test, naming the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = sorted([*REPO.glob("pages/*.py"), *REPO.glob("components/*.py"), REPO / "app.py"])
SAFE_HELPERS = {"md", "md_code", "md_list", "quoted", "plural"}

# Streamlit calls whose text arguments are Markdown: positional indices and keyword names.
MARKDOWN_CALLS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    **{name: ((0,), ("body",)) for name in ("caption", "markdown", "warning", "error", "info", "success", "toast",
                                           "title", "header", "subheader")},
    "metric": ((0, 1, 2), ("label", "value", "delta", "help")),
    "expander": ((0,), ("label",)),
    "popover": ((0,), ("label",)),
    "status": ((0,), ("label",)),
    "update": ((), ("label",)),
    "progress": ((), ("text",)),
    "spinner": ((0,), ("text",)),
    **{name: ((0,), ("label", "help", "placeholder")) for name in (
        "button", "download_button", "text_input", "text_area", "number_input", "selectbox", "radio", "checkbox",
        "file_uploader", "form_submit_button", "multiselect", "slider", "toggle")},
}


def _safe(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is None or isinstance(node.value, str | int | float)
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        return name in SAFE_HELPERS
    if isinstance(node, ast.JoinedStr):
        return all(_safe_part(part) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _safe(node.left) and _safe(node.right)
    if isinstance(node, ast.IfExp):
        return _safe(node.body) and _safe(node.orelse)
    return False


def _safe_part(part: ast.AST) -> bool:
    if isinstance(part, ast.Constant):
        return True
    assert isinstance(part, ast.FormattedValue)
    if part.conversion != -1:  # !r, !s, !a: raw text
        return False
    if part.format_spec is not None:  # a number formatted as such (:.3f, :d, :,)
        return True
    return _safe(part.value)


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        spec = MARKDOWN_CALLS.get(node.func.attr)
        if spec is None:
            continue
        positions, keywords = spec
        arguments = [node.args[i] for i in positions if i < len(node.args) and not isinstance(node.args[i],
                                                                                            ast.Starred)]
        arguments += [kw.value for kw in node.keywords if kw.arg in keywords]
        for argument in arguments:
            if not _safe(argument):
                found.append(f"{path.relative_to(REPO)}:{argument.lineno}: {ast.unparse(argument)[:80]}")
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_markdown_text_goes_through_the_text_helper(path):
    assert _violations(path) == []


def test_the_check_catches_raw_text():
    source = 'st.caption(f"prompt {prompt!r}")\nst.error(str(error))\nst.warning(f"{name} failed")\n'
    path = REPO / "tests" / "unit" / "_probe.py"
    try:
        path.write_text(source)
        assert len(_violations(path)) == 3
        path.write_text('st.caption(f"prompt {quoted(prompt)}: {n:d} rows")\nst.error(md(str(error)))\n')
        assert _violations(path) == []
    finally:
        path.unlink()
