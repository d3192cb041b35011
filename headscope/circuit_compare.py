"""Comparing circuits: a circuit as sets of components (from a found circuit or an uploaded JSON), the overlap of
two or more, and the Jaccard index of every pair."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from headscope.component import Component
from headscope.errors import InputError


@dataclass(frozen=True)
class CircuitSet:
    """A circuit as sets of components, from a result or an uploaded JSON: heads {head component}, mlps {layer}."""

    label: str
    heads: frozenset[Component]
    mlps: frozenset[int]
    n_layers: int
    n_heads: int

    @property
    def components(self) -> frozenset[Component]:
        return frozenset(self.heads) | frozenset(Component.mlp(layer) for layer in self.mlps)

    def __len__(self) -> int:
        return len(self.heads) + len(self.mlps)


# An uploaded circuit's size bounds (the largest open models have about 126 layers and 128 heads): the comparison grid
# is drawn layer × head, so an unbounded file could tie the server up.
MAX_CIRCUIT_LAYERS = 256
MAX_CIRCUIT_HEADS = 256


def parse_circuit_json(text: str, name: str) -> CircuitSet:
    """A circuit from JSON: {"heads": [[L, H], …], "mlps": [L, …]} (optional "model", "task", "n_layers", "n_heads";
    "mlps" may be left out). Layers and heads are 0-based. Errors say what is wrong, naming the item."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{name}: not valid JSON ({error.msg} at line {error.lineno}).") from error
    if not isinstance(data, dict) or not isinstance(data.get("heads"), list):
        raise InputError(f'{name}: expected an object with "heads": [[layer, head], …] and optionally '
                         '"mlps": [layer, …].')
    heads = set()
    for item in data["heads"]:
        if (not isinstance(item, list | tuple) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item)):
            raise InputError(f"{name}: each head must be [layer, head] with non-negative integers; got "
                             f"{json.dumps(item)[:40]}.")
        heads.add(Component(int(item[0]), int(item[1])))
    mlps_raw = data.get("mlps", [])
    if not isinstance(mlps_raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in mlps_raw):
        raise InputError(f'{name}: "mlps" must be a list of non-negative layer numbers.')
    mlps = {int(v) for v in mlps_raw}
    shape = [data.get("n_layers") or 0, data.get("n_heads") or 0]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape):
        raise InputError(f'{name}: "n_layers" and "n_heads", where given, must be non-negative integers.')
    n_layers = max([h.layer + 1 for h in heads] + [layer + 1 for layer in mlps] + [shape[0]])
    n_heads = max([(h.head or 0) + 1 for h in heads] + [shape[1]])
    if n_layers > MAX_CIRCUIT_LAYERS or n_heads > MAX_CIRCUIT_HEADS:  # a grid this size would tie the server up
        raise InputError(f"{name}: {n_layers:,} layers × {n_heads:,} heads is beyond any model headscope compares "
                         f"(at most {MAX_CIRCUIT_LAYERS} layers × {MAX_CIRCUIT_HEADS} heads): check the file.")
    if not heads and not mlps:
        raise InputError(f"{name}: the circuit holds no component.")
    label = str(data.get("label") or " · ".join(str(data[k]) for k in ("model", "task") if data.get(k)) or name)
    return CircuitSet(f"{label} (uploaded)", frozenset(heads), frozenset(mlps), n_layers, n_heads)


@dataclass(frozen=True)
class CircuitComparison:
    """Overlap of two or more circuits: membership[component] = indices of the circuits holding it, counts, and the
    Jaccard index |A ∩ B| / |A ∪ B| of every pair (heads and MLPs together)."""

    circuits: tuple[CircuitSet, ...]
    membership: dict[Component, frozenset[int]]
    jaccard: np.ndarray  # [circuit, circuit]
    n_layers: int
    n_heads: int

    @property
    def shared(self) -> set[Component]:
        """Components every circuit holds."""
        everyone = frozenset(range(len(self.circuits)))
        return {c for c, holders in self.membership.items() if holders == everyone}

    def only(self, index: int) -> set[Component]:
        return {c for c, holders in self.membership.items() if holders == frozenset({index})}

    def category(self, component: Component) -> str:
        """'shared', 'only A' (the circuit's letter), 'k of N', or '' (in none)."""
        holders = self.membership.get(component, frozenset())
        if not holders:
            return ""
        if len(holders) == len(self.circuits):
            return "shared"
        if len(holders) == 1:
            return f"only {letter(next(iter(holders)))}"
        return f"{len(holders)} of {len(self.circuits)}"

    def counts(self) -> list[dict[str, Any]]:
        """One row per circuit: its size, what it shares with all, what only it holds."""
        shared = self.shared
        return [{"circuit": letter(i), "label": c.label, "heads": len(c.heads), "mlps": len(c.mlps),
                 "components": len(c), "shared with all": len(shared), f"only {letter(i)}": len(self.only(i))}
                for i, c in enumerate(self.circuits)]


def letter(index: int) -> str:
    return chr(ord("A") + index) if index < 26 else f"#{index + 1}"


def compare_circuits(circuits: Sequence[CircuitSet]) -> CircuitComparison:
    if len(circuits) < 2:
        raise InputError("Pick at least two circuits to compare.")
    membership: dict[Component, set[int]] = {}
    for index, circuit in enumerate(circuits):
        for component in circuit.components:
            membership.setdefault(component, set()).add(index)
    jaccard = np.ones((len(circuits), len(circuits)))
    for i, a in enumerate(circuits):
        for j, b in enumerate(circuits):
            union = a.components | b.components
            jaccard[i, j] = len(a.components & b.components) / len(union) if union else 1.0
    return CircuitComparison(tuple(circuits), {c: frozenset(h) for c, h in membership.items()}, jaccard,
                             max(c.n_layers for c in circuits), max(c.n_heads for c in circuits))
