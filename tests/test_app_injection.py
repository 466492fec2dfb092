"""No Markdown injection: every page, walked with AppTest over a store whose
runs carry hostile names, phases, reasons and statuses, and with hostile query
parameters, renders no live link or image to a foreign site.

Streamlit renders Markdown in more places than st.markdown (captions, alerts,
progress and toast texts, metric labels and values, tab and expander labels,
widget labels and help). The test collects every such string from the element
protos AppTest receives and reads it as Markdown does: backslash escapes and
code spans are literal; whatever is left must not hold the foreign host."""

from __future__ import annotations

import json
import re
import time

import pytest
from app_stores import TINY, _real
from streamlit.testing.v1 import AppTest
from test_app import DATA, PAGES, no_traceback, open_page, routed_by_app_py  # noqa: F401 - fixtures

from engine.store import Store
from ui import data, md

HOST = "evil.example"
NAME = "[Log in again](https://evil.example/login) ![t](https://evil.example/track.png)"
# each closes the page's own backticks / bold first, then links out
QP = "x` [EVIL](https://evil.example/login) `y"
# plotly renders this subset of HTML in trace names, titles and hover texts
HTML = '<a href="https://evil.example/h">x</a> <img src="https://evil.example/h.png">'
QP2 = "x** <https://evil.example/a> www.evil.example/b **y ![i](https://evil.example/i.png)"

# ------------------------------------------------------------------ reading Markdown as the renderer does

