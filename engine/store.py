"""The store: one SQLite index (WAL mode, busy timeout) plus one folder per run.

    <home>/lottery.db           runs, status, scalar metrics, mask statistics, checks
    <home>/runs/<id>/config.json
                    metrics.jsonl   the run's own append-only copy of its metrics
                    masks/*.pt      mask snapshots (soft as float16, binary as bool)
                    rewind.pt       weights retraining starts from
                    ticket.pt       binary mask + rewind weights
                    ckpt.pt         last complete checkpoint
                    summary.json

Run ids are generated here ([a-z0-9-] only); a run's name is metadata and
never part of a path. Every file write is atomic (temp file, fsync, os.replace).
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
# torch is imported inside the functions that handle tensors: reading the index (`list`, `show`,
# the app's tables) must not pay the seconds torch takes to import.

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
RUN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
PARSED_KEEP = 4096        # JSON texts a list_runs(parsed=…) cache holds before it starts again
_NOT_PARSED = object()
METRIC_COLUMNS = ("kind", "round", "phase", "epoch", "step", "wall", "lr", "lam", "loss", "loss_task",
                  "loss_reg", "train_acc", "val_acc", "test_acc", "remaining")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(
    id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', sweep_id TEXT, config_hash TEXT,
    config TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    created REAL NOT NULL, started REAL, finished REAL,
    pid INTEGER, pid_start REAL, heartbeat REAL,
    progress REAL NOT NULL DEFAULT 0, phase TEXT, round INTEGER, summary TEXT,
    slot TEXT, resume INTEGER NOT NULL DEFAULT 0, data_dir TEXT, host TEXT, executor TEXT,
    data_version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS metrics(
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, round INTEGER, phase TEXT,
    epoch REAL, step INTEGER, wall REAL, lr REAL, lam REAL, loss REAL, loss_task REAL, loss_reg REAL,
    train_acc REAL, val_acc REAL, test_acc REAL, remaining REAL, extra TEXT,
    PRIMARY KEY(run_id, seq));
CREATE TABLE IF NOT EXISTS mask_stats(
    run_id TEXT NOT NULL, round INTEGER, phase TEXT, epoch REAL, step INTEGER, layer TEXT,
    numel INTEGER, mean REAL, frac_above REAL, near_binary REAL, churn REAL, dead_units REAL, hist TEXT);
CREATE INDEX IF NOT EXISTS mask_stats_run ON mask_stats(run_id);
CREATE TABLE IF NOT EXISTS checks(
    run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, target REAL, passed INTEGER NOT NULL,
    detail TEXT, PRIMARY KEY(run_id, name));
CREATE TABLE IF NOT EXISTS adoptions(
    run_id TEXT NOT NULL, owner TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY(run_id, owner));
CREATE TABLE IF NOT EXISTS store_version(id INTEGER PRIMARY KEY CHECK (id = 0), v INTEGER NOT NULL);
INSERT OR IGNORE INTO store_version VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS runs_inserted AFTER INSERT ON runs BEGIN UPDATE store_version SET v = v + 1; END;
CREATE TRIGGER IF NOT EXISTS runs_updated AFTER UPDATE ON runs BEGIN UPDATE store_version SET v = v + 1; END;
CREATE TRIGGER IF NOT EXISTS runs_deleted AFTER DELETE ON runs BEGIN UPDATE store_version SET v = v + 1; END;
"""
# store_version.v: +1 in the same transaction as any change to `runs` (by these triggers, whoever
# writes: workers, the CLI, the app). Every write of metrics, mask statistics or checks bumps its
# run's data_version, so v moves on with those too: one cheap number that live views compare.


