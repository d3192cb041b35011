"""Numbers read from the environment (limits, budgets, timeouts): a bad value is refused with one line naming the
variable, never a traceback and never a silent default."""

from __future__ import annotations

import math
import os

from headscope.errors import InputError


def positive_env(name: str, default: float | None, *, whole: bool = False, maximum: float | None = None
                 ) -> float | None:
    """The variable's value: a finite number above 0 (a whole one where `whole`), at most `maximum`; `default` where
    it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value: float = int(raw) if whole else float(raw)
    except ValueError:
        value = math.nan
    kind = "a whole number" if whole else "a number"
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be {kind} above 0, got {raw!r}.")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be {kind} of at most {maximum:,g}, got {raw!r}.")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
ALLOW_CLEAR = "HEADSCOPE_ALLOW_CLEAR"  # whether a browser on a network-mode server may remove cached results


def flag_env(name: str) -> bool:
    """A yes/no variable: 1/true/yes/on or 0/false/no/off (unset: off); anything else is refused with one line."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InputError(f"{name} must be 1 or 0 (yes/no, true/false, on/off), got {raw!r}.")
