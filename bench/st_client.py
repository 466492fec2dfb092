"""A client that speaks Streamlit's own WebSocket protocol, for load benches: each
ProtocolSession is a real server session (as a browser tab is), without a browser.

It does what the browser's frontend does for a page that only watches: connect to
/_stcore/stream (subprotocol "streamlit"), ask for the page (BackMsg.rerun_script with
the page name and query string), keep the ForwardMsg cache (big messages it has seen
come back as a ref_hash; it tells the server which it holds, as the browser does), and
when the server asks a fragment to rerun every N seconds (ForwardMsg.auto_rerun) send
that fragment's rerun on the same timer (stopped by stop_auto_rerun or a new full run).
It does not draw: it keeps the latest spec of each Plotly chart by its place on the
page (delta path), so a bench can count the points a chart holds.

The protobuf classes are the ones the installed `streamlit` package ships; the
WebSocket client is tornado's (installed with the app's requirements)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time

from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


def count_points(spec: str) -> int:
    """Points in a Plotly figure's JSON (every trace's x, plain lists or plotly's base64 typed arrays)."""
    fig = json.loads(spec)
    n = 0
    for trace in fig.get("data", []):
        x = trace.get("x")
        if isinstance(x, list):
            n += len(x)
        elif isinstance(x, dict) and "bdata" in x:
            size = {"f8": 8, "f4": 4, "i8": 8, "i4": 4, "u4": 4, "i2": 2, "u2": 2, "i1": 1, "u1": 1}[x["dtype"]]
            n += len(base64.b64decode(x["bdata"])) // size
    return n


class ProtocolSession:
    """One watching session. `charts` maps a chart's delta path to (spec, time received)."""

    def __init__(self, base_url: str, page: str = "", query: str = "", headers: dict | None = None):
        self.base = base_url.rstrip("/")
        self.page, self.query = page, query
        self.headers = headers or {}
        self.charts: dict[tuple, tuple[str, float]] = {}
        self.cache: dict[str, ForwardMsg] = {}
        self.timers: dict[str, asyncio.Task] = {}
        self.finished = 0                   # script runs (full or fragment) the server finished
        self.errors: list[str] = []         # exceptions and error messages the page showed
        self.on_chart = None                # callback(path, spec, t) on every chart delta
        self.ws = None
        self._reader: asyncio.Task | None = None

    async def connect(self) -> None:
        url = self.base.replace("http", "ws", 1) + "/_stcore/stream"
        req = HTTPRequest(url, headers={"Origin": self.base, **self.headers})
        self.ws = await websocket_connect(req, subprotocols=["streamlit"], max_message_size=64 << 20)
        self._reader = asyncio.ensure_future(self._read())
        await self.rerun()

    async def rerun(self, fragment_id: str = "") -> None:
        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = self.query
        cs.page_name = self.page
        cs.widget_states.SetInParent()
        if fragment_id:
            cs.fragment_id = fragment_id
            cs.is_auto_rerun = True
        cs.cached_message_hashes.extend(self.cache)
        await self.ws.write_message(msg.SerializeToString(), binary=True)

    async def _every(self, fragment_id: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.rerun(fragment_id)

    def _stop_timers(self, ids=None) -> None:
        for fid in list(self.timers if ids is None else ids):
            t = self.timers.pop(fid, None)
            if t:
                t.cancel()

    async def _read(self) -> None:
        while True:
            raw = await self.ws.read_message()
            if raw is None:                  # closed
                return
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            if msg.HasField("ref_hash"):     # the server refers to a message we said we hold
                cached = self.cache.get(msg.ref_hash)
                if cached is None:
                    continue
                full = ForwardMsg()
                full.CopyFrom(cached)
                full.metadata.CopyFrom(msg.metadata)
                msg = full
            elif msg.hash and msg.metadata.cacheable:
                self.cache[msg.hash] = msg
            self._handle(msg, time.perf_counter())

    def _handle(self, msg: ForwardMsg, now: float) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":            # sent when any run starts, a fragment's too
            if not msg.metadata.run.fragment_ids:
                self._stop_timers()          # the browser drops its timers when a full run starts
        elif kind == "auto_rerun":
            fid = msg.auto_rerun.fragment_id
            self._stop_timers([fid])
            self.timers[fid] = asyncio.ensure_future(self._every(fid, msg.auto_rerun.interval))
        elif kind == "stop_auto_rerun":
            self._stop_timers(msg.stop_auto_rerun.fragment_ids)
        elif kind == "script_finished":
            self.finished += 1
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            el = msg.delta.new_element
            which = el.WhichOneof("type")
            if which == "plotly_chart":
                path = tuple(msg.metadata.delta_path)
                self.charts[path] = (el.plotly_chart.spec, now)
                if self.on_chart:
                    self.on_chart(path, el.plotly_chart.spec, now)
            elif which == "exception":
                self.errors.append(el.exception.message)
            elif which == "alert" and el.alert.format == Alert.ERROR:    # the pages' guards: st.error
                self.errors.append(el.alert.body)

    def drop(self) -> None:
        """Go away as a closed laptop does: the TCP connection ends, no WebSocket goodbye."""
        self._stop_timers()
        if self._reader:
            self._reader.cancel()
        if self.ws is not None and self.ws.stream is not None:
            self.ws.stream.close()

    async def close(self) -> None:
        self._stop_timers()
        if self._reader:
            self._reader.cancel()
        if self.ws is not None:
            self.ws.close()
