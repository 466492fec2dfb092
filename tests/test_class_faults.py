"""A class on one server, its faults (issue 22): while thirty-ish sessions watch a live run and
its worker writes to the store, a session that drops its connection in the middle of a refresh
and a browser that reloads every second leave no error on any other session, the watchers keep
drawing every row, the server logs no traceback, and nothing written is lost.

The sessions are real server sessions speaking Streamlit's WebSocket protocol
(bench/st_client.py), against the real app (`streamlit run`)."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

from app_server import serve
from app_stores import synthetic_store

from engine.store import Store

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from app_live import _adopt  # noqa: E402
from class_load import LOSS_TITLE, Writer, first_trace_points  # noqa: E402
from st_client import ProtocolSession  # noqa: E402

WATCHERS = 6
SECONDS = 12.0


async def _class(url: str, rid: str) -> tuple[list[str], list[int], int, int]:
    query = f"runs={rid}"
    watchers = [ProtocolSession(url, page="runs", query=query) for _ in range(WATCHERS)]
    points = [0] * WATCHERS
    for i, s in enumerate(watchers):
        def seen(path, spec, t, i=i):
            if LOSS_TITLE in spec:
                points[i] = first_trace_points(spec)
        s.on_chart = seen
        await s.connect()
    rng = random.Random(0)
    drops = reloads = 0
    end = time.monotonic() + SECONDS

    async def dropper():           # connects, asks for the page, vanishes mid-run (no goodbye)
        nonlocal drops
        while time.monotonic() < end:
            s = ProtocolSession(url, page="runs", query=query)
            await s.connect()
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            s.drop()
            drops += 1

    async def reloader():          # a browser reloading every second: a new session each time
        nonlocal reloads
        while time.monotonic() < end:
            s = ProtocolSession(url, page="runs", query=query)
            await s.connect()
            await asyncio.sleep(1.0)
            await s.close()
            reloads += 1

    await asyncio.gather(dropper(), reloader())
    return watchers, points, drops, reloads


async def _watch(url: str, rid: str, writer: Writer) -> tuple[list[str], list[int], int, int]:
    watchers, points, drops, reloads = await _class(url, rid)
    writer.stop()
    await asyncio.sleep(3.0)       # the watchers' next refreshes draw the last rows
    errors = [e for s in watchers for e in s.errors]
    for s in watchers:
        await s.close()
    return errors, points, drops, reloads


def test_dropped_and_reloading_sessions_leave_the_class_unharmed(tmp_path):
    home = tmp_path / "h"
    rid = synthetic_store(home, 1, running=1)[0]
    store = Store(home)
    beats = _adopt(store, [rid])
    before = len(store.metrics(rid))
    try:
        with serve(home) as url:
            writer = Writer(store, rid).start()
            try:
                errors, points, drops, reloads = asyncio.run(_watch(url, rid, writer))
            finally:
                writer.stop()
            written = len(writer.times)
        log = (home / "streamlit.log").read_text(errors="replace")
    finally:
        for b in beats:
            b.stop()
    assert drops >= 5 and reloads >= 5 and written >= 6, (drops, reloads, written)
    assert errors == [], errors
    assert "Traceback" not in log, log[-3000:]
    assert len(store.metrics(rid)) == before + written           # nothing written was lost
    step_rows = sum(1 for r in store.metrics(rid) if r["kind"] == "step")
    # every watcher's loss chart holds every step row, the last ones included
    assert points == [step_rows] * WATCHERS, (points, step_rows)


def test_a_watcher_of_a_live_run_costs_one_script_run_a_second(tmp_path):
    """The Runs page's live parts (the run table, the curves, the run's status line) are drawn by
    one fragment ticking every second, each into its own place: three fragments made three script
    runs a second for every watching session. The session still sees every row, and no error."""
    home = tmp_path / "h"
    rid = synthetic_store(home, 1, running=1)[0]
    store = Store(home)
    beats = _adopt(store, [rid])

    async def watch(url: str) -> tuple[ProtocolSession, list[int], int, int]:
        s = ProtocolSession(url, page="runs", query=f"runs={rid}")
        points: list[int] = []
        s.on_chart = lambda path, spec, t: points.append(first_trace_points(spec)) if LOSS_TITLE in spec else None
        await s.connect()
        await asyncio.sleep(3.0)                # the page drawn, its timers set
        runs0 = s.finished
        await asyncio.sleep(6.0)
        ran, timers = s.finished - runs0, len(s.timers)   # the fragments the server asked to rerun each second
        await s.close()
        return s, points, ran, timers

    try:
        with serve(home) as url:
            writer = Writer(store, rid).start()
            try:
                s, points, ran, timers = asyncio.run(watch(url))
            finally:
                writer.stop()
    finally:
        for b in beats:
            b.stop()
    assert timers == 1 and s.errors == [], (timers, s.errors)
    assert 3 <= ran <= 9, ran            # about one script run a second (three fragments made ~18 in 6 s)
    assert points and points[-1] > points[0]                  # the rows written meanwhile were drawn
