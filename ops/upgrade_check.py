"""Say plainly, in the browser, that a proxy in front of the app drops WebSocket upgrades.

Everything the app shows travels over one WebSocket, /_stcore/stream. A proxy set up
without the upgrade headers (nginx without `proxy_set_header Upgrade $http_upgrade;
proxy_set_header Connection $connection_upgrade;`) forwards the browser's WebSocket
request as a plain GET, the handshake fails, and Streamlit's page only spins, retrying.

This ASGI middleware (mounted by class_app.py through st.App) notices that plain GET (it
still carries the browser's Sec-WebSocket-Key, an end-to-end header proxies pass on),
answers it 426, and for the next minute answers that browser's health checks
(/_stcore/health, which the page polls between WebSocket attempts) 503 with MESSAGE.
Streamlit's page shows a failing health check's text in its "Connection error" dialog
after a few seconds, so the person sees what is wrong instead of a spinner. "That
browser" is its address (X-Forwarded-For, else the peer) and User-Agent: a proxy that
drops upgrades drops them for everyone, and other browsers are not answered 503 on
its account. (Anyone can send such a request on purpose, with a classmate's address and
User-Agent; the worst it does is show that message to those browsers, if they reconnect
within the minute.)"""

from __future__ import annotations

import json
import time

MESSAGE = ("The proxy in front of this app does not pass WebSocket upgrades, so the app cannot connect. "
           "nginx needs, in the app's location: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
           "proxy_set_header Connection $connection_upgrade; (see docs/class-server.md).")
REMEMBER_S = 60.0


def _header(scope, name: bytes) -> str:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return ""


def _who(scope) -> tuple[str, str]:
    addr = _header(scope, b"x-forwarded-for").split(",")[0].strip() or (scope.get("client") or ("",))[0]
    return addr, _header(scope, b"user-agent")


class UpgradeCheck:
    """ASGI middleware; see the module's docstring."""

    def __init__(self, app):
        self.app = app
        self.seen: dict[tuple[str, str], float] = {}    # browser -> when its WebSocket arrived without upgrade

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope.get("path", "")
            now = time.monotonic()
            if path.endswith("/_stcore/stream") and _header(scope, b"sec-websocket-key"):   # a WebSocket, unwrapped
                self.seen = {k: t for k, t in self.seen.items() if now - t < REMEMBER_S}   # stays small
                self.seen[_who(scope)] = now
                return await _answer(send, 426, MESSAGE.encode(), b"text/plain; charset=utf-8")
            if path.endswith("/_stcore/health") and now - self.seen.get(_who(scope), -REMEMBER_S) < REMEMBER_S:
                # JSON: the page reads a failed check's body as JSON first and shows nothing when that fails
                return await _answer(send, 503, json.dumps(MESSAGE).encode(), b"application/json")
        await self.app(scope, receive, send)


async def _answer(send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
