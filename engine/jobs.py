"""Background runs that are never lost: a queue, worker processes, a concurrency
cap with device slots, liveness, cancel and resume.

    submit(cfg)      store a `queued` run, then pump; a config equal to a done, running or
                     queued run (same content hash) queues nothing and returns that
                     run's id (a `Reused` str) unless again=True
    pump()           under <home>/jobs.lock: reconcile, then while fewer than the cap
                     are running, claim the oldest queued run (one compare-and-set
                     UPDATE: never started twice) and spawn its worker
    reconcile()      a `running` run whose worker is gone or silent becomes `interrupted`
    cancel(run_id)   queued → cancelled; running → SIGTERM to the worker's process
                     group, SIGKILL after a grace period; data so far is kept
    delete(run_id)   a run that is not queued or running, with its files
                     (submit takes an owner; cancel, resume, delete an actor: engine.owners)
    resume(run_id)   interrupted/cancelled/failed → queued with the resume flag; the
                     worker then continues from the run's last complete checkpoint.
                     Refused while the run's recorded process (pid + start time) is
                     alive, stopped or not (force=True kills it first)
    work(run_id)     the body of a worker process (`python -m engine worker RUN_ID`)

Nothing here keeps state in memory that matters: everything is in the store, so
any process (the app on every page load, a CLI command, a worker that just
finished) can call `pump` and the result is the same. Workers are
`python -m engine worker` processes in their own session (they outlive the app
and a closed browser), with stdout/stderr in `runs/<id>/worker.log`, and they
call `pump` when they finish so the next queued run takes the slot.

Cap: `LOTTERY_MAX_RUNS` (or `max_runs=`), default one run per GPU and one on a
CPU-only machine; 0 pauses the queue. GPUs are found without initialising CUDA
here (`LOTTERY_GPUS`, else `CUDA_VISIBLE_DEVICES`, else `nvidia-smi -L`, else
/proc/driver/nvidia/gpus); each worker gets its slot as `CUDA_VISIBLE_DEVICES`.

Priority: workers run below the app so pages stay responsive while they train:
the app's niceness +`LOTTERY_WORKER_NICE` (default 10; 0 leaves it; the app's is passed on
as $LOTTERY_APP_NICE, so a worker started by a finishing worker is not lowered twice) and `LOTTERY_WORKER_THREADS`
torch threads (default: on a machine with ≤ 2 cores, one core fewer than it has, so
the app keeps one; else torch's own choice).

Liveness: a running run is alive only while its pid exists, that process's
start time (field 22 of /proc/<pid>/stat) equals the recorded `pid_start`, and
its heartbeat is younger than `LOTTERY_HEARTBEAT_TIMEOUT` (30 s). Workers beat
every 2 s from a thread, so slow data loading or a long evaluation is not
mistaken for a hang; a worker that stops beating (stopped, deadlocked) is
killed when it is marked interrupted, so a run never has two workers.

One writer per run: every claim and every resume starts a new attempt of the run
(the fencing token, `runs.attempt`); the process that claimed it writes as that
attempt, and the store checks the attempt in the same transaction as each
metric, mask, checkpoint and status write. A writer that was stopped (SIGSTOP,
Ctrl-Z) or cut off (another machine) and whose run was resumed meanwhile fails
its next write with StaleWriter, writes nothing more and exits non-zero
(EXIT_STALE).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from . import owners
from .config import RunConfig
from .failures import failure_reason
from .settings import env_int
from .store import ActiveRun, StaleWriter, Store, UnknownRun, atomic_write_bytes

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_TIMEOUT = 30.0      # seconds without a heartbeat before a run counts as interrupted
HEARTBEAT_SECONDS = 2.0       # how often a worker beats
CANCEL_GRACE = 10.0           # seconds between SIGTERM and SIGKILL
RESUMABLE = ("interrupted", "cancelled", "failed")
CANCEL_MARKER = "cancel"      # runs/<id>/cancel asks a run to stop (reaches sweep tasks on other machines)
EXIT_STALE = 4                # exit code of a process whose run was taken over by another attempt
KILL_WAIT = 10.0              # seconds resume(force=True) waits for a killed holder to be gone

_CHILDREN: dict[int, subprocess.Popen] = {}   # workers this process spawned, reaped by pump


class JobError(Exception):
    """A request the jobs manager refuses (unknown run, wrong state, bad setting); one line."""


# ------------------------------------------------------------------ settings

def heartbeat_timeout() -> float:
    env = os.environ.get("LOTTERY_HEARTBEAT_TIMEOUT")
    if env:
        try:
            value = float(env)
        except ValueError:
            raise JobError(f"LOTTERY_HEARTBEAT_TIMEOUT must be a number of seconds, got {env!r}") from None
        if value > 0:
            return value
        raise JobError(f"LOTTERY_HEARTBEAT_TIMEOUT must be > 0, got {env!r}")
    return HEARTBEAT_TIMEOUT


@functools.lru_cache(maxsize=1)
def _detected_gpus() -> tuple[str, ...]:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=15)
        if out.returncode == 0:
            n = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
            return tuple(str(i) for i in range(n))
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return tuple(str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus"))))
    except OSError:
        return ()


def gpu_ids() -> list[str]:
    """Device ids the workers may use, found without initialising CUDA in this process."""
    env = os.environ.get("LOTTERY_GPUS")
    if env is None:
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for g in env.split(","):
            g = g.strip()
            if not g or g.startswith("-"):     # CUDA stops at the first invalid id
                break
            ids.append(g)
        return ids
    return list(_detected_gpus())


def resolve_max_runs(value: int | None = None) -> int:
    """The cap: `value`, else $LOTTERY_MAX_RUNS, else one per GPU (one on CPU)."""
    if value is None:
        value = env_int("LOTTERY_MAX_RUNS", 0, error=JobError)
        if value is None:
            return max(1, len(gpu_ids()))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise JobError(f"max_runs must be an integer ≥ 0, got {value!r}")
    return value


def worker_priority() -> tuple[int, int | None]:
    """(niceness increment, torch threads or None for torch's default) for a worker,
    from $LOTTERY_WORKER_NICE and $LOTTERY_WORKER_THREADS (see the module doc)."""
    nice = env_int("LOTTERY_WORKER_NICE", 0, 19, JobError)
    threads = env_int("LOTTERY_WORKER_THREADS", 1, 1024, JobError)
    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        threads = max(1, cores - 1) if cores <= 2 else None
    return (10 if nice is None else nice), threads


_LOWERED = False


def app_nice() -> int:
    """The niceness of the app (or command) that queued the runs: $LOTTERY_APP_NICE, which a
    worker passes on to the workers it starts when it finishes, else this process's own. A
    worker runs at that plus LOTTERY_WORKER_NICE, not at its spawner's niceness plus it (a
    worker started by a finishing worker would otherwise run at +20, starved by the app)."""
    try:
        return int(os.environ["LOTTERY_APP_NICE"])
    except (KeyError, ValueError):
        return os.nice(0)


def _lower_priority() -> None:
    """Called first thing in a worker process, and by each sweep task (a joblib or dask
    process that may run several): yield the CPU to the app. Once per process, since
    os.nice adds up."""
    global _LOWERED
    if _LOWERED:
        return
    _LOWERED = True
    nice, threads = worker_priority()
    base = app_nice()
    os.environ["LOTTERY_APP_NICE"] = str(base)   # what the workers this process starts go below
    target = min(19, base + nice)                # niceness tops out at 19
    if target > os.nice(0):
        with contextlib.suppress(OSError):
            os.nice(target - os.nice(0))
    if threads:
        import torch
        torch.set_num_threads(threads)


def hostname() -> str:
    return socket.gethostname()


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    if home is None:
        from .runner import default_home
        home = default_home()
    return Path(home).expanduser().resolve()


def _open(home) -> tuple[Store, Path]:
    home = resolve_home(home)
    return Store(home), home


def _get(store: Store, run_id: str) -> dict:
    try:
        store.run_dir(run_id)          # refuses anything that is not a store-made id
        return store.get_run(run_id)
    except UnknownRun as e:
        raise JobError(str(e)) from None


# ------------------------------------------------------------------ processes

def proc_start_time(pid: int) -> float | None:
    """Start time of a live process (clock ticks since boot), None if there is no
    such process or it is a zombie. Together with the pid it names one process:
    pids are reused, (pid, start time) pairs are not."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    rest = data[data.rindex(")") + 2:].split()   # the command name may contain spaces and parentheses
    if rest[0] in ("Z", "X"):                     # exited, not yet reaped: not alive
        return None
    return float(rest[19])                        # field 22 (fields 3.. follow the name)


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, D, T stopped, t traced, Z ...), None if unknown."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
        return data[data.rindex(")") + 2:].split()[0]
    except (OSError, ValueError, IndexError):
        return None


