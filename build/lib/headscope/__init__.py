"""headscope: explore the attention heads of language models.

The computation lives here and never imports streamlit; the app and the command line only render what it returns.
"""

__version__ = "0.1.0"
