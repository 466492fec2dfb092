"""A real `streamlit run` against hostile input.

- No Markdown injection in the rendered page: headless Chromium, over a store
  whose runs are named like a phishing link plus a tracking image, and with
  hostile query parameters. The DOM must hold no <a> or <img> pointing off the
  app, and the browser must request nothing from the foreign host.
  (tests/test_app_injection.py checks the same at the Markdown level for every
  page; this checks what the frontend really renders.)
- What `server.allowedHosts` protects: the WebSocket (all data and actions)
  refuses a foreign Host header; plain HTTP (the page shell, health) does not."""

from __future__ import annotations

import base64
import os
import socket
import time
from urllib.parse import quote, urlsplit

import pytest

from engine.config import RunConfig
from engine.store import Store
from tests.app_server import CHROMIUM, launch_page, serve
from tests.test_browser import settle

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


NAME = "[Log in again](https://evil.example/login) ![t](https://evil.example/track.png)"
QP = "x` [EVIL](https://evil.example/login) `y"

# every link and image target in the document (HTML and SVG, e.g. plotly's <a xlink:href>), as absolute URLs
LINKS_JS = """() => [...document.querySelectorAll('a, img, image, source')]
  .map(e => e.getAttribute('href') || e.getAttribute('xlink:href') || e.getAttribute('src') || '')
  .filter(u => u).map(u => { try { return new URL(u, location.href).href } catch (x) { return u } })"""


def _hostile_store(home) -> dict[str, str]:
    """Hand-written runs (nothing trains): done, running, queued, failed, all named NAME."""
    store = Store(home)
    cfg = RunConfig.from_dict(dict(model="lenet300", dataset="digits", method="concave", lam=2.0, name=NAME))
    now = time.time()
    ids = {}
    for i, (role, fields) in enumerate({
            "done": dict(started=now - 60, finished=now - 50, progress=1.0, phase="done",
                         summary={"test_accuracy": 0.9, "remaining": 0.1, "kept": 10, "total": 100,
                                  "sparsity": 0.9, "wall_seconds": 10.0, "device": NAME}),
            "running": dict(started=now - 10, heartbeat=now, progress=0.4, phase=f"search {NAME}"),
            "queued": {},
            "failed": dict(started=now - 30, finished=now - 20, reason=f"ValueError: {NAME}")}.items()):
        rid = store.create_run(cfg.replace(seed=i).to_dict(), f"{i:064d}", name=NAME, status="queued")
        store.update_run(rid, status={"done": "done", "running": "running", "queued": "queued",
                                      "failed": "failed"}[role], **fields)
        ids[role] = rid
    return ids


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("hostile-browser")
    ids = _hostile_store(home)
    # The queue paused (nothing starts) and a heartbeat timeout longer than the test keep the running run running.
    env = {"LOTTERY_MAX_RUNS": "0", "LOTTERY_HEARTBEAT_TIMEOUT": "3600"}
    with serve(home, env=env, timeout=90) as url:
        yield url, ids


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install -y chromium")
@pytest.mark.skipif(sync_playwright is None, reason="the playwright Python package is not installed")
def test_hostile_names_and_parameters_render_no_foreign_links(server):
    url, ids = server
    # The pages the issue found links on, and one more; AppTest walks all of them (test_app_injection.py).
    visits = ["/", f"/runs?runs={','.join(ids.values())}", f"/launch?from={ids['done']}",
              f"/launch?preset={quote(QP)}", f"/masks?runs={ids['done']}&from={quote(QP)}"]
    foreign_requests: list[str] = []
    expect_name = {"/", visits[1], visits[2]}
    timings: dict[str, float] = {}
    with sync_playwright() as p:
        own = urlsplit(url).netloc
        browser, page = launch_page(p, 1400, 1600)

        def gate(route):
            u = urlsplit(route.request.url)
            if u.scheme in ("http", "https", "ws", "wss") and u.netloc != own:
                foreign_requests.append(route.request.url)
                return route.abort()
            return route.continue_()

        page.route("**/*", gate)
        try:
            seen_text = ""
            for path in visits:
                t0 = time.time()
                page.goto(url + path)
                page.wait_for_selector("h1")
                if path in expect_name:           # these pages show the name: wait until they do
                    page.get_by_text("Log in again", exact=False).first.wait_for()
                settle(page, quiet=0.7, timeout=8)   # live pages (a running run) never go quiet for long
                timings[path] = round(time.time() - t0, 1)
                links = page.evaluate(LINKS_JS)
                foreign = [u for u in links if urlsplit(u).scheme in ("http", "https")
                           and urlsplit(u).netloc != own]
                assert not foreign, f"{path}: links or images off the app: {foreign}"
                seen_text += page.inner_text("body").replace("\u2060", "")   # ui.md's invisible word joiners
        finally:
            browser.close()
    print("seconds per page:", timings)
    assert not foreign_requests, foreign_requests
    # the hostile text was on the pages, shown literally (as text, not as a link)
    assert NAME in seen_text
    assert f"search {NAME}" in seen_text                  # Home's progress text of the running run
    assert QP in seen_text                                # ?preset= / ?from= quoted back as code


def _upgrade(url: str, host: str) -> str:
    """The status line the server answers to a WebSocket upgrade of Streamlit's stream with this Host."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall((f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}\r\n\r\n").encode())
        return s.recv(4096).decode(errors="replace").split("\r\n")[0]


def _get(url: str, path: str, host: str) -> str:
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return s.recv(4096).decode(errors="replace").split("\r\n")[0]


def test_allowed_hosts_guards_the_websocket_only(server):
    """docs/class-server.md, "Reaching the app from another machine": exactly what the Host check covers.
    A page loaded from a rebinding name (evil.example -> 127.0.0.1) cannot open the
    WebSocket, which carries every run, figure and action; plain HTTP still answers."""
    url, _ = server
    port = urlsplit(url).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert " 101 " in _upgrade(url, host), host                      # the app's own names: accepted
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}"):
        assert " 403 " in _upgrade(url, host), host                      # any other name: refused
    for path in ("/", "/_stcore/health"):
        assert " 200 " in _get(url, path, "evil.example"), path          # not covered: static shell, health
