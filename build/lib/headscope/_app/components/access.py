"""Serving a lab network: whether this server is reachable beyond localhost, and the optional access token.

- Network mode is on when Streamlit's `server.address` is anything but a loopback address (unset means every
  interface). HEADSCOPE_NETWORK_MODE=1/0 overrides it (tests, or a reverse proxy on the same host). In network mode
  local model folders are limited to HEADSCOPE_MODEL_DIRS (see headscope.loading.SourcePolicy).
- HEADSCOPE_ACCESS_TOKEN, when set, is asked for once per browser session before any page renders, compared in
  constant time (hmac.compare_digest); it is typed into a password field, kept only as a "granted" flag in session
  state, and never put in the URL, the logs or a cache.
"""

from __future__ import annotations

import hmac
import os
import time

import streamlit as st

from headscope.loading import SourcePolicy

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost", "ip6-loopback"})
GRANTED = "_hs_access_granted"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
FAILED_ATTEMPT_DELAY_S = 1.0  # slows guessing down; a right token passes at once


def network_mode() -> bool:
    """True when the server may be reached from other machines."""
    override = os.environ.get("HEADSCOPE_NETWORK_MODE", "").strip().lower()
    if override in _TRUE:
        return True
    if override in _FALSE:
        return False
    address = (st.get_option("server.address") or "").strip().strip("[]").lower()
    return not (address in LOOPBACK or address.startswith("127."))


def source_policy() -> SourcePolicy:
    """What the model picker may load on this server."""
    return SourcePolicy.from_env(network=network_mode())


def access_token() -> str | None:
    token = os.environ.get("HEADSCOPE_ACCESS_TOKEN", "")
    return token or None


def access_granted() -> bool:
    return access_token() is None or bool(st.session_state.get(GRANTED))


def require_access() -> None:
    """Stop the script unless this browser session has given the access token (when one is configured)."""
    token = access_token()
    if token is None or st.session_state.get(GRANTED):
        return
    st.title("headscope")
    st.caption("This server asks for an access token. Ask whoever runs it.")
    with st.form("hs_access_form", clear_on_submit=True):
        entered = st.text_input("Access token", type="password", key="_hs_access_token_input")
        submitted = st.form_submit_button("Enter", type="primary")
    if submitted:
        if hmac.compare_digest(entered.encode("utf-8"), token.encode("utf-8")):
            st.session_state[GRANTED] = True
            st.rerun()
        time.sleep(FAILED_ATTEMPT_DELAY_S)
        st.error("That is not the access token.")
    st.stop()
