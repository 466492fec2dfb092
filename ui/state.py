"""Streamlit glue the pages share: the store, cached reads keyed by a run's
progress stamp, the run selection kept in the URL, and error guards that turn
exceptions into messages."""

from __future__ import annotations

import functools
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import streamlit as st

from engine.runner import default_home
from engine.store import Store, UnknownRun
from ui import data, md

log = logging.getLogger("lottery.app")


def one_torch_thread() -> None:
    """The app never trains, but reading masks and datasets goes through torch, whose thread
    pool would otherwise take every core from the workers and the server: one thread."""
    import torch
    torch.set_num_threads(1)      # also the default of every thread that has not computed yet
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:       # only possible before torch's first parallel work; harmless after
        pass


_frozen = False


def freeze_imports() -> None:
    """Once per app process, after its first page has run (what the app imports is loaded): move
    every object there is to the garbage collector's permanent generation. The server holds
    ~350,000 objects (torch, pandas, plotly, Streamlit) that each full collection scanned (~0.16 s,
    about once a minute while sessions watch a live run); what pages make later is collected as before."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


LIVE_SECONDS = 1.0     # how often live fragments re-read the store while something runs (rows show < 2 s)
IDLE_SECONDS = 10.0    # ... and while nothing does (to notice runs started elsewhere)


def home() -> Path:
    return Path(default_home())


@st.cache_resource(show_spinner=False)
def _store(home_str: str) -> Store:
    # Store holds only its path; every call opens its own SQLite connection, so
    # sharing one instance between sessions and threads is safe.
    return Store(home_str)


def store() -> Store:
    return _store(str(home()))


def disk_banner() -> None:
    """A red banner while the store's disk is full: runs cannot start or record
    anything, but every page still reads the store (read-only)."""
    try:
        s = store()
        if s.disk_full():
            st.error(f"the store's disk is full ({s.free_mb():.1f} MB free): new runs cannot start and running "
                     "ones cannot record anything until space is freed (the store's path is in the sidebar)",
                     icon="🛑")
    except OSError:
        pass


SHOW_EXAMPLES = "show_examples"     # the sidebar switch's key (app.py): class-pack example runs shown


def show_examples() -> bool:
    return bool(st.session_state.get(SHOW_EXAMPLES, True))


def store_version() -> int:
    """The store's version (Store.version: one read through a kept-open connection): what the
    shared reads below are keyed by, so they are redone only when something changed."""
    return store().version()


def _all_runs(home_str: str, version: int) -> tuple[dict, ...]:
    # configs and summaries parsed once per text for the process: a run's row changes every
    # second while it trains, its config never, and most runs are finished (shared, never modified)
    return tuple(_store(home_str).list_runs(parsed=_parsed_json.setdefault(home_str, {})))


_parsed_json: dict[str, dict] = {}     # store → JSON text → its value (Store.list_runs)


def all_runs() -> list[dict]:
    """Every run, newest first, as the store holds it now: one
    read per change of the store for every session. Shallow copies, so a caller may set keys."""
    return [dict(r) for r in shared("runs.all", _all_runs, store_version())]


def runs() -> list[dict]:
    """Every run, newest first (fresh for the monitor: all_runs); the class pack's example runs
    unless the sidebar's "Show examples" switch is off."""
    out = all_runs()
    return out if show_examples() else [r for r in out if not r.get("example")]


TABLE_COLUMNS = {"state": "state", "label": "label", "owner": "owner", "progress": "progress", "where": "where",
                 "eta_text": "eta", "remaining_text": "remaining", "test_accuracy_text": "test_accuracy",
                 "elapsed_text": "elapsed", "note_text": "note"}     # the Runs table's columns (frame → shown)


@dataclass(frozen=True)
class Live:
    """Every run as the store holds it, made once per change of the store (and once a second
    while a row shows the clock) for every session (state.live): shared, so read it and never
    modify it; what a session asks of it (a row, the table as Arrow) is made once, then shared."""
    runs: tuple[dict, ...]        # newest first
    at: dict[str, int]            # run id → its index in `runs` and its row in `frame`
    frame: pd.DataFrame           # data.runs_frame (queue places over every run) + the table's text columns
    counts: dict[str, int]        # status → runs
    tables: dict[bool, pd.DataFrame]   # frame's TABLE_COLUMNS named as shown, with (True) or without an owner
    _made: dict = field(default_factory=dict, compare=False, repr=False)   # row / Arrow table, made on demand

    def row(self, run_id: str) -> dict | None:
        """A run's row of `frame` as a dict (shared: copy before changing it)."""
        key = ("row", run_id)
        got = self._made.get(key)
        if got is None and run_id in self.at:
            got = self._made[key] = self.frame.iloc[self.at[run_id]].to_dict()
        return got

    def table_arrow(self, owned: bool) -> pa.Table:
        """tables[owned] as the Arrow table st.dataframe would make of it at every call, for
        every session (~1 ms each): made once, so a session's tick only sends it."""
        key = ("arrow", owned)
        got = self._made.get(key)
        if got is None:
            got = self._made[key] = pa.Table.from_pandas(self.tables[owned])
        return got