def _exists(pid: int) -> bool:
    if Path("/proc").is_dir() and Path("/proc/self/stat").exists():
        return proc_start_time(pid) is not None
    try:                                          # no /proc (not Linux): existence only
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def same_process(pid: int | None, pid_start: float | None) -> bool:
    """True while `pid` is still the process that started at `pid_start`."""
    if pid is None:
        return False
    if pid_start is None:
        return _exists(pid)
    return proc_start_time(pid) == pid_start


def _signal_worker(pid: int | None, pid_start: float | None, sig: int) -> bool:
    """Signal a worker's process group (it leads its own session), only after checking
    that the pid still names the process we started. True if a signal was sent."""
    if pid is None or pid_start is None or not same_process(pid, pid_start):
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _reap() -> None:
    for pid, p in list(_CHILDREN.items()):
        if p.poll() is not None:
            del _CHILDREN[pid]


@contextlib.contextmanager
def _locked(home: Path):
    """The jobs lock: one pump/reconcile at a time across processes (and threads:
    each holder opens its own descriptor)."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "jobs.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------ liveness

def reconcile(home: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Mark runs whose worker is gone or silent `interrupted`. Returns (run_id, reason) pairs.
    On a full disk nothing can be marked: it returns [] (readers must still work)."""
    store, home = _open(home)
    if store.disk_full():
        return []
    with _locked(home):
        return _reconcile(store)


