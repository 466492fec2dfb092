"""Store → pandas DataFrames for the pages. Plain functions, no Streamlit.

Every reader here tolerates what a live or damaged store holds: runs whose
config or summary is missing or not JSON, unknown statuses, metrics that are
still being written, mask files that cannot be read. Such runs are listed with
a reason; they never take a page down.
"""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import math
import re
import threading
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from engine.config import RunConfig
from engine.store import METRIC_COLUMNS as STORE_METRIC_COLUMNS
from engine.store import RUN_ID_RE, STATUSES, Store, damage_of
from ui import names

STATUS_ICON = {"queued": "⏳", "running": "🔄", "done": "✅", "failed": "❌", "cancelled": "⏹️",
               "interrupted": "⚠️"}
ACTIVE = ("queued", "running")
PHASE_ORDER = {"train": 0, "search": 0, "retrain": 1}
STALE_HEARTBEAT_S = 30.0

CHECK_TEXT = {
    "zeros_stay_zero": ("Pruned weights stay exactly zero",
                        "Largest |θ| over pruned weights after retraining. Anything but 0 means the mask leaked."),
    "rewind_exact": ("Rewind restores the saved weights exactly",
                     "Largest difference between the weights retraining started from and the saved rewind "
                     "checkpoint (which must still match the hash taken when it was saved). Must be 0."),
    "sparsity_vs_target": ("Sparsity as targeted",
                           "Sparsity measured from the masks against the target (within the stated tolerance)."),
    "masks_nested": ("IMP masks are nested",
                     "Weights kept in a round that an earlier round had pruned. Must be 0."),
    "every_layer_kept": ("No layer pruned away",
                         "Layers a threshold or global ranking would have emptied (disconnecting the network); "
                         "each keeps its best entry unless allow_empty_layers. 0 is the normal case."),
}


# ------------------------------------------------------------------ runs

