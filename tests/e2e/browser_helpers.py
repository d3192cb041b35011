"""What the browser tests share besides fixtures (imported by module path, so it never depends on which conftest
pytest loaded last)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


def wait_for_app(page, url: str, timeout_ms: int = 180_000) -> None:
    page.goto(url)
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)


def wait_for_text_in_frame(page, frame_selector: str, text: str, timeout_ms: int = 60_000) -> None:
    """Wait until an iframe matching frame_selector shows `text`. While a rerun replaces a view, Streamlit can show
    the old and the new iframe side by side for a moment, so every match is looked into (a strict frame locator
    would fail on the two)."""
    waited = 0
    while True:
        frames = page.locator(frame_selector)
        for index in range(frames.count()):
            if frames.nth(index).content_frame.get_by_text(text).count():
                return
        if waited >= timeout_ms:
            raise AssertionError(f"no {frame_selector} showed {text!r} within {timeout_ms / 1000:.0f} s")
        page.wait_for_timeout(250)
        waited += 250


def wait_until_idle(page, timeout_ms: int = 120_000) -> None:
    """Wait until the app's script run is over (widgets drawn by a run still going are replaced when it ends)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
