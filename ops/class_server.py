"""Several app processes behind one nginx, all on the same store: the class-server mode.

    python -m ops.class_server --processes 4 --port 8080 [--auth FILE] [--listen ADDR] [--host-name NAME]
    python -m ops.class_server --check URL          # does the proxy at URL pass WebSocket upgrades?

One Streamlit process runs every session's script on one core, so a class of watching
students saturates it. This starts N `streamlit run class_app.py` processes on free
loopback ports, all with the same environment (the same LOTTERY_HOME store, the same
background workers and queue), writes an nginx config into a run folder (a new temporary
one unless --run-dir) and runs nginx in the foreground in front of them. Ctrl-C or
SIGTERM stops nginx and every app process.

- **Sticky on a cookie.** Streamlit keeps a session in one process's memory, so every
  request of a browser must reach the same process. nginx hashes a cookie it sets itself
  (`lottery_route`, a random `$request_id` on a browser's first request) with
  `hash $lottery_route consistent`: a classroom behind one NAT address still spreads over
  the processes, which `ip_hash` would not do.
- **WebSocket upgrade** headers on every request; after starting, a real WebSocket handshake
  to /_stcore/stream through nginx must answer 101, else one line says why and it exits 1.
- **--auth FILE** (htpasswd): nginx's basic auth, passing the user to the app as the trusted
  identity header of ui/identity.py (X-Remote-User, next to X-Lottery-Proxy carrying a
  secret made for this launch: LOTTERY_TRUST_USER_HEADER and LOTTERY_PROXY_SECRET are set
  for the app processes). Without it, identity works as the environment says.
- **Host names.** Streamlit accepts the WebSocket only with a Host header in
  server.allowedHosts (.streamlit/config.toml: localhost and 127.0.0.1). nginx passes the
  browser's Host on, so name the server's public host name(s) with --host-name (added to
  the list for these processes).
- Listening on an address other than loopback needs --auth: anyone who reaches the port
  could otherwise queue and delete runs.

Each response carries `X-Lottery-Backend` (the app process that served it), for checking
the spread. See docs/class-server.md, "More than one app process"."""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COOKIE = "lottery_route"
CHECK_HEADER = "X-Lottery-Check"       # lets the launcher's own handshake check past basic auth (no user)
USER_HEADER = "X-Remote-User"
MAX_PROCESSES = 64
FIX = ("nginx needs, where it proxies the app: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
       "proxy_set_header Connection $connection_upgrade;")


def nginx_conf(port: int, backends: list[int], run_dir: Path, *, listen: str = "127.0.0.1",
               auth_file: Path | None = None, secret: str = "", check_token: str = "",
               websocket: bool = True) -> str:
    """nginx's whole config: `listen:port` in front of the app processes on 127.0.0.1:`backends`,
    its pid, logs and temp folders in `run_dir`. With `auth_file`, basic auth whose user reaches
    the app as X-Remote-User next to X-Lottery-Proxy: `secret` (a request with X-Lottery-Check:
    `check_token` skips the login, as nobody). websocket=False leaves the upgrade headers out
    (a misconfigured proxy, for tests)."""
    run = Path(run_dir)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""  # root: workers stay ours
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n" for p in backends)
    auth_map = auth = identity = ""
    if auth_file is not None:
        auth_map = f'    map $http_x_lottery_check $lottery_auth {{ "{check_token}" off; default "Lottery Lab"; }}\n'
        auth = f"        auth_basic $lottery_auth;\n        auth_basic_user_file {Path(auth_file).resolve()};\n"
        identity = (f"            proxy_set_header {USER_HEADER} $remote_user;  # the login (replaces a client's)\n"
                    f'            proxy_set_header X-Lottery-Proxy "{secret}";\n')
    upgrade = ("            proxy_http_version 1.1;\n"
               "            proxy_set_header Upgrade $http_upgrade;\n"
               "            proxy_set_header Connection $connection_upgrade;\n") if websocket else ""
    return f"""# Written by ops/class_server.py for this launch.
{user}daemon off;
worker_processes auto;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {run}/access.log;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    client_max_body_size 6m;                       # the app takes uploads up to 5 MB
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    # Sticky sessions: a browser's first request gets a random {COOKIE} cookie; the process is a hash of it.
    map $cookie_{COOKIE} $lottery_route {{ "" $request_id; default $cookie_{COOKIE}; }}
    map $cookie_{COOKIE} $lottery_route_cookie {{
        "" "{COOKIE}=$request_id; Path=/; Max-Age=43200; HttpOnly; SameSite=Lax";
        default "";
    }}
{auth_map}    upstream lottery_apps {{
        hash $lottery_route consistent;
{servers}    }}
    server {{
        listen {listen}:{port};
{auth}        location / {{
            proxy_pass http://lottery_apps;
{upgrade}            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
{identity}            proxy_read_timeout 1h;
            add_header Set-Cookie $lottery_route_cookie always;
            add_header X-Lottery-Backend $upstream_addr always;
        }}
    }}
}}
"""


