"""The class-server mode (issue 22, item 3): `python -m ops.class_server` starts two real app
processes on one store and a real nginx in front of them, with basic auth for two users,
its config and logs in a temporary folder. Checked with real requests: cookie-less clients
from one address get different cookies and spread over both processes; a client that keeps
its cookie stays on its process; a real WebSocket handshake passes; each user's identity
reaches each process (Chromium, as tests/test_proxy_nginx.py checks it). A second nginx
without the upgrade headers is named by the launcher's check (exit 1, one line) and by the
page itself, within seconds, instead of a spinner.

Skipped, with the reason, when nginx or Chromium is missing (in CI, where both are
installed, a skip fails: tests/conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from app_server import CHROMIUM, ROOT, free_port
from test_proxy_nginx import NGINX, TINY, USERS, _hash, _runs_page, _wait_port, browser  # noqa: F401 (a fixture)

from engine import runner
from engine.config import RunConfig
from engine.store import Store
from ops.class_server import COOKIE, check_websocket, nginx_conf
from ops.upgrade_check import MESSAGE, UpgradeCheck

needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx)")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason=f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
UPGRADE = ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
           "proxy_set_header Connection $connection_upgrade;")


def test_nginx_conf_sticks_on_its_own_cookie_upgrades_and_passes_the_login(tmp_path):
    (tmp_path / "htpasswd").write_text("alice:{PLAIN}pw\n")
    conf = nginx_conf(8080, [5001, 5002], tmp_path, auth_file=tmp_path / "htpasswd", secret="s3cret",
                      check_token="tok")
    # Sticky on a cookie nginx sets when absent, hashed consistently; never on the address alone.
    assert f'map $cookie_{COOKIE} $lottery_route {{ "" $request_id; default $cookie_{COOKIE}; }}' in conf
    assert "hash $lottery_route consistent;" in conf and "ip_hash" not in conf
    assert f'"" "{COOKIE}=$request_id; Path=/; Max-Age=43200; HttpOnly; SameSite=Lax";' in conf
    assert "add_header Set-Cookie $lottery_route_cookie always;" in conf
    assert "server 127.0.0.1:5001 " in conf and "server 127.0.0.1:5002 " in conf
    assert "listen 127.0.0.1:8080;" in conf and "add_header X-Lottery-Backend $upstream_addr always;" in conf
    assert all(line in conf for line in UPGRADE) and "proxy_read_timeout 1h;" in conf
    # The login: the user reaches the app as the trusted header, next to the secret.
    assert f"auth_basic_user_file {tmp_path / 'htpasswd'};" in conf and "auth_basic $lottery_auth;" in conf
    assert "proxy_set_header X-Remote-User $remote_user;" in conf
    assert 'proxy_set_header X-Lottery-Proxy "s3cret";' in conf
    assert '"tok" off; default "Lottery Lab";' in conf
    plain = nginx_conf(8080, [5001], tmp_path)
    assert "auth_basic" not in plain and "X-Remote-User" not in plain and "X-Lottery-Proxy" not in plain
    assert not any(line in nginx_conf(8080, [5001], tmp_path, websocket=False) for line in UPGRADE)
    if NGINX:                                   # nginx itself accepts both (syntax and variables)
        for name, text in (("auth.conf", conf), ("plain.conf", plain)):
            (tmp_path / name).write_text(text)
            out = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / name), "-e",
                                  str(tmp_path / "error.log")], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr


def test_the_upgrade_check_answers_the_browser_whose_websocket_lost_its_upgrade():
    async def app(scope, receive, send):                # stands for Streamlit: answers 200 "ok"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def call(path, ua="firefox", kind="http", **headers):
        sent = []

        async def send(msg):
            sent.append(msg)
        hs = [(b"user-agent", ua.encode())] + [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        asyncio.run(check({"type": kind, "path": path, "headers": hs, "client": ("10.0.0.7", 5000)}, None, send))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    check = UpgradeCheck(app)
    assert call("/_stcore/health") == (200, b"ok")
    assert call("/_stcore/stream") == (200, b"ok")                       # no WebSocket key: not a browser's
    assert call("/_stcore/stream", kind="websocket", sec_websocket_key="k")[0] == 200   # a real WebSocket
    assert call("/_stcore/health") == (200, b"ok")
    assert call("/_stcore/stream", sec_websocket_key="k") == (426, MESSAGE.encode())   # its upgrade was dropped
    status, body = call("/_stcore/health")
    assert status == 503 and json.loads(body) == MESSAGE        # JSON: the page shows it in its dialog
    assert call("/_stcore/health", ua="chrome") == (200, b"ok")          # another browser is not told
    assert call("/_stcore/health", x_forwarded_for="10.0.0.8") == (200, b"ok")


@pytest.mark.parametrize("args, says", [
    (["--processes", "0"], "--processes must be 1-64, got 0"),
    (["--port", "70000"], "--port must be 1-65535, got 70000"),
    (["--listen", "0.0.0.0"], "--listen 0.0.0.0 without --auth would let anyone"),
    (["--listen", "lottery.example.org"], "--listen must be an IPv4 address or localhost"),
    (["--auth", "/nonexistent/htpasswd"], "not a readable htpasswd file"),
])
def test_the_launcher_refuses_bad_arguments_in_one_line(args, says):
    out = subprocess.run([sys.executable, "-m", "ops.class_server", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and says in out.stderr


@pytest.fixture(scope="module")
def class_server(tmp_path_factory):
    """(url, app ports): the launcher with 2 app processes and basic auth for alice and bob, on a
    store with alice's two runs, bob's one and one without an owner. Stopped with SIGTERM after."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx)")
    home = tmp_path_factory.mktemp("home")
    store = Store(home)
    for seed, owner in enumerate(["alice", "alice", "bob", None]):
        rid = runner.create(store, RunConfig.from_dict({**TINY, "seed": seed}), status="queued")
        store.update_run(rid, status="done", owner=owner)
    run = tmp_path_factory.mktemp("run")
    (run / "htpasswd").write_text("".join(f"{u}:{_hash(p)}\n" for u, p in USERS.items()))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update(LOTTERY_HOME=str(home), LOTTERY_MAX_RUNS="0", LOTTERY_TEACHERS="", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "ops.class_server", "--processes", "2", "--port", str(port),
                             "--auth", str(run / "htpasswd"), "--run-dir", str(run / "nginx")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()           # the one line it prints when ready (or EOF when it failed)
        assert f"ready at http://127.0.0.1:{port} (2 app processes" in line, proc.stderr.read() if not line else line
        ports = [int(p) for p in re.findall(r"server 127\.0\.0\.1:(\d+) ", (run / "nginx" / "nginx.conf").read_text())]
        assert len(ports) == 2
        yield f"http://127.0.0.1:{port}", ports
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0                                               # SIGTERM is a clean stop
    assert not (run / "nginx" / "nginx.pid").exists()           # nginx stopped
    for p in [port, *ports]:                                     # and nothing listens any more
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", p), timeout=1):
            pass


def _get(url: str, user: str = "alice", cookie: str | None = None) -> tuple[str | None, str]:
    """(the route cookie nginx set or None, the app process that answered) for one GET."""
    req = urllib.request.Request(url)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{USERS[user]}".encode()).decode())
    if cookie:
        req.add_header("Cookie", f"{COOKIE}={cookie}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        routes = [m.group(1) for v in r.headers.get_all("Set-Cookie") or [] if (m := re.match(rf"{COOKIE}=(\w+);", v))]
        assert len(routes) <= 1
        return (routes[0] if routes else None), r.headers["X-Lottery-Backend"]


@needs_nginx
def test_one_address_spreads_over_the_processes_and_a_cookie_sticks(class_server):
    url, ports = class_server
    first = [_get(url + "/_stcore/health") for _ in range(20)]   # 20 cookie-less clients from one address
    cookies = [c for c, _ in first]
    assert None not in cookies and len(set(cookies)) == 20
    assert {b for _, b in first} == {f"127.0.0.1:{p}" for p in ports}      # both processes serve
    for cookie, backend in first[:4]:
        again = [_get(url + path, cookie=cookie) for path in ("/", "/_stcore/health", "/runs") * 3]
        assert again == [(None, backend)] * 9               # same process every time, no new cookie


@needs_nginx
def test_a_real_websocket_handshake_passes_through_nginx(class_server):
    url, _ = class_server
    assert check_websocket(url.replace("http://", f"http://alice:{USERS['alice']}@")) is None
    assert "refused by the login (401)" in check_websocket(url)
    out = subprocess.run([sys.executable, "-m", "ops.class_server", "--check",
                          url.replace("http://", f"http://bob:{USERS['bob']}@")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == f"WebSocket upgrade OK through {url}\n"   # no password shown


@needs_nginx
@needs_chromium
def test_each_users_identity_reaches_each_process(class_server, browser):  # noqa: F811
    url, ports = class_server
    by_backend = {}
    while len(by_backend) < 2:                      # a cookie that routes to each process
        cookie, backend = _get(url + "/_stcore/health")
        by_backend.setdefault(backend, cookie)
    for (user, mine), cookie in zip((("alice", 2), ("bob", 1)), by_backend.values()):   # alice on one, bob on the other
        text, done = _runs_page(browser, url, http_credentials={"username": user, "password": USERS[user]},
                                extra_http_headers={"X-Remote-User": "mallory"},
                                cookies=[{"name": COOKIE, "value": cookie, "url": url}])
        assert f"Your runs ({user}): {mine} of 4 in the store" in text and "mallory" not in text
        assert done == mine


@needs_nginx
@needs_chromium
def test_a_proxy_without_the_upgrade_is_named_by_the_check_and_on_the_page(class_server, browser, tmp_path):  # noqa: F811
    _, ports = class_server
    port = free_port()
    (tmp_path / "nginx.conf").write_text(nginx_conf(port, ports, tmp_path, websocket=False))
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e",
                             str(tmp_path / "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_port(port, proc, tmp_path / "error.log")
        url = f"http://127.0.0.1:{port}"
        out = subprocess.run([sys.executable, "-m", "ops.class_server", "--check", url], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and out.stdout == "" and out.stderr.count("\n") == 1
        assert "the proxy does not pass WebSocket upgrades" in out.stderr and "426" in out.stderr
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            start = time.time()
            page.goto(url, wait_until="domcontentloaded", timeout=30_000)
            page.wait_for_function("() => document.body.innerText.includes('does not pass WebSocket upgrades')",
                                   timeout=20_000)
            assert time.time() - start < 20
            assert "proxy_set_header Upgrade $http_upgrade" in page.inner_text("body")
        finally:
            ctx.close()
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(10)


@needs_nginx
def test_an_app_process_that_stops_stops_the_class_server_in_one_line(tmp_path):
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update(LOTTERY_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "ops.class_server", "--processes", "1", "--port", str(free_port()),
                             "--run-dir", str(tmp_path / "run")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "(1 app process," in proc.stdout.readline()
        app_port = int(re.search(r"server 127\.0\.0\.1:(\d+) ", (tmp_path / "run" / "nginx.conf").read_text())[1])
        children = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(proc.pid)], capture_output=True,
                                  text=True).stdout.splitlines()
        pid = next(int(line.split()[0]) for line in children if "class_app.py" in line)     # the app process
        os.kill(pid, signal.SIGTERM)
        assert proc.wait(30) == 1
        err = proc.stderr.read()
        assert err.count("\n") == 1 and "app process 1 (see " in err and "stopping the class server" in err
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    assert not (tmp_path / "run" / "nginx.pid").exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", app_port), timeout=1):
        pass
