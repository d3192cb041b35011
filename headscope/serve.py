"""Start the app with the default model loading in the background from the first moment.

    python -m headscope.serve [streamlit options, e.g. --server.port 8501]

`streamlit run app.py` loads the model only when the first browser session runs the page, after Streamlit itself has
started; here the load (imports included) starts at once in this process, while Streamlit starts and the browser
connects, so the first page finds the model loaded or nearly so. The app's sessions share the same registry
(headscope.registry.shared_registry). `make run` uses this.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app.py"


def preload_default_model() -> None:
    """Load the default model into the shared registry; a failure is left for the app to report."""
    try:
        from headscope.loading import ModelRequest
        from headscope.registry import shared_registry

        shared_registry().get(ModelRequest())
    except Exception:  # the page shows the load error with its message when it asks for the model
        pass


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("HEADSCOPE_PRELOAD", "1") != "0":
        threading.Thread(target=preload_default_model, name="headscope-preload", daemon=True).start()
    from streamlit.web.cli import main as streamlit_main

    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    streamlit_main()


if __name__ == "__main__":
    main()