def live() -> Live:
    """The live snapshot a fragment's tick reads: one version read, then shared lookups. It is
    made again each second only while some run's row shows the clock (elapsed time, ETA);
    otherwise once per change of the store, so a tick in which nothing changed makes nothing."""
    version = store_version()
    ticking = shared("runs.clock", _clock_shown, version)
    return shared("runs.live", _live, version, int(time.time()) if ticking else None)


def _clock_shown(home_str: str, version: int) -> bool:
    """Whether some run's row of the snapshot shows the clock (data.shows_the_clock)."""
    return any(data.shows_the_clock(r) for r in _shared("runs.all", home_str, (version,), _all_runs))


def _live(home_str: str, version: int, second: int | None) -> Live:
    everyone = _shared("runs.all", home_str, (version,), _all_runs)
    st_ = _store(home_str)
    marked = {r["id"] for r in everyone
              if r.get("status") == "running" and (st_.run_dir(r["id"]) / CANCEL_MARKER).exists()}
    df = data.runs_frame(list(everyone), now=time.time() if second is None else float(second),   # None: no row shows it
                         cancelling=marked, queue=data.queue_positions(everyone))
    # what the Runs table shows, as text (a missing value is "—"; a number column would print "None"),
    # made from plain lists and joined in one step (six column inserts cost more than the text)
    col = {c: df[c].tolist() for c in ("status", "eta_s", "elapsed_s", "remaining", "test_accuracy", "note")}
    text = pd.DataFrame({
        "eta_text": [data.fmt_duration(e) if s == "running" and e is not None and not pd.isna(e) else data.MISSING
                     for s, e in zip(col["status"], col["eta_s"])],
        "elapsed_text": [data.fmt_duration(e) or data.MISSING for e in col["elapsed_s"]],
        "remaining_text": [data.fmt_pct_or_missing(v) for v in col["remaining"]],
        "test_accuracy_text": [data.fmt_pct_or_missing(v) for v in col["test_accuracy"]],
        "note_text": [n or data.MISSING for n in col["note"]],
        "owner": [r.get("owner") or data.MISSING for r in everyone]}, index=df.index)
    df = pd.concat([df, text], axis=1)
    tables = {owned: df[cols].set_axis([TABLE_COLUMNS[c] for c in cols], axis=1)
              for owned, cols in ((True, list(TABLE_COLUMNS)), (False, [c for c in TABLE_COLUMNS if c != "owner"]))}
    return Live(everyone, {r["id"]: i for i, r in enumerate(everyone)}, df,
                {k: int(v) for k, v in df["status"].value_counts().items()}, tables)


_pumped: dict[str, float] = {}


def pump_every(seconds: float = 5.0) -> None:
    """Start queued runs and notice dead workers (backend.pump) at most every `seconds` per app
    process, however many sessions tick: one pump serves them all."""
    from ui import backend
    key, now = str(home()), time.monotonic()
    if now - _pumped.get(key, -1e9) >= seconds:
        _pumped[key] = now
        backend.pump(home())


def _asked_here(row: dict) -> bool:
    """A running run this session asked to cancel that the shared frame does not show as
    cancelling yet (its marker not written, or not seen)."""
    return row["status"] == "running" and not row["cancelling"] and row["id"] in st.session_state.get("_cancelling", ())


def _as_cancelling(row: dict) -> dict:
    row = row | {"cancelling": True, "state": data.CANCELLING_STATE}
    return row | {"where": data.status_line(row)}


def monitor_row(run_id: str, snap: Live | None = None) -> dict | None:
    """One run's row of the live frame, as a dict (a live status line's tick: no frame filtering)."""
    row = (snap or live()).row(run_id)
    if row is None:
        return None
    return _as_cancelling(row) if _asked_here(row) else dict(row)