def parse_ids(value: str | Iterable[str] | None) -> list[str]:
    """Run ids from a query parameter (comma separated, or repeated); junk is dropped."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    out: list[str] = []
    for p in items:
        p = p.strip()
        if p and RUN_ID_RE.fullmatch(p) and p not in out:
            out.append(p)
    return out


def cfg_of(run: dict) -> dict:
    c = run.get("config")
    return c if isinstance(c, dict) else {}


def summary_of(run: dict) -> dict:
    s = run.get("summary")
    return s if isinstance(s, dict) else {}


fmt_lam = names.fmt_lam


def run_label(run: dict) -> str:
    """One short line that tells runs apart: what, on what, which λ/seed, id."""
    c = cfg_of(run)
    if not c:
        return f"{run['id']} · (config unreadable)"
    what = names.method_label(c, summary_of(run))
    data = c.get("dataset", "?")
    if c.get("classes"):
        data += "[" + ",".join(str(x) for x in c["classes"]) + "]"
    name = f" “{run['name']}”" if run.get("name") else ""
    badge = EXAMPLE_BADGE + " · " if run.get("example") else ""
    return f"{badge}{what} · {c.get('model', '?')}/{data} · seed {c.get('seed', 0)} · {run['id']}{name}"


EXAMPLE_BADGE = names.EXAMPLE_BADGE


def prefer_own(runs: list[dict]) -> list[dict]:
    """The runs that are not class-pack examples, when there are any; else the examples (so
    a page falls back to the pack, and a student's own result replaces it)."""
    own = [r for r in runs if not r.get("example")]
    return own or list(runs)


def merge_examples(runs: list[dict], key) -> list[dict]:
    """The student's runs, and the class pack's examples at the points (`key(run)`) they have
    not run: a student's run replaces the pack's run(s) it stands for, the rest of the pack
    stays (as the Lesson's figures do)."""
    own = [r for r in runs if not r.get("example")]
    taken = {key(r) for r in own}
    return own + [r for r in runs if r.get("example") and key(r) not in taken]


def epochs_planned(c: dict) -> int | None:
    """Epochs of training the config asks for in total (the cost of finding its ticket)."""
    try:
        e = int(c.get("epochs", 10))
        r = int(c.get("rounds", 1))
        re_ = c.get("retrain_epochs")
        re_ = e if re_ is None else int(re_)
    except (TypeError, ValueError):
        return None
    m = c.get("method")
    if m == "concave":
        return r * (e + re_)
    if m == "cs":
        return r * e + re_
    if m == "imp":
        return (r + 1) * e
    return e


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def reuse_text(run: dict, me: str | None) -> str:
    """What a person is told when their launch found an equal run: whose, from when.
    'Reused alice's run from 10:42 (id, finished): …'."""
    when = time.strftime("%H:%M", time.localtime(run["created"])) if run.get("created") else "earlier"
    owner = run.get("owner")
    whose = "your own" if owner and owner == me else f"{owner}'s" if owner else "an earlier"
    state_ = "finished" if run.get("status") == "done" else str(run.get("status") or "queued")
    return (f"Reused {whose} run from {when} ({run['id']}, {state_}): the same experiment is not trained twice. "
            "It is listed under your runs.")


def owner_text(run: dict, me: str | None, adopted) -> str:
    """The owner column: who launched the run, and '(reused by you)' for one `me` adopted."""
    owner = run.get("owner") or MISSING
    return f"{owner} (reused by you)" if me and run["id"] in adopted and run.get("owner") != me else owner


def queue_positions(runs: list[dict]) -> dict[str, int]:
    """Queued runs → their place in the queue (1 = next), in the order workers claim them
    (oldest first, as engine.store.claim_next)."""
    q = sorted((r for r in runs if r.get("status") == "queued"), key=lambda r: (r.get("created") or 0))
    return {r["id"]: i for i, r in enumerate(q, start=1)}


MISSING = "—"


CANCELLING_STATE = "⏹️ cancelling…"     # a running run's status cell once its cancel was asked


def status_line(row) -> str:
    """The one line that says where a run is, from one runs_frame row: the table's
    "where" column and the run panel's heading both use it (one source of progress)."""
    s = row["status"]
    if s == "queued":
        pos = row.get("queue_pos")
        return f"queued ({ordinal(int(pos))})" if pos and not pd.isna(pos) else "queued"
    if s == "running":
        if row.get("cancelling"):
            return "cancelling… (finishing the current step, then a checkpoint)"
        bits = [f"running · {float(row['progress']):.0%}"]
        if row.get("phase"):
            bits.append(names.phase_label(str(row["phase"])))
        eta = row.get("eta_s")
        if eta is not None and not pd.isna(eta):
            bits.append(f"about {fmt_duration(eta)} left")
        return " · ".join(bits)
    return s


def shows_the_clock(run: dict) -> bool:
    """Whether the run's runs_frame row depends on `now` (its elapsed time, ETA or heartbeat age
    run on with the clock): a running run; any other started and not finished, unless done with
    its own wall time. Keep it in step with runs_frame (a test compares both at two clocks)."""
    if run.get("status") == "running":
        return True
    if not run.get("started") or run.get("finished"):
        return False
    return not (run.get("status") == "done" and summary_of(run).get("wall_seconds") is not None)


def runs_frame(runs: list[dict], now: float | None = None, cancelling: set[str] | frozenset = frozenset(),
               queue: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per run with what the monitor and the pickers show. `cancelling`: running
    runs whose cancel was asked; `queue`: queue positions (default: from these runs)."""
    now = time.time() if now is None else now
    queue = queue_positions(runs) if queue is None else queue
    rows = []
    for r in runs:
        c, s = cfg_of(r), summary_of(r)
        status = r.get("status") if r.get("status") in STATUSES else "unknown"
        progress = float(r.get("progress") or 0.0)
        started, finished, hb = r.get("started"), r.get("finished"), r.get("heartbeat")
        elapsed = ((finished or now) - started) if started else None
        if status == "done" and s.get("wall_seconds") is not None:
            elapsed = float(s["wall_seconds"])     # the run's own time: what every other page shows for it
        eta = None
        if status == "running" and started and progress > 0.01:
            eta = max(0.0, elapsed * (1 - progress) / progress)
        hb_age = now - hb if (status == "running" and hb) else None
        note = r.get("reason") or ""
        if hb_age is not None and hb_age > STALE_HEARTBEAT_S:
            note = (note + "; " if note else "") + f"no heartbeat for {hb_age:.0f} s"
        stopping = status == "running" and r["id"] in cancelling
        rows.append({
            "id": r["id"], "name": r.get("name") or "", "status": status,
            "state": CANCELLING_STATE if stopping else f"{STATUS_ICON.get(status, '❓')} {status}",
            "cancelling": stopping, "queue_pos": queue.get(r["id"]),
            "label": run_label(r),
            "method": c.get("method"), "model": c.get("model"), "dataset": c.get("dataset"),
            "classes": ",".join(str(x) for x in c["classes"]) if c.get("classes") else "",
            "regularizer": c.get("regularizer") if c.get("method") == "concave" else None,
            "lam": c.get("lam") if c.get("method") == "concave" else None,
            "target_sparsity": c.get("target_sparsity"), "seed": c.get("seed"),
            "rounds": c.get("rounds"), "epochs": c.get("epochs"),
            "progress": progress if status != "done" else 1.0,
            "phase": r.get("phase") or "", "round": r.get("round"),
            "elapsed_s": elapsed, "eta_s": eta, "heartbeat_age_s": hb_age,
            "remaining": s.get("remaining"), "sparsity": s.get("sparsity"), "kept": s.get("kept"),
            "total": s.get("total"), "test_accuracy": s.get("test_accuracy"),
            "val_accuracy": s.get("val_accuracy"), "wall_seconds": s.get("wall_seconds"),
            "epochs_spent": epochs_planned(c) if c else None,
            "created": r.get("created") or None,     # seconds; one conversion for the column below
            "note": note, "sweep_id": r.get("sweep_id") or "",
            "readable": bool(c),
        })
    cols = ["id", "name", "status", "state", "cancelling", "queue_pos", "label", "method", "model", "dataset",
            "classes", "regularizer",
            "lam", "target_sparsity", "seed", "rounds", "epochs", "progress", "phase", "round", "elapsed_s",
            "eta_s", "heartbeat_age_s", "remaining", "sparsity", "kept", "total", "test_accuracy",
            "val_accuracy", "wall_seconds", "epochs_spent", "created", "note", "sweep_id", "readable"]
    # dates converted once for the column and status lines made from the row dicts: per row (a
    # Timestamp each, iterrows) they were most of the cost of this frame, made every second
    df = pd.DataFrame(rows, columns=cols)
    df["created"] = pd.to_datetime(pd.to_numeric(df["created"], errors="coerce"), unit="s", errors="coerce")
    df["where"] = [status_line(row) for row in rows]
    return df


def sweep_progress(runs: list[dict], cfgs: list, now: float | None = None,
                   per_run_s: float | None = None) -> dict:
    """Where the runs of a planned sweep stand in the store: for each planned config (by
    content hash), its newest run. Counts done / running / queued / other, `active` while
    any is queued or running, and an ETA: the running runs' own ETAs plus, for each queued
    run, the median wall time of this sweep's finished runs (else per_run_s), one at a time."""
    hashes = [c.content_hash() for c in cfgs]
    newest: dict[str, dict] = {}
    for r in sorted(runs, key=lambda r: r.get("created") or 0):
        if r.get("config_hash") in hashes:
            newest[r["config_hash"]] = r
    mine = list(newest.values())
    count = {k: sum(r.get("status") == k for r in mine) for k in ("done", "running", "queued")}
    walls = sorted(float(summary_of(r)["wall_seconds"]) for r in mine
                   if r.get("status") == "done" and summary_of(r).get("wall_seconds"))
    per_run = walls[len(walls) // 2] if walls else per_run_s
    eta = None
    if count["running"] or count["queued"]:
        frame = runs_frame([r for r in mine if r.get("status") == "running"], now=now)
        left = [e for e in frame["eta_s"] if e is not None and not pd.isna(e)]
        if per_run is not None:
            eta = sum(left) + count["queued"] * per_run
    return {"total": len(hashes), **count, "other": len(mine) - sum(count.values()),
            "active": bool(count["running"] or count["queued"]), "eta_s": eta, "run_ids": [r["id"] for r in mine]}


def fmt_pct_or_missing(v) -> str:
    """A fraction as "97.25%", or "—" when there is none yet (never "None")."""
    return MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.2%}"


def full_reason(run: dict, error_text: str | None) -> str:
    """A failed run's whole reason. The store keeps a short one (cut at 500 characters);
    the worker's traceback (error.txt) ends with the whole exception message, which is
    used when it continues the stored reason (e.g. a missing dataset's download hint)."""
    reason = str(run.get("reason") or "")
    if not error_text:
        return reason
    lines = error_text.rstrip().splitlines()
    i = max((k for k, ln in enumerate(lines) if ln.startswith("  ")), default=-1)
    last = "\n".join(lines[i + 1:]).strip()
    msg = re.sub(r"^[\w.]+: ", "", last, count=1)
    head = reason[:60]
    if head and head in msg and len(msg) > len(reason.strip().rstrip(".…")):
        return reason[: reason.index(head)] + msg[msg.index(head):]
    return reason


def fmt_duration(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def status_signature(runs: list[dict]) -> tuple:
    """Changes when a run appears, disappears or changes status (not on progress)."""
    return tuple(sorted((r["id"], r.get("status")) for r in runs))


def run_stamp(run: dict) -> tuple:
    """Changes whenever the run may have written something new (cache key for its data)."""
    return (run.get("status"), run.get("progress"), run.get("data_version"), run.get("finished"), run.get("phase"))


# ------------------------------------------------------------------ metrics

def _bulk(store: Store, table: str, ids: list[str], extra_where: str = "", args: tuple = ()) -> list[dict]:
    if not ids:
        return []
    out: list[dict] = []
    with store.connect() as db:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = (f"SELECT * FROM {table} WHERE run_id IN ({','.join('?' * len(chunk))}){extra_where} "
                 f"ORDER BY run_id, {'seq' if table == 'metrics' else 'rowid'}")
            out.extend(dict(r) for r in db.execute(q, (*chunk, *args)).fetchall())
    return out


def metrics_rows(store: Store, ids: list[str], kind: str | None = None, from_seq: int | None = None) -> list[dict]:
    """Metric rows of many runs in one query, extra keys merged in; `from_seq`: only rows from
    that sequence number on."""
    where, args = (" AND kind=?", (kind,)) if kind else ("", ())
    if from_seq is not None:
        where, args = where + " AND seq>=?", (*args, from_seq)
    rows = _bulk(store, "metrics", list(ids), where, args)
    for d in rows:
        extra = d.pop("extra", None)
        if extra:
            try:
                d.update(json.loads(extra))
            except (json.JSONDecodeError, TypeError):
                pass
    return rows


class MetricsTail:
    """A live run's metric rows, read again only from the last row already read on: a run adds
    rows at its end every second (re-reading and re-parsing all of them at every new row cost
    ~8 ms for 1,300 rows). A cut (a resume drops what came after its checkpoint, and new rows reuse
    those sequence numbers) is noticed when the last row read is no longer the same: then the whole
    run is read again. Thread-safe; keeps the rows of the `keep` runs read last."""

    def __init__(self, keep: int = 32):
        self.keep = keep
        self._rows: dict[tuple[str, str], list[dict]] = {}
        self._lock = threading.Lock()

    def rows(self, store: Store, run_id: str) -> list[dict]:
        key = (str(store.home), run_id)
        with self._lock:
            known = self._rows.get(key)
        rows = None
        if known:
            new = metrics_rows(store, [run_id], from_seq=known[-1]["seq"])
            if new and new[0] == known[-1]:
                rows = known + new[1:]          # a new list: another thread may hold `known`
        if rows is None:
            rows = metrics_rows(store, [run_id])
        with self._lock:
            self._rows.pop(key, None)
            self._rows[key] = rows
            while len(self._rows) > self.keep:
                self._rows.pop(next(iter(self._rows)))
        return [dict(r) for r in rows]         # the caller's own dicts


def mask_stats_rows(store: Store, ids: list[str]) -> list[dict]:
    rows = _bulk(store, "mask_stats", list(ids))
    for d in rows:
        try:
            d["hist"] = json.loads(d["hist"]) if d.get("hist") else None
        except (json.JSONDecodeError, TypeError):
            d["hist"] = None
    return rows


def _missing(v) -> bool:
    return v is None or v != v     # None or NaN


def _time_axis(run_ids: list, rounds: list, phases: list, epochs: list):
    """The time axis from plain column lists: (rounds as ints, phases with "train" for none,
    segments "r0 search", t). `t` is epochs since the run began, counted across rounds and phases:
    each (round, phase) segment starts where the run's earlier segments, in training order, end,
    and lasts as long as its last epoch. Plain Python and numpy, no pandas: this runs at every new
    row of a live run, where a dozen Series operations cost ~3 ms whatever the frame's size."""
    rounds = [0 if _missing(r) else int(r) for r in rounds]
    phases = ["train" if _missing(p) else p for p in phases]
    segments = [f"r{r} {p}" for r, p in zip(rounds, phases)]
    ids = ["" if _missing(i) else str(i) for i in run_ids]           # no id: one run
    code_of: dict = {}
    codes = np.fromiter((code_of.setdefault((i, s), len(code_of)) for i, s in zip(ids, segments)),
                        dtype=np.int64, count=len(segments))
    ep = np.array([np.nan if _missing(e) else float(e) for e in epochs], dtype=float)
    ends = np.full(len(code_of), -np.inf)
    np.fmax.at(ends, codes, ep)                         # each segment's last epoch (NaN epochs ignored)
    ends[np.isneginf(ends)] = np.nan                    # a segment without epochs (lasts 0)
    start = np.zeros(len(code_of))
    by_run: dict = {}
    first_rows = dict(zip(codes.tolist()[::-1], range(len(codes) - 1, -1, -1)))   # segment → its first row
    for i in range(len(code_of)):
        row = first_rows[i]
        by_run.setdefault(ids[row], []).append((rounds[row], PHASE_ORDER.get(phases[row], 2), i))
    for segs in by_run.values():
        offset = 0.0
        for *_, i in sorted(segs):                  # training order; ties in first-seen order
            start[i] = offset
            offset += 0.0 if np.isnan(ends[i]) else float(ends[i])
    t = start[codes] + np.where(np.isnan(ep), np.nan_to_num(ends, nan=0.0)[codes], ep)
    return rounds, phases, segments, t


# every metrics frame has these columns (NaN where no row has a value): the store's, and the run's id
METRIC_COLUMNS = ["run_id", *STORE_METRIC_COLUMNS]
MASK_STATS_COLUMNS = ["run_id", "round", "phase", "epoch", "layer", "numel", "mean", "frac_above", "near_binary",
                      "churn", "dead_units", "hist"]


def _rows_frame(rows: list[dict], columns: list[str], drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows (dicts) as a frame with at least `columns` (NaN where no row has one), without `drop`,
    and with the time axis (`segment`, `t`; rounds as ints, a missing phase "train"). Made column by
    column: the frame pandas makes from the dicts (a test holds them equal), ~4× faster for a live
    run's ~80 rows, and made again at every new row."""
    if not rows:
        df = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
        df["t"] = []
        df["segment"] = []
        return df
    names = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in drop]   # first seen first
    cols = {k: [r.get(k) for r in rows] for k in names}
    n = len(rows)
    for k, vals in cols.items():      # typed as a frame made from the row dicts types a column of no values:
        if vals.count(None) == n:     # NaNs where some row lacks the key, else objects
            cols[k] = np.full(n, np.nan) if any(k not in r for r in rows) else pd.Series(vals, dtype=object)
    for c in columns:
        if c not in cols:
            cols[c] = np.full(n, np.nan)
    rounds, phases, segments, t = _time_axis(cols["run_id"], cols["round"], cols["phase"], cols["epoch"])
    cols["round"] = np.array(rounds, dtype=np.int64)
    # filled as the frame made from the row dicts was: text, or objects when no row had a phase
    cols["phase"] = phases if isinstance(cols["phase"], list) else pd.Series(phases, dtype=object)
    return pd.DataFrame({**cols, "segment": segments, "t": t})


def metrics_frame(rows: list[dict]) -> pd.DataFrame:
    """Metric rows as a frame with the time axis (see _rows_frame)."""
    return _rows_frame(rows, METRIC_COLUMNS, drop=("seq",))


def mask_stats_frame(rows: list[dict]) -> pd.DataFrame:
    df = _rows_frame(rows, MASK_STATS_COLUMNS)
    if not df.empty:
        df["when"] = [names.when_label(r, p, e) for r, p, e in zip(df["round"], df["phase"], df["epoch"])]
        # training order (a retrain's epoch 0 comes after the search's last epoch, at the same t)
        df["order"] = (df["round"] * 1_000_000 + df["phase"].map(lambda p: PHASE_ORDER.get(p, 2)) * 100_000
                       + df["epoch"].fillna(0).astype(float))
    else:
        df["when"] = []
        df["order"] = []
    return df


def hist_over_time(stats: pd.DataFrame, layer: str | None = None) -> pd.DataFrame:
    """Histogram of m (20 bins on [0,1]) per recorded epoch, pooled over layers
    (or for one layer): long frame with t, when, bin_lo, bin_mid, fraction."""
    df = stats if layer in (None, "all layers") else stats[stats["layer"] == layer]
    df = df[df["hist"].notna()]
    rows = []
    for (order, when), g in df.groupby(["order", "when"], sort=True):
        h = np.sum([np.asarray(x, dtype=float) for x in g["hist"]], axis=0)
        tot = h.sum() or 1.0
        n = len(h)
        for i, v in enumerate(h):
            rows.append({"order": order, "when": when, "bin_lo": i / n, "bin_mid": (i + 0.5) / n,
                         "fraction": v / tot})
    return pd.DataFrame(rows, columns=["order", "when", "bin_lo", "bin_mid", "fraction"])


def name_layers(df: pd.DataFrame, cfg: dict, col: str = "layer") -> pd.DataFrame:
    """Layers by what they are ("fc1 784→300") in `col`, the module path in `module`."""
    df = df.copy()
    df["module"] = df[col] if col in df else pd.Series(dtype=str)
    if not df.empty:
        labels = names.layer_names_for(cfg)
        df[col] = df[col].map(lambda p: labels.get(p, p))
    return df


def layer_allocation(runs: list[dict]) -> pd.DataFrame:
    """Final remaining fraction and dead units per layer, from each run's summary."""
    rows = []
    for r in runs:
        layers = summary_of(r).get("layers") or {}
        labels = names.layer_names_for(cfg_of(r)) if layers else {}
        for i, (name, d) in enumerate(layers.items()):
            if not isinstance(d, dict):
                continue
            rows.append({"run_id": r["id"], "run": run_label(r), "layer": labels.get(name, name), "module": name,
                         "order": i,
                         "remaining": d.get("remaining"), "kept": d.get("kept"), "total": d.get("total"),
                         "dead_units": d.get("dead_units")})
    return pd.DataFrame(rows, columns=["run_id", "run", "layer", "module", "order", "remaining", "kept", "total",
                                       "dead_units"])


def checks_frame(store: Store, run_id: str) -> pd.DataFrame:
    rows = []
    for c in store.checks(run_id):
        title, what = CHECK_TEXT.get(c["name"], (c["name"], ""))
        rows.append({"check": title, "name": c["name"], "passed": bool(c["passed"]), "value": c.get("value"),
                     "target": c.get("target"), "detail": c.get("detail") or what})
    return pd.DataFrame(rows, columns=["check", "name", "passed", "value", "target", "detail"])


# ------------------------------------------------------------------ trade-offs
# Runs are averaged only when their configs are equal but for the seed (DESIGN §7): the
# point key `setting` is the config as validation resolves it, less the seed, the execution
# settings and the keys its method does not read, and whether it is a class-pack example.
# A line joins the points of one method that differ only along its sweep axis (LINE_AXES);
# lines that share a name otherwise are told apart by what differs ("IMP · 2 epochs").

LINE_AXES = {"concave": ("lam", "target_sparsity"), "cs": ("lam", "target_sparsity"),
             "random": ("target_sparsity",), "pai": ("target_sparsity",)}
NOT_COMPARED = ("seed", *RunConfig.EXECUTION_KEYS)


@functools.lru_cache(maxsize=4096)
def _compared(blob: str) -> str:
    c = json.loads(blob)
    try:
        d = RunConfig.from_dict(c, unused="keep").result_keys(without=("seed",), only_used=True)
    except Exception:  # noqa: BLE001 - a config an older engine wrote: compared as stored
        d = {k: v for k, v in c.items() if k not in NOT_COMPARED and v is not None}
    return json.dumps(d, sort_keys=True, default=str)


def compared_config(c: dict) -> dict:
    """The part of a config that decides whether two runs are comparable (see above)."""
    return json.loads(_compared(json.dumps(c, sort_keys=True, default=str)))


def group_key(c: dict) -> str:
    """A line's name before what tells it from its namesakes is added (label_lines)."""
    return names.group_label(c)


def _line_of(c: dict, example: bool) -> dict:
    d = {k: v for k, v in compared_config(c).items() if k not in LINE_AXES.get(c.get("method"), ())}
    return {**d, "_example": bool(example)}


def _say(key: str, v) -> str:
    """A config value in a line's label: "6 epochs", "retrain 2 epochs", "lr 0.01"."""
    if key == "_example":
        return names.EXAMPLE_BADGE if v else "your runs"
    if v is None:
        return f"{key} default"
    if key == "epochs":
        return f"{v} epoch{'s' if v != 1 else ''}"
    if key == "retrain_epochs":
        return f"retrain {v} epoch{'s' if v != 1 else ''}"
    if key == "rounds":
        return f"{v} round{'s' if v != 1 else ''}"
    if key == "batch_size":
        return f"batch {v}"
    if key in ("optimizer", "lr_schedule", "reg_scale", "mask_param"):
        return str(v)
    if key == "rewind":
        return f"rewind {v}"
    if isinstance(v, float):
        return f"{key} {v:g}"
    return f"{key} {v}"


def label_lines(points: pd.DataFrame) -> pd.DataFrame:
    """Name each line of `points` (column `group`): its method's name, and, where several lines
    share it, what differs between them. Call it on the runs one figure shows."""
    if points.empty:
        return points
    points = points.copy()
    labels: dict[str, str] = {}
    for base, g in points.groupby("base", sort=False):
        lines = {k: json.loads(k) for k in dict.fromkeys(g["line"])}
        if len(lines) == 1:
            labels.update({k: base for k in lines})
            continue
        keys = sorted({k for d in lines.values() for k in d}, key=lambda k: (k == "_example", k))
        differ = [k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in lines.values()}) > 1]
        for k, d in lines.items():
            labels[k] = base + "".join(f" · {_say(key, d.get(key))}" for key in differ)
    points["group"] = points["line"].map(labels)
    return points


POINT_COLUMNS = ["run_id", "label", "group", "base", "line", "method", "regularizer", "lam", "target_sparsity",
                 "seed", "model", "dataset", "classes", "example", "remaining", "kept", "total", "test_accuracy",
                 "thresholded_test_accuracy", "wall_seconds", "epochs_spent", "setting"]


def tradeoff_points(runs: list[dict]) -> pd.DataFrame:
    """Done runs with a summary: one point each, their lines named (label_lines)."""
    rows = []
    for r in runs:
        c, s = cfg_of(r), summary_of(r)
        if r.get("status") != "done" or not c or s.get("test_accuracy") is None or s.get("remaining") is None:
            continue
        example = bool(r.get("example"))
        rows.append({
            "run_id": r["id"], "label": run_label(r), "group": group_key(c), "base": group_key(c),
            "line": json.dumps(_line_of(c, example), sort_keys=True, default=str), "method": c.get("method"),
            "regularizer": c.get("regularizer") if c.get("method") == "concave" else "",
            "lam": names.solved_lam(c, s) if c.get("method") in ("concave", "cs") else None,
            "target_sparsity": c.get("target_sparsity"),
            "seed": c.get("seed"), "model": c.get("model"), "dataset": c.get("dataset"),
            "classes": ",".join(str(x) for x in c["classes"]) if c.get("classes") else "", "example": example,
            "remaining": float(s["remaining"]), "kept": s.get("kept"), "total": s.get("total"),
            "test_accuracy": float(s["test_accuracy"]),
            "thresholded_test_accuracy": s.get("thresholded_test_accuracy"),
            "wall_seconds": s.get("wall_seconds"), "epochs_spent": epochs_planned(c),
            "setting": json.dumps({**compared_config(c), "_example": example}, sort_keys=True, default=str),
        })
    return label_lines(pd.DataFrame(rows, columns=POINT_COLUMNS))


def aggregate_seeds(points: pd.DataFrame) -> pd.DataFrame:
    """Runs equal but for the seed (one `setting`) become one point: mean, std, min, max, n."""
    if points.empty:
        return pd.DataFrame(columns=["group", "setting", "method", "lam", "n", "remaining", "remaining_std",
                                     "test_accuracy", "acc_std", "acc_min", "acc_max", "wall_seconds",
                                     "epochs_spent", "seeds", "run_ids"])
    g = points.groupby(["group", "setting"], sort=False)
    out = g.agg(method=("method", "first"), lam=("lam", "mean"), n=("run_id", "count"),
                remaining=("remaining", "mean"),
                remaining_std=("remaining", "std"), test_accuracy=("test_accuracy", "mean"),
                acc_std=("test_accuracy", "std"), acc_min=("test_accuracy", "min"),
                acc_max=("test_accuracy", "max"), wall_seconds=("wall_seconds", "mean"),
                epochs_spent=("epochs_spent", "mean"),
                seeds=("seed", lambda s: ",".join(str(x) for x in sorted(s))),
                run_ids=("run_id", lambda s: ",".join(s))).reset_index()
    out[["remaining_std", "acc_std"]] = out[["remaining_std", "acc_std"]].fillna(0.0)
    return out.sort_values(["group", "remaining"]).reset_index(drop=True)


IMP_COLUMNS = ["run_id", "label", "group", "setting", "seed", "round", "remaining", "test_accuracy",
               "epochs_spent", "wall_seconds"]


def imp_rounds(store: Store, runs: list[dict]) -> pd.DataFrame:
    """IMP's accuracy round by round (one row per round of every IMP run), with the cost so far;
    `group` and `setting` as the runs' points (rounds are averaged only within one setting)."""
    imp = [r for r in runs if cfg_of(r).get("method") == "imp"]
    if not imp:
        return pd.DataFrame(columns=IMP_COLUMNS)
    pts = tradeoff_points(runs).set_index("run_id")
    by_id = {r["id"]: r for r in imp}
    found = metrics_rows(store, list(by_id), "round")
    rows = []
    for rid, grp in (pd.DataFrame(found).groupby("run_id") if found else []):
        c = cfg_of(by_id[rid])
        group = pts.at[rid, "group"] if rid in pts.index else group_key(c)
        setting = pts.at[rid, "setting"] if rid in pts.index else json.dumps(compared_config(c), sort_keys=True)
        s = summary_of(by_id[rid])
        cum = float(s.get("setup_seconds") or 0.0)     # the time to reach a round includes the set-up
        ordered = grp.sort_values("round")
        last = int(ordered["round"].max())
        for _, m in ordered.iterrows():
            cum += float(m.get("seconds") or 0.0)
            if int(m["round"]) == last and s.get("wall_seconds") is not None and \
                    c.get("rounds") is not None and last >= int(c["rounds"]):
                cum = float(s["wall_seconds"])          # the whole run: the same time as every other page
            rows.append({"run_id": rid, "label": run_label(by_id[rid]), "group": group, "setting": setting,
                         "seed": c.get("seed"), "round": int(m["round"]), "remaining": m["remaining"],
                         "test_accuracy": m["test_acc"],
                         "epochs_spent": (int(m["round"]) + 1) * int(c.get("epochs", 0)), "wall_seconds": cum})
    return pd.DataFrame(rows, columns=IMP_COLUMNS)


def imp_by_round(imp: pd.DataFrame) -> pd.DataFrame:
    """IMP rounds averaged over the seeds of one setting: a row per (line, round)."""
    cols = ["group", "round", "n", "remaining", "remaining_std", "test_accuracy", "acc_std", "acc_min", "acc_max",
            "wall_seconds", "epochs_spent", "seeds", "run_ids"]
    if imp.empty:
        return pd.DataFrame(columns=cols)
    for col, v in (("group", "IMP rounds"), ("setting", ""), ("seed", "")):     # a hand-made frame
        if col not in imp:
            imp = imp.assign(**{col: v})
    g = imp.groupby(["group", "setting", "round"], sort=True)
    rows = g.agg(n=("run_id", "count"), remaining=("remaining", "mean"), remaining_std=("remaining", "std"),
                 test_accuracy=("test_accuracy", "mean"), acc_std=("test_accuracy", "std"),
                 acc_min=("test_accuracy", "min"), acc_max=("test_accuracy", "max"),
                 wall_seconds=("wall_seconds", "mean"), epochs_spent=("epochs_spent", "mean"),
                 seeds=("seed", lambda s: ",".join(str(x) for x in sorted(s))),
                 run_ids=("run_id", lambda s: ",".join(s))).reset_index()
    rows[["remaining_std", "acc_std"]] = rows[["remaining_std", "acc_std"]].fillna(0.0)
    rows["round"] = rows["round"].astype("Int64")
    return rows


def imp_prune_text(runs: list[dict]) -> str | None:
    """What IMP's rounds prune, from the runs' own prune_fraction: "20 %" or "20 % or 50 %"."""
    fr = sorted({float(cfg_of(r).get("prune_fraction", 0.2)) for r in runs if cfg_of(r).get("method") == "imp"})
    if not fr:
        return None
    return " or ".join(f"{f * 100:.3g} %" for f in fr)


def tradeoff_table(agg: pd.DataFrame, imp: pd.DataFrame, runs: list[dict] | None = None) -> pd.DataFrame:
    """The rows under the trade-off plot: every plotted point, so every plotted run has a
    row (seed groups as aggregated; each IMP line's rounds, averaged over seeds like the plot)."""
    table = agg.assign(round=pd.Series([None] * len(agg), dtype="Int64", index=agg.index))
    if imp.empty:
        return table
    if "group" not in imp or "setting" not in imp:        # a frame from elsewhere: one line per run's name
        by_id = {r["id"]: r for r in runs or []}
        names_ = [group_key(cfg_of(by_id[i])) if i in by_id else "IMP" for i in imp["run_id"]]
        imp = imp.assign(group=names_, setting=names_)
    rows = imp_by_round(imp)
    rows["method"] = "imp"
    rows["lam"] = None
    return pd.concat([table, rows[[c for c in table.columns if c in rows]]], ignore_index=True)


def dense_candidates(points: pd.DataFrame, imp: pd.DataFrame) -> pd.DataFrame:
    """Every dense reference the runs offer, one per setting (seeds averaged): dense runs,
    then IMP's first round (its dense training, engine round index 0) of each IMP line; the
    first is the default: dense runs before IMP, of the same kind (examples or not) as most
    plotted runs, then the most seeds."""
    rows = []
    d = points[points["method"] == "dense"]
    for (group, _setting), g in d.groupby(["group", "setting"], sort=False):
        rows.append({"label": group, "accuracy": float(g["test_accuracy"].mean()), "n": len(g),
                     "example": bool(g["example"].iloc[0]), "source": "dense", "run_ids": ",".join(g["run_id"])})
    if not imp.empty:
        r0 = imp[imp["round"] == 0]
        ex = dict(zip(points["run_id"], points["example"])) if "example" in points else {}
        for (group, _setting), g in r0.groupby(["group", "setting"], sort=False):
            rows.append({"label": f"{group}, round 1 (dense training)",
                         "accuracy": float(g["test_accuracy"].mean()), "n": len(g),
                         "example": bool(ex.get(g["run_id"].iloc[0], False)), "source": "imp",
                         "run_ids": ",".join(g["run_id"])})
    out = pd.DataFrame(rows, columns=["label", "accuracy", "n", "example", "source", "run_ids"])
    if out.empty:
        return out
    others = points[points["method"] != "dense"]
    mostly_examples = bool(others["example"].mean() > 0.5) if "example" in others and len(others) else False
    out["_rank"] = [(s != "dense", e != mostly_examples, -n) for s, e, n in zip(out["source"], out["example"],
                                                                                 out["n"])]
    return out.sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)


