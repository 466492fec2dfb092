"""The trusted-header path end to end, with real parts (issue 15, item 4): a real nginx on a
loopback port with basic auth for two users, passing the authenticated user
(`proxy_set_header X-Remote-User $remote_user`) and the proxy's secret to a real
`streamlit run` of the app, driven by headless Chromium. Through the proxy each user sees
only their own runs; straight to the app's port a forged X-Remote-User is ignored.

nginx runs from the test as `nginx -p TMP -c TMP/nginx.conf` with `daemon off;` (pid file,
logs and temp folders in TMP) and is stopped afterwards. Skipped, with the reason, when
nginx or Chromium is missing."""

from __future__ import annotations

import base64
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from app_server import CHROMIUM, CHROMIUM_ARGS, DONE_COUNTER_JS, free_port, serve

from engine import runner
from engine.config import RunConfig
from engine.store import Store

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = [
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx)"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"),
]
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
TINY = {"model": "logreg", "dataset": "digits", "method": "dense", "epochs": 1, "batch_size": 256}

NGINX_CONF = """
{user}
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        auth_basic "Lottery Lab";
        auth_basic_user_file {tmp}/htpasswd;
        location / {{
            proxy_pass http://127.0.0.1:{app_port};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Remote-User $remote_user;
            proxy_set_header X-Lottery-Proxy "{secret}";
            proxy_read_timeout 1h;
        }}
    }}
}}
"""


def _hash(password: str) -> str:
    """An APR1 hash from openssl when it is there; else nginx's {PLAIN} scheme."""
    if shutil.which("openssl"):
        out = subprocess.run(["openssl", "passwd", "-apr1", password], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    return "{PLAIN}" + password


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return                     # 401: it answers
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"nginx did not start: {log.read_text() if log.exists() else ''}") from None
            time.sleep(0.05)
        else:
            return


def _status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """(proxy url, app url, secret): nginx in front of `streamlit run` on a store with
    alice's two runs, bob's one and one without an owner."""
    home = tmp_path_factory.mktemp("home")
    store = Store(home)
    for seed, owner in enumerate(["alice", "alice", "bob", None]):
        rid = runner.create(store, RunConfig.from_dict({**TINY, "seed": seed}), status="queued")
        store.update_run(rid, status="done", owner=owner)
    secret = secrets.token_urlsafe(24)
    env = {"LOTTERY_TRUST_USER_HEADER": "X-Remote-User", "LOTTERY_PROXY_SECRET": secret, "LOTTERY_MAX_RUNS": "0",
           "LOTTERY_TEACHERS": ""}
    with serve(home, env=env) as app_url:
        tmp = tmp_path_factory.mktemp("nginx")
        (tmp / "htpasswd").write_text("".join(f"{u}:{_hash(p)}\n" for u, p in USERS.items()))
        port = free_port()
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""   # root: keep workers ours
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(user=user, tmp=tmp, port=port,
                                                          app_port=app_url.rsplit(":", 1)[1], secret=secret))
        proc = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_port(port, proc, tmp / "error.log")
            yield f"http://127.0.0.1:{port}", app_url, secret
        finally:
            proc.send_signal(signal.SIGQUIT)          # nginx's graceful stop
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            assert not (tmp / "nginx.pid").exists()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _runs_page(browser, url: str, cookies: list | None = None, **context) -> tuple[str, int]:
    """The Runs page's text once it has drawn (its table's counters, or the app's refusal);
    `cookies` are set in the browser first (playwright's add_cookies)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
    try:
        if cookies:
            ctx.add_cookies(cookies)
        page = ctx.new_page()
        page.goto(f"{url}/runs", wait_until="domcontentloaded", timeout=60_000)
        page.wait_for_function("() => document.body.innerText.includes('Your runs (') || "
                               "document.body.innerText.includes('did not come through the login proxy')",
                               timeout=60_000)
        if "Your runs (" in page.inner_text("body"):
            page.wait_for_function(f"({DONE_COUNTER_JS})() >= 0", timeout=30_000)
        return page.inner_text("body"), page.evaluate(DONE_COUNTER_JS)
    finally:
        ctx.close()


def test_each_user_sees_only_their_own_runs_through_the_proxy(proxied, browser):
    proxy, app, secret = proxied
    assert _status(proxy + "/_stcore/health") == 401                                   # no login, no app
    bad = base64.b64encode(b"alice:wrong").decode()
    assert _status(proxy + "/_stcore/health", {"Authorization": f"Basic {bad}"}) == 401
    for user, mine in (("alice", 2), ("bob", 1)):
        text, done = _runs_page(browser, proxy, http_credentials={"username": user, "password": USERS[user]},
                                # a header the client makes up is replaced by the proxy's
                                extra_http_headers={"X-Remote-User": "mallory"})
        assert f"Your runs ({user}): {mine} of 4 in the store" in text
        assert f"{user}\n" in text or f"{user} (from the login proxy)" in text.replace("\n", " ")
        assert "mallory" not in text
        assert done == mine                          # the counters count only the user's runs


def test_a_forged_user_header_straight_to_the_app_port_is_ignored(proxied, browser):
    proxy, app, secret = proxied
    text, _ = _runs_page(browser, app, extra_http_headers={"X-Remote-User": "alice"})
    assert "did not come through the login proxy" in text
    assert "Your runs (" not in text and "alice" not in text
    text, _ = _runs_page(browser, app, extra_http_headers={"X-Remote-User": "alice", "X-Lottery-Proxy": "guess"})
    assert "did not come through the login proxy" in text and "Your runs (" not in text
    # The control: the same headers with the proxy's secret do reach the app (so the two
    # refusals above are the app's check, not headers lost on the way).
    text, _ = _runs_page(browser, app, extra_http_headers={"X-Remote-User": "alice", "X-Lottery-Proxy": secret})
    assert "Your runs (alice): 2 of 4 in the store" in text