def monitor_frame(ids: list[str] | None = None, snap: Live | None = None) -> pd.DataFrame:
    """The live frame (Live.frame; shared: do not modify); `ids`: only these rows (newest first,
    as the store lists them). The runs this session asked to cancel show as cancelling at once
    (before the marker is seen)."""
    snap = snap or live()
    df = snap.frame
    if ids is not None and len(ids) != len(df):
        df = df[df["id"].isin(ids)].reset_index(drop=True)
    if st.session_state.get("_cancelling"):
        late = [i for i, row in zip(df.index, df[["id", "status", "cancelling"]].to_dict("records"))
                if _asked_here(row)]
        if late:
            df = df.copy()
            for i in late:
                row = _as_cancelling(df.loc[i].to_dict())
                df.loc[i, ["cancelling", "state", "where"]] = [row["cancelling"], row["state"], row["where"]]
    return df


@st.cache_resource(show_spinner=False)
def _examples(home_str: str, pack: str | None) -> tuple[tuple[str, ...], str | None]:
    """Import the class pack once per app process (and store): (its run ids, or a one-line problem)."""
    from engine import classpack
    if pack is None:
        return (), None
    try:
        return tuple(classpack.import_pack(_store(home_str), pack)), None
    except classpack.PackError as e:       # the pack itself is damaged: said once per process
        return (), f"{e}. The app works without it; the example runs are missing."
    # anything else (a full disk, a locked database) is not cached: the next page load tries again


def examples_note(shown: list[dict], what: str) -> None:
    """A caption when everything a view draws comes from the class pack."""
    if shown and all(r.get("example") for r in shown):
        st.caption(f"{data.EXAMPLE_BADGE}s: these {what} come from the class pack shipped with the app (finished, "
                   "read-only runs). Runs of your own replace them here; the sidebar's “Show examples” switch "
                   "hides them.")


def ensure_examples() -> list[str]:
    """The class pack's example runs, imported into the store when it lacks them (once per
    process); a damaged pack is one warning, never an error. Returns their ids."""
    from engine import classpack
    try:
        pack = classpack.pack_dir_for(store())
    except Exception as e:  # noqa: BLE001 - e.g. an unreadable store: the pages say so themselves
        log.warning("class pack: %s", e)
        return []
    try:
        ids, problem = _examples(str(home()), None if pack is None else str(pack))
    except Exception as e:  # noqa: BLE001 - the app starts without the examples
        log.warning("class pack not imported", exc_info=True)
        ids, problem = (), f"class pack not imported: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    if problem:
        st.warning(md.esc(problem), icon="📦")
    return list(ids)


def get_run(run_id: str) -> dict | None:
    try:
        return store().get_run(run_id)
    except UnknownRun:
        return None


def live_run(run_id: str, snap: Live | None = None) -> dict | None:
    """A run as a live view's tick sees it: from the live snapshot (shared by every session; a
    copy), else from the store (a run made a moment ago)."""
    snap = snap or live()
    i = snap.at.get(run_id)
    return dict(snap.runs[i]) if i is not None else get_run(run_id)


def reread(run_id: str) -> dict | None:
    """The run as stored now, for a live fragment's tick; says so when it was deleted meanwhile."""
    run = get_run(run_id)
    if run is None:
        st.warning("This run was deleted.")
    return run


# A resource, not data: st.cache_data pickles a frame in and out at every call (~1 ms each for a
# live run, at every new row). The frame is shared: callers take `.assign(...)` of it, and pandas'
# copy-on-write keeps whatever they do with that off the cached frame.
@st.cache_resource(show_spinner=False, max_entries=512)
def _metrics(home_str: str, run_id: str, stamp: tuple) -> pd.DataFrame:
    return data.metrics_frame(_tails.rows(_store(home_str), run_id))


_tails = data.MetricsTail()     # a live run's rows, read on from where the last read ended


@st.cache_data(show_spinner=False, max_entries=512)
def _mask_stats(home_str: str, run_id: str, stamp: tuple) -> pd.DataFrame:
    return data.mask_stats_frame(data.mask_stats_rows(_store(home_str), [run_id]))


@st.cache_data(show_spinner=False, max_entries=256)
def _snapshots(home_str: str, run_id: str, stamp: tuple) -> list[str]:
    return _store(home_str).mask_snapshots(run_id)


@st.cache_data(show_spinner=False, max_entries=256)
def _masks(home_str: str, run_id: str, tag: str) -> dict:
    return data.load_masks_np(_store(home_str), run_id, tag)


def metrics_of(run: dict) -> pd.DataFrame:
    """A run's metrics with the time axis; re-read only when the run has moved on."""
    df = _metrics(str(home()), run["id"], data.run_stamp(run))
    return df.assign(run=data.run_label(run))


