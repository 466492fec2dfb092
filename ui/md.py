"""User-controlled text made inert before it goes into Streamlit Markdown.

Streamlit renders Markdown not only in st.markdown but in st.caption, the
st.info/warning/error/success bodies, st.progress and st.toast texts, metric
labels and values, tab and expander labels, widget labels and help tooltips.
A run name such as `[Log in again](https://evil.example/login)` or a query
parameter that closes a backtick would otherwise become a live link or an
image the browser fetches. Every run name, id, config value, query parameter,
error text or path shown by the app goes through `esc` (as plain text) or
`code` (as inline code) when it is placed into one of those.

Selectbox and multiselect options and dataframe cells are plain text: they
need neither (and would show the backslashes). Plotly renders a subset of HTML
in trace names, titles and hover texts (`<a href>` becomes a live link), so run
names go into figures through `plotly`."""

from __future__ import annotations

import html
import re

from engine.text import for_terminal

# Every ASCII punctuation character may be backslash-escaped in CommonMark, and an escaped one is
# always literal: no link, image, emphasis, code, HTML, <autolink>, LaTeX ("$"), emoji shortcode or
# Streamlit directive (":red[...]", ":material/...:") can start.
_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")


def _one_line(value) -> str:
    # Control characters out (a newline would start a new block: a heading, a list, a table)
    return for_terminal("" if value is None else value)


# GFM turns bare URLs and e-mail addresses into links after escapes are resolved (remark's
# autolink-literal pass works on the final text), so escaping cannot stop those: an invisible
# word joiner (U+2060) inside "://", "www." and after "@" does.
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.I)
WORD_JOINER = "\u2060"


def esc(value) -> str:
    """`value` as literal text inside Markdown (one line; every ASCII punctuation escaped,
    no autolink)."""
    return _PUNCT.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, _one_line(value)))


def code(value) -> str:
    """`value` as an inline code span (nothing inside is parsed), whatever backticks it holds."""
    text = _one_line(value)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"      # the spaces are stripped by the renderer; they let text start with `


def plotly(value) -> str:
    """`value` as literal text in a plotly name, title or hover text (HTML entities; plotly decodes them)."""
    return html.escape(_one_line(value), quote=False)
