"""Attention patterns of chosen heads on one prompt, and their offline views and exports.

Only the layers that hold a chosen head are run, and of each only the chosen heads' patterns are kept: a 7B model's
pattern view costs no more memory than a forward pass to the highest chosen layer. The views are circuitsvis
components with circuitsvis' JavaScript bundle inlined (`RenderedHTML.local_src`), one bundle per frame however many
heads it shows: nothing is fetched from a CDN, so the views work offline and in exported slides.
"""

from __future__ import annotations

import csv
import html
import io
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headscope.component import Component
from headscope.errors import InputError
from headscope.heads import check_heads, kv_head_of
from headscope.tokens import TokenInfo, tokenize_prompt

if TYPE_CHECKING:
    from headscope.backends.base import Backend

CSV_COLUMNS = ("layer", "head", "kv_head", "dest", "dest_token", "src", "src_token", "weight")
# Positions drawn at once: a view carries heads · n² numbers, so a long prompt is drawn as a square window of its
# positions (both axes), the last ones by default; the computation itself always covers the whole prompt.
MAX_VIEW_TOKENS = 200
# Positions drawn by default: circuitsvis draws every cell of every head, and Chromium took ~15 s for a 4-head grid of
# 200 positions plus ~3 s for its single-head view (2 cores), against ~1.4 s and ~0.8 s at 64 (docs/benchmarks.md)
DEFAULT_VIEW_TOKENS = 64


@dataclass(frozen=True)
class AttentionPatterns:
    """pattern[selected_head, dest, src] of the chosen heads on one prompt; positions count the real input, BOS
    included. kv_heads[selected_head] is the key/value head serving each query head (GQA)."""

    model: str
    prompt: str
    heads: tuple[Component, ...]
    kv_heads: tuple[int, ...]
    n_heads: int
    n_kv_heads: int
    tokens: tuple[TokenInfo, ...]
    pattern: np.ndarray  # [selected_head, dest, src] float32, rows sum to 1, zero above the diagonal
    seconds: float
    first_position: int = 0  # where `tokens` start in the prompt (a window of a long prompt starts later)
    prompt_tokens: int | None = None  # the prompt's length in tokens when this is a window of it

    @property
    def is_window(self) -> bool:
        return self.prompt_tokens is not None and len(self.tokens) < self.prompt_tokens

    @property
    def last_position(self) -> int:
        return self.first_position + len(self.tokens) - 1

    def window(self, start: int | None = None, size: int = MAX_VIEW_TOKENS) -> AttentionPatterns:
        """Positions [start, start + size) on both axes (the last `size` when start is None), for drawing; a prompt
        no longer than `size` comes back whole."""
        total = len(self.tokens)
        if total <= size:
            return self
        start = total - size if start is None else min(max(int(start), 0), total - size)
        end = start + size
        return replace(self, tokens=self.tokens[start:end], pattern=self.pattern[:, start:end, start:end],
                       first_position=self.first_position + start, prompt_tokens=total)

    def outside_share(self) -> float:
        """The mean share of each drawn row's attention that goes to positions before the window (not drawn)."""
        if not self.is_window:
            return 0.0
        return float(1.0 - self.pattern.sum(-1).mean())

    @property
    def labels(self) -> tuple[str, ...]:
        """Token labels as shown: whitespace made visible (circuitsvis strips raw whitespace from labels)."""
        return tuple(token.display for token in self.tokens)

    @property
    def grouped_query(self) -> bool:
        return self.n_kv_heads < self.n_heads

    def head_name(self, index: int) -> str:
        head = self.heads[index]
        name = f"L{head.layer}H{head.head}"
        return f"{name} (KV {self.kv_heads[index]})" if self.grouped_query else name

    def kv_rows(self) -> list[dict]:
        """One row per selected head: its KV head and every query head of that layer sharing it."""
        group = self.n_heads // self.n_kv_heads
        return [{"head": head.label, "layer": head.layer, "query head": head.head, "kv_head": kv,
                 "query heads sharing this KV head": f"{kv * group}–{kv * group + group - 1}"}
                for head, kv in zip(self.heads, self.kv_heads, strict=True)]