_ASCII_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
# GFM's autolink literals (remark's mdast-util-gfm-autolink-literal runs them on the final text, after
# escapes are resolved): bare http(s):// URLs, www. names, e-mail addresses
AUTOLINKS = re.compile(r"(https?://|www(?=\.))[-.\w]+|[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.I)
# links and images written as syntax: [t](url), ![t](url), <scheme:...>, raw <a>/<img>, [ref]: url
SYNTAX_LINKS = re.compile(r"\]\([^)]*evil\.example|<[a-z][a-z0-9+.-]*:[^>\s]*evil\.example"
                          r"|<(?:a|img)\b[^>]*evil\.example|^\s*\[[^\]]+\]:\s*\S*evil\.example", re.I | re.M)


def read_markdown(markdown: str) -> tuple[str, str]:
    """(syntax, text) as a Markdown renderer sees `markdown`: `syntax` holds only the characters
    Markdown syntax can act on (backslash-escaped punctuation and code spans blanked out);
    `text` is the literal text outside code spans, escapes resolved (what autolinking sees)."""
    syntax, text, i, n = [], [], 0, len(markdown)
    while i < n:
        c = markdown[i]
        if c == "\\" and i + 1 < n and markdown[i + 1] in _ASCII_PUNCT:
            syntax.append(" ")                  # a literal character: breaks up any syntax
            text.append(markdown[i + 1])
            i += 2
            continue
        if c == "`":
            run = re.match(r"`+", markdown[i:]).group()
            close = re.search(rf"(?<!`){run}(?!`)", markdown[i + len(run):])
            if close:                           # a code span: literal up to the same-length closing run
                syntax.append(" ")
                text.append(" ")
                i += len(run) + close.end()
                continue
            syntax.append(run)
            text.append(run)
            i += len(run)
            continue
        syntax.append(c)
        text.append(c)
        i += 1
    return "".join(syntax), "".join(text)


def links_out(markdown: str) -> bool:
    """Whether `markdown` would render a link or image to the foreign host."""
    syntax, text = read_markdown(markdown)
    return bool(SYNTAX_LINKS.search(syntax)) or any(HOST in m.group().lower() for m in AUTOLINKS.finditer(text))


def test_links_out_reads_markdown_like_the_renderer():
    assert links_out(NAME)
    assert links_out(f"Run `{QP}` is not in the store")                # the reflected bug of issue 13
    assert links_out("\\[a\\]\\(https\\:\\/\\/evil\\.example\\)")     # escaped, yet autolinked
    assert links_out("mail x\\@evil\\.example") and links_out("see www\\.evil\\.example")
    assert not links_out(f"`{NAME}` and evil.example alone")
    for hostile in (NAME, QP, QP2, "``" + NAME, "\\" + NAME, NAME + "\\", "a@evil.example WWW.evil.example"):
        for wrap in ("{}", "**{}**", "`x` {} `y`", "Run {} ·"):
            assert not links_out(wrap.format(md.esc(hostile))), hostile
            assert not links_out(wrap.format(md.code(hostile))), hostile


def test_esc_and_code_keep_the_visible_text():
    """Escaping changes what Markdown does with the text, not what the reader sees."""
    for text in (NAME, QP, QP2, HTML, "a_b*c~d $x$ :red[y] :material/home: #1 - 2. 3", "λ=0.5 · lenet300/digits[0,1]"):
        assert re.sub(r"\\(.)", r"\1", md.esc(text)).replace(md.WORD_JOINER, "") == text
        assert md.code(text).strip("`")[1:-1] == text
    assert md.esc("a\nb\r\x1b[2Jc") == "a b c"          # one line: a newline would start a new block


# ------------------------------------------------------------------ what AppTest shows

# proto fields that Streamlit renders as Markdown, and elements whose text is plain
MD_FIELDS = {"body", "label", "help", "text", "delta", "caption"}
PLAIN_ELEMENTS = {"code", "json", "text", "arrow_data_frame", "plotly_chart", "html", "exception"}
LIVE_HTML = re.compile(r"<(?:a|img)\b[^>]*evil\.example", re.I)


def _strings(msg, path=""):
    for field, value in msg.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        items = value if repeated else [value]
        for v in items:
            if field.type == field.TYPE_MESSAGE:
                yield from _strings(v, name)
            elif field.type == field.TYPE_STRING:
                yield name, v


def markdown_strings(at: AppTest) -> list[tuple[str, str]]:
    """(where, text) for every string AppTest received that Streamlit renders as Markdown."""
    out = []

    def walk(node, where):
        proto = getattr(node, "proto", None)
        kind = getattr(node, "type", type(node).__name__)
        if proto is not None and kind not in PLAIN_ELEMENTS:
            for name, text in _strings(proto):
                leaf = name.rsplit(".", 1)[-1]
                if leaf in MD_FIELDS or (leaf == "options" and kind in ("radio", "button_group")):
                    out.append((f"{where}/{kind}.{name}", text))
        for key, child in (getattr(node, "children", None) or {}).items():
            walk(child, f"{where}/{key}")

    walk(at._tree, "")
    return out


def plotly_strings(at: AppTest) -> list[str]:
    """Every string in every plotly figure the page sends (names, titles, hover texts, data), but
    legendgroup, an identifier plotly never shows."""
    def strings(o):
        if isinstance(o, str):
            yield o
        elif isinstance(o, dict):
            for k, v in o.items():
                if k != "legendgroup":
                    yield from strings(v)
        elif isinstance(o, list):
            for v in o:
                yield from strings(v)
    return [t for el in at.get("plotly_chart") for t in strings(json.loads(el.proto.spec))]


def assert_no_foreign_links(at: AppTest, what: str) -> list[tuple[str, str]]:
    found = markdown_strings(at)
    assert found, f"{what}: no Markdown seen at all"
    bad = [(w, t) for w, t in found if links_out(t)]
    bad += [("plotly", t) for t in plotly_strings(at) if LIVE_HTML.search(t)]
    assert not bad, f"{what}: live Markdown with {HOST}:\n" + "\n".join(f"{w}: {t!r}" for w, t in bad)
    return found


def shown(found, *needles: str) -> bool:
    """Whether one string on the page holds all `needles` as literal text (once the renderer removed the escapes)."""
    return any(all(n in re.sub(r"\\(.)", r"\1", t).replace(md.WORD_JOINER, "") for n in needles) for _, t in found)


# ------------------------------------------------------------------ the store and the walk

@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A finished LeNet run on digits (every page can show it, Pixel masks included) and hand-made
    running, queued, failed and damaged ones, all named NAME."""
    home = tmp_path_factory.mktemp("hostile")
    store = Store(home)
    ids = {"done": _real(store, DATA, model="lenet300", dataset="digits", method="concave", regularizer="log",
                         lam=5.0, name=f"{NAME} {HTML}", **TINY)}
    now = time.time()
    for role, fields in {"running": dict(started=now - 5, heartbeat=now, progress=0.3, phase=f"search {NAME}"),
                         "queued": {}, "failed": dict(finished=now, reason=f"ValueError: {NAME}"),
                         "odd_status": {}}.items():
        rid = store.create_run(dict(store.get_run(ids["done"])["config"], seed=len(ids) + 7), f"{len(ids):064d}",
                               name=NAME, status="queued")
        store.update_run(rid, status="running" if role == "running" else "queued" if role == "queued" else
                         "failed" if role == "failed" else "done", **fields)
        ids[role] = rid
    with store.connect() as db:         # a damaged row: its status is stored text too
        db.execute("UPDATE runs SET status=? WHERE id=?", (NAME, ids["odd_status"]))
    return home, ids


def _visits(ids):
    for page in PAGES:        # every run selected, and hostile parameters each page may read
        yield page, {"runs": ",".join(ids.values()), "from": QP, "preset": QP, "x": QP2}
    yield "pages/launch.py", {"from": ids["done"]}        # "Duplicating **NAME**"
    yield "pages/launch.py", {"from": QP2}
    yield "pages/launch.py", {"preset": QP}
    yield "pages/launch.py", {"preset": QP2}


def test_every_page_shows_hostile_text_inert(monkeypatch, hostile, jobs):  # noqa: F811
    home, ids = hostile
    seen = []
    for page, query in _visits(ids):
        at = open_page(monkeypatch, home, page, query=query)
        no_traceback(at)
        seen += assert_no_foreign_links(at, f"{page}?{query}")
    # the hostile text is really on the pages (escaped), so the walk above looked at it
    assert shown(seen, NAME)
    assert shown(seen, f"search {NAME}")           # Home's progress text of the running run
    assert shown(seen, "Duplicating **", f"“{NAME} {HTML}”**")
    assert shown(seen, f"ValueError: {NAME}")       # the failed run's reason on Runs
    assert shown(seen, QP)                          # the unknown ?from= / ?preset= is quoted back, inert


def test_the_lesson_shows_hostile_text_inert(monkeypatch, hostile, jobs):  # noqa: F811
    """Issue 23, item 6: the eighth page. Every step, with the hostile run as a class-pack example
    (the steps draw from examples) and hostile query parameters, has no live link or image in any
    Markdown or figure string. (The Lesson names no run: its figures and numbers come from the
    runs' data, so the name itself is not expected on it.)"""
    from ui import lesson_steps as ls
    home, ids = hostile
    store = Store(home)
    with store.transaction() as db:
        db.execute("UPDATE runs SET example = 1 WHERE id=?", (ids["done"],))
    try:
        seen = []
        for step in [*map(str, range(1, len(ls.STEPS) + 1)), QP, QP2]:
            at = open_page(monkeypatch, home, "pages/lesson.py",
                           query={"step": step, "runs": ",".join(ids.values()), "from": QP, "x": QP2})
            no_traceback(at)
            seen += assert_no_foreign_links(at, f"lesson step {step!r}")
        assert len(seen) > 10 * len(ls.STEPS)          # the walk read every step's text
    finally:
        with store.transaction() as db:
            db.execute("UPDATE runs SET example = 0 WHERE id=?", (ids["done"],))


def test_home_progress_text_is_escaped(monkeypatch, hostile, jobs):  # noqa: F811
    """The exact bug of issue 13: Home's list of running runs (st.progress text)."""
    home, ids = hostile
    at = open_page(monkeypatch, home, "pages/home.py")
    texts = [t for w, t in markdown_strings(at) if "progress.text" in w]
    assert texts and any("Log in again" in t for t in texts), texts
    assert not any(links_out(t) for t in texts), texts


def test_store_path_in_the_sidebar_is_code(monkeypatch, tmp_path, jobs):  # noqa: F811
    home = tmp_path / "a`b [x](https://evil.example) c"
    at = open_page(monkeypatch, home, "pages/home.py")
    found = assert_no_foreign_links(at, "home with a hostile store path")
    assert shown(found, str(home))


def test_figures_and_the_exported_html_keep_run_names_inert(monkeypatch, hostile, jobs):  # noqa: F811
    """Plotly renders <a href> in legends and titles; curves.html (in the export zip) is a web page."""
    home, ids = hostile
    at = open_page(monkeypatch, home, "pages/tradeoffs.py")     # its cost figure's hover names the run in full
    texts = plotly_strings(at)
    assert any("&lt;a href=" in t for t in texts), "the run's name is not in the figures"   # shown, escaped
    assert not [t for t in texts if LIVE_HTML.search(t)]
    page = data.curves_html(Store(home), Store(home).get_run(ids["done"]))
    assert "&lt;a href=" in page and not LIVE_HTML.search(page)
