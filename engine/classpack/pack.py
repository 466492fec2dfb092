"""The pack on disk: export finished runs from a store, and read a pack back, verified.

    <pack>/manifest.json            format, how it was built, and per run: key, group, id, name,
                                    config, summary (accuracies), times, and its two files with
                                    their sizes and sha256
    <pack>/runs/<id>.json.gz        metrics, mask statistics and checks (rows as the store holds them)
    <pack>/samples.json.gz          8 test images of each image dataset used (uint8), for offline pages
    <pack>/runs/<id>.masks.gz       the mask snapshots: one safetensors blob (gzip), binary masks as
                                    packed bits, soft ones as float16; equal snapshots stored once

No checkpoints, rewind weights or tickets' weights: only what the pages draw. Files are
written deterministically (sorted keys, gzip mtime 0), so an unchanged run gives the same
bytes. A pack that does not verify raises PackError with one line naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..store import Store

FORMAT = 1
MANIFEST = "manifest.json"
# Models up to this many prunable weights (logistic regression) keep every per-epoch snapshot;
# bigger ones (LeNet-300-100, also on digits) keep the
# snapshots that are binary (tickets, retrain epochs: stored once each, as bits) and the
# search's end, which keeps LeNet-300-100 runs to tens of kB (their soft per-epoch masks would
# be ~0.5 MB each).
ALL_SNAPSHOTS_MAX = 10_000
RUN_COLUMNS = ("id", "name", "config_hash", "created", "started", "finished", "round")


class PackError(Exception):
    """A class pack that cannot be used: one line naming the file and what is wrong."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _clean(v):
    """NaN/inf as None (the store holds them as NULL anyway)."""
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


# ------------------------------------------------------------------ export

def _records(store: Store, run_id: str) -> dict:
    with store.connect() as db:
        metrics = [dict(r) for r in db.execute("SELECT * FROM metrics WHERE run_id=? ORDER BY seq", (run_id,))]
        stats = [dict(r) for r in db.execute("SELECT * FROM mask_stats WHERE run_id=? ORDER BY rowid", (run_id,))]
        checks = [dict(r) for r in db.execute("SELECT * FROM checks WHERE run_id=? ORDER BY name", (run_id,))]
    for rows in (metrics, stats, checks):
        for r in rows:
            r.pop("run_id", None)
            for k, v in r.items():
                r[k] = _clean(v)
    return {"metrics": metrics, "mask_stats": stats, "checks": checks}


def _encode_masks(store: Store, run_id: str, total_prunable: int) -> bytes:
    """Every kept snapshot as one safetensors blob; its metadata maps tag → layer → tensor."""
    from safetensors.numpy import save
    index: dict[str, dict[str, dict]] = {}
    tensors: dict[str, np.ndarray] = {}
    seen: dict[str, str] = {}
    for tag in store.mask_snapshots(run_id):
        raw = _raw_masks(store, run_id, tag)
        arrays = {k: v.numpy() for k, v in raw.items()}
        binary = all(a.dtype == np.bool_ or np.isin(a, (0, 1)).all() for a in arrays.values())
        per_epoch = "-e" in tag and not tag.endswith("-end")
        if total_prunable > ALL_SNAPSHOTS_MAX and per_epoch and not binary:
            continue
        entry = {}
        for layer, a in arrays.items():
            if a.dtype == np.bool_ or np.isin(a, (0, 1)).all():
                enc, blob = "bits", np.packbits(a.astype(bool).ravel())
            else:
                enc, blob = "f16", a.astype(np.float16).ravel()
            h = _sha(blob.tobytes() + enc.encode())
            if h not in seen:
                seen[h] = f"t{len(seen)}"
                tensors[seen[h]] = blob
            entry[layer] = {"t": seen[h], "enc": enc, "dtype": "bool" if a.dtype == np.bool_ else "float16",
                            "shape": list(a.shape)}
        index[tag] = entry
    return _gz(save(tensors, metadata={"index": json.dumps(index, sort_keys=True)}))


def _raw_masks(store: Store, run_id: str, tag: str) -> dict:
    """A snapshot as saved (bool for binary, float16 for soft), not converted to float."""
    from ..store import torch_load
    return torch_load(store.run_dir(run_id) / "masks" / f"{tag}.pt")


SAMPLES_PER_SET = 8


def pick_samples(test_x, test_y, class_names, classes: list | None, n: int = SAMPLES_PER_SET) -> list[tuple]:
    """The first test images, taking the classes in turn (what the Pixel masks page shows)."""
    wanted = list(classes or range(len(class_names)))
    out, seen = [], {c: 0 for c in wanted}
    for i in range(len(test_y)):
        c = int(test_y[i])
        if c in seen and seen[c] <= min(seen.values()):
            out.append((str(class_names[c]), test_x[i, 0]))
            seen[c] += 1
        if len(out) >= n:
            break
    return out


def _samples(runs: list[dict], data_dir) -> bytes:
    """A few test images of each image dataset the pack's runs use, so the Pixel masks page can
    show digits through a mask on a machine without the dataset (uint8, as the datasets hold them)."""
    from ..data import DATASETS
    sets = {}
    for run in runs:
        c = run["config"]
        key = f"{c['dataset']}:{','.join(map(str, c.get('classes') or []))}"
        if c["dataset"] not in ("mnist", "fashion_mnist", "digits") or key in sets:
            continue
        raw = DATASETS.get(c["dataset"]).loader(Path(data_dir), {})
        picked = pick_samples(raw.test_x, raw.test_y, raw.class_names, c.get("classes"))
        sets[key] = [{"label": lbl, "image": np.asarray(img).astype(np.uint8).tolist()} for lbl, img in picked]
    return _gz(_json_bytes(sets))