def _reconcile(store: Store) -> list[tuple[str, str]]:
    _reap()
    now, timeout, host = time.time(), heartbeat_timeout(), hostname()
    out = []
    for run in store.runs_with_status("running", "queued"):
        if run["status"] == "running" and _cancel_request(store, run) is not None:
            if _finish_cancel(store, run, now, force=False):    # a cancel that nobody waited for
                out.append((run["id"], "cancelled"))
                continue
        reason, kill = _judge(run, now, timeout, host)
        if reason is None:
            continue
        if kill:
            _signal_worker(run["pid"], run["pid_start"], signal.SIGKILL)
        where = {"status": run["status"], "pid": run["pid"], "heartbeat": run["heartbeat"]}
        if store.update_run_if(run["id"], where, status="interrupted", reason=reason, finished=now):
            out.append((run["id"], reason))
    return out


def _judge(run: dict, now: float, timeout: float, host: str) -> tuple[str | None, bool]:
    """(why the run is not alive, whether to kill its still-existing worker) or (None, False)."""
    remote = bool(run["host"]) and run["host"] != host
    pid = run["pid"]
    if run["status"] == "queued":
        # Only a sweep's queued runs belong to a process: the sweep that will run them.
        if run["executor"] != "sweep" or pid is None or remote or same_process(pid, run["pid_start"]):
            return None, False
        return f"the sweep process {pid} that was to run it is gone", False
    beat = run["heartbeat"] or run["started"] or run["created"]
    age = now - beat
    if remote:        # pid means nothing here: judge by the heartbeat alone
        return (f"no heartbeat for {age:.0f} s from its worker on {run['host']}", False) if age > timeout \
            else (None, False)
    if pid is None:
        return (f"worker never started ({age:.0f} s after the run was claimed)", False) if age > timeout \
            else (None, False)
    if not _exists(pid):
        return f"worker process {pid} is gone", False
    if run["pid_start"] is not None and proc_start_time(pid) != run["pid_start"]:
        return f"worker process {pid} is gone (the pid now belongs to another process)", False
    if age > timeout:
        # Ours to kill only when a pump started it as a worker process leading its own
        # group; a foreground `run` or a joblib task is left alone.
        kill = run["pid_start"] is not None and run["executor"] == "jobs"
        return (f"no heartbeat for {age:.0f} s" + (f"; worker process {pid} was killed" if kill else "")), kill
    return None, False


# ------------------------------------------------------------------ queue

class Reused(str):
    """The id `submit` returns when it queued nothing: an equal run (same content hash)
    was already done, or is queued or running and will be. A plain str otherwise."""


# Which equal runs a submit reuses, best first: a finished one, else one that is already on
# its way (two people, or two clicks, launching the same config train it once, as OpenLTH
# names a run by its hash). Failed, cancelled and interrupted runs are never reused.
REUSE_ORDER = ("done", "running", "queued")


def find_done(cfg: RunConfig | dict, home: str | os.PathLike | None = None,
              store: Store | None = None) -> dict | None:
    """The newest finished run equal to `cfg` (same content hash, not a class-pack example,
    run folder intact), or None."""
    return find_equal(cfg, home, ("done",), store=store)


def find_equal(cfg: RunConfig | dict, home: str | os.PathLike | None = None,
               statuses: tuple[str, ...] = REUSE_ORDER, store: Store | None = None) -> dict | None:
    """The run `submit` would reuse for `cfg`: the first of `statuses` that has one.
    `store`: an open store of `home`, for callers that look up many configs (a page on every rerun)."""
    return _find_equal(store or Store(resolve_home(home)), _as_config(cfg), statuses)


def _as_config(cfg: RunConfig | dict) -> RunConfig:
    if isinstance(cfg, dict):
        return RunConfig.from_dict(cfg)
    return RunConfig.from_dict(cfg.to_dict(), unused="keep")     # validated when it was made


