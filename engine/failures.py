"""One clear line for a failed run, from the exception that ended it.

Used where a run is first marked failed (engine.runner), so the stored reason is
final from its first write, and by the CLI's foreground `run`."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from .config import ConfigError
from .store import DamagedFile, DiskFull


def failure_reason(exc: BaseException) -> str | None:
    """A clear one-line reason for failures that need more than the exception's name."""
    from .data import DatasetUnavailable
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = exc.filename or _path_in_traceback(exc)
        return f"disk full while writing {where or 'the run files'} ({exc.strerror or 'no space left on device'})"
    if isinstance(exc, DamagedFile):
        return str(exc)
    if isinstance(exc, DiskFull):
        return f"disk full while writing the store database ({exc})"[:500]
    if isinstance(exc, sqlite3.OperationalError) and "database or disk is full" in str(exc):   # SQLITE_FULL
        return f"disk full while writing the store database ({exc})"
    if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc):
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return (msg if msg.startswith("CUDA out of memory") else f"CUDA out of memory: {msg}")[:500]
    if isinstance(exc, MemoryError):
        return f"out of host memory (MemoryError{': ' + str(exc) if str(exc) else ''})"[:500]
    if isinstance(exc, DatasetUnavailable):
        return str(exc).splitlines()[0][:500]
    if isinstance(exc, ConfigError):
        return f"invalid config: {exc}"[:500]
    return None


def _path_in_traceback(exc: BaseException) -> str | None:
    tb, found = exc.__traceback__, None
    while tb is not None:
        v = tb.tb_frame.f_locals.get("path")
        if isinstance(v, (str, Path)):
            found = str(v)
        tb = tb.tb_next
    return found
