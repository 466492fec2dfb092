"""Integer and fraction settings read from the environment ($LOTTERY_MAX_RUNS, $LOTTERY_WORKER_NICE, ...),
checked the same way everywhere: a bad value is one line naming the variable and its range."""

from __future__ import annotations

import os


def _env(name: str, parse, ok, allowed: str, error: type[Exception]):
    """$name parsed and checked; None when it is unset or empty; else one line naming the range."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise error(f"{name} must be {allowed}, got {raw!r}")
    return value


def env_int(name: str, lo: int, hi: int | None = None, error: type[Exception] = ValueError) -> int | None:
    """$name as an integer in [lo, hi] (no upper bound with hi=None); None when it is unset or empty."""
    allowed = f"an integer ≥ {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    return _env(name, int, lambda v: v >= lo and (hi is None or v <= hi), allowed, error)


def env_fraction(name: str, error: type[Exception] = ValueError) -> float | None:
    """$name as a number in (0, 1]; None when it is unset or empty."""
    return _env(name, float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]", error)