def _find_equal(store: Store, cfg: RunConfig, statuses: tuple[str, ...]) -> dict | None:
    runs = [r for r in store.equal_runs(cfg.content_hash(), *statuses) if not r.get("damaged")]
    for status in statuses:
        for r in runs:
            if r["status"] == status:
                return r
    return None


def submit(cfg: RunConfig | dict, home: str | os.PathLike | None = None,
           data_dir: str | os.PathLike | None = None, sweep_id: str | None = None, start: bool = True, *,
           owner: str | None = None, again: bool = False, estimate: float | None = None) -> str:
    """Queue one run (validated first: nothing is written for a bad config) and pump.

    Unless `again`, a config equal to a done, running or queued run (REUSE_ORDER) queues
    nothing and returns that run's id as a `Reused` str (whoever launched it: a result
    is a result, and a shared server trains it once; `owner` then adopts someone else's run:
    Store.adopted lists it under their runs). `owner` (a person's name, see
    engine.owners) is stored with a new run; unless the owner is a teacher, the
    per-person cap (LOTTERY_MAX_PER_PERSON) is checked in the same write transaction as
    the insert, so parallel launches cannot both pass it. `estimate`: the seconds until
    its result that the launcher showed, kept to compare with the actual time."""
    cfg = _as_config(cfg)
    if start:                  # a bad setting is refused before anything is written
        resolve_max_runs()
        heartbeat_timeout()
        worker_priority()
    if estimate is not None and (isinstance(estimate, bool) or not isinstance(estimate, (int, float))
                                 or not 0 <= estimate < float("inf")):
        raise JobError(f"estimate must be a number of seconds ≥ 0, got {estimate!r}")
    owner, cap = _owner_and_cap(owner)
    guard = functools.partial(_within_cap, owner=owner, cap=cap) if cap else None
    from .refs import check_references
    check_references(cfg, resolve_home(home))
    store, home = _open(home)
    extra = {"data_dir": _data_dir(data_dir), "executor": "jobs"}
    if owner is not None:
        extra["owner"] = owner
    if estimate is not None:
        extra["estimate"] = float(estimate)
    equal = None if again else _find_equal(store, cfg, ("done",))    # reading only: works on a full disk
    if equal is not None:
        return _reused(store, equal, owner)
    store.require_space("queueing a run")
    with _locked(home):        # look and create in one step: two equal launches queue one run
        if not again:
            _reconcile(store)  # a `running` run whose worker died is interrupted, not followed
            equal = _find_equal(store, cfg, REUSE_ORDER)
            if equal is not None:
                return _reused(store, equal, owner)
        run_id = store.create_run(cfg.to_dict(), cfg.content_hash(), name=cfg.name, status="queued",
                                  sweep_id=sweep_id, extra=extra, guard=guard)
    if start:
        pump(home)
    return run_id


def _reused(store: Store, run: dict, owner: str | None) -> Reused:
    """The id of the equal run a launch stands on; someone else's is adopted by `owner` (listed
    under their runs from then on). On a full disk the launch still reuses it, unrecorded."""
    if owner is not None and run.get("owner") != owner:
        with contextlib.suppress(Exception):
            store.adopt(run["id"], owner)
    return Reused(run["id"])


def active_count(home: str | os.PathLike | None, owner: str) -> int:
    """How many runs `owner` has queued or running."""
    store, _ = _open(home)
    with store.connect() as db:
        return _active_of(db, owner)


def _owner_and_cap(owner: str | None) -> tuple[str | None, int]:
    """The checked owner and the per-person cap that applies to them (0: none, e.g. no
    owner, a teacher, or a personal machine); JobError for a bad name or setting."""
    if owner is None:
        return None, 0
    try:
        owner = owners.check_name(owner, "owner")
        cap = owners.max_per_person()
        return owner, (0 if not cap or owners.is_teacher(owner) else cap)
    except owners.OwnerError as e:
        raise JobError(str(e)) from None


def room(home: str | os.PathLike | None, owner: str | None) -> int | None:
    """How many more runs `owner` may queue now under the per-person cap; None when no cap
    applies (no owner, no cap set, or a teacher)."""
    owner, cap = _owner_and_cap(owner)
    return max(0, cap - active_count(home, owner)) if cap else None


def check_room(home: str | os.PathLike | None, owner: str | None, n: int) -> None:
    """Before queueing n runs at once (a sweep) for `owner`: JobError when they cannot all
    fit under the per-person cap, so a sweep is queued whole or not at all. (submit checks
    each run again, atomically.)"""
    if n <= 1:
        return
    owner, cap = _owner_and_cap(owner)
    if not cap:
        return
    active = active_count(home, owner)
    if active + n > cap:
        raise JobError(f"this sweep has {n} runs, but you have {active} queued or running and the limit per "
                       f"person is {cap} (LOTTERY_MAX_PER_PERSON); nothing was queued. Run fewer points, wait "
                       f"for your runs to finish, or ask a teacher")


