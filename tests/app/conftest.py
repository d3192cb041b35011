import pytest
from streamlit.testing.v1 import AppTest

TIMEOUT = 180  # the first run in a process loads the embedded model


@pytest.fixture
def run_page():
    def run(path: str, **session_state) -> AppTest:
        app = AppTest.from_file(f"../../{path}", default_timeout=TIMEOUT)
        for key, value in session_state.items():
            app.session_state[key] = value
        return app.run()

    return run