# Columns of `runs` added after the first stores were made; Store() adds the
# missing ones in place (ALTER TABLE ... ADD COLUMN), so old stores keep working.
#   slot          device slot of a running worker (a CUDA_VISIBLE_DEVICES id), NULL on CPU
#   resume        1 when the next execution continues from the last checkpoint
#   data_dir      the dataset folder the run was submitted with
#   host          machine of the process that holds the run (pid/pid_start are only meaningful there)
#   executor      who starts a queued run: NULL/'jobs' the jobs queue, 'sweep' a sweep's joblib tasks
#   data_version  bumped in the same transaction as every write or cut of the run's metrics and
#                 mask statistics: live views compare it instead of counting rows
#   attempt       the fencing token: +1 each time a process takes the run (claim, resume, a
#                 foreground start). A writer checks it in the same transaction as each write
#                 (Store.take), so a stale writer (stopped, then resumed elsewhere) writes nothing.
#   owner         who launched the run (a student's name on a shared server); NULL = nobody in particular
#   example       1 for a class-pack example run: read-only, never deleted, hidden with one switch
#   estimate      the time estimate (seconds) shown when the run was launched, to compare with the actual
#   claimed       when the jobs queue took the run and spawned its worker (`started` comes once the worker
#                 has imported torch): queue waits and worker start-up are measured from it
ADDED_COLUMNS = (("slot", "TEXT"), ("resume", "INTEGER NOT NULL DEFAULT 0"), ("data_dir", "TEXT"),
                 ("host", "TEXT"), ("executor", "TEXT"), ("data_version", "INTEGER NOT NULL DEFAULT 0"),
                 ("attempt", "INTEGER NOT NULL DEFAULT 0"), ("owner", "TEXT"),
                 ("example", "INTEGER NOT NULL DEFAULT 0"), ("estimate", "REAL"), ("claimed", "REAL"))
JOB_COLUMNS = ("slot", "resume", "data_dir", "host", "executor")  # the ones the jobs manager sets


_BUMP = "UPDATE runs SET data_version = data_version + 1 WHERE id=?"


class UnknownRun(KeyError):
    def __str__(self):
        return f"no run with id {self.args[0]!r} in this store"


class ActiveRun(ValueError):
    """A queued or running run: cancel it before deleting it."""

    def __str__(self):
        return f"run {self.args[0]} is {self.args[1]}; cancel it before deleting it"


class ExampleRun(ValueError):
    """A class-pack example run: read-only, so never deleted."""

    def __str__(self):
        return (f"run {self.args[0]} is a class-pack example (read-only) and cannot be deleted; hide the "
                f"examples with the sidebar's “Show examples” switch")


MIN_FREE_MB = 1.0   # below this much free space the store refuses new writes (submit, run, cancel)


class DiskFull(Exception):
    """The store's disk has no room for a write; one line naming the disk and the space needed."""

    def __init__(self, home: Path, what: str = "writing to the store", need_mb: float = MIN_FREE_MB):
        self.home, self.free_mb, self.need_mb = Path(home), free_mb(home), need_mb
        super().__init__(f"the store's disk is full: {disk_name(home)} has {self.free_mb:.1f} MB free; "
                         f"{what} needs at least {need_mb:g} MB free")


def free_mb(path: str | os.PathLike) -> float:
    """Free space (MB) on the filesystem holding `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free / 1e6


def disk_name(path: str | os.PathLike) -> str:
    """'DEVICE (FSTYPE) mounted on MOUNTPOINT' for the filesystem holding `path`."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    dev = p.stat().st_dev
    while p != p.parent and p.parent.stat().st_dev == dev:
        p = p.parent
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            src, mnt, fstype = (line.split() + ["", "", ""])[:3]
            if mnt.replace("\\040", " ") == str(p):
                return f"{src} ({fstype}) mounted on {p}"
    except OSError:
        pass
    return f"the filesystem mounted on {p}"