def dense_reference(points: pd.DataFrame, imp: pd.DataFrame) -> float | None:
    """The default dense accuracy (dense_candidates' first), or None."""
    cands = dense_candidates(points, imp)
    return None if cands.empty else float(cands["accuracy"].iloc[0])


# ------------------------------------------------------------------ masks

def _tag_key(tag: str):
    m = re.fullmatch(r"r(\d+)-(\w+?)-(?:e(\d+)|(end))", tag)
    if m:
        return (int(m.group(1)), PHASE_ORDER.get(m.group(2), 2), int(m.group(3)) if m.group(3) else 10**6, tag)
    m = re.fullmatch(r"r(\d+)-ticket", tag)
    if m:
        return (int(m.group(1)), 1, -1, tag)   # the ticket opens the round's retrain
    return (10**6, 0, 0, tag)


def ordered_tags(tags: list[str], phases: tuple[str, ...] | None = None) -> list[str]:
    """Snapshot tags in training order; optionally only per-epoch tags of the given phases."""
    out = sorted(tags, key=_tag_key)
    if phases is not None:
        out = [t for t in out if re.fullmatch(rf"r\d+-({'|'.join(phases)})-e\d+", t)]
    return out


def final_ticket_tag(tags: list[str]) -> str | None:
    tickets = [t for t in tags if re.fullmatch(r"r\d+-ticket", t)]
    return max(tickets, key=lambda t: int(t[1:].split("-")[0])) if tickets else None


