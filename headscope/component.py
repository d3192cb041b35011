"""A component of the model by name: head `L.H` or the MLP of layer L — one type for the engines, the CLI and the UI.

Kept free of torch (the command line reads component lists before any model loads); the intervention vocabulary
in headscope.backends.base builds on it and re-exports it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_HEAD = re.compile(r"^\(?\s*(\d+)\s*[.:]\s*(\d+)\s*\)?$")
_MLP = re.compile(r"^mlp\s*(\d+)$", re.IGNORECASE)


@functools.total_ordering
@dataclass(frozen=True)
class Component:
    """Head `head` of layer `layer` (0-based, as TransformerLens counts), or that layer's MLP (head None).

    Ordered layer by layer, within a layer the heads by index and then the MLP; hashable; `label` writes it ("5.2",
    "MLP 5"), `url_text` as a link carries it ("5.2", "mlp5"), `parse` reads either back."""

    layer: int
    head: int | None = None

    @classmethod
    def mlp(cls, layer: int) -> Component:
        return cls(int(layer), None)

    @property
    def is_mlp(self) -> bool:
        return self.head is None

    @property
    def is_head(self) -> bool:
        return self.head is not None

    @property
    def label(self) -> str:
        return f"MLP {self.layer}" if self.head is None else f"{self.layer}.{self.head}"

    @property
    def url_text(self) -> str:
        return f"mlp{self.layer}" if self.head is None else f"{self.layer}.{self.head}"

    def __str__(self) -> str:
        return self.label

    def _key(self) -> tuple[int, int, int]:
        return (self.layer, 1, 0) if self.head is None else (self.layer, 0, self.head)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Component):
            return NotImplemented
        return self._key() < other._key()

    @classmethod
    def parse(cls, text: str) -> Component:
        """'5.2', '(5.2)', '5:2' -> head 2 of layer 5; 'MLP 5', 'mlp5' -> layer 5's MLP; ValueError otherwise."""
        text = (text or "").strip()
        head = _HEAD.match(text)
        if head is not None:
            return cls(int(head.group(1)), int(head.group(2)))
        mlp = _MLP.match(text)
        if mlp is not None:
            return cls.mlp(int(mlp.group(1)))
        raise ValueError(f"Cannot read {text!r} as a component: write a head as layer.head (e.g. 3.24) and an MLP as "
                         "mlp L (e.g. mlp 5).")

    def within(self, n_layers: int, n_heads: int) -> bool:
        """Whether a model of this shape has the component."""
        return 0 <= self.layer < n_layers and (self.head is None or 0 <= self.head < n_heads)


def every_component(n_layers: int, n_heads: int, include_mlp: bool = True) -> list[Component]:
    """Every head and, with include_mlp, every MLP, in order (layer by layer, the MLP after the heads)."""
    out: list[Component] = []
    for layer in range(n_layers):
        out += [Component(layer, head) for head in range(n_heads)]
        if include_mlp:
            out.append(Component.mlp(layer))
    return out
