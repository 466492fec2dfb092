"""Execute one run in this process: status transitions, the method, the summary.

Used by the CLI's `run` (foreground) and by background workers alike."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .config import RunConfig
from .failures import failure_reason
from .store import StaleWriter, Store

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_home() -> Path:
    return Path(os.environ.get("LOTTERY_HOME") or PROJECT_ROOT / "cache")


def create(store: Store, cfg: RunConfig, status: str = "queued", sweep_id: str | None = None) -> str:
    return store.create_run(cfg.to_dict(), cfg.content_hash(), name=cfg.name, status=status, sweep_id=sweep_id)


def execute(store: Store, run_id: str, data_dir: str | os.PathLike | None = None,
            progress: Callable[[float, str], None] | None = None,
            should_stop: Callable[[], bool] | None = None, resume: bool = False,
            attempt: int | None = None) -> dict:
    """Run `run_id` to the end. Returns the summary; on failure the run is
    marked failed with a one-line reason and the exception is re-raised.
    With `resume`, continue from the run's last complete checkpoint; records
    written after it are dropped first, so no step is duplicated or missing.

    This process becomes the run's one writer (Store.take): as `attempt` when a
    claim handed it one, else as a new attempt. If another process takes the run
    over meanwhile, the next write raises StaleWriter and nothing more is written
    (no status, no traceback file): the run is the new writer's."""
    from .data import default_data_dir  # here: importing data imports torch
    from .methods import METHOD_FUNCS
    from .train import Cancelled, RunContext

    run = store.get_run(run_id)
    store.take(run_id, attempt, status="running", started=time.time(), pid=os.getpid(), heartbeat=time.time(),
               reason=None)
    try:
        cfg = RunConfig.from_dict(run["config"], unused="keep")    # as stored, maybe before that was refused
        ctx = RunContext(cfg, store, run_id, data_dir or default_data_dir(), progress=progress,
                         should_stop=should_stop, resume=resume)
        summary = METHOD_FUNCS.get(cfg.method)(ctx)
        ctx.flush()
        store.write_json(run_id, "summary.json", summary)
        store.update_run(run_id, status="done", finished=time.time(), progress=1.0, summary=summary,
                         phase="done")
        return summary
    except StaleWriter:
        raise
    except Cancelled as e:
        store.update_run(run_id, status="cancelled", finished=time.time(), reason=str(e))
        raise
    except BaseException as e:
        # the final reason from the first write (readers never see a generic one replaced later)
        reason = failure_reason(e) or f"{type(e).__name__}: {e}".splitlines()[0][:500]
        store.update_run(run_id, status="failed", finished=time.time(), reason=reason)
        _write_traceback(store, run_id)
        raise


def _write_traceback(store: Store, run_id: str) -> None:
    try:
        (store.run_dir(run_id) / "error.txt").write_text(traceback.format_exc())
    except OSError:
        pass