def compute_patterns(model: Backend, prompt: str, heads: Iterable[Component | tuple[int, int]]) -> AttentionPatterns:
    """The chosen heads' patterns on `prompt`: blocks above the highest chosen layer are not run, and each layer's
    pattern is cut down to the chosen heads as soon as it exists."""
    started = time.perf_counter()
    chosen = check_heads(heads, model.info)
    tokenized = tokenize_prompt(model, prompt)
    tokens = model.tensor([tokenized.ids])
    by_layer: dict[int, list[int]] = {}
    for head in chosen:
        by_layer.setdefault(head.layer, []).append(head.head)

    def keep_chosen(layer: int, pattern):  # pattern[batch, chosen head, dest, src]: only this layer's chosen heads
        return {h: pattern[0, i].float().cpu().numpy() for i, h in enumerate(by_layer[layer])}

    kept = model.reduce_attention_patterns(tokens, keep_chosen, layers=by_layer, heads=by_layer)
    stacked = np.stack([kept[head.layer][head.head] for head in chosen]).astype(np.float32)
    info = model.info
    return AttentionPatterns(
        model=info.name,
        prompt=prompt,
        heads=chosen,
        kv_heads=tuple(kv_head_of(head.head, info.n_heads, info.n_kv_heads) for head in chosen),
        n_heads=info.n_heads,
        n_kv_heads=info.n_kv_heads,
        tokens=tokenized.tokens,
        pattern=stacked,
        seconds=time.perf_counter() - started,
    )


def default_prompt(model: Backend) -> str:
    """A digits prompt from the built-in task, fitted to the tokenizer ('1 2 3 4 ' where the space is its own
    token): the prompt the candidate heads were found on."""
    from headscope.tasks import build_task_dataset, fit_to_tokenizer

    items = build_task_dataset("digits", 16, 4, 0, model=model).items
    chosen = next((item for item in items if item.prompt.startswith("1 ")), items[0])
    return fit_to_tokenizer(model, chosen).prompt


# ---------------------------------------------------------------------------------------------------------------
# CSV


def patterns_csv(result: AttentionPatterns) -> str:
    """Long format, one row per (head, dest, src) with src ≤ dest (the rest is zero by causality); tokens in their
    visible-whitespace display form; positions count the whole prompt (BOS included), also for a window."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    labels = result.labels
    for index, head in enumerate(result.heads):
        matrix = result.pattern[index]
        kv = result.kv_heads[index]
        first = result.first_position
        for dest in range(matrix.shape[0]):
            for src in range(dest + 1):
                writer.writerow((head.layer, head.head, kv, first + dest, labels[dest], first + src, labels[src],
                                 f"{float(matrix[dest, src]):.7g}"))
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# circuitsvis views, offline


@dataclass(frozen=True)
class CircuitsView:
    """One circuitsvis component: the id of the element it renders into and its render call (JavaScript)."""

    title: str
    element_id: str
    render_call: str


@lru_cache(maxsize=1)
def _circuitsvis_bundle() -> str:
    """The inlined bundle exactly as circuitsvis puts it into `local_src`."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return path.read_text(encoding="utf-8").replace("</script>", "")


def _view_from_rendered(local_src: str, title: str) -> CircuitsView:
    """Split circuitsvis' `local_src` (element, bundle, render call) so several views can share one bundle.

    Token labels travel inside the render call as JSON; every '<' there becomes \\u003c (the same string to
    JavaScript), so no token can close the script element or open a comment."""
    bundle = _circuitsvis_bundle()
    at = local_src.find(bundle)
    element = re.search(r'<div id="(circuits-vis-[0-9a-f-]+)"', local_src)
    end = local_src.rfind("</script>")
    if at < 0 or element is None or end < at:
        raise RuntimeError("circuitsvis' local_src no longer has the expected layout (element, bundle, render call)")
    render_call = local_src[at + len(bundle):end].strip().replace("<", "\\u003c")
    return CircuitsView(title=title, element_id=element.group(1), render_call=render_call)


def _rounded(values: np.ndarray) -> list:
    """Five decimals are more than a colour scale shows, and keep a long prompt's page small."""
    return np.round(values.astype(np.float64), 5).tolist()


def grid_view(result: AttentionPatterns) -> CircuitsView:
    """All chosen heads in one circuitsvis AttentionHeads component (thumbnails plus an enlarged, hoverable one)."""
    from circuitsvis import attention

    rendered = attention.attention_heads(
        attention=_rounded(result.pattern),
        tokens=list(result.labels),
        attention_head_names=[result.head_name(i) for i in range(len(result.heads))],
        max_value=1.0,
        min_value=0.0,
    )
    return _view_from_rendered(rendered.local_src, f"{len(result.heads)} head{'' if len(result.heads) == 1 else 's'}")