def samples(pack_dir: str | os.PathLike, dataset: str, classes: list | None) -> list[tuple[str, np.ndarray]]:
    """The pack's sample images for this dataset and class subset ([] when it has none)."""
    m = read_manifest(pack_dir)
    if "samples" not in m:
        return []
    sets = json.loads(read_file(pack_dir, m["samples"]))
    key = f"{dataset}:{','.join(map(str, classes or []))}"
    return [(s["label"], np.asarray(s["image"], dtype=np.uint8)) for s in sets.get(key, [])]


def export(store: Store, items: list[tuple[dict, str]], out: str | os.PathLike, meta: dict,
           data_dir: str | os.PathLike | None = None) -> Path:
    """Write the pack for `items` ([(entry, run_id)], entry from spec.entries with its resolved
    config) into `out` (replaced as a whole: the new pack is built next to it, then swapped in).
    With `data_dir`, a few test images of the runs' datasets go in too."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "runs").mkdir(parents=True)
    scratch_to_pack: dict[str, str] = {}
    runs = []
    for entry, run_id in items:
        run = store.get_run(run_id)
        if run["status"] != "done":
            raise PackError(f"run {run_id} ({entry['key']}) is {run['status']}, not done; the pack holds finished "
                            f"runs only")
        summary = run["summary"] or {}
        records = _gz(_json_bytes(_records(store, run_id)))
        masks = _encode_masks(store, run_id, int(summary.get("total") or 0))
        config = dict(run["config"])
        for k in entry.get("refs", {}):          # refs point at the pack's own ids
            config[k] = scratch_to_pack[config[k]]
        pid = example_id(entry["key"], config)
        scratch_to_pack[run_id] = pid
        files = {}
        for kind, name, data in (("records", f"runs/{pid}.json.gz", records), ("masks", f"runs/{pid}.masks.gz", masks)):
            (tmp / name).write_bytes(data)
            files[kind] = {"file": name, "bytes": len(data), "sha256": _sha(data)}
        runs.append({"key": entry["key"], "group": entry["group"], **{c: run[c] for c in RUN_COLUMNS},
                     "id": pid, "config": config, "summary": summary, "files": files,
                     "digest": _sha(records + masks)[:16]})
    manifest = {"format": FORMAT, **meta, "runs": runs}
    if data_dir is not None:
        data = _samples(runs, data_dir)
        (tmp / "samples.json.gz").write_bytes(data)
        manifest["samples"] = {"file": "samples.json.gz", "bytes": len(data), "sha256": _sha(data)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n")
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def example_id(key: str, config: dict) -> str:
    """The run's id in every store it is imported into, from its key and config: the same
    across imports and rebuilds (what changed in a rebuilt run is told by its `digest`)."""
    from ..config import RunConfig
    return f"ex-{RunConfig.from_dict(config, unused='keep').content_hash()[:8]}-{_sha(key.encode())[:6]}"


# ------------------------------------------------------------------ read

def pack_size(pack_dir: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(pack_dir).rglob("*") if p.is_file())


def read_manifest(pack_dir: str | os.PathLike) -> dict:
    """The manifest, checked for shape; PackError (one line) when it is missing or damaged."""
    path = Path(pack_dir) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PackError(f"class pack: {path} is missing (no pack in {path.parent})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PackError(f"class pack: cannot read {path}: {e}") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise PackError(f"class pack: {path} is damaged (not valid JSON: {e.msg} at line {e.lineno}; "
                        f"truncated?); rebuild it with `python -m engine classpack build`") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("runs"), list):
        raise PackError(f"class pack: {path} is not a format-{FORMAT} class pack manifest")
    for r in m["runs"]:
        if not (isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("config"), dict)
                and isinstance(r.get("files"), dict) and {"records", "masks"} <= set(r["files"])):
            raise PackError(f"class pack: {path} has a malformed run entry")
    return m


def read_file(pack_dir: str | os.PathLike, info: dict) -> bytes:
    """One of the pack's files, checked against the manifest's size and sha256, un-gzipped."""
    path = Path(pack_dir) / str(info.get("file", ""))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PackError(f"class pack: cannot read {path}: {e.strerror or e}") from None
    if len(data) != info.get("bytes") or _sha(data) != info.get("sha256"):
        raise PackError(f"class pack: {path} is damaged ({len(data)} bytes, checksum does not match the "
                        f"manifest); rebuild the pack with `python -m engine classpack build`")
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise PackError(f"class pack: {path} is damaged ({e})") from None


def decode_records(data: bytes) -> dict:
    return json.loads(data)


def decode_masks(data: bytes) -> dict[str, dict[str, np.ndarray]]:
    """tag → layer → array (bool, or float16 for soft and float16-saved binary snapshots)."""
    from safetensors.numpy import load
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len]).get("__metadata__", {})
    index = json.loads(meta["index"])
    tensors = load(data)
    out: dict[str, dict[str, np.ndarray]] = {}
    for tag, layers in index.items():
        out[tag] = {}
        for layer, e in layers.items():
            t, shape = tensors[e["t"]], tuple(e["shape"])
            n = int(np.prod(shape))
            a = np.unpackbits(t)[:n].astype(bool) if e["enc"] == "bits" else t[:n]
            a = a.reshape(shape)
            out[tag][layer] = a if e["dtype"] == "bool" else a.astype(np.float16)
    return out