def load_masks_np(store: Store, run_id: str, tag: str) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in store.load_masks(run_id, tag).items()}


def mask_iou(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> pd.DataFrame:
    """IoU of the kept sets of two binary masks, per common layer and over all of them."""
    rows = []
    inter_all = union_all = 0
    for name in a:
        if name not in b or a[name].shape != b[name].shape:
            continue
        x, y = a[name] != 0, b[name] != 0
        inter, union = int((x & y).sum()), int((x | y).sum())
        inter_all += inter
        union_all += union
        rows.append({"layer": name, "iou": inter / union if union else 1.0, "kept_a": int(x.sum()),
                     "kept_b": int(y.sum()), "both": inter, "total": x.size})
    if rows:
        rows.append({"layer": "all layers", "iou": inter_all / union_all if union_all else 1.0,
                     "kept_a": sum(r["kept_a"] for r in rows), "kept_b": sum(r["kept_b"] for r in rows),
                     "both": inter_all, "total": sum(r["total"] for r in rows)})
    return pd.DataFrame(rows, columns=["layer", "iou", "kept_a", "kept_b", "both", "total"])


def overlap_partner(a: dict, candidates: list[dict]) -> str | None:
    """The run to compare run a's ticket with: the first candidate (callers list the
    user's picks first, then finished runs newest first) that is not a and has the same
    model, dataset and classes, so the two tickets share their layers."""
    ca = cfg_of(a)
    key = (ca.get("model"), ca.get("dataset"), ca.get("classes") or None)
    for r in candidates:
        cr = cfg_of(r)
        if r["id"] != a["id"] and (cr.get("model"), cr.get("dataset"), cr.get("classes") or None) == key:
            return r["id"]
    return None


PIXEL_MODELS = ("logreg", "lenet300")
PIXEL_DATASETS = ("mnist", "fashion_mnist", "digits")


def pixel_capable(run: dict) -> bool:
    c = cfg_of(run)
    return c.get("model") in PIXEL_MODELS and c.get("dataset") in PIXEL_DATASETS


def pixel_map(masks: dict[str, np.ndarray], in_shape: tuple[int, int, int]) -> pd.DataFrame:
    """The first layer's mask as an image: for each input pixel, the mean of m over the
    units it feeds (for binary logistic regression: the mask itself). H×W DataFrame."""
    if not masks:
        raise ValueError("the snapshot holds no masks")
    first = next(iter(masks.values()))
    c, h, w = in_shape
    if first.ndim != 2 or first.shape[1] != c * h * w:
        raise ValueError(f"the first layer's mask has shape {tuple(first.shape)}, not (units, {c * h * w})")
    img = first.astype(float).mean(axis=0).reshape(c, h, w).mean(axis=0)
    return pd.DataFrame(img)


def pixels_used(masks: dict[str, np.ndarray]) -> tuple[int, int]:
    """(input pixels with at least one kept first-layer weight, input pixels in all)."""
    first = next(iter(masks.values()))
    return int((first != 0).any(axis=0).sum()), int(first.shape[1])


def planted_recovery(target: np.ndarray, soft: np.ndarray, binary: np.ndarray | None) -> dict:
    """How well a learned mask recovers the planted support: ‖m* − m̃‖₂ and the support errors."""
    t = target.reshape(-1).astype(float)
    s = soft.reshape(-1).astype(float)
    b = (binary.reshape(-1) != 0) if binary is not None else s > 0.5
    tt = t != 0
    tp = int((b & tt).sum())
    fp = int((b & ~tt).sum())
    fn = int((~b & tt).sum())
    return {"dist": float(np.linalg.norm(t - s)), "dist_binary": float(np.linalg.norm(t - b.astype(float))),
            "true_pos": tp, "false_pos": fp, "false_neg": fn, "kept": int(b.sum()), "k": int(tt.sum()),
            "exact": fp == 0 and fn == 0,
            "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0}


# ------------------------------------------------------------------ export

def metrics_csv(store: Store, run_id: str) -> str:
    rows = store.metrics(run_id)
    if not rows:
        return ""
    keys = sorted({k for r in rows for k in r})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def config_json(run: dict) -> str:
    return json.dumps(cfg_of(run), indent=2, sort_keys=True)


def export_zip(store: Store, run_id: str) -> bytes:
    """config.json, metrics.csv, summary.json, checks.json and ticket.pt of one run (what `export` writes)."""
    run = store.get_run(run_id)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{run_id}/config.json", config_json(run))
        m = metrics_csv(store, run_id)
        if m:
            z.writestr(f"{run_id}/metrics.csv", m)
        if run.get("summary") is not None:
            z.writestr(f"{run_id}/summary.json", json.dumps(run["summary"], indent=2))
        z.writestr(f"{run_id}/checks.json", json.dumps(store.checks(run_id), indent=2))
        ticket = store.run_dir(run_id) / "ticket.pt"
        if ticket.exists():             # as `export` does: a file that does not load safely is marked damaged
            why = damage_of(ticket)
            z.write(ticket, f"{run_id}/ticket.pt" + (".damaged" if why else ""))
            if why:
                z.writestr(f"{run_id}/DAMAGED.json", json.dumps({"ticket.pt": why}, indent=2))
        z.writestr(f"{run_id}/curves.html", curves_html(store, run))
    return buf.getvalue()


def curves_html(store: Store, run: dict) -> str:
    """The Runs page's curves as one standalone HTML file (the same figure builders),
    with plotly.js inside it (~4.7 MB) so the export opens offline, years from now."""
    from ui import figures
    df = metrics_frame(metrics_rows(store, [run["id"]])).assign(run=run_label(run))
    figs = [figures.loss_figure(df), figures.accuracy_figure(df), figures.remaining_figure(df)]
    body = "".join(f.to_html(full_html=False, include_plotlyjs=(i == 0))
                   for i, f in enumerate(figs))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{run['id']}</title></head><body>"
            f"<h2>{html.escape(run_label(run))}</h2>{body}</body></html>")


def ticket_bytes(store: Store, run_id: str) -> bytes | None:
    """ticket.pt's bytes, or None when there is none or it does not load safely."""
    p = store.run_dir(run_id) / "ticket.pt"
    return p.read_bytes() if p.exists() and damage_of(p) is None else None


def duplicate_config(run: dict) -> dict | None:
    """The run's config, validated again (None when it is unreadable or no longer valid)."""
    try:
        return RunConfig.from_dict(cfg_of(run), unused="keep").to_dict() if cfg_of(run) else None
    except Exception:
        return None


def sample_images(dataset: str, classes: tuple, data_dir: str, n: int = 8) -> list[tuple[str, pd.DataFrame]]:
    """n test images, the wanted classes taken in turn: (class name, H×W frame of the first channel)."""
    from engine.data import DATASETS
    raw = DATASETS.get(dataset).loader(Path(data_dir), {})
    x, y = raw.test_x, raw.test_y
    wanted = list(classes) or list(range(len(raw.class_names)))
    out, seen = [], {c: 0 for c in wanted}
    for i in range(len(y)):
        c = int(y[i])
        if c in seen and seen[c] <= min(seen.values()) and len(out) < n:
            out.append((raw.class_names[c], pd.DataFrame(x[i, 0].float().numpy())))
            seen[c] += 1
        if len(out) >= n:
            break
    return out


def recorded_recovery(summary: dict) -> dict | None:
    """The engine's own planted-recovery figures (summary["recovery"]) as the Theory page and
    the Lesson show them: distances, true/false positives, misses, exact or not, F1."""
    rec = summary.get("recovery")
    if not isinstance(rec, dict) or "hits" not in rec:
        return None
    hits, kept, k = int(rec["hits"]), int(rec["kept"]), int(rec["support_size"])
    fp, fn = kept - hits, k - hits
    return {"dist": float(rec["distance"]), "dist_binary": float(rec.get("binary_distance", float("nan"))),
            "true_pos": hits, "false_pos": fp, "false_neg": fn, "kept": kept, "k": k, "exact": bool(rec["exact"]),
            "f1": 2 * hits / (2 * hits + fp + fn) if (2 * hits + fp + fn) else 1.0}
