"""The app as the class server runs it (`python -m ops.class_server`, `make class-server`):
app.py unchanged, inside Streamlit's ASGI entry point (st.App) with one middleware,
ops/upgrade_check.py, so a proxy that drops WebSocket upgrades is named on the page
instead of leaving it spinning. `streamlit run class_app.py` starts it like app.py."""

import streamlit as st
from starlette.middleware import Middleware

from ops.upgrade_check import UpgradeCheck

app = st.App("app.py", middleware=[Middleware(UpgradeCheck)])
