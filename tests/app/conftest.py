import pytest
from streamlit.testing.v1 import AppTest

from headscope.loading import ModelRequest
from tests.pinned import EMBEDDED_ON_CPU

TIMEOUT = 180  # the first run in a process loads the embedded model


@pytest.fixture(autouse=True)
def pages_default_to_the_cpu(monkeypatch):
    """A page's default model (no model chosen in the session: `ModelRequest()`) is the embedded one on the CPU in
    float32, the `embedded_model` fixture's: "auto" would be CUDA float16 on a GPU machine. A request the sidebar
    builds from its fields is left as it is."""
    import components.model_state

    def pinned_default(*args, **kwargs) -> ModelRequest:
        return ModelRequest(*args, **kwargs) if args or kwargs else EMBEDDED_ON_CPU

    monkeypatch.setattr(components.model_state, "ModelRequest", pinned_default)


@pytest.fixture
def run_page():
    def run(path: str, **session_state) -> AppTest:
        app = AppTest.from_file(f"../../{path}", default_timeout=TIMEOUT)
        for key, value in session_state.items():
            app.session_state[key] = value
        return app.run()

    return run