def versions(runs: list[dict]) -> tuple:
    """What these runs' data and labels are now: (id, stamp, label) each. A cheap key (from the
    run rows only) that changes whenever anything drawn from them may change."""
    return tuple((r["id"], data.run_stamp(r), data.run_label(r)) for r in runs)


def metrics_of_versions(home_str: str, key: tuple) -> pd.DataFrame:
    frames = [_metrics(home_str, rid, stamp).assign(run=label) for rid, stamp, label in key]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else data.metrics_frame([]).assign(run=[])


def shared(name: str, build, *key, **given):
    """build(home, *key, **given), computed once per app process for every session that asks with
    an equal key (e.g. the figures of a live run at one data version, which thirty students watch
    at once), and returned as the same objects to each: callers must not modify them. `name` tells
    apart builders whose keys could be equal; the key holds everything the result depends on
    (`given`, e.g. the run's row, is not hashed: the key must already decide it)."""
    return _shared(name, str(home()), key, build, given)


# At most 64 results, each dropped 5 minutes after it was made: the Runs table's frame is made
# again every second and a live run's figures at every new row, so old ones are worth nothing,
# and a long run's figures can weigh megabytes each.
@st.cache_resource(show_spinner=False, max_entries=64, ttl=300)
def _shared(name: str, home_str: str, key: tuple, _build, _given: dict | None = None):   # _*: not hashed
    return _build(home_str, *key, **(_given or {}))


def mask_stats_of(run: dict) -> pd.DataFrame:
    """A run's mask statistics, layers named by what they are ("fc1 784→300"; path in `module`)."""
    return data.name_layers(_mask_stats(str(home()), run["id"], data.run_stamp(run)), data.cfg_of(run))


def snapshots_of(run: dict) -> list[str]:
    return _snapshots(str(home()), run["id"], data.run_stamp(run))


def masks_of(run_id: str, tag: str) -> dict:
    """One mask snapshot (snapshots never change once written)."""
    return _masks(str(home()), run_id, tag)


@st.cache_data(show_spinner="Loading sample images…", max_entries=8)
def _real_samples(dataset: str, classes: tuple, data_dir: str, n: int) -> list[tuple[str, pd.DataFrame]]:
    return data.sample_images(dataset, classes, data_dir, n)


@st.cache_data(show_spinner=False, max_entries=8)
def _pack_samples(home_str: str, dataset: str, classes: tuple) -> list[tuple[str, pd.DataFrame]]:
    from engine import classpack
    try:
        pack = classpack.pack_dir_for(_store(home_str))
        found = classpack.samples(pack, dataset, list(classes)) if pack is not None else []
    except classpack.PackError:
        return []
    return [(label, pd.DataFrame(img.astype(float))) for label, img in found]


def sample_images(dataset: str, classes, n: int) -> list[tuple[str, pd.DataFrame]]:
    """n test images of `dataset` (the wanted classes in turn), cached; on a machine without the
    dataset's files, the class pack's few. Raises the loader's error when neither has any."""
    from engine.data import default_data_dir
    try:
        return _real_samples(dataset, tuple(classes or ()), str(default_data_dir()), n)
    except Exception:  # noqa: BLE001 - e.g. MNIST files missing on this machine
        found = _pack_samples(str(home()), dataset, tuple(classes or ()))
        if not found:
            raise
        return found[:n]


def clear_caches() -> None:
    for f in (_metrics, _mask_stats, _snapshots, _masks):
        f.clear()


# ------------------------------------------------------------------ cancelling

CANCEL_MARKER = "cancel"    # engine.jobs writes runs/<id>/cancel when a cancel is asked


def mark_cancelling(run_id: str) -> None:
    st.session_state.setdefault("_cancelling", set()).add(run_id)


def cancelling_ids(runs: list[dict]) -> set[str]:
    """Running runs whose cancel was asked (here, or from any tab or the CLI: the marker)."""
    asked = st.session_state.get("_cancelling", set())
    out = set()
    for r in runs:
        if r.get("status") != "running":
            continue
        if r["id"] in asked or (store().run_dir(r["id"]) / CANCEL_MARKER).exists():
            out.add(r["id"])
    return out


# ------------------------------------------------------------------ selection in the URL

SEL_PARAM = "runs"


def selected_ids() -> list[str]:
    """The selection: from the URL when it names runs, else what was selected on another page."""
    ids = data.parse_ids(st.query_params.get_all(SEL_PARAM)) if SEL_PARAM in st.query_params else None
    if ids is None:
        ids = list(st.session_state.get("_selection", []))
    return ids


