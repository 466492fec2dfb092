"""A page that raises (tests/test_served_config.py): served with the project's config, the
browser must see neither this message nor a traceback."""

import streamlit as st

st.title("About to fail")
raise RuntimeError("secret-token-4711 in /home/someone/private")
