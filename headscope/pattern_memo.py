"""Attention patterns kept per head of a prompt, so a page's rerun or a change of its head list computes only the heads
it has not seen on that prompt (a 4,402-token prompt costs a forward of ~20 s on 2 cores; each head kept is
tokens² · 4 bytes, 77 MB there).

Keyed by the model's identity (source, revision, backend, dtype, device: what changes a pattern) and the prompt's
text; bounded in bytes (HEADSCOPE_PATTERN_MEMO_MB, default DEFAULT_MAX_MB), least recently used heads dropped first.
Shared by every session of the process: a pattern depends on nothing else.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from headscope.component import Component
from headscope.heads import check_heads, kv_head_of
from headscope.patterns import AttentionPatterns, compute_patterns
from headscope.settings import positive_env

if TYPE_CHECKING:
    from collections.abc import Iterable

    from headscope.backends.base import Backend

DEFAULT_MAX_MB = 1024


class PatternMemo:
    """pattern[dest, src] per (model identity, prompt, head), with the prompt's tokens; least recently used out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._heads: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (model, prompt, head) -> pattern
        self._prompts: dict[tuple, AttentionPatterns] = {}  # (model, prompt) -> a result, for its tokens
        self._bytes = 0
        self._guard = threading.Lock()
        self.computed_heads = 0  # heads computed through this memo (tests and benches read it)

    def patterns(self, model: Backend, prompt: str, heads: Iterable[Component | tuple[int, int]]) -> AttentionPatterns:
        """compute_patterns(model, prompt, heads), computing only the heads not kept for this model and prompt."""
        chosen = check_heads(heads, model.info)
        prompt_key = (tuple(sorted(model.identity.items())), prompt)
        with self._guard:
            missing = [head for head in chosen if (*prompt_key, head) not in self._heads]
        if missing:
            fresh = compute_patterns(model, prompt, missing)
            self._keep(prompt_key, fresh)
            if len(missing) == len(chosen):
                return fresh if fresh.heads == chosen else self._assemble(model, prompt_key, chosen, fresh)
        with self._guard:
            template = self._prompts.get(prompt_key)
        if template is None:  # dropped meanwhile (a small budget and another session): compute it whole
            return compute_patterns(model, prompt, chosen)
        return self._assemble(model, prompt_key, chosen, template)

    def _keep(self, prompt_key: tuple, result: AttentionPatterns) -> None:
        with self._guard:
            self.computed_heads += len(result.heads)
            self._prompts[prompt_key] = result
            for index, head in enumerate(result.heads):
                key = (*prompt_key, head)
                if key in self._heads:
                    continue
                pattern = result.pattern[index]
                if pattern.nbytes > self.max_bytes:
                    continue
                self._heads[key] = pattern
                self._bytes += pattern.nbytes
            while self._bytes > self.max_bytes and self._heads:
                (model, prompt, _), dropped = self._heads.popitem(last=False)
                self._bytes -= dropped.nbytes
                if not any(key[:2] == (model, prompt) for key in self._heads):
                    self._prompts.pop((model, prompt), None)

    def _assemble(self, model: Backend, prompt_key: tuple, chosen: tuple[Component, ...],
                  template: AttentionPatterns) -> AttentionPatterns:
        with self._guard:
            rows = []
            for head in chosen:
                key = (*prompt_key, head)
                if key not in self._heads:  # dropped meanwhile: compute it whole
                    break
                self._heads.move_to_end(key)
                rows.append(self._heads[key])
        if len(rows) < len(chosen):
            return compute_patterns(model, prompt_key[1], chosen)
        info = model.info
        return replace(template, heads=chosen,
                       kv_heads=tuple(kv_head_of(head.head, info.n_heads, info.n_kv_heads) for head in chosen),
                       pattern=np.stack(rows))


_SHARED: PatternMemo | None = None
_SHARED_GUARD = threading.Lock()


def shared_pattern_memo() -> PatternMemo:
    """The process's memo (every session's patterns)."""
    global _SHARED
    with _SHARED_GUARD:
        if _SHARED is None:
            megabytes = positive_env("HEADSCOPE_PATTERN_MEMO_MB", DEFAULT_MAX_MB)
            _SHARED = PatternMemo(int((megabytes or DEFAULT_MAX_MB) * 2**20))
        return _SHARED
