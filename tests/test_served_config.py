"""Issue 23, item 2: the safety settings of .streamlit/config.toml, on a server started the way
`make run` starts it (`python -m streamlit run app.py` from the project root, no address on the
command line; only the port is chosen here, so two test runs never collide). Streamlit's own
defaults are all interfaces, no Host allow-list and full error details: each test below fails
if config.toml is not in effect."""

from __future__ import annotations

import http.client
import ipaddress
import urllib.error
import urllib.request
from urllib.parse import urlparse

import psutil
import pytest
from app_server import launch_page, needs_browser, serve

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the browser test skips, saying why
    sync_playwright = None

RAISING_PAGE = "tests/raising_page.py"     # raises an exception whose message is a "secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("served")
    with serve(home, timeout=120) as url:
        yield url


def port_of(url: str) -> int:
    return urlparse(url).port


def test_listens_on_loopback_only(server):
    port = port_of(server)
    listening = [c for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    assert listening, f"nothing listens on port {port}"
    addrs = {c.laddr.ip for c in listening}
    assert all(ipaddress.ip_address(a).is_loopback for a in addrs), addrs     # not 0.0.0.0 nor ::
    # and from this machine's other addresses it is not reachable
    others = [a.address.split("%")[0] for nic in psutil.net_if_addrs().values() for a in nic
              if a.family.name in ("AF_INET", "AF_INET6")]
    for address in others:
        if not ipaddress.ip_address(address).is_loopback:
            with pytest.raises(OSError):
                http.client.HTTPConnection(address, port, timeout=3).connect()


def test_xsrf_is_on(server):
    """A write without the XSRF token is refused (403), and the token cookie is handed out."""
    with urllib.request.urlopen(f"{server}/_stcore/health", timeout=10) as r:
        assert "_streamlit_xsrf=" in (r.headers.get("Set-Cookie") or "")
    req = urllib.request.Request(f"{server}/_stcore/upload_file/some-session/some-file", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403 and b"XSRF" in e.value.read()


def _websocket_upgrade(url: str, host: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=10)
    c.request("GET", "/_stcore/stream", headers={
        "Host": host, "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    status = c.getresponse().status
    c.close()
    return status


def test_only_allowed_hosts_may_open_the_app(server):
    """DNS rebinding: a page on another name that resolves here cannot open the app's socket."""
    assert _websocket_upgrade(server, f"127.0.0.1:{port_of(server)}") == 101
    assert _websocket_upgrade(server, f"localhost:{port_of(server)}") == 101
    assert _websocket_upgrade(server, "evil.example") == 403


@needs_browser(sync_playwright)[0]
@needs_browser(sync_playwright)[1]
def test_an_exception_shows_no_traceback(tmp_path):
    """showErrorDetails = "none": the browser gets Streamlit's generic notice, neither the
    exception's message nor its traceback (both are in the server's log)."""
    with serve(tmp_path, script=RAISING_PAGE, timeout=120) as url, sync_playwright() as p:
        browser, page = launch_page(p)
        try:
            page.goto(url)
            page.wait_for_selector('[data-testid="stException"], [data-testid="stAlert"]')
            page.wait_for_timeout(500)
            shown = page.inner_text("body")
        finally:
            browser.close()
    assert "This app has encountered an error" in shown, shown
    for leak in ("secret-token-4711", "Traceback", "raising_page.py", "RuntimeError", "line "):
        assert leak not in shown, (leak, shown)
    assert "secret-token-4711" in (tmp_path / "streamlit.log").read_text()   # the operator still sees it