def _active_of(db, owner: str) -> int:
    return db.execute("SELECT COUNT(*) FROM runs WHERE owner=? AND status IN ('queued', 'running')",
                      (owner,)).fetchone()[0]


def _within_cap(db, owner: str, cap: int) -> None:
    """create_run's guard: runs inside the insert's write transaction."""
    active = _active_of(db, owner)
    if active >= cap:
        raise JobError(owners.cap_message(active, cap))


def _data_dir(data_dir) -> str:
    if data_dir is None:
        from .data import default_data_dir
        data_dir = default_data_dir()
    return str(Path(data_dir).expanduser().resolve())


def pump(home: str | os.PathLike | None = None, max_runs: int | None = None) -> list[str]:
    """Reconcile, then start queued runs while fewer than the cap are running.
    Safe to call from any process at any time; returns the ids it started."""
    store, home = _open(home)
    started: list[str] = []
    if store.disk_full():       # nothing can start or be marked; the app still reads the store
        return started
    with _locked(home):
        _reconcile(store)
        cap = resolve_max_runs(max_runs)
        gpus, host = gpu_ids(), hostname()
        while True:
            running = [r for r in store.runs_with_status("running") if not r["host"] or r["host"] == host]
            if len(running) >= cap:
                break
            slot = _free_slot(gpus, running)
            run = store.claim_next(slot=slot, host=host, pid=None, pid_start=None, heartbeat=time.time(),
                                   claimed=time.time(), started=None, finished=None, reason=None,
                                   executor="jobs")
            if run is None:
                break
            device = (run.get("config") or {}).get("device") or "auto"
            if device.startswith("cuda:") and gpus:     # a config naming cuda:N runs on the N-th GPU
                wanted = requested_gpu(device, gpus)
                if wanted is None:
                    store.update_run_if(run["id"], {"status": "running", "pid": None}, status="failed",
                                        finished=time.time(), reason=f"device {device} requested but this "
                                        f"machine's workers have {len(gpus)} GPU(s): cuda:0 to cuda:{len(gpus) - 1}")
                    continue
                store.update_run_if(run["id"], {"status": "running"}, slot=wanted)
                run["slot"] = slot = wanted
            try:
                with contextlib.suppress(FileNotFoundError):
                    (store.run_dir(run["id"]) / CANCEL_MARKER).unlink()
                pid, pid_start = _spawn(store, home, run, slot)   # the worker writes as run["attempt"]
            except Exception as e:
                store.update_run_if(run["id"], {"status": "running", "pid": None}, status="failed",
                                    finished=time.time(),
                                    reason=f"could not start a worker: {type(e).__name__}: {e}".splitlines()[0][:500])
                continue
            store.update_run_if(run["id"], {"status": "running"}, pid=pid, pid_start=pid_start)
            started.append(run["id"])
    return started


def requested_gpu(device: str | None, gpus: list[str]) -> str | None:
    """The slot of a config's `cuda:N` (N counts the GPUs this machine's workers may use), else None."""
    if not device or not device.startswith("cuda:"):
        return None
    n = int(device.split(":", 1)[1])
    return gpus[n] if n < len(gpus) else None


def _free_slot(gpus: list[str], running: list[dict]) -> str | None:
    """The GPU with the fewest running runs (None on a CPU-only machine)."""
    if not gpus:
        return None
    use = {g: 0 for g in gpus}
    for r in running:
        if r["slot"] in use:
            use[r["slot"]] += 1
    return min(gpus, key=lambda g: use[g])


def _spawn(store: Store, home: Path, run: dict, slot: str | None) -> tuple[int, float | None]:
    d = store.run_dir(run["id"])
    cmd = [sys.executable, "-m", "engine", "worker", run["id"], "--home", str(home), "--attempt", str(run["attempt"])]
    if run["data_dir"]:
        cmd += ["--data-dir", run["data_dir"]]
    env = dict(os.environ, PYTHONUNBUFFERED="1", LOTTERY_HOME=str(home), LOTTERY_APP_NICE=str(app_nice()))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    if slot is not None:     # the worker sees its one GPU as cuda:0 (engine.train.pick_device)
        env["CUDA_VISIBLE_DEVICES"] = slot
        env["LOTTERY_SLOT"] = slot
    with open(d / "worker.log", "ab") as log:
        p = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    _CHILDREN[p.pid] = p
    return p.pid, proc_start_time(p.pid)


