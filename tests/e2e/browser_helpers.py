"""What the browser tests share besides fixtures (imported by module path, so it never depends on which conftest
pytest loaded last)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


def wait_for_app(page, url: str, timeout_ms: int = 180_000) -> None:
    page.goto(url)
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
