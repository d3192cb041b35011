"""Attention patterns of a prompt kept across a page's reruns and head changes, so that one forward per prompt serves
every head list and every window of it (a 4,343-token prompt costs a forward of ~11 s on 2 cores).

Where the backend offers them (`Backend.attention_inputs`: the bridge's native route), a prompt's attention inputs
are kept: the query, key and mask of every layer up to the highest one asked for, 13 MB per layer there. Any head of
those layers, or any window of its rows, is then recomputed in milliseconds; only a head above them runs a forward
again (up to its layer). Other backends keep each head's whole pattern (tokens² · 4 bytes, 77 MB there) and compute
only heads not seen on that prompt.

Keyed by the model's identity (source, revision, backend, dtype, device: what changes a pattern) and the prompt's
text; bounded in bytes (HEADSCOPE_PATTERN_MEMO_MB, default DEFAULT_MAX_MB), least recently used first out. Shared by
every session of the process: a pattern depends on nothing else.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from headscope.component import Component
from headscope.heads import check_heads, kv_head_of
from headscope.patterns import MAX_VIEW_TOKENS, AttentionPatterns, compute_patterns
from headscope.settings import positive_env
from headscope.tokens import tokenize_prompt

if TYPE_CHECKING:
    from collections.abc import Iterable

    from headscope.backends.attention_inputs import AttentionInputs
    from headscope.backends.base import Backend
    from headscope.tokens import TokenInfo

DEFAULT_MAX_MB = 1024
INPUTS = "inputs"  # the first part of a key that holds a prompt's attention inputs; a head's pattern has its head


class PatternMemo:
    """A prompt's attention inputs, or else its heads' whole patterns, per model identity; least recently used out."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # (INPUTS, model, prompt) -> (tokens, AttentionInputs); (head, model, prompt) -> pattern[dest, src]
        self._kept: OrderedDict[tuple, tuple[tuple[TokenInfo, ...], AttentionInputs] | np.ndarray] = OrderedDict()
        self._sizes: dict[tuple, int] = {}
        self._prompts: dict[tuple, AttentionPatterns] = {}  # (model, prompt) -> a whole result, for its tokens
        self._bytes = 0
        self._guard = threading.Lock()
        self.forwards = 0  # forwards over a prompt run through this memo (tests and benches read it)

    def patterns(self, model: Backend, prompt: str, heads: Iterable[Component | tuple[int, int]]) -> AttentionPatterns:
        """compute_patterns(model, prompt, heads), from what is kept for this model and prompt where it can."""
        return self.window(model, prompt, heads, size=None)

    def window(self, model: Backend, prompt: str, heads: Iterable[Component | tuple[int, int]],
               start: int | None = None, size: int | None = MAX_VIEW_TOKENS) -> AttentionPatterns:
        """compute_patterns(model, prompt, heads).window(start, size) (the whole patterns when size is None), without
        another forward where this prompt's attention inputs are kept."""
        started = time.perf_counter()
        chosen = check_heads(heads, model.info)
        prompt_key = (tuple(sorted(model.identity.items())), prompt)
        kept = self._inputs(model, prompt_key, max(head.layer for head in chosen))
        if kept is None:
            whole = self._whole_patterns(model, prompt_key, chosen)
            return whole if size is None else whole.window(start, size)
        tokens, inputs = kept
        total = len(tokens)
        first, stop = 0, total
        if size is not None and total > size:
            first = total - size if start is None else min(max(int(start), 0), total - size)
            stop = first + size
        rows = np.stack([inputs.rows(head.layer, [head.head], first, stop)[0, :, first:] for head in chosen])
        info = model.info
        return AttentionPatterns(
            model=info.name, prompt=prompt, heads=chosen,
            kv_heads=tuple(kv_head_of(head.head, info.n_heads, info.n_kv_heads) for head in chosen),
            n_heads=info.n_heads, n_kv_heads=info.n_kv_heads, tokens=tokens[first:stop], pattern=rows,
            seconds=time.perf_counter() - started, first_position=first,
            prompt_tokens=total if stop - first < total else None)

    # ------------------------------------------------------------------------------------------------ inputs

    def _inputs(self, model: Backend, prompt_key: tuple, top_layer: int
                ) -> tuple[tuple[TokenInfo, ...], AttentionInputs] | None:
        """This prompt's kept attention inputs reaching top_layer, from one forward if need be; None where the
        backend has none."""
        key = (INPUTS, *prompt_key)
        with self._guard:
            kept = self._kept.get(key)
            if isinstance(kept, tuple) and kept[1].top_layer >= top_layer:
                self._kept.move_to_end(key)
                return kept
        tokenized = tokenize_prompt(model, prompt_key[1])
        inputs = model.attention_inputs(model.tensor([tokenized.ids]), top_layer)
        if inputs is None:
            return None
        kept = (tokenized.tokens, inputs)
        with self._guard:
            self.forwards += 1
            self._store(key, kept, inputs.nbytes)
        return kept

    # ------------------------------------------------------------------------------------------------ whole patterns

    def _whole_patterns(self, model: Backend, prompt_key: tuple, chosen: tuple[Component, ...]) -> AttentionPatterns:
        """The backends without attention inputs: each head's whole pattern kept, only heads not seen computed."""
        with self._guard:
            missing = [head for head in chosen if (head, *prompt_key) not in self._kept]
        if missing:
            fresh = compute_patterns(model, prompt_key[1], missing)
            with self._guard:
                self.forwards += 1
                self._prompts[prompt_key] = fresh
                for index, head in enumerate(fresh.heads):
                    self._store((head, *prompt_key), fresh.pattern[index], fresh.pattern[index].nbytes)
            if len(missing) == len(chosen):
                return fresh if fresh.heads == chosen else self._assemble(model, prompt_key, chosen, fresh)
        with self._guard:
            template = self._prompts.get(prompt_key)
        if template is None:  # dropped meanwhile (a small budget and another session): compute it whole
            return compute_patterns(model, prompt_key[1], chosen)
        return self._assemble(model, prompt_key, chosen, template)

    def _assemble(self, model: Backend, prompt_key: tuple, chosen: tuple[Component, ...],
                  template: AttentionPatterns) -> AttentionPatterns:
        with self._guard:
            rows = []
            for head in chosen:
                kept = self._kept.get((head, *prompt_key))
                if not isinstance(kept, np.ndarray):  # dropped meanwhile: compute it whole
                    break
                self._kept.move_to_end((head, *prompt_key))
                rows.append(kept)
        if len(rows) < len(chosen):
            return compute_patterns(model, prompt_key[1], chosen)
        info = model.info
        return replace(template, heads=chosen,
                       kv_heads=tuple(kv_head_of(head.head, info.n_heads, info.n_kv_heads) for head in chosen),
                       pattern=np.stack(rows))

    # ------------------------------------------------------------------------------------------------ bytes

    def _store(self, key: tuple, value: object, nbytes: int) -> None:
        """Keep `value` (under the guard), then drop the least recently used entries until within max_bytes."""
        if nbytes > self.max_bytes:
            return
        if key in self._kept:
            self._bytes -= self._sizes.pop(key)
            del self._kept[key]
        self._kept[key] = value
        self._sizes[key] = nbytes
        self._bytes += nbytes
        while self._bytes > self.max_bytes and self._kept:
            dropped, _ = self._kept.popitem(last=False)
            self._bytes -= self._sizes.pop(dropped)
            prompt_key = dropped[1:]
            if dropped[0] != INPUTS and not any(other[1:] == prompt_key for other in self._kept):
                self._prompts.pop(prompt_key, None)


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
