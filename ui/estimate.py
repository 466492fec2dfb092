"""A rough estimate of what a config will cost before it is launched: wall time,
compute (device-hours) and disk. No Streamlit here.

The estimate prefers measurements: when the store already holds finished runs
of the same model on the same dataset, their seconds per epoch are used.
Otherwise a small model of throughput calibrated on this project's 2-core CPU
(LeNet-300-100 on MNIST: about 1.6 s per epoch with its evaluation) stands in; it is right within
a factor of about 2, which the page says.

What a launch waits for on top of that (`launch_estimate`): the runs ahead in the
queue and the current load, measured as the pace of this store's recent runs, else
as the CPU demand now (busy sessions under Linux's autogroup, else the load average).
The estimate is recorded with each run; `estimate_vs_actual` compares it with the
time from launch to result (bench/estimates.py measures the error; bench/burst.py in a
burst of launches by many students). A worker's start-up is measured from the store's
recent runs (`claimed` → `started`) where there are some; `launch_estimates` places
several launches that arrive together one after the other.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

# Forward multiply-accumulates per sample at the model's usual input size (32×32 for CIFAR models).
MACS = {"logreg": 784, "lenet300": 266_200, "conv2": 38e6, "conv4": 50e6, "conv6": 60e6, "resnet20": 41e6,
        "resnet32": 69e6, "resnet56": 125e6, "vgg16": 313e6, "wrn16_8": 1.55e9, "resnet18": 570e6}
TRAIN_SIZE = {"digits": 1437, "mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000,
              "tiny_imagenet": 100_000, "planted": 400}
NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100,
               "tiny_imagenet": 200, "planted": 2}
# Effective MAC/s (forward + backward counted as 3× forward) and the fixed cost of one step.
# CPU figures from bench/speed.py on the 2-core machine (docs/RESULTS.md): LeNet-300-100
# ≈ 31k samples/s, Conv-2 and ResNet-20 on 32×32 input ≈ 260 samples/s.
THROUGHPUT = {"cpu": {"mlp": 2.8e10, "conv": 3e10, "step": 1.0e-3},
              "gpu": {"mlp": 2e12, "conv": 4e12, "step": 3.0e-3}}
# On a GPU these small models are bound by launching kernels, not by arithmetic: a training
# step costs a fixed part plus about the same per layer, whatever its size. Measured on an NVIDIA
# H200 (bench/gpu.py, docs/RESULTS.md; fp32, eager, cuDNN benchmark mode: what `precision: auto`
# runs for them): LeNet-300-100 1.55 ms a step (3 layers), ResNet-20 5.97 ms (22 layers).
GPU_STEP_BASE_S = 0.85e-3
GPU_STEP_PER_LAYER_S = 0.233e-3
LAYERS = {"logreg": 1, "lenet300": 3, "conv2": 5, "conv4": 7, "conv6": 9, "resnet20": 22, "resnet32": 34,
          "resnet56": 58, "vgg16": 14, "wrn16_8": 17, "resnet18": 21}   # prunable layers (engine.models)
WORKER_START_S = 3.5       # starting the worker process and importing torch (3.2 s measured on the 2-core CPU)
SETUP_S = 4.5              # loading the data and building the model, where no earlier run measured it
SETUP_BY_DATASET = {"digits": 1.2, "planted": 0.1}   # the bundled sets load at once (1.1–1.3 s measured)
STARTUP_S = WORKER_START_S + SETUP_S
SEARCH_FACTOR = 1.4        # a search step also trains the masks and evaluates R(m)
SNAPSHOT_MAX = 300_000     # masks saved every epoch up to this many prunable weights (engine.train)


@dataclass
class Estimate:
    seconds: float              # wall time of one run
    low: float
    high: float
    epochs: int                 # epochs of training per run
    device: str                 # "cpu" or "gpu"
    basis: str                  # where the number comes from
    disk_bytes: float

    def device_hours(self, runs: int) -> float:
        return self.seconds * runs / 3600


def epochs_of(cfg: dict) -> tuple[int, int]:
    """(search or plain training epochs, retrain epochs) over all rounds."""
    e = int(cfg.get("epochs", 10))
    r = int(cfg.get("rounds", 1))
    re_ = cfg.get("retrain_epochs")
    re_ = e if re_ is None else int(re_)
    m = cfg.get("method")
    if m == "concave":
        return r * e, r * re_
    if m == "cs":
        return r * e, re_
    if m == "imp":
        return (r + 1) * e, 0
    return e, 0


def _device(cfg: dict, gpu_available: bool) -> str:
    d = cfg.get("device", "auto")
    if d.startswith("cuda"):
        return "gpu"
    if d == "cpu":
        return "cpu"
    return "gpu" if gpu_available else "cpu"


def _samples(cfg: dict) -> float:
    n = TRAIN_SIZE.get(cfg.get("dataset"), 50_000)
    if cfg.get("dataset") == "planted":
        n = int((cfg.get("data_params") or {}).get("n_train", n))
    classes = cfg.get("classes")
    if classes:
        n = n * len(classes) / NUM_CLASSES.get(cfg.get("dataset"), 10)
    return n * (1 - float(cfg.get("val_fraction", 0.1)))


def weighted_epochs(cfg: dict) -> float:
    """Epochs of training over all rounds, a search epoch (which also trains the masks)
    counted SEARCH_FACTOR times a plain one: what a run's time is proportional to, so the
    pace of one method's runs predicts another's."""
    search, plain = epochs_of(cfg)
    if cfg.get("method") not in ("concave", "cs"):
        return search + plain
    return search * SEARCH_FACTOR + plain


def from_history(cfg: dict, history: list[dict]) -> tuple[float, float | None] | None:
    """(seconds per weighted epoch, seconds of set-up) as the medians over finished
    runs with the same model, dataset, classes, device and batch size (class-pack
    examples left out: they were measured on another machine). A run's
    wall time counts from before its data was loaded; its summary's
    `setup_seconds` (loading the data, building the model) is taken out of the
    per-epoch rate so that short runs do not inflate it."""
    rates, setups = [], []
    for r in history:
        c, s = r.get("config") or {}, r.get("summary") or {}
        if (r.get("status") != "done" or r.get("example") or not s.get("wall_seconds")
                or c.get("model") != cfg.get("model")
                or c.get("dataset") != cfg.get("dataset") or c.get("classes") != cfg.get("classes")
                or c.get("device", "auto") != cfg.get("device", "auto")
                or int(c.get("batch_size", 128)) != int(cfg.get("batch_size", 128))):
            continue
        try:
            weighted = weighted_epochs(c)
            setup = float(s.get("setup_seconds") or 0.0)
        except (TypeError, ValueError):
            continue
        if weighted:
            rates.append(max(0.0, float(s["wall_seconds"]) - setup) / weighted)
            if setup:
                setups.append(setup)
    if not rates:
        return None
    return statistics.median(rates), (statistics.median(setups) if setups else None)


START_HISTORY = 10          # the worker start-up of this many recent runs is what the next one expects


def worker_start(history: list[dict]) -> float | None:
    """Seconds from the jobs queue claiming a run to its worker starting it (a new process
    importing torch): the median over the last START_HISTORY runs that recorded both times
    (`claimed`, `started`); None without any. Under load this is much more than on an idle
    machine (WORKER_START_S)."""
    took = sorted(((r["claimed"], r["started"] - r["claimed"]) for r in history
                   if not r.get("example") and r.get("claimed") and r.get("started")
                   and r["started"] >= r["claimed"]), reverse=True)[:START_HISTORY]
    return statistics.median(t for _, t in took) if took else None


def estimate(cfg: dict, gpu_available: bool = False, history: list[dict] | None = None,
             prunable: int | None = None) -> Estimate:
    search, plain = epochs_of(cfg)
    device = _device(cfg, gpu_available)
    measured = from_history(cfg, history or [])
    weighted = weighted_epochs(cfg)
    start = worker_start(history or [])
    start = WORKER_START_S if start is None else start
    if measured is not None:
        rate, setup = measured
        setup = SETUP_BY_DATASET.get(cfg.get("dataset"), SETUP_S) if setup is None else setup
        seconds = start + setup + rate * weighted
        basis = "the speed of earlier runs of this model on this dataset in this store"
        low, high = seconds * 0.7, seconds * 1.5
    else:
        model = cfg.get("model", "lenet300")
        kind = "mlp" if model in ("logreg", "lenet300") else "conv"
        macs = MACS.get(model, 50e6)
        if kind == "conv" and cfg.get("dataset") in ("mnist", "fashion_mnist", "digits"):
            side = 8 if cfg.get("dataset") == "digits" else 28
            macs *= side * side / 1024
        tp = THROUGHPUT[device]
        n = _samples(cfg)
        steps = n / max(1, int(cfg.get("batch_size", 128)))
        step_s = GPU_STEP_BASE_S + GPU_STEP_PER_LAYER_S * LAYERS.get(model, 20) if device == "gpu" else tp["step"]
        per_epoch = max(n * macs * 3 / tp[kind], steps * step_s) + 0.05
        seconds = start + SETUP_BY_DATASET.get(cfg.get("dataset"), SETUP_S) + per_epoch * weighted
        basis = f"a throughput model of a {'GPU' if device == 'gpu' else '2-core CPU'} (no earlier run to go by)"
        low, high = seconds * 0.5, seconds * 2.0
    total_epochs = search + plain
    disk = 0.0
    if prunable:
        per_snapshot = prunable * 2.0
        snaps = total_epochs + 3 * int(cfg.get("rounds", 1)) if prunable <= SNAPSHOT_MAX else 3 * int(
            cfg.get("rounds", 1))
        disk = per_snapshot * snaps + prunable * 4.0 * 4  # snapshots + rewind, ticket, checkpoint
    return Estimate(seconds=seconds, low=low, high=high, epochs=total_epochs, device=device, basis=basis,
                    disk_bytes=disk)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ------------------------------------------------------------------ the queue and the load
# What a launch waits for: the runs ahead of it in the queue (running + queued, on
# LOTTERY_MAX_RUNS slots, oldest first as the jobs queue claims them) and how fast
# this machine trains now (the load average relative to the cores).

SLOWDOWN_MAX = 8.0          # beyond this the load average says more about I/O waits than CPU share


@dataclass
class Machine:
    cores: int              # CPU cores this process may use
    load1: float            # 1-minute load average (runnable processes)
    cap: int                # runs at a time (LOTTERY_MAX_RUNS; 0 = queue paused)
    threads: int            # torch threads of one worker
    sessions: float | None = None   # other sessions with a runnable thread (None: no autogroup, or unknown)


_SESSIONS: tuple[float, float | None] | None = None      # (when, busy_sessions()): reruns are frequent


def machine_now(max_age: float = 5.0) -> Machine:
    """The machine as it is now (the only impure part: reads the load, the cap and the
    worker settings the jobs queue uses; the sessions count is kept `max_age` seconds)."""
    import os
    import time as _time
    global _SESSIONS
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = 0.0
    try:
        from engine import jobs
        cap = jobs.resolve_max_runs()
        threads = jobs.worker_priority()[1] or cores
    except Exception:  # noqa: BLE001 - a bad setting is reported at launch; estimate as the defaults would
        cap, threads = 1, (max(1, cores - 1) if cores <= 2 else cores)
    if _SESSIONS is None or _time.monotonic() - _SESSIONS[0] > max_age:
        _SESSIONS = (_time.monotonic(), busy_sessions())
    return Machine(cores=cores, load1=load1, cap=cap, threads=threads, sessions=_SESSIONS[1])


def busy_sessions(samples: int = 3, gap: float = 0.02) -> float | None:
    """With Linux's autogroup scheduling (on by default on desktops and many servers) the CPU
    is shared between sessions first, and workers run in sessions of their own: so what slows
    a worker is how many sessions want the CPU, not how many threads (the load average).
    Returns the mean number of sessions other than this process's with a runnable thread,
    over a few samples of /proc; None without autogroup or /proc."""
    import os
    import time as _time
    try:
        if open("/proc/sys/kernel/sched_autogroup_enabled").read().strip() != "1":
            return None
        mine = os.getsid(0)
    except OSError:
        return None
    counts = []
    for i in range(samples):
        if i:
            _time.sleep(gap)
        busy = set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for t in tasks:
                try:
                    with open(f"/proc/{pid}/task/{t}/stat", "rb") as f:
                        data = f.read().decode("ascii", "replace")
                    rest = data[data.rindex(")") + 2:].split()
                except (OSError, ValueError):
                    continue
                if rest[0] == "R":
                    busy.add(int(rest[3]))        # field 6: the session id
                    break
        busy.discard(mine)
        counts.append(len(busy))
    return sum(counts) / len(counts)


def slowdown(machine: Machine, running: int, concurrent: int) -> float:
    """How many times slower than on an idle machine a run trains. With autogroup: the CPU
    is split between the busy sessions that are not our workers (sessions less the
    `running` workers' own) and the `concurrent` runs' sessions, ours included; a worker
    gets its share, at most its threads. Otherwise by threads: the load average less the
    running workers' threads, plus the concurrent runs' threads, over the cores. 1 when
    everything fits."""
    threads, cores, concurrent = machine.threads, max(1, machine.cores), max(1, concurrent)
    if machine.sessions is not None:
        external = max(0.0, machine.sessions - running)
        share = cores / (external + concurrent)
        factor = min(threads, cores) / min(threads, share)
    else:
        external = max(0.0, machine.load1 - running * threads)
        factor = (external + concurrent * threads) / cores
    return min(SLOWDOWN_MAX, max(1.0, factor))


def queue_finish_times(running_left: list[float], queued_ahead: list[float], new: list[float],
                       cap: int) -> list[float] | None:
    """Seconds from now until each of `new` finishes when runs go first come, first served
    on `cap` slots: the running runs end after `running_left`, then the queued runs ahead
    (their durations in order) and the new ones take each slot as it frees. None when the
    queue is paused (cap 0)."""
    import heapq
    if cap <= 0:
        return None
    ends = list(running_left)
    heapq.heapify(ends)
    now, out = 0.0, []
    for i, d in enumerate([*queued_ahead, *new]):
        while len(ends) >= cap:           # wait for a slot
            now = max(now, heapq.heappop(ends))
        heapq.heappush(ends, now + d)
        if i >= len(queued_ahead):
            out.append(now + d)
    return out


@dataclass
class LaunchEstimate:
    per_run: list[float]    # each new run's own wall time under the current load
    until: list[float] | None   # seconds from launch until each new run's result (None: queue paused)
    running: int            # runs running now
    queued: int             # runs queued ahead
    slowdown: float         # how much slower than the idle model a run without history goes now
    machine: Machine
    paced: bool = False     # slowdown from the pace of recent runs (else from the load average)

    @property
    def wait(self) -> float | None:
        """Seconds until the first new run starts (0 when a slot is free)."""
        if self.until is None:
            return None
        return max(0.0, self.until[0] - self.per_run[0]) if self.until else 0.0


PACE_WINDOW_S = 1800.0      # runs that ended this recently tell how fast the machine trains now


def recent_pace(runs: list[dict], now: float, gpu_available: bool = False) -> float | None:
    """How many times slower than the idle throughput model this store's CPU runs have gone
    lately: the median, over runs finished in the last PACE_WINDOW_S and runs running (at
    least 10 % done, projected to their end), of their time from start to end over the
    model's. It measures the load where it matters (a niced worker in its own session, which
    the load average misjudges); None when no run went lately."""
    ratios = []
    for r in runs:
        c, started = r.get("config") or {}, r.get("started")
        if not c or not started or r.get("example") or _device(c, gpu_available) != "cpu":
            continue
        if r.get("status") == "done" and (r.get("finished") or 0) >= now - PACE_WINDOW_S:
            took = r["finished"] - started
        elif r.get("status") == "running" and float(r.get("progress") or 0) >= 0.1:
            took = (now - started) / float(r["progress"])
        else:
            continue
        try:
            model = estimate(c, gpu_available).seconds - WORKER_START_S     # `started` is after the import
        except (TypeError, ValueError):
            continue
        if took > 0 and model > 0:
            ratios.append(took / model)
    return min(SLOWDOWN_MAX, max(0.25, statistics.median(ratios))) if ratios else None


def launch_estimate(cfgs: list[dict], runs: list[dict], machine: Machine, gpu_available: bool = False,
                    now: float | None = None) -> LaunchEstimate:
    """When the results of launching `cfgs` now will be there, given the store's `runs`
    (the runs ahead in the queue, the history the per-run estimate learns from, the pace of
    recent runs) and the machine's load. Pure: the same inputs give the same answer.

    One run's time: measured runs of the same kind in this store when there are some (their
    times already carry this machine's load); else the throughput model, slowed by the pace
    of recent runs, or, with none, by the load average."""
    import time as _time
    now = _time.time() if now is None else now
    running = [r for r in runs if r.get("status") == "running"]
    queued = sorted((r for r in runs if r.get("status") == "queued" and (r.get("executor") or "jobs") == "jobs"),
                    key=lambda r: r.get("created") or 0)
    concurrent = min(max(machine.cap, 1), len(running) + len(queued) + len(cfgs))
    pace = recent_pace(runs, now, gpu_available)
    factor = pace if pace is not None else slowdown(machine, len(running), concurrent)

    def seconds(c: dict) -> float:
        try:
            base = estimate(c, gpu_available, runs).seconds
            measured = from_history(c, runs) is not None
        except (TypeError, ValueError):
            base, measured = STARTUP_S, False
        return base if measured or _device(c, gpu_available) != "cpu" else base * factor

    left = []
    for r in running:
        elapsed = max(0.0, now - (r.get("started") or r.get("claimed") or r.get("created") or now))
        p = float(r.get("progress") or 0.0)
        if p >= 0.05 and r.get("started") and elapsed > 0:    # its own pace so far says more than any model
            left.append(elapsed * (1 - p) / p)
        else:       # its whole time counts from when its worker was spawned (not from its launch)
            since = max(0.0, now - (r.get("claimed") or r.get("started") or r.get("created") or now))
            left.append(max(1.0, seconds(r.get("config") or {}) - since))
    per_run = [seconds(c) for c in cfgs]
    until = queue_finish_times(left, [seconds(r.get("config") or {}) for r in queued], per_run, machine.cap)
    return LaunchEstimate(per_run=per_run, until=until, running=len(running), queued=len(queued),
                          slowdown=factor, machine=machine, paced=pace is not None)


def launch_estimates(launches: list[tuple[str | None, dict]], runs: list[dict], machine: Machine,
                     per_person: int = 0, gpu_available: bool = False, now: float | None = None) -> list[float | None]:
    """Seconds until each result for several launches arriving together, in the order given
    as (owner, config): the k-th waits for the runs ahead in the queue and for the k−1 before
    it, on the machine's slots. With a per-person cap (`per_person` > 0), a launch whose owner
    already has that many runs queued or running (counting the earlier launches here) is
    refused, so it gets None and takes no place in the queue. None for all when the queue is paused."""
    active: dict[str | None, int] = {}
    for r in runs:
        if r.get("status") in ("queued", "running") and r.get("owner") is not None:
            active[r["owner"]] = active.get(r["owner"], 0) + 1
    taken = []
    for i, (owner, _) in enumerate(launches):
        if per_person and owner is not None and active.get(owner, 0) >= per_person:
            continue
        active[owner] = active.get(owner, 0) + 1
        taken.append(i)
    out: list[float | None] = [None] * len(launches)
    if taken:
        est = launch_estimate([launches[i][1] for i in taken], runs, machine, gpu_available, now)
        for i, t in zip(taken, est.until or []):
            out[i] = t
    return out


def estimate_vs_actual(run: dict) -> dict | None:
    """For a finished run launched with an estimate: the estimate, the actual time from
    launch to result (finished − created) and their ratio actual / estimate."""
    est, created, finished = run.get("estimate"), run.get("created"), run.get("finished")
    if run.get("status") != "done" or not est or not created or not finished or finished < created:
        return None
    actual = finished - created
    return {"estimate": float(est), "actual": actual, "ratio": actual / float(est)}
