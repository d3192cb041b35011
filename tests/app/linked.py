"""Opening a page as a link does: its query parameters set before the first run (shared by the link tests)."""

from streamlit.testing.v1 import AppTest

TIMEOUT = 300


def open_page(path: str, params: dict[str, str]) -> AppTest:
    """The page at `path` (from the checkout's root) run once with `params` in its URL."""
    app = AppTest.from_file(f"../../{path}", default_timeout=TIMEOUT)
    app.query_params.update(params)
    return app.run()
