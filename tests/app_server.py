"""A real `streamlit run` of the app and the headless Chromium that drives it,
shared by tests/test_browser.py and bench/app_live.py.

Chromium is the apt package (/usr/bin/chromium), driven by the pip package
playwright with `executable_path` (never `playwright install`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch_page(p, width: int = 1400, height: int = 900):
    """Headless Chromium (playwright `p`) and one page of that size with a 60 s timeout:
    (browser, page); the caller closes the browser."""
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(60_000)
    return browser, page


def needs_browser(sync_playwright) -> list:
    """pytestmark for a browser test: skip, saying why, without Chromium or playwright."""
    import pytest
    return [
        pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install it with `apt-get install -y "
                                                         f"chromium` to run the browser test"),
        pytest.mark.skipif(sync_playwright is None, reason="the playwright Python package is not installed "
                                                           "(pip install playwright; no browser download needed)"),
    ]

# The "✅ done" counter above the Runs page's live table (a DOM element; the table is a canvas).
DONE_COUNTER_JS = """() => { for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
    if (m.innerText.includes('done')) { return parseInt(m.querySelector('[data-testid="stMetricValue"]').innerText) } }
  return -1 }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(home: Path, env: dict | None = None, timeout: float = 120, script: str = "app.py") -> Iterator[str]:
    """`streamlit run app.py` (or `script`) as `make run` starts it, from the project root so
    .streamlit/config.toml applies (the loopback address, headless, XSRF, error details; no
    STREAMLIT_* variable of ours overrides it), on a free port, with LOTTERY_HOME=home; yields
    its URL once the server answers its health check; stops the whole process group afterwards.
    The server's output goes to home/streamlit.log."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    full_env.update(LOTTERY_HOME=str(home), PYTHONUNBUFFERED="1", **(env or {}))
    log = open(home / "streamlit.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", script, "--server.port", str(port)],
                            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not start: {(home / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield url
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM to a process started with start_new_session=True and its group; SIGKILL after `grace` s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
