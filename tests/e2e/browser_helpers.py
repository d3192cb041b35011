"""What the browser tests share besides fixtures (imported by module path, so it never depends on which conftest
pytest loaded last)."""

import time
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
# How long a page may take to first answer: the server imports TransformerLens and loads the model for its first run.
# Tens of seconds on an idle machine; 180 s was passed at a load average of 12–15. Every first-load wait uses this.
FIRST_LOAD_MS = 300_000


def wait_for_app(page, url: str, timeout_ms: int = FIRST_LOAD_MS) -> None:
    page.goto(url, timeout=timeout_ms)  # Playwright's default 30 s for the load event was passed at a load of 24
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)


def wait_for_text_in_frame(page, frame_selector: str, text: str, timeout_ms: int = 60_000) -> None:
    """Wait until an iframe matching frame_selector shows `text`. While a rerun replaces a view, Streamlit can show
    the old and the new iframe side by side for a moment, so every match is looked into (a strict frame locator
    would fail on the two)."""
    waited = 0
    while True:
        frames = page.locator(frame_selector)
        for index in range(frames.count()):
            try:
                if frames.nth(index).content_frame.get_by_text(text).count():
                    return
            except PlaywrightError:  # that frame went between counting and looking into it (a rerun): look again
                pass
        if waited >= timeout_ms:
            raise AssertionError(f"no {frame_selector} showed {text!r} within {timeout_ms / 1000:.0f} s")
        page.wait_for_timeout(250)
        waited += 250


def wait_until_idle(page, timeout_ms: int = 120_000) -> None:
    """Wait until the app's script run is over (widgets drawn by a run still going are replaced when it ends)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)


# the whole document is watched (with subtree), not the stApp element found now: nothing to be null, and an app
# element drawn anew would still be seen
_COUNT_FINISHED_RUNS = """() => {
    window.__hsRunsEnded = 0;
    if (window.__hsObserver) window.__hsObserver.disconnect();
    window.__hsObserver = new MutationObserver(records => {
        for (const record of records) if (record.oldValue === 'running') window.__hsRunsEnded += 1;
    });
    window.__hsObserver.observe(document.documentElement, {attributes: true, attributeOldValue: true, subtree: true,
                                                           attributeFilter: ['data-test-script-state']});
}"""


def rerun_settled(page, action, timeout_ms: int = 120_000) -> None:
    """Do `action` (a click, a key press) and wait until the script run it starts has ended: a watcher counts the
    app's script state leaving "running", so a run that starts late or ends fast is neither missed nor waited
    for by a fixed sleep."""
    page.evaluate(_COUNT_FINISHED_RUNS)
    action()
    page.wait_for_function("() => window.__hsRunsEnded > 0", timeout=timeout_ms)
    wait_until_idle(page, timeout_ms)


def stable_box(locator, timeout_ms: int = 30_000) -> dict:
    """The element's bounding box once it stops moving (two reads a frame apart agree): the layout shifts while a
    progress bar goes or a view scrolls, and a click at a stale position hits something else."""
    deadline = time.monotonic() + timeout_ms / 1000
    last = None
    while time.monotonic() < deadline:
        box = locator.bounding_box()
        if box is not None and box == last:
            return box
        last = box
        next_frames(locator.page)
    raise AssertionError(f"{locator} kept moving for {timeout_ms / 1000:.0f} s")


def next_frames(page) -> None:
    """Two animation frames: whatever a resize or scroll changed is laid out and painted (before a screenshot)."""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def hover_plotly_point(page, chart, point) -> tuple[float, float]:
    """Hover a plotly scatter point as a user does, until plotly shows its hover label; returns where it is."""
    point.scroll_into_view_if_needed()
    box = stable_box(point)
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    chart.locator(".hoverlayer .hovertext").first.wait_for(timeout=10_000)
    return x, y


def click_plotly_point(page, chart, point) -> None:
    """Click a plotly scatter point: plotly clicks the point under its hover, so hover it first."""
    page.mouse.click(*hover_plotly_point(page, chart, point))
