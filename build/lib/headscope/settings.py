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