def single_head_view(result: AttentionPatterns, index: int) -> CircuitsView:
    """One head's pattern with token labels on both axes (destination rows, source columns)."""
    from circuitsvis import attention

    if not 0 <= index < len(result.heads):
        raise InputError(f"Head index {index} is not among the {len(result.heads)} selected heads.")
    rendered = attention.attention_pattern(
        tokens=list(result.labels),
        attention=_rounded(result.pattern[index]),
        max_value=1.0,
        min_value=0.0,
        show_axis_labels=True,
    )
    return _view_from_rendered(rendered.local_src, f"Head {result.head_name(index)}")


PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px 20px;color:#1f2430;background:#fff}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:16px;margin:18px 0 4px}
.hs-meta{color:#5b6472;font-size:13px;margin:2px 0}
.hs-prompt{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap}
table.hs-kv{border-collapse:collapse;font-size:13px;margin:6px 0}
table.hs-kv td,table.hs-kv th{border:1px solid #d5d9e0;padding:2px 8px;text-align:left}
"""


def view_page(
    views: Sequence[CircuitsView], *, title: str | None = None, preamble_html: str = "", max_width: int = 900
) -> str:
    """A complete offline HTML page: the views' elements, then ONE module script holding circuitsvis' bundle and
    every view's render call. `title` is escaped here; `preamble_html` must already be escaped. A view's zoomed
    pattern is square, so `max_width` (px) also bounds its height."""
    if not views:
        raise InputError("Nothing to show: select at least one head.")
    sections = []
    for view in views:
        heading = f"<h2>{html.escape(view.title)}</h2>" if title is not None else ""
        sections.append(f'<section>{heading}<div id="{view.element_id}" class="hs-view" '
                        f'style="max-width:{int(max_width)}px"></div></section>')
    head_title = html.escape(title or "Attention patterns")
    calls = "\n".join(view.render_call for view in views)
    heading = f"<h1>{head_title}</h1>" if title is not None else ""
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{head_title}</title>'
        f"<style>{PAGE_CSS}</style></head>\n"
        f"<body>{heading}{preamble_html}{''.join(sections)}\n"
        f'<script type="module">\n{_circuitsvis_bundle()}\n{calls}\n</script>\n</body></html>\n'
    )


def standalone_html(result: AttentionPatterns, single_index: int = 0, title: str | None = None) -> str:
    """The current view as one offline file for slides: the grid of all chosen heads, the single-head view, the
    prompt and (for GQA models) which KV head serves each query head. All text from the prompt is escaped."""
    title = title or f"Attention patterns — {result.model}"
    meta = [
        f'<p class="hs-meta">Model: {html.escape(result.model)} · {len(result.tokens)} tokens (BOS included) · '
        f"heads {html.escape(', '.join(head.label for head in result.heads))}</p>",
        *([f'<p class="hs-meta">Positions {result.first_position}–{result.last_position} of a '
           f"{result.prompt_tokens}-token prompt; attention to earlier positions is not drawn.</p>"]
          if result.is_window else []),
        f'<p class="hs-meta">Prompt: <span class="hs-prompt">{html.escape(result.prompt)}</span></p>',
    ]
    if result.grouped_query:
        rows = "".join(
            f"<tr><td>{html.escape(row['head'])}</td><td>{row['kv_head']}</td>"
            f"<td>{html.escape(row['query heads sharing this KV head'])}</td></tr>"
            for row in result.kv_rows()
        )
        meta.append(
            f'<p class="hs-meta">Grouped-query attention: {result.n_heads} query heads share {result.n_kv_heads} '
            "key/value heads.</p>"
            '<table class="hs-kv"><tr><th>head</th><th>KV head</th><th>query heads sharing it</th></tr>'
            f"{rows}</table>"
        )
    views = [grid_view(result), single_head_view(result, single_index)]
    return view_page(views, title=title, preamble_html="".join(meta), max_width=760)


EXTERNAL_LOAD = re.compile(
    r"""<script\b[^>]*\bsrc\s*=|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//|@import\s+(?:url\()?["']?(?:https?:)?//"""
    r"""|\bfrom\s+["'](?:https?:)?//|\bimport\s*\(\s*["'](?:https?:)?//|unpkg\.com|cdn\.jsdelivr""",
    re.IGNORECASE,
)


def external_references(page: str) -> list[str]:
    """Places where a page would load a script, stylesheet or module from elsewhere (empty for an offline page)."""
    return [match.group(0) for match in EXTERNAL_LOAD.finditer(page)]
