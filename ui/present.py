"""The presentation view (a projector in a classroom): `?present=1` in the URL or the
sidebar switch. It hides the sidebar, enlarges text and figures and draws masks large.
The flag lives in the session too, so it survives page switches (Streamlit clears the
query string when the page changes) and is written back into the URL on every page.

Also the CSS every view gets: metric labels and values wrap instead of being cut off
with an ellipsis (at 1024×768 "4 o…" and "99.…")."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

PARAM = "present"
_KEY = "_present"
SCALE = 1.45          # figure heights and fonts in the presentation view

# Every view: key numbers wrap rather than being truncated.
BASE_CSS = """
[data-testid="stMetricValue"] > div, [data-testid="stMetricLabel"] > div,
[data-testid="stMetricLabel"] p, [data-testid="stMetricValue"] {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  overflow-wrap: anywhere;
}
"""

PRESENT_CSS = """
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stExpandSidebarButton"],
[data-testid="stSidebarNav"] { display: none !important; }
[data-testid="stMainBlockContainer"] { max-width: 100% !important; padding: 3.8rem 2.2rem 3rem 2.2rem !important; }
[data-testid="stMain"] p, [data-testid="stMain"] li { font-size: 1.35rem !important; line-height: 1.5 !important; }
[data-testid="stMain"] h1 { font-size: 2.6rem !important; }
[data-testid="stMain"] h2, [data-testid="stMain"] h3 { font-size: 2.0rem !important; }
[data-testid="stMain"] [data-testid="stMetricValue"], [data-testid="stMain"] [data-testid="stMetricValue"] * {
  font-size: 3.0rem !important; line-height: 1.15 !important; }
[data-testid="stMain"] [data-testid="stMetricLabel"], [data-testid="stMain"] [data-testid="stMetricLabel"] * {
  font-size: 1.3rem !important; }
[data-testid="stCaptionContainer"] p { font-size: 1.1rem !important; }
"""


def sync() -> bool:
    """Read the flag from the URL (it wins) or the session, and write it back into the URL."""
    if PARAM in st.query_params:
        st.session_state[_KEY] = st.query_params[PARAM] in ("1", "true", "yes", "on")
    on = bool(st.session_state.get(_KEY, False))
    if on and st.query_params.get(PARAM) != "1":
        st.query_params[PARAM] = "1"
    elif not on and PARAM in st.query_params:
        del st.query_params[PARAM]
    return on


def active() -> bool:
    return bool(st.session_state.get(_KEY, False))


def set_active(on: bool) -> None:
    st.session_state[_KEY] = on
    if on:
        st.query_params[PARAM] = "1"
    elif PARAM in st.query_params:
        del st.query_params[PARAM]


def _toggled() -> None:
    set_active(bool(st.session_state.get("present.toggle")))


def sidebar_toggle() -> None:
    st.session_state["present.toggle"] = active()
    st.toggle("Presentation view", key="present.toggle", on_change=_toggled,
              help="For a projector: hides this sidebar, enlarges text and figures, draws masks large. "
                   "The URL flag ?present=1 does the same; the Exit button at the top of the page leaves it.")


def style() -> None:
    """The CSS of the current view (a <style>-only st.html takes no space on the page)."""
    st.html(f"<style>{BASE_CSS}{PRESENT_CSS if active() else ''}</style>")
    if active():
        cols = st.columns([1, 1, 1, 1, 1.6], vertical_alignment="center")
        for col, (path, label) in zip(cols, LINKS):
            col.page_link(path, label=label)
        if cols[-1].button("Exit presentation", key="present.exit",
                           help="Leave the presentation view (shows the sidebar again)"):
            set_active(False)
            st.rerun()


# The pages a class moves between while presenting (the sidebar menu is hidden).
LINKS = (("pages/lesson.py", "Lesson"), ("pages/pixels.py", "Pixel masks"), ("pages/theory.py", "Theory"),
         ("pages/tradeoffs.py", "Trade-offs"))


def figure(fig: go.Figure, grow: bool = True) -> go.Figure:
    """The figure as the current view draws it: larger fonts and (unless `grow` is False, for a
    figure already sized for the view) a larger height when presenting."""
    if not active():
        return fig
    height = fig.layout.height or 340
    fig.update_layout(height=int(height * SCALE) if grow else height, font=dict(size=18), title_font=dict(size=22),
                      legend=dict(font=dict(size=17)), hoverlabel=dict(font=dict(size=16)))
    fig.update_annotations(font_size=18)
    # Per axis too: Streamlit's chart theme sets axis fonts, which a layout-wide font does not reach.
    fig.update_xaxes(tickfont_size=16, title_font_size=18)
    fig.update_yaxes(tickfont_size=16, title_font_size=18)
    return fig


# The chart's own camera button (plotly's modebar "toImage") stays: only the logo goes.
CHART_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def chart(fig: go.Figure, key: str, container=None, grow: bool = True) -> None:
    (container or st).plotly_chart(figure(fig, grow), key=key, config=CHART_CONFIG)