def list_runs(home: str | os.PathLike | None = None) -> list[dict]:
    """Every run, newest first, after reconciling liveness."""
    store, home = _open(home)
    if not store.disk_full():       # on a full disk nothing can be marked; the list still reads
        with _locked(home):
            _reconcile(store)
    return store.list_runs()


# ------------------------------------------------------------------ cancel / resume

def _check_actor(store: Store, run_id: str, actor: str | None, teacher, what: str) -> dict:
    """The run, if `actor` may `what` it (see engine.owners); else JobError, nothing changed."""
    run = _get(store, run_id)
    if actor is None:
        return run
    try:
        actor = owners.check_name(actor, "actor")
        if not owners.may_manage(run, actor, teacher):
            raise JobError(owners.refusal(run, actor, what))
    except owners.OwnerError as e:
        raise JobError(str(e)) from None
    return run


def delete(run_id: str, home: str | os.PathLike | None = None, *, actor: str | None = None,
           teacher: bool | set | frozenset | None = None) -> None:
    """Delete a run that is not queued or running, with its files, if `actor` may (its
    owner, a teacher; None = the CLI, unrestricted). Refused: JobError, nothing changes."""
    store, home = _open(home)
    _check_actor(store, run_id, actor, teacher, "delete")
    try:
        store.delete_run(run_id, not_if=("queued", "running"))
    except ActiveRun as e:
        raise JobError(str(e)) from None


def cancel(run_id: str, home: str | os.PathLike | None = None, grace: float = CANCEL_GRACE,
           wait: bool = True, *, actor: str | None = None, teacher: bool | set | frozenset | None = None) -> dict:
    """queued → cancelled at once. running → SIGTERM to the worker's process group
    (the worker finishes its step, checkpoints and records `cancelled`); after
    `grace` seconds SIGKILL and record it here. Sweep tasks (no process of ours to
    signal, maybe on another machine) stop through the marker file runs/<id>/cancel.
    A foreground `python -m engine run` is not ours to kill: JobError if it goes on.

    With wait=False (for a UI) it returns right after the request; any later
    pump/reconcile records the outcome and escalates to SIGKILL after `grace`.
    `actor` is who asks (None = the CLI, unrestricted): only the run's owner or a teacher
    (`teacher` True, a set of names, or None for $LOTTERY_TEACHERS) may cancel it.

    Returns the run."""
    store, home = _open(home)
    _check_actor(store, run_id, actor, teacher, "cancel")
    store.require_space("cancelling a run")
    with _locked(home):        # a claimed run always has its pid recorded by the time we look
        run = _get(store, run_id)
        if run["status"] == "queued" and store.update_run_if(
                run_id, {"status": "queued"}, status="cancelled", finished=time.time(),
                reason="cancelled before it started"):
            return store.get_run(run_id)
        run = store.get_run(run_id)
        if run["status"] != "running":
            raise JobError(f"run {run_id} is {run['status']}; only queued or running runs can be cancelled")
        with contextlib.suppress(OSError):   # reaches tasks that no signal can (sweeps, other machines)
            atomic_write_bytes(store.run_dir(run_id) / CANCEL_MARKER, f"{float(grace)}\n".encode())
            store.touch(run_id)             # every open view shows "cancelling…" on its next tick
        if _ours(run):
            _signal_worker(run["pid"], run["pid_start"], signal.SIGTERM)
    if not wait:
        return store.get_run(run_id)
    deadline = time.time() + grace
    while time.time() < deadline:
        r = store.get_run(run_id)
        if r["status"] != "running" or (_ours(r) and not same_process(r["pid"], r["pid_start"])):
            break                           # recorded, or gone without recording it
        time.sleep(0.1)
    with _locked(home):
        r = store.get_run(run_id)
        if r["status"] == "running" and not _finish_cancel(store, r, time.time(), force=True):
            raise JobError(f"run {run_id} runs in the foreground (process {r['pid']}) and did not stop within "
                           f"{grace:g} s; stop it with Ctrl-C in its terminal")
    with contextlib.suppress(Exception):
        pump(home)
    return store.get_run(run_id)


def _ours(run: dict) -> bool:
    """A worker process this machine's jobs queue started (so we may signal it)."""
    return run["executor"] == "jobs" and (not run["host"] or run["host"] == hostname())


def _cancel_request(store: Store, run: dict) -> tuple[float, float] | None:
    """(seconds since cancel was asked, its grace) while runs/<id>/cancel exists."""
    try:
        marker = store.run_dir(run["id"]) / CANCEL_MARKER
        asked = marker.stat().st_mtime
        grace = float(marker.read_text().strip() or CANCEL_GRACE)
    except (OSError, ValueError, UnknownRun):
        return None
    return time.time() - asked, grace