def check_websocket(url: str, headers: dict | None = None, timeout: float = 10.0) -> str | None:
    """A real WebSocket handshake to URL/_stcore/stream (user:password@ in the URL logs in).
    None when it switches protocols; else one line saying what is wrong."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)
    netloc = u.netloc.rsplit("@", 1)[-1]
    key = base64.b64encode(os.urandom(16)).decode()
    extra = dict(headers or {})
    if u.username is not None:
        login = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
        extra["Authorization"] = "Basic " + base64.b64encode(login.encode()).decode()
    request = "\r\n".join([f"GET {u.path.rstrip('/')}/_stcore/stream HTTP/1.1", f"Host: {netloc}",
                           "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                           "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: streamlit",
                           f"Origin: {u.scheme}://{netloc}", *(f"{k}: {v}" for k, v in extra.items()), "", ""])
    where = f"{u.scheme}://{netloc}{u.path.rstrip('/')}/_stcore/stream"
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host) if u.scheme == "https" else raw
            sock.sendall(request.encode())
            answer = b""
            while b"\r\n\r\n" not in answer and len(answer) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError as e:
        return f"no WebSocket handshake at {where}: {e}"
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(m.group(1)) if (m := re.match(r"HTTP/\S+ (\d{3})", head[0])) else 0
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    got = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
    if status == 101 and got.get("sec-websocket-accept") == accept:
        return None
    if status == 401:
        return f"the WebSocket handshake at {where} was refused by the login (401): put user:password@ in the URL"
    if status == 403:
        return (f"the app refused the WebSocket at {where} (403): is the Host name in server.allowedHosts "
                "(--host-name)?")
    return (f"the proxy does not pass WebSocket upgrades: the handshake at {where} got "
            f"{head[0].strip() or 'no answer'} instead of 101 Switching Protocols; {FIX}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stop(procs: list[subprocess.Popen], nginx: subprocess.Popen | None) -> None:
    """nginx first (its graceful stop), then every app process's group; SIGKILL what lingers."""
    if nginx is not None and nginx.poll() is None:
        nginx.send_signal(signal.SIGQUIT)
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in ([nginx] if nginx else []) + procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ops.class_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=2, help=f"app processes (1-{MAX_PROCESSES}; default 2)")
    ap.add_argument("--port", type=int, default=8080, help="nginx's port (default 8080)")
    ap.add_argument("--listen", default="127.0.0.1", help="nginx's address (default 127.0.0.1; others need --auth)")
    ap.add_argument("--auth", type=Path, help="htpasswd file: basic auth, the user passed to the app as its identity")
    ap.add_argument("--host-name", action="append", default=[], help="a public host name of the server (repeatable)")
    ap.add_argument("--run-dir", type=Path, help="where the nginx config and logs go (default: a new temporary folder)")
    ap.add_argument("--check", metavar="URL", help="only check that the proxy at URL passes WebSocket upgrades")
    args = ap.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"class server: {msg}", file=sys.stderr, flush=True)
        return 1

    if args.check:
        problem = check_websocket(args.check)
        if problem:
            return fail(problem)
        u = urllib.parse.urlsplit(args.check)
        print(f"WebSocket upgrade OK through {u.scheme}://{u.netloc.rsplit('@', 1)[-1]}{u.path}")   # no password
        return 0
    if not 1 <= args.processes <= MAX_PROCESSES:
        return fail(f"--processes must be 1-{MAX_PROCESSES}, got {args.processes}")
    if not 1 <= args.port <= 65535:
        return fail(f"--port must be 1-65535, got {args.port}")
    try:
        loopback = args.listen == "localhost" or ipaddress.IPv4Address(args.listen).is_loopback
    except ValueError:
        return fail(f"--listen must be an IPv4 address or localhost, got {args.listen!r}")
    if not loopback and args.auth is None:
        return fail(f"--listen {args.listen} without --auth would let anyone who reaches port {args.port} queue "
                    "and delete runs: give --auth FILE (htpasswd), or listen on 127.0.0.1 behind your own login proxy")
    if args.auth is not None and not os.access(args.auth, os.R_OK):
        return fail(f"--auth {args.auth}: not a readable htpasswd file")
    nginx_bin = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx_bin is None:
        return fail("nginx is not installed (apt-get install -y nginx-light)")

    run = args.run_dir or Path(tempfile.mkdtemp(prefix="lottery-class-"))
    run.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    secret = check_token = ""
    if args.auth is not None:
        secret, check_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        env.update(LOTTERY_TRUST_USER_HEADER=USER_HEADER, LOTTERY_PROXY_SECRET=secret)
    hosts = [a for h in ["localhost", "127.0.0.1", *args.host_name] for a in ("--server.allowedHosts", h)]
    ports = [_free_port() for _ in range(args.processes)]
    procs: list[subprocess.Popen] = []
    nginx = None
    for sig in (signal.SIGTERM, signal.SIGINT):         # Ctrl-C or SIGTERM: stop everything, exit 0
        signal.signal(sig, _interrupt)
    try:
        for i, p in enumerate(ports):
            with open(run / f"app-{i + 1}.log", "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "streamlit", "run", "class_app.py", "--server.port", str(p), *hosts],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.time() + 180
        waiting = dict(zip(ports, procs))
        while waiting:
            for p, proc in list(waiting.items()):
                if _answers(f"http://127.0.0.1:{p}/_stcore/health"):
                    del waiting[p]
                elif proc.poll() is not None or time.time() > deadline:
                    return fail(f"app process on port {p} did not start; see {run}/app-{ports.index(p) + 1}.log")
            time.sleep(0.2)
        conf = run / "nginx.conf"                   # it holds the proxy's secret: only we read it
        conf.unlink(missing_ok=True)
        conf.touch(0o600)
        conf.write_text(nginx_conf(args.port, ports, run, listen=args.listen, auth_file=args.auth, secret=secret,
                                   check_token=check_token))
        nginx = subprocess.Popen([nginx_bin, "-p", str(run), "-c", str(conf), "-e", str(run / "error.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        host = "127.0.0.1" if loopback or args.listen == "0.0.0.0" else args.listen      # where we check it
        url = f"http://{host}:{args.port}"
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection((host, args.port), timeout=1).close()
                break
            except OSError:
                if nginx.poll() is not None or time.time() > deadline:
                    log = run / "error.log"
                    errors = log.read_text().strip().splitlines() if log.exists() else []
                    return fail(f"nginx did not start: {errors[-1] if errors else 'no error logged'}")
                time.sleep(0.05)
        problem = check_websocket(url, {CHECK_HEADER: check_token} if check_token else None)
        if problem:
            return fail(problem)
        store = os.environ.get("LOTTERY_HOME") or ROOT / "cache"
        n = f"{args.processes} app process" + ("es" if args.processes > 1 else "")
        print(f"Lottery Lab class server ready at {url} ({n}, listening on {args.listen}:{args.port}, store {store}, "
              f"config and logs in {run}); Ctrl-C stops it", flush=True)
        while True:
            for i, proc in enumerate([nginx, *procs]):
                if proc.poll() is not None:
                    what = "nginx" if i == 0 else f"app process {i} (see {run}/app-{i}.log)"
                    return fail(f"{what} stopped (exit {proc.returncode}); stopping the class server")
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):     # a second Ctrl-C must not leave processes behind
            signal.signal(sig, signal.SIG_IGN)
        _stop(procs, nginx)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