def _disk_trouble(e: BaseException) -> bool:
    """An SQLite error a full disk causes (I/O error, disk full, cannot open the WAL files)."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN)
    return isinstance(e, sqlite3.OperationalError) and ("disk" in str(e) or "full" in str(e))


class StaleWriter(Exception):
    """This process's attempt at a run is no longer the current one: another process
    took the run over (a resume). Raised before anything is written."""

    def __init__(self, run_id: str, mine: int, current: int | None):
        self.run_id, self.mine, self.current = run_id, mine, current
        taken = "it was deleted" if current is None else f"attempt {current} took it over (resumed elsewhere)"
        super().__init__(f"run {run_id}: this process held attempt {mine}, but {taken}; "
                         f"it stopped without writing anything")


# ------------------------------------------------------------------ atomic files

def atomic_write_bytes(path: Path, data: bytes, replace: Callable[[str, Path], None] | None = None) -> None:
    """Temp file, fsync, then `replace(tmp, path)` (a fenced writer passes one that
    checks its token under the store's write lock)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        (replace or os.replace)(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode())


def atomic_torch_save(path: Path, obj: Any, replace: Callable[[str, Path], None] | None = None) -> None:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), replace)


class DamagedFile(ValueError):
    """A .pt file that does not load safely (garbage, truncated, or a pickle that is not ours)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        super().__init__(f"{self.path.name} is not a readable Lottery Lab checkpoint (it may be damaged or not "
                         f"ours); it was not loaded.")


def torch_load(path: Path) -> Any:
    """Safe load: tensors and plain containers only, never arbitrary pickles.
    Anything else raises DamagedFile, whose text never repeats PyTorch's advice to
    retry with weights_only=False (that would run the payload). A missing or
    unreadable file stays an OSError."""
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception:
        raise DamagedFile(path) from None


def damage_of(path: Path) -> str | None:
    """None when the .pt file at `path` loads safely, else the one-line reason (exports check this)."""
    try:
        torch_load(path)
    except DamagedFile as e:
        return str(e)
    return None


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append records and fsync; a crash can leave at most one half line, which readers skip."""
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Read records, tolerating a truncated or garbled last line."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):     # a tensor or numpy array (no torch import needed to tell)
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(v):
    """SQLite and JSON have no NaN/inf; store them as NULL."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ------------------------------------------------------------------ the store

class Store:
    def __init__(self, home: str | os.PathLike):
        self.home = Path(home)
        self.runs_dir = self.home / "runs"
        self.db_path = self.home / "lottery.db"
        self._held: dict[str, int] = {}    # run id → the attempt this process writes it as (take)
        self._version_lock = threading.Lock()
        self._version_db: tuple[int, sqlite3.Connection] | None = None   # (the file's inode, a reader)
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            with self.connect(write=True) as db:
                db.executescript(SCHEMA)
                have = {r["name"] for r in db.execute("PRAGMA table_info(runs)")}
        except (DiskFull, OSError) as e:
            if not isinstance(e, DiskFull) and not _disk_trouble(e):
                raise
            if not self.db_path.exists():
                raise DiskFull(self.home, "creating the store") from None
            return      # an existing store on a full disk: reads still work (read-only opens)
        if any(c not in have for c, _ in ADDED_COLUMNS):
            with self.transaction() as db:   # re-checked under the write lock: concurrent openers
                have = {r["name"] for r in db.execute("PRAGMA table_info(runs)")}
                for col, decl in ADDED_COLUMNS:
                    if col not in have:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {col} {decl}")

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection in WAL mode. On a full disk SQLite cannot set up the WAL's
        shared-memory file, so even reads fail there: a reader then opens the
        database read-only (mode=ro, else immutable, which reads the database file
        as it stands), and a writer gets DiskFull (one line)."""
        try:
            db = self._open("file:{}")
        except sqlite3.OperationalError as e:
            if not (_disk_trouble(e) and self.disk_full()):
                raise
            if write:
                raise DiskFull(self.home) from None
            try:
                db = self._open("file:{}?mode=ro")
            except sqlite3.OperationalError:
                db = self._open("file:{}?immutable=1")
        try:
            yield db
        except sqlite3.OperationalError as e:
            if write and _disk_trouble(e) and self.disk_full():
                raise DiskFull(self.home) from e
            raise
        finally:
            db.close()

    def __getstate__(self) -> dict:        # a Store travels to other processes as its path
        return {k: v for k, v in self.__dict__.items() if k not in ("_version_lock", "_version_db")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _version_lock=threading.Lock(), _version_db=None)

    def _open(self, uri: str, shared: bool = False) -> sqlite3.Connection:
        from urllib.parse import quote
        db = sqlite3.connect(uri.format(quote(str(self.db_path.absolute()))), timeout=30.0, isolation_level=None,
                             uri=True, check_same_thread=not shared)
        try:
            db.row_factory = sqlite3.Row
            if "?" not in uri:          # read-only opens cannot change the journal mode
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=NORMAL")
            if "?" in uri:
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()   # fail here, not in the reader
        except BaseException:
            db.close()
            raise
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connect(write=True) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

    def free_mb(self) -> float:
        return free_mb(self.home)

    def disk_full(self) -> bool:
        """True when the store's disk has less than MIN_FREE_MB free."""
        return self.free_mb() < MIN_FREE_MB

    def require_space(self, what: str) -> None:
        """Refuse a write up front (DiskFull, one line) when the store's disk is full."""
        if self.disk_full():
            raise DiskFull(self.home, what)

    # ---------------------------------------------------------------- one writer per run
    def take(self, run_id: str, attempt: int | None = None, **fields) -> int:
        """Become the run's writer: with `attempt` (what a claim returned) only while
        it is still the current one, else as a new attempt (current + 1). Sets
        `fields` in the same transaction. From then on every write of this run
        through this Store checks the attempt in its own transaction and raises
        StaleWriter, writing nothing, once another process has taken the run."""
        bad = set(fields) - self._UPDATABLE
        if bad:
            raise ValueError(f"cannot update {bad}")
        with self.transaction() as db:
            row = db.execute("SELECT attempt FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise UnknownRun(run_id)
            if attempt is None:
                attempt = row["attempt"] + 1
            elif row["attempt"] != attempt:
                raise StaleWriter(run_id, attempt, row["attempt"])
            cols = "".join(f", {k}=?" for k in fields)
            db.execute(f"UPDATE runs SET attempt=?{cols} WHERE id=?", (attempt, *fields.values(), run_id))
        self._held[run_id] = attempt
        return attempt

    def _fence(self, db: sqlite3.Connection, run_id: str) -> None:
        """Inside a write transaction: refuse if this process's attempt is stale."""
        mine = self._held.get(run_id)
        if mine is None:
            return
        row = db.execute("SELECT attempt FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or row["attempt"] != mine:
            raise StaleWriter(run_id, mine, None if row is None else row["attempt"])

    def _replace_fenced(self, run_id: str) -> Callable[[str, Path], None] | None:
        """os.replace for a file of the run, done under the write lock after the fence check."""
        if run_id not in self._held:
            return None

        def replace(tmp, path):
            with self.transaction() as db:
                self._fence(db, run_id)
                os.replace(tmp, path)
        return replace

    def write_json(self, run_id: str, name: str, obj: Any) -> None:
        """A JSON file in the run folder (e.g. summary.json), fenced like every write."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"bad file name {name!r}")
        atomic_write_bytes(self.run_dir(run_id) / name,
                           json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode(),
                           self._replace_fenced(run_id))

    # ---------------------------------------------------------------- runs
    def run_dir(self, run_id: str) -> Path:
        """The folder of a run; refuses anything that is not a store-made id."""
        if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
            raise UnknownRun(run_id)
        return self.runs_dir / run_id

    def create_run(self, config: dict, config_hash: str, name: str = "", status: str = "queued",
                   sweep_id: str | None = None, extra: dict | None = None,
                   guard: Callable[[sqlite3.Connection], None] | None = None) -> str:
        """`extra` sets other columns in the same insert (e.g. data_dir, executor), so a
        queued run is complete the moment another process can see it. `guard(db)` runs in
        the insert's write transaction, first: it may count rows and raise to refuse the
        run (nothing is then kept), and no other writer can change what it counted."""
        extra = dict(extra or {})
        bad = set(extra) - self._UPDATABLE
        if bad:
            raise ValueError(f"cannot set {bad}")
        run_id = f"{config_hash[:8]}-{secrets.token_hex(3)}"
        d = self.run_dir(run_id)
        d.mkdir(parents=True, exist_ok=False)
        atomic_write_json(d / "config.json", config)
        cols = ("id", "name", "sweep_id", "config_hash", "config", "status", "created", *extra)
        try:
            with self.transaction() as db:
                if guard is not None:
                    guard(db)
                db.execute(f"INSERT INTO runs({', '.join(cols)}) VALUES({', '.join('?' * len(cols))})",
                           (run_id, name, sweep_id, config_hash, json.dumps(config), status, time.time(),
                            *extra.values()))
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)     # refused or failed: no folder without a row
            raise
        return run_id

    _UPDATABLE = frozenset({"status", "reason", "started", "finished", "pid", "pid_start", "heartbeat", "progress",
                            "phase", "round", "summary", "name", "owner", "estimate", "claimed", *JOB_COLUMNS})

    def update_run(self, run_id: str, **fields) -> None:
        allowed = self._UPDATABLE
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update {bad}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        if "summary" in fields and not isinstance(fields["summary"], (str, type(None))):
            fields["summary"] = json.dumps(fields["summary"], default=_json_default)
        cols = ", ".join(f"{k}=?" for k in fields)
        with self.transaction() as db:
            self._fence(db, run_id)
            cur = db.execute(f"UPDATE runs SET {cols} WHERE id=?", (*fields.values(), run_id))
            if cur.rowcount == 0:
                raise UnknownRun(run_id)

    def touch(self, run_id: str) -> None:
        """Tell every view that this run changed outside the index (e.g. its cancel marker was
        written): its data_version, and so the store's version, move on."""
        with self.transaction() as db:
            db.execute(_BUMP, (run_id,))

    def update_run_if(self, run_id: str, where: dict, **fields) -> bool:
        """Compare-and-set: update only while every column in `where` still has its
        value (a tuple means any of those values; None matches NULL). True if updated.
        How two processes agree on a transition (claim, cancel, mark interrupted)."""
        return self._compare_and_set(run_id, where, fields, bump=False) is not None

    def claim(self, run_id: str, where: dict, **fields) -> int | None:
        """update_run_if that also starts a new attempt (fencing out the run's previous
        writer); returns the new attempt, None if `where` no longer held."""
        return self._compare_and_set(run_id, where, fields, bump=True)

    def _compare_and_set(self, run_id: str, where: dict, fields: dict, bump: bool) -> int | None:
        bad = (set(fields) - self._UPDATABLE) | (set(where) - self._UPDATABLE - {"id", "attempt"})
        if bad:
            raise ValueError(f"cannot update {bad}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        conds, args = [], []
        for k, v in where.items():
            if isinstance(v, tuple):
                conds.append(f"{k} IN ({', '.join('?' * len(v))})")
                args.extend(v)
            else:
                conds.append(f"{k} IS ?")
                args.append(v)
        cols = ", ".join([*(f"{k}=?" for k in fields), *(["attempt=attempt+1"] if bump else [])])
        with self.transaction() as db:
            self._fence(db, run_id)
            cur = db.execute(f"UPDATE runs SET {cols} WHERE id=? AND {' AND '.join(conds) or '1'}",
                             (*fields.values(), run_id, *args))
            if cur.rowcount != 1:
                return None
            return db.execute("SELECT attempt FROM runs WHERE id=?", (run_id,)).fetchone()[0]

    def claim_next(self, **fields) -> dict | None:
        """Atomically take the oldest run queued for the jobs queue (executor NULL or
        'jobs'): it becomes `running` with `fields` set. None when nothing is queued.
        Two processes never claim the same run (one write transaction)."""
        fields = {"status": "running", **fields}
        bad = set(fields) - self._UPDATABLE
        if bad:
            raise ValueError(f"cannot update {bad}")
        with self.transaction() as db:
            row = db.execute("SELECT id FROM runs WHERE status='queued' AND COALESCE(executor, 'jobs')='jobs' "
                             "ORDER BY created, rowid LIMIT 1").fetchone()
            if row is None:
                return None
            cols = ", ".join(f"{k}=?" for k in fields)
            db.execute(f"UPDATE runs SET {cols}, attempt=attempt+1 WHERE id=? AND status='queued'",
                       (*fields.values(), row["id"]))
            run = db.execute("SELECT * FROM runs WHERE id=?", (row["id"],)).fetchone()
        return self._row_to_run(run)

    def runs_with_status(self, *statuses: str) -> list[dict]:
        with self.connect() as db:
            rows = db.execute(f"SELECT * FROM runs WHERE status IN ({', '.join('?' * len(statuses))}) "
                              "ORDER BY created, rowid", statuses).fetchall()
        return [self._row_to_run(r) for r in rows]

    def equal_runs(self, config_hash: str, *statuses: str) -> list[dict]:
        """Runs with this content hash and one of `statuses`, newest first; class-pack
        example runs are left out (they are never reused as someone's result)."""
        with self.connect() as db:
            rows = db.execute(f"SELECT * FROM runs WHERE config_hash=? AND example=0 AND status IN "
                              f"({', '.join('?' * len(statuses))}) ORDER BY created DESC, rowid DESC",
                              (config_hash, *statuses)).fetchall()
        return [self._row_to_run(r) for r in rows]

    def get_run(self, run_id: str) -> dict:
        with self.connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRun(run_id)
        return self._row_to_run(row)

    def version(self) -> int:
        """A number that changes whenever anything in the store's index changes (store_version).
        Live views of thirty sessions ask it every second: it keeps one reader connection open
        (a new one each time costs ~1 ms, this ~0.02 ms), reopened when the file is replaced;
        where that cannot work (a full disk) it reads the way every other read does."""
        sql = "SELECT v FROM store_version WHERE id=0"
        try:
            with self._version_lock:
                ino = os.stat(self.db_path).st_ino
                if self._version_db is None or self._version_db[0] != ino:
                    self._version_close()
                    self._version_db = (ino, self._open("file:{}", shared=True))
                rows = self._version_db[1].execute(sql).fetchall()   # all: no read transaction left open
        except (sqlite3.Error, OSError):
            with self._version_lock:
                self._version_close()
            with self.connect() as db:
                rows = db.execute(sql).fetchall()
        return int(rows[0][0]) if rows else 0

    def _version_close(self) -> None:
        if self._version_db is not None:
            with suppress(sqlite3.Error):
                self._version_db[1].close()
            self._version_db = None

    def list_runs(self, parsed: dict | None = None) -> list[dict]:
        """Every run, newest first. `parsed`: the caller's own cache of JSON text → its value, kept
        between calls (a live view lists the runs every second, and parsing every config and
        summary again was most of the cost): runs then share those values with earlier lists,
        so the caller must not modify them."""
        with self.connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
        return [self._row_to_run(r, parsed) for r in rows]

    def _row_to_run(self, row: sqlite3.Row, parsed: dict | None = None) -> dict:
        run = dict(row)
        problems = []
        for key in ("config", "summary"):
            if run[key] is None:
                continue
            text = run[key]
            hit = parsed.get(text, _NOT_PARSED) if parsed is not None and isinstance(text, str) else _NOT_PARSED
            if hit is not _NOT_PARSED:       # one lookup: another thread may clear the cache meanwhile
                run[key] = hit
                continue
            try:
                run[key] = json.loads(text)
            except (json.JSONDecodeError, TypeError):
                problems.append(f"{key} is not valid JSON")
                run[key] = None
                continue
            if parsed is not None:
                if len(parsed) >= PARSED_KEEP:   # a bound on the caller's cache: start it again
                    parsed.clear()
                parsed[text] = run[key]
        if run["status"] not in STATUSES:
            problems.append(f"unknown status {run['status']!r}")
        if problems:
            run["reason"] = "; ".join(problems)
        # A run whose folder was deleted by hand has lost its arrays (tickets, masks,
        # checkpoints): say so wherever runs are listed, keeping any earlier reason.
        if isinstance(run["id"], str) and RUN_ID_RE.fullmatch(run["id"]) and \
                not (self.runs_dir / run["id"]).exists():
            run["damaged"] = "run folder missing"
            run["reason"] = "damaged: run folder missing" + (f"; {run['reason']}" if run["reason"] else "")
        return run

    def delete_run(self, run_id: str, *, example_ok: bool = False, not_if: tuple[str, ...] = ()) -> None:
        """Delete a run and its folder. A class-pack example run is refused (ExampleRun)
        unless `example_ok` (the class pack replacing its own examples); so is a run whose
        status is in `not_if` (ActiveRun), checked in the same transaction as the delete,
        so a run resumed meanwhile is never deleted while queued."""
        import shutil
        d = self.run_dir(run_id)
        with self.transaction() as db:
            row = db.execute("SELECT example, status FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is not None and row["example"] and not example_ok:
                raise ExampleRun(run_id)
            if row is not None and row["status"] in not_if:
                raise ActiveRun(run_id, row["status"])
            for table, col in (("metrics", "run_id"), ("mask_stats", "run_id"), ("checks", "run_id"),
                               ("adoptions", "run_id"), ("runs", "id")):
                db.execute(f"DELETE FROM {table} WHERE {col}=?", (run_id,))
        shutil.rmtree(d, ignore_errors=True)

    # ---------------------------------------------------------------- adoptions
    # A launch that reused an equal run of someone else's (jobs.submit) adopts it: the run is then
    # listed under the launcher's runs too, while its owner stays who trained it.
    def adopt(self, run_id: str, owner: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO adoptions(run_id, owner, at) VALUES(?, ?, ?)",
                       (run_id, owner, time.time()))

    def adopted(self, owner: str) -> dict[str, float]:
        """The runs `owner` adopted: run id → when."""
        with self.connect() as db:
            rows = db.execute("SELECT run_id, at FROM adoptions WHERE owner=?", (owner,)).fetchall()
        return {r["run_id"]: r["at"] for r in rows}

    # ---------------------------------------------------------------- metrics
    def add_metrics(self, run_id: str, rows: list[dict]) -> None:
        """Rows carry METRIC_COLUMNS (missing ones NULL) plus anything else, kept in `extra`."""
        if not rows:
            return
        path = self.run_dir(run_id) / "metrics.jsonl"
        lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
        vals = []
        for r in rows:
            extra = {k: v for k, v in r.items() if k not in METRIC_COLUMNS}
            vals.append((*(_finite(r.get(c)) for c in METRIC_COLUMNS),
                         json.dumps(extra, default=_json_default) if extra else None))
        with self.transaction() as db:     # held briefly: a process stopped inside it blocks every writer
            self._fence(db, run_id)
            # The run folder's copy first: if a kill falls between the two writes, the file
            # holds rows the index lacks, which a resume cuts off (truncate_after), never the
            # reverse. Its fsync comes after the commit, outside the write lock.
            with open(path, "a", encoding="utf-8") as f:
                f.write(lines)
            seq0 = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM metrics WHERE run_id=?",
                              (run_id,)).fetchone()[0]
            db.executemany(f"INSERT INTO metrics(run_id, seq, {', '.join(METRIC_COLUMNS)}, extra) "
                           f"VALUES({', '.join('?' * (len(METRIC_COLUMNS) + 3))})",
                           [(run_id, seq0 + i, *v) for i, v in enumerate(vals)])
            db.execute(_BUMP, (run_id,))
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def tail_marks(self, run_id: str) -> dict:
        """How far this run's records go now; a checkpoint stores it so a resume can
        drop what was written after the checkpoint (no duplicated steps)."""
        with self.connect() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), -1) FROM metrics WHERE run_id=?", (run_id,)).fetchone()[0]
            rowid = db.execute("SELECT COALESCE(MAX(rowid), -1) FROM mask_stats WHERE run_id=?",
                               (run_id,)).fetchone()[0]
        return {"metrics_seq": seq, "mask_rowid": rowid}

    def truncate_after(self, run_id: str, marks: dict) -> None:
        with self.transaction() as db:
            self._fence(db, run_id)
            db.execute("DELETE FROM metrics WHERE run_id=? AND seq>?", (run_id, marks["metrics_seq"]))
            db.execute("DELETE FROM mask_stats WHERE run_id=? AND rowid>?", (run_id, marks["mask_rowid"]))
            db.execute(_BUMP, (run_id,))
        d = self.run_dir(run_id)
        for tmp in [*d.glob(".*.tmp"), *d.glob("masks/.*.tmp")]:  # left by a kill mid-write
            tmp.unlink(missing_ok=True)
        path = d / "metrics.jsonl"
        if path.exists():
            kept = read_jsonl(path)[: marks["metrics_seq"] + 1]
            atomic_write_bytes(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in kept).encode(),
                               self._replace_fenced(run_id))

    def metrics(self, run_id: str, kind: str | None = None) -> list[dict]:
        q = "SELECT * FROM metrics WHERE run_id=?" + (" AND kind=?" if kind else "") + " ORDER BY seq"
        with self.connect() as db:
            rows = db.execute(q, (run_id, kind) if kind else (run_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            extra = d.pop("extra")
            if extra:
                try:
                    d.update(json.loads(extra))
                except json.JSONDecodeError:
                    pass
            out.append(d)
        return out

    def add_mask_stats(self, run_id: str, where: dict, rows: list[dict]) -> None:
        vals = [(run_id, where.get("round"), where.get("phase"), where.get("epoch"), where.get("step"),
                 r["layer"], r["numel"], r["mean"], r["frac_above"], r["near_binary"], r.get("churn"),
                 r["dead_units"], json.dumps(r["hist"])) for r in rows]
        with self.transaction() as db:
            self._fence(db, run_id)
            db.executemany("INSERT INTO mask_stats VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)", vals)
            db.execute(_BUMP, (run_id,))

    def mask_stats(self, run_id: str) -> list[dict]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM mask_stats WHERE run_id=? ORDER BY rowid", (run_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["hist"] = json.loads(d["hist"]) if d["hist"] else None
            out.append(d)
        return out

    def set_check(self, run_id: str, name: str, value: float, target: float | None, passed: bool,
                  detail: str = "") -> None:
        with self.transaction() as db:
            self._fence(db, run_id)
            db.execute("INSERT OR REPLACE INTO checks VALUES(?,?,?,?,?,?)",
                       (run_id, name, _finite(float(value)), target, int(bool(passed)), detail))
            db.execute(_BUMP, (run_id,))                 # pages show checks: they must see new ones

    def checks(self, run_id: str) -> list[dict]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM checks WHERE run_id=? ORDER BY name", (run_id,)).fetchall()
        return [dict(r) | {"passed": bool(r["passed"])} for r in rows]

    # ---------------------------------------------------------------- arrays
    def save_masks(self, run_id: str, tag: str, masks: dict[str, torch.Tensor], binary: bool) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", tag):
            raise ValueError(f"bad snapshot tag {tag!r}")
        import torch
        conv = {k: (v != 0) if binary else v.detach().to(torch.float16).cpu() for k, v in masks.items()}
        path = self.run_dir(run_id) / "masks" / f"{tag}.pt"
        atomic_torch_save(path, conv, self._replace_fenced(run_id))
        return path

    def mask_snapshots(self, run_id: str) -> list[str]:
        d = self.run_dir(run_id) / "masks"
        return sorted(p.stem for p in d.glob("*.pt")) if d.exists() else []

    def load_masks(self, run_id: str, tag: str) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in torch_load(self.run_dir(run_id) / "masks" / f"{tag}.pt").items()}

    def save_array(self, run_id: str, name: str, obj: Any) -> None:
        atomic_torch_save(self.run_dir(run_id) / f"{name}.pt", obj, self._replace_fenced(run_id))

    def load_array(self, run_id: str, name: str) -> Any:
        return torch_load(self.run_dir(run_id) / f"{name}.pt")
