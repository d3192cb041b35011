"""headscope: explore the attention heads of language models.

The computation lives here and never imports streamlit; the app and the command line only render what it returns.
In a notebook: `import headscope as hs; model = hs.load(); model.sweep(task="digits")` (headscope.api).
"""

__version__ = "0.1.0"

from headscope.api import Model, compare, load
from headscope.errors import HeadscopeError, InputError, ModelLoadError

__all__ = ["HeadscopeError", "InputError", "Model", "ModelLoadError", "__version__", "compare", "load"]
