"""Reusable Streamlit pieces; they render what headscope computes."""
