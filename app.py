"""headscope: the Streamlit entry point. Navigation, the model picker, and the one shared model."""

import streamlit as st

from components.model_state import model_sidebar

st.set_page_config(page_title="headscope", page_icon="docs/icon.png", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/prompt_tester.py", title="Prompt tester", icon=":material/text_fields:", default=True),
        st.Page("pages/ablation.py", title="Ablation heatmap", icon=":material/grid_on:"),
        st.Page("pages/attention.py", title="Attention patterns", icon=":material/visibility:"),
        st.Page("pages/circuit.py", title="Circuit", icon=":material/account_tree:"),
    ]
)
model_sidebar()
navigation.run()
