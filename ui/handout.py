"""Handouts: lesson steps as PNG figures plus a one-page HTML handout (figures embedded,
the step texts and prompts), zipped for one download. No Streamlit here.

PNGs come from plotly's static export (kaleido, which drives a headless Chrome or
Chromium). Where kaleido cannot render, the handout says so and embeds the figures as
interactive plotly charts instead (one copy of plotly.js, no network needed)."""

from __future__ import annotations

import base64
import html
import io
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field

import plotly.graph_objects as go
import plotly.io as pio

PNG_WIDTH = 1100


@dataclass
class Section:
    title: str
    text: str = ""
    notice: str = ""
    question: str = ""
    figures: list[tuple[str, go.Figure]] = field(default_factory=list)     # (name, figure)
    number: int | None = None       # the step's number in the app ("Step 3"); else its place in the handout
    numbers: list[tuple[str, str, str | None]] = field(default_factory=list)   # (label, value, detail) as shown
    shows: str = ""                 # what the step's runs show (the app's line under the figure)


def _browser() -> None:
    """kaleido ≥ 1 needs a Chrome; point it at the system Chromium when it finds none itself."""
    if os.environ.get("BROWSER_PATH"):
        return
    for exe in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(exe)
        if path:
            os.environ["BROWSER_PATH"] = path
            return


def png(fig: go.Figure, width: int = PNG_WIDTH) -> bytes:
    """The figure as a PNG (raises when kaleido cannot render here)."""
    _browser()
    fig = go.Figure(fig)
    fig.update_layout(template="plotly_white", paper_bgcolor="white")
    return pio.to_image(fig, format="png", width=width, height=int(fig.layout.height or 400), scale=1.5)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "figure"


def _md(text: str) -> str:
    """The little Markdown the step texts use (**bold**, *italic*, paragraphs), as HTML."""
    out = []
    for para in text.split("\n\n"):
        p = html.escape(para.strip())
        p = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", p)
        p = re.sub(r"\*(.+?)\*", r"<i>\1</i>", p)
        out.append(f"<p>{p}</p>")
    return "\n".join(out)


def build(sections: list[Section], title: str = "Lottery Lab — handout") -> tuple[bytes, list[str]]:
    """A zip with one PNG per figure and handout.html; returns (zip bytes, notes). A note says
    what could not be done (e.g. no PNGs because kaleido cannot render here)."""
    notes: list[str] = []
    buf = io.BytesIO()
    body = [f"<h1>{html.escape(title)}</h1>"]
    plotly_js_done = False
    png_error: str | None = None
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i, s in enumerate(sections, start=1):
            n = s.number or i
            head = f"Step {n}. " if s.number else f"{i}. "
            body.append(f"<section><h2>{head}{html.escape(s.title)}</h2>{_md(s.text)}")
            if s.numbers:
                said = " · ".join(f"{html.escape(label)}: <b>{html.escape(value)}</b>"
                                  + (f" ({html.escape(detail)})" if detail else "")
                                  for label, value, detail in s.numbers)
                body.append(f"<p class='numbers'><b>Key numbers:</b> {said}</p>")
            for j, (name, fig) in enumerate(s.figures, start=1):
                fname = f"{n:02d}-{slug(s.title)}-{j}-{slug(name)}.png"
                data = None
                if png_error is None:
                    try:
                        data = png(fig)
                    except Exception as e:  # noqa: BLE001 - no Chrome, kaleido missing...: say so, fall back
                        png_error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                if data is not None:
                    z.writestr(fname, data)
                    body.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,"
                                f"{base64.b64encode(data).decode()}'><figcaption>{html.escape(name)}</figcaption>"
                                "</figure>")
                else:
                    body.append("<figure>" + fig.to_html(full_html=False, include_plotlyjs=not plotly_js_done)
                                + f"<figcaption>{html.escape(name)}</figcaption></figure>")
                    plotly_js_done = True
            if s.shows:
                body.append(f"<p><b>What these runs show:</b> {html.escape(s.shows)}</p>")
            if s.notice:
                body.append(f"<p class='notice'><b>What to notice:</b> {html.escape(s.notice)}</p>")
            if s.question:
                body.append(f"<p class='question'><b>Question for the class:</b> {html.escape(s.question)}</p>")
            body.append("</section>")
        if png_error:
            notes.append(f"PNG export is not available here ({png_error}); the handout embeds interactive charts "
                         "instead, and each chart's camera button still saves a PNG.")
            body.insert(1, f"<p class='note'>{html.escape(notes[-1])}</p>")
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
                "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
                "line-height:1.45;color:#222} figure{margin:1rem 0} img{max-width:100%} "
                "figcaption{color:#666;font-size:.9rem} .notice{background:#eef6ee;padding:.5rem .8rem} "
                ".question{background:#eef2fb;padding:.5rem .8rem} .note{color:#a33} section{page-break-inside:"
                "avoid;border-top:1px solid #ddd;margin-top:1.5rem}</style></head><body>"
                + "\n".join(body) + "</body></html>")
        z.writestr("handout.html", page)
    return buf.getvalue(), notes
