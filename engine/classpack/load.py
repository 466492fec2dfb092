"""Import a class pack into a store as read-only example runs (`runs.example = 1`).

import_pack(store, pack_dir=None) -> the pack's run ids, in the pack's order. Idempotent:
ids come from each run's key and config, runs already there with the same content digest are
left as they are (a rebuilt run replaces its older copy), and example runs of another pack
(the default pack when a teacher's is chosen) are removed, so the store shows one pack. The
pack's files are verified (sizes, checksums, arrays) before anything is written: a damaged
pack raises PackError and changes nothing.

Which pack: `pack_dir`, else $LOTTERY_CLASSPACK (a folder; "off" imports nothing), else the
one `classpack import DIR` remembered for this store (<home>/classpack.json), else the
pack committed in the repository (engine/classpack/pack/).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..store import METRIC_COLUMNS, Store, atomic_write_json
from .pack import PackError, decode_masks, decode_records, read_file, read_manifest

DEFAULT_PACK = Path(__file__).resolve().parent / "pack"
CHOICE_FILE = "classpack.json"
OFF = ("off", "none", "0")
MASK_COLUMNS = ("round", "phase", "epoch", "step", "layer", "numel", "mean", "frac_above", "near_binary", "churn",
                "dead_units", "hist")


def pack_dir_for(store: Store | None = None) -> Path | None:
    """The pack this store uses (see the module doc); None when switched off."""
    env = (os.environ.get("LOTTERY_CLASSPACK") or "").strip()
    if env:                              # set and not empty
        return None if env.lower() in OFF else Path(env).expanduser()
    if store is not None:
        try:
            chosen = json.loads((store.home / CHOICE_FILE).read_text()).get("pack")
            if chosen:
                return Path(chosen)
        except (OSError, ValueError, AttributeError):
            pass
    return DEFAULT_PACK


DIGEST_FILE = "example.json"      # in an example run's folder: the pack digest it was imported from


def pack_runs(store: Store | None = None, pack_dir: str | os.PathLike | None = None) -> list[dict]:
    """The pack's runs as its manifest lists them (key, group, id, config, summary, ...), e.g.
    to find an example by its key; [] when the pack is switched off. PackError if damaged."""
    d = Path(pack_dir) if pack_dir is not None else pack_dir_for(store)
    return [] if d is None else read_manifest(d)["runs"]


def example_ids(store: Store) -> set[str]:
    with store.connect() as db:
        return {r[0] for r in db.execute("SELECT id FROM runs WHERE example=1")}


def _digest(store: Store, run_id: str) -> str | None:
    try:
        return json.loads((store.run_dir(run_id) / DIGEST_FILE).read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        return None


def import_pack(store: Store, pack_dir: str | os.PathLike | None = None, *, remember: bool = False) -> list[str]:
    """Make the store's example runs this pack's; returns the pack's run ids. `remember`:
    make this pack the store's choice (what `classpack import DIR` does)."""
    d = Path(pack_dir) if pack_dir is not None else pack_dir_for(store)
    if d is None:
        return []
    manifest = read_manifest(d)
    have = example_ids(store)
    todo = []
    for r in manifest["runs"]:           # verify and decode everything first: a damaged pack writes nothing
        if r["id"] in have and _digest(store, r["id"]) == r.get("digest"):
            continue
        try:
            records = decode_records(read_file(d, r["files"]["records"]))
            masks = decode_masks(read_file(d, r["files"]["masks"]))
        except PackError:
            raise
        except Exception as e:  # noqa: BLE001 - a file that verifies but does not decode: say which
            raise PackError(f"class pack: the files of run {r.get('key', r['id'])} in {d} do not decode "
                            f"({type(e).__name__}: {e})".splitlines()[0]) from None
        todo.append((r, records, masks))
    for r, records, masks in todo:
        if r["id"] in have:              # the same run from a rebuilt pack: replaced
            store.delete_run(r["id"], example_ok=True)
        _write_run(store, r, records, masks)
    ids = [r["id"] for r in manifest["runs"]]
    for stale in sorted(have - set(ids)):
        store.delete_run(stale, example_ok=True)
    if remember:
        atomic_write_json(store.home / CHOICE_FILE, {"pack": str(Path(d).resolve())})
    return ids


def _put(path: Path, data: bytes) -> None:
    """Temp file + rename, without the store's fsync: an example's files can always be written
    again from the pack (its digest file, written last, says they are complete), and a
    thousand fsyncs made the app's first start ~10 s slower on a loaded machine."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_run(store: Store, r: dict, records: dict, masks: dict) -> None:
    """Files first, then the index rows in one transaction (a run is visible only complete),
    then the digest file that marks the import finished."""
    import io

    import torch
    run_id = r["id"]
    d = store.run_dir(run_id)
    (d / "masks").mkdir(parents=True, exist_ok=True)
    _put(d / "config.json", json.dumps(r["config"], indent=2, sort_keys=True).encode())
    _put(d / "summary.json", json.dumps(r.get("summary") or {}, indent=2, sort_keys=True).encode())
    metrics = records.get("metrics", [])
    lines = []
    for m in metrics:
        row = {k: m.get(k) for k in METRIC_COLUMNS}
        if m.get("extra"):
            try:
                row.update(json.loads(m["extra"]))
            except (TypeError, ValueError):
                pass
        lines.append(json.dumps(row) + "\n")
    _put(d / "metrics.jsonl", "".join(lines).encode())
    for tag, layers in masks.items():
        buf = io.BytesIO()
        torch.save({k: torch.from_numpy(v.copy()) for k, v in layers.items()}, buf)
        _put(d / "masks" / f"{tag}.pt", buf.getvalue())
    now = time.time()
    with store.transaction() as db:
        if db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone():
            return                      # imported meanwhile by another process
        db.execute("INSERT INTO runs(id, name, config_hash, config, status, created, started, finished, progress, "
                   "phase, round, summary, example, data_version) VALUES(?,?,?,?,'done',?,?,?,1.0,'done',?,?,1,1)",
                   (run_id, str(r.get("name") or ""), r.get("config_hash"), json.dumps(r["config"]),
                    r.get("created") or now, r.get("started"), r.get("finished"), r.get("round"),
                    json.dumps(r.get("summary") or {})))
        db.executemany(f"INSERT INTO metrics(run_id, seq, {', '.join(METRIC_COLUMNS)}, extra) "
                       f"VALUES({', '.join('?' * (len(METRIC_COLUMNS) + 3))})",
                       [(run_id, i, *(m.get(c) for c in METRIC_COLUMNS), m.get("extra"))
                        for i, m in enumerate(metrics)])
        db.executemany(f"INSERT INTO mask_stats(run_id, {', '.join(MASK_COLUMNS)}) "
                       f"VALUES({', '.join('?' * (len(MASK_COLUMNS) + 1))})",
                       [(run_id, *(s.get(c) for c in MASK_COLUMNS)) for s in records.get("mask_stats", [])])
        db.executemany("INSERT OR REPLACE INTO checks(run_id, name, value, target, passed, detail) "
                       "VALUES(?,?,?,?,?,?)",
                       [(run_id, c.get("name"), c.get("value"), c.get("target"), int(bool(c.get("passed"))),
                         c.get("detail") or "") for c in records.get("checks", [])])
    _put(d / DIGEST_FILE, json.dumps({k: r.get(k) for k in ("digest", "key", "group")}).encode())
