"""What one cell of an ablation sweep ablates, as a small registry (names and help texts for the CLI and the pages).

Kept free of torch: the command line reads the names before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from headscope.errors import InputError

UnitName = Literal["head", "kv-group"]


@dataclass(frozen=True)
class SweepUnit:
    """What one cell of a sweep ablates: one query head, or a whole KV group (the query heads sharing one key/value
    head on a grouped-query model: heads g·r … g·r + r − 1 for r query heads per KV head)."""

    name: UnitName
    title: str
    help: str
    whole_kv_group: bool  # a cell is every query head of one KV group (else one query head)

    def width(self, n_heads: int, n_kv_heads: int) -> int:
        """Query heads in one cell."""
        return n_heads // n_kv_heads if self.whole_kv_group else 1

    def cells(self, n_heads: int, n_kv_heads: int) -> int:
        """Cells per layer."""
        return n_heads // self.width(n_heads, n_kv_heads)


SWEEP_UNITS: dict[str, SweepUnit] = {
    unit.name: unit
    for unit in (
        SweepUnit("head", "Query head", "each query head ablated alone", False),
        SweepUnit("kv-group", "KV group",
                  "the query heads sharing one key/value head ablated together (grouped-query models)", True),
    )
}
UNIT_NAMES: tuple[str, ...] = tuple(SWEEP_UNITS)


def get_unit(name: str) -> SweepUnit:
    """The sweep unit called `name`, or an InputError listing the known ones."""
    try:
        return SWEEP_UNITS[name]
    except KeyError:
        raise InputError(f"Unknown unit {name!r}: choose one of {', '.join(UNIT_NAMES)}.") from None


def units_help() -> str:
    """One line per unit, for help texts."""
    return " · ".join(f"{u.name}: {u.help}" for u in SWEEP_UNITS.values())