def set_selection(ids: list[str]) -> None:
    st.session_state["_selection"] = list(ids)
    if ids:
        st.query_params[SEL_PARAM] = ",".join(ids)
    elif SEL_PARAM in st.query_params:
        del st.query_params[SEL_PARAM]


def pick_runs(all_runs: list[dict], label: str, key: str, help: str, filter_fn=None, max_selections=None,
              placeholder: str = "choose runs") -> list[dict]:
    """A multiselect of runs whose selection lives in the URL (?runs=a,b) and is
    shared across pages. Ids in the URL that this page does not list are kept in
    the URL untouched; ids that are in no run of the store are reported."""
    pool = [r for r in all_runs if filter_fn is None or filter_fn(r)]
    by_id = {r["id"]: r for r in pool}
    known = {r["id"] for r in all_runs}
    wanted = selected_ids()
    current = [i for i in wanted if i in by_id][: max_selections or None]
    # The widget follows the URL: reset its state whenever the URL says something else.
    if key not in st.session_state or st.session_state.get(f"{key}._from") != current:
        st.session_state[key] = current
        st.session_state[f"{key}._from"] = current
    chosen = st.multiselect(label, options=list(by_id), format_func=lambda i: data.run_label(by_id[i]), key=key,
                            help=help, max_selections=max_selections, placeholder=placeholder)
    if chosen != current:
        st.session_state[f"{key}._from"] = chosen
    _sync_url(chosen + [i for i in wanted if i not in by_id and i in known])
    _report_missing(wanted, known)
    return [by_id[i] for i in chosen]


def pick_run(all_runs: list[dict], label: str, key: str, help: str, filter_fn=None,
             prefer_fn=None) -> dict | None:
    """One run (the first selected one this page can show, else the newest one
    `prefer_fn` likes, else the newest), kept in the URL."""
    pool = [r for r in all_runs if filter_fn is None or filter_fn(r)]
    if not pool:
        return None
    by_id = {r["id"]: r for r in pool}
    wanted = selected_ids()
    newest = next((r for r in pool if prefer_fn(r)), pool[0]) if prefer_fn else pool[0]
    current = next((i for i in wanted if i in by_id), newest["id"])
    if key not in st.session_state or st.session_state.get(f"{key}._from") != current:
        st.session_state[key] = current
        st.session_state[f"{key}._from"] = current
    chosen = st.selectbox(label, options=list(by_id), format_func=lambda i: data.run_label(by_id[i]), key=key,
                          help=help)
    if chosen != current:
        st.session_state[f"{key}._from"] = chosen
    _sync_url([chosen] + [i for i in wanted if i != chosen and i in {r["id"] for r in all_runs}])
    _report_missing(wanted, {r["id"] for r in all_runs})
    return by_id[chosen]


def _sync_url(ids: list[str]) -> None:
    """Write the selection into the URL (and the session) when it says something else."""
    in_url = data.parse_ids(st.query_params.get_all(SEL_PARAM)) if SEL_PARAM in st.query_params else []
    if in_url != ids or list(st.session_state.get("_selection", [])) != ids:
        set_selection(ids)


def _report_missing(wanted: list[str], known: set[str]) -> None:
    missing = [i for i in wanted if i not in known]
    if missing:
        st.caption(f"Not in this store (deleted, or from another store): {md.esc(', '.join(missing))}")


# ------------------------------------------------------------------ errors as messages

def show_error(e: Exception, what: str) -> None:
    log.exception("%s", what)
    msg = str(e).strip() or type(e).__name__
    st.error(f"**{md.esc(what)}.** {md.esc(msg)}", icon="⚠️")


def guard(what: str):
    """Decorator: run a page part; an exception becomes one error message, never a traceback."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except Exception as e:  # noqa: BLE001 - shown to the user, logged with its traceback
                show_error(e, what)
                return None
        return wrapper
    return deco


def _ensure_routed() -> None:
    """Make app.py's st.navigation route every request.

    Streamlit treats a `pages/` folder next to the main script as an old-style
    multipage app until the main script has called st.navigation once in the
    process; until then a first visit straight to e.g. /runs runs pages/runs.py
    without app.py (no page config, a bare menu). Flip that switch and rerun,
    which then goes through app.py. Happens at most once per server process."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def intro(title: str, text: str) -> None:
    _ensure_routed()
    st.title(title)
    if text:
        st.markdown(f"<div style='font-size:1.05rem;color:#555;margin-top:-0.6rem'>{text}</div>",
                    unsafe_allow_html=True)
        st.write("")