def _finish_cancel(store: Store, run: dict, now: float, force: bool) -> bool:
    """Record `cancelled` for a running run whose cancel was asked: when its worker is
    gone, or (force, or the grace is over) after SIGKILL. False while it should be
    left alone (still within the grace, or a foreground process that is not ours)."""
    ours, pid = _ours(run), run["pid"]
    if ours:
        alive = same_process(pid, run["pid_start"])
    elif run["executor"] is None and not run["host"]:       # a foreground `run` in a terminal
        if pid is not None and _exists(pid):
            return False
        alive = False
    else:                                                   # a sweep task: no process to look at
        alive = True
    if alive and not force:
        req = _cancel_request(store, run)
        if req is not None and req[0] <= req[1]:
            return False
    killed = alive and ours and _signal_worker(pid, run["pid_start"], signal.SIGKILL)
    why = (f"cancelled: worker process {pid} did not stop in time and was killed" if killed else
           "cancelled: the worker stopped before it could record it" if not alive else
           "cancelled: its task did not confirm in time")
    store.update_run_if(run["id"], {"status": "running", "pid": pid}, status="cancelled", finished=now,
                        reason=why + "; data up to its last checkpoint is kept")
    return True


def resume(run_id: str, home: str | os.PathLike | None = None, force: bool = False, *,
           actor: str | None = None, teacher: bool | set | frozenset | None = None) -> dict:
    """Queue an interrupted, cancelled or failed run to continue from its last
    complete checkpoint (the worker calls runner.execute(resume=True)); then pump.

    Refused while the process recorded for the run (pid + start time, on this
    machine) is still alive, even stopped: it could go on writing. force=True
    kills it (SIGKILL, which also ends a stopped process) and waits until it is
    gone. Either way the resume starts a new attempt, so a holder we cannot see
    (another machine) is fenced out at its next write. `actor`/`teacher` as for cancel."""
    store, home = _open(home)
    run = _check_actor(store, run_id, actor, teacher, "resume")
    store.require_space("resuming a run")
    if force and run["status"] == "running" and _live_holder(run) in ("T", "t"):
        # Stopped (Ctrl-Z) and not yet judged interrupted, maybe stopped inside a database
        # write, holding SQLite's write lock: killing it frees the lock and the run.
        _kill_holder(run)
        with _locked(home):
            _reconcile(store)
        run = _get(store, run_id)
    if run["status"] not in RESUMABLE:
        raise JobError(f"run {run_id} is {run['status']}; only {', '.join(RESUMABLE)} runs can be resumed")
    holder = _live_holder(run)
    if holder is not None:
        if not force:
            raise JobError(f"run {run_id} is {run['status']}, but its process {run['pid']} is still alive"
                           f"{' (stopped)' if holder in ('T', 't') else ''} and could go on writing; end it "
                           f"first, or resume with --force to kill it")
        _kill_holder(run)
    with contextlib.suppress(OSError):
        (store.run_dir(run_id) / CANCEL_MARKER).unlink()
    if store.claim(run_id, {"status": run["status"], "pid": run["pid"]}, status="queued", resume=1,
                   executor="jobs", reason=None, pid=None, pid_start=None, heartbeat=None, finished=None,
                   slot=None, host=None, claimed=None) is None:
        raise JobError(f"run {run_id} changed state while resuming it; try again")
    pump(home)
    return store.get_run(run_id)


def _live_holder(run: dict) -> str | None:
    """The state letter of the run's recorded process while it is alive on this machine, else None."""
    pid = run["pid"]
    if pid is None or (run["host"] and run["host"] != hostname()):
        return None          # nobody, or another machine's pid: the new attempt fences it out
    if not same_process(pid, run["pid_start"]):
        return None
    return proc_state(pid) or "?"


def _kill_holder(run: dict) -> None:
    pid = run["pid"]
    if run["pid_start"] is not None and _ours(run):
        _signal_worker(pid, run["pid_start"], signal.SIGKILL)    # a worker of ours: its whole group
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.time() + KILL_WAIT
    while same_process(pid, run["pid_start"]):
        if time.time() > deadline:
            raise JobError(f"process {pid} of run {run['id']} did not end within {KILL_WAIT:g} s of SIGKILL")
        _reap()
        time.sleep(0.05)


# ------------------------------------------------------------------ executing a run

