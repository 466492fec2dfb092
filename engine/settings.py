"""Integer and fraction settings read from the environment ($LOTTERY_MAX_RUNS, $LOTTERY_WORKER_NICE, ...),
checked the same way everywhere: a bad value is one line naming the variable and its range."""

from __future__ import annotations

import os


def env_int(name: str, lo: int, hi: int | None = None, error: type[Exception] = ValueError) -> int | None:
    """$name as an integer in [lo, hi] (no upper bound with hi=None); None when it is unset or empty."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < lo or (hi is not None and value > hi):
        allowed = f"≥ {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise error(f"{name} must be an integer {allowed}, got {raw!r}")
    return value


def env_fraction(name: str, error: type[Exception] = ValueError) -> float | None:
    """$name as a number in (0, 1]; None when it is unset or empty."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None or not 0.0 < value <= 1.0:
        raise error(f"{name} must be a number in (0, 1], got {raw!r}")
    return value
