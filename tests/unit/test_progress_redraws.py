"""A sweep reports progress after every block (hundreds of times in a few seconds); the page redraws its bar at most
every REDRAW_SECONDS, so the server and the browser do not compete with the computation for the same cores."""

import components.long_run as long_run
from headscope.engine import Progress


class _Element:
    def __init__(self) -> None:
        self.drawn: list[tuple[float, str]] = []

    def progress(self, fraction: float, text: str = "") -> None:
        self.drawn.append((fraction, text))

    def button(self, *args, **kwargs) -> bool:
        return False

    def empty(self) -> None:
        return None


def test_the_bar_is_redrawn_a_few_times_however_often_progress_comes(monkeypatch):
    bar = _Element()
    monkeypatch.setattr(long_run.st, "progress", lambda *args, **kwargs: bar)
    monkeypatch.setattr(long_run.st, "empty", _Element)
    monkeypatch.setattr(long_run.st, "session_state", {})
    with long_run.progress_with_cancel("t", "sweep") as report:
        for step in range(1, 1001):
            report(Progress(step / 1000, 895_388.0, f"layer {step}"))
    assert len(bar.drawn) <= 3  # the first, the last, and perhaps one in between on a slow machine
    assert bar.drawn[-1][0] == 1.0  # the end is always drawn
    assert "about 10 d 9 h left" in bar.drawn[0][1]  # readable units


def test_the_bar_jumps_instead_of_sliding(monkeypatch):
    """Streamlit's bar animates every change, on the browser's main thread while the computation needs the cores:
    the run's bar comes with the style that stills it, drawn before the bar."""
    drawn = []
    monkeypatch.setattr(long_run.st, "html", lambda body: drawn.append(("html", body)))
    monkeypatch.setattr(long_run.st, "progress", lambda *args, **kwargs: drawn.append(("bar", args)) or _Element())
    monkeypatch.setattr(long_run.st, "empty", _Element)
    monkeypatch.setattr(long_run.st, "session_state", {})
    with long_run.progress_with_cancel("t", "sweep") as report:
        report(Progress(0.5, 1.0, "layer 1"))
    assert drawn[0] == ("html", long_run.STILL_BAR_CSS) and drawn[1][0] == "bar"
    assert "[data-testid='stProgress']" in long_run.STILL_BAR_CSS and "transition: none" in long_run.STILL_BAR_CSS