class Heartbeat:
    """Beats every `every` seconds from a thread while this process holds the run."""

    def __init__(self, store: Store, run_id: str, pid: int, every: float = HEARTBEAT_SECONDS):
        self.store, self.run_id, self.pid, self.every = store, run_id, pid, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(Exception):
                self.store.update_run_if(self.run_id, {"status": "running", "pid": self.pid}, heartbeat=time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class StopCheck:
    """should_stop for the training loop: a SIGTERM flag, or the cancel marker file
    (looked at every 0.5 s at most)."""

    def __init__(self, event: threading.Event, marker: Path):
        self.event, self.marker, self._next = event, marker, 0.0

    def __call__(self) -> bool:
        if self.event.is_set():
            return True
        now = time.monotonic()
        if now >= self._next:
            self._next = now + 0.5
            if self.marker.exists():
                self.event.set()
                return True
        return False


def execute_here(store: Store, run_id: str, data_dir: str | None = None, resume: bool = False,
                 stop: threading.Event | None = None, attempt: int | None = None) -> dict:
    """Execute a run this process has claimed (status running, pid = this process)
    as `attempt`: heartbeat thread, cancel checks, runner.execute, a final status
    with a reason whatever happens, unless the run was taken over by a newer
    attempt (status "stale": nothing more is written). Used by workers and by
    sweep tasks. Returns id, status, reason."""
    from . import runner
    from .train import Cancelled

    me = os.getpid()
    marker = store.run_dir(run_id) / CANCEL_MARKER
    stop = stop or threading.Event()
    should_stop = StopCheck(stop, marker)
    beat = Heartbeat(store, run_id, me).start()
    stale = None
    try:
        if should_stop():
            store.update_run_if(run_id, {"status": "running"}, status="cancelled", finished=time.time(),
                                reason="cancelled before training started")
        else:
            kwargs = {"resume": True} if resume else {}
            runner.execute(store, run_id, data_dir, should_stop=should_stop, attempt=attempt, **kwargs)
    except Cancelled:
        pass
    except StaleWriter as e:
        stale = e
        print(f"error: {e}", file=sys.stderr, flush=True)
    except Exception as e:
        traceback.print_exc()
        reason = failure_reason(e) or f"{type(e).__name__}: {e}".splitlines()[0][:500]
        with contextlib.suppress(Exception):
            # the runner records its failures itself; this is for one it never got to record
            store.update_run_if(run_id, {"status": "running"}, status="failed", reason=reason,
                                finished=time.time())
    finally:
        beat.stop()
        if stale is None:                      # (a stale writer touches nothing of the run)
            with contextlib.suppress(Exception):   # never leave a run `running` behind a worker that leaves
                store.update_run_if(run_id, {"status": "running", "pid": me}, status="failed",
                                    finished=time.time(),
                                    reason="the worker exited without recording a final status (see worker.log)")
            with contextlib.suppress(OSError):
                marker.unlink()
    if stale is not None:
        return {"run_id": run_id, "status": "stale", "reason": str(stale)}
    try:
        r = store.get_run(run_id)
        return {"run_id": run_id, "status": r["status"], "reason": r["reason"]}
    except Exception as e:
        return {"run_id": run_id, "status": "unknown", "reason": f"{type(e).__name__}: {e}"}


def work(run_id: str, home: str | os.PathLike | None = None, data_dir: str | None = None,
         stop: threading.Event | None = None, attempt: int | None = None) -> int:
    """The body of `python -m engine worker RUN_ID --attempt N`: execute the claimed
    run as attempt N, then pump. Exit code 0 done, 1 failed, 3 cancelled, 2 not
    claimed for this process, EXIT_STALE taken over by a newer attempt."""
    store, home = _open(home)
    run = _get(store, run_id)
    me = os.getpid()
    _lower_priority()
    print(f"=== worker {me} on {hostname()} for run {run_id} at {time.strftime('%Y-%m-%d %H:%M:%S')} "
          f"(resume={bool(run['resume'])}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}, "
          f"nice {os.nice(0)}, torch threads {worker_priority()[1] or 'default'})", flush=True)
    claimed = run["status"] == "running" and (run["pid"] in (None, me)) and (not run["host"] or
                                                                              run["host"] == hostname()) \
        and attempt in (None, run["attempt"])
    if not claimed:
        print(f"run {run_id} is {run['status']} (pid {run['pid']}), not claimed for this worker; "
              f"nothing to do", flush=True)
        return 2
    attempt = run["attempt"] if attempt is None else attempt
    if not store.update_run_if(run_id, {"status": "running", "attempt": attempt}, pid=me,
                               pid_start=proc_start_time(me), heartbeat=time.time()):
        print(f"run {run_id} was taken over before this worker started; nothing to do", flush=True)
        return EXIT_STALE
    try:
        result = execute_here(store, run_id, data_dir or run["data_dir"], resume=bool(run["resume"]), stop=stop,
                              attempt=attempt)
    finally:
        try:
            pump(home)
        except Exception:
            traceback.print_exc()
    print(f"=== worker {me}: run {run_id} {result['status']}"
          f"{': ' + result['reason'] if result['reason'] else ''}", flush=True)
    return {"done": 0, "cancelled": 3, "stale": EXIT_STALE}.get(result["status"], 1)
