"""headscope: the Streamlit entry point. Navigation, the access check, the model picker, and taking turns on the one
shared model (a page waiting for another session's job says so)."""

from pathlib import Path

import streamlit as st

from components.access import access_granted, require_access
from components.model_state import model_sidebar, prepare_hooks_after_run
from components.presentation import linked_presentation, presentation_toggle
from components.share import say_invalid_url_values, url_at_start
from components.turns import taking_turns
from headscope.errors import Cancelled

# presentation mode (a link's present=1 or the sidebar's toggle) starts with the sidebar folded
st.set_page_config(page_title="headscope", page_icon=str(Path(__file__).parent / "docs" / "icon.png"), layout="wide",
                   initial_sidebar_state="collapsed" if linked_presentation() else "auto")

navigation = st.navigation(
    [
        st.Page("pages/prompt_tester.py", title="Prompt tester", icon=":material/text_fields:", default=True),
        st.Page("pages/ablation.py", title="Ablation heatmap", icon=":material/grid_on:"),
        st.Page("pages/attention.py", title="Attention patterns", icon=":material/visibility:"),
        st.Page("pages/circuit.py", title="Circuit", icon=":material/account_tree:"),
        st.Page("pages/paths.py", title="Paths", icon=":material/route:"),
    ],
    position="sidebar" if access_granted() else "hidden",
)
require_access()  # stops here until this browser session has given the access token (when one is set)
linked = url_at_start()
presentation_toggle()
model_sidebar()
try:
    with taking_turns() as notice:
        try:
            navigation.run()
        except Cancelled as gave_up:  # "Give up" while waiting for another session's job
            notice.show_gave_up(gave_up)
finally:  # also after a page's st.stop()
    say_invalid_url_values(linked)
    prepare_hooks_after_run()
