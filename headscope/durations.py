"""One way to write a duration for people: every ETA, estimate and wait in the app and the CLI goes through here.

Raw seconds stop being readable past a minute ("about 895388 s left" is ten days): durations are written in the two
largest units that apply (d, h, min, s), rounded to the smaller one.
"""

from __future__ import annotations

import math

_UNITS = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))


def readable_duration(seconds: float) -> str:
    """'0.4 s', '42 s', '3 min 20 s', '2 h 5 min', '10 d 8 h'; 'unknown' for a value that is not a finite number."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(float(seconds), 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    for index, (name, size) in enumerate(_UNITS[:-1]):
        smaller_name, smaller_size = _UNITS[index + 1]
        # rounded to the smaller unit first, so that 3 h 59.9 min reads "4 h", not "3 h 60 min"
        total = round(whole / smaller_size)
        if total * smaller_size >= size:
            big, small = divmod(total, size // smaller_size)
            return f"{big} {name}" + (f" {small} {smaller_name}" if small else "")
    return f"{whole} s"


def time_left(seconds: float | None) -> str:
    """'about 3 min 20 s left', or '' when no estimate exists yet."""
    return "" if seconds is None else f"about {readable_duration(seconds)} left"
