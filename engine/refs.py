"""Run ids a config refers to: checked when a run is submitted, run or swept, so a
bad reference is refused up front (one line naming the key, nothing queued)
instead of failing once the run starts.

    random_from   copy per-layer densities from that run's ticket
    warm_start    start the search from that run's search-end state
    reinit_from   (re-initialisation control) that run's ticket

Each must name a finished (`done`) run of the same store holding the file listed
in REFERENCES. A new reference key is one line there."""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError, RunConfig
from .store import RUN_ID_RE, Store, UnknownRun

REFERENCES = {"random_from": "ticket", "warm_start": "search_end", "reinit_from": "ticket"}
WHAT = {"ticket": "ticket (ticket.pt)", "search_end": "search-end state (search_end.pt)"}


def check_references(cfg: RunConfig | dict, home: str | os.PathLike) -> None:
    """Raise ConfigError naming the key unless every referenced run exists in the
    store at `home`, is done, and holds the file the reference needs. Reads only
    (a missing store is not created)."""
    d = cfg if isinstance(cfg, dict) else cfg.to_dict()
    wanted = {k: d.get(k) for k in REFERENCES if d.get(k) is not None}
    if not wanted:
        return
    home = Path(home)
    store = Store(home) if (home / "lottery.db").exists() else None
    for key, rid in wanted.items():
        if not isinstance(rid, str) or not RUN_ID_RE.fullmatch(rid):
            raise ConfigError(key, f"{key} must be the id of a finished run in this store, got {rid!r}")
        try:
            if store is None:
                raise UnknownRun(rid)
            run = store.get_run(rid)
        except UnknownRun:
            raise ConfigError(key, f"{key}: no run with id {rid!r} in the store at {home}") from None
        if run["status"] != "done":
            raise ConfigError(key, f"{key}: run {rid} is {run['status']}; it must be a finished (done) run")
        name = REFERENCES[key]
        if not (store.run_dir(rid) / f"{name}.pt").is_file():
            raise ConfigError(key, f"{key}: run {rid} has no {WHAT[name]}; it cannot be used as {key}")
