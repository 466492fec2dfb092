"""What the CLI prints: names cannot rewrite the terminal, `list | head` ends
quietly, and the read-only commands (`list`, `show`) never import torch."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.store import Store

ROOT = Path(__file__).resolve().parent.parent
CFG = {"model": "lenet300", "dataset": "digits", "method": "concave", "lam": 2.0}
# Clears the screen, returns to column 0, sets the window title, and a C1 CSI (0x9b)
HOSTILE = "nice\x1b[2J\x1b[H\rFAKE\x1b]0;pwned\x07 name\x9b31m\x08\x7f\u202eevil"


def cli(*args, home, **kw):
    env = {**os.environ, "LOTTERY_HOME": str(home)}
    r = subprocess.run([sys.executable, *kw.pop("pyflags", []), "-m", "engine", *args], cwd=ROOT, env=env,
                       capture_output=True, timeout=120, **kw)
    # decoded by hand: text=True would turn a printed "\r" into "\n"
    r.stdout, r.stderr = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    return r


@pytest.fixture
def hostile_store(tmp_path):
    store = Store(tmp_path / "home")
    rid = store.create_run(dict(CFG, name=HOSTILE), "a" * 64, name=HOSTILE, status="queued")
    store.update_run(rid, status="failed", reason=f"ValueError: bad value \x1b[31m{HOSTILE}\x1b[0m",
                     phase="search\x1b[1A", finished=time.time())
    return store.home, rid


def test_printed_names_and_reasons_carry_no_control_characters(hostile_store):
    home, rid = hostile_store
    for args in (("list",), ("show", rid)):
        r = cli(*args, "--home", str(home), home=home)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        bad = sorted({f"U+{ord(c):04X}" for c in out if (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) < 0xa0
                      or c == "\u202e"})
        assert not bad, f"{args[0]} printed control characters {bad}: {out!r}"
        assert "nice" in out and "FAKE" in out and "evil" in out    # the printable rest of the name is kept
        if args[0] == "list":
            assert len(out.splitlines()) == 1, out                   # one run, one line
    # --json keeps the exact stored text (escaped by JSON, so it is safe too)
    r = cli("show", rid, "--json", "--home", str(home), home=home)
    assert json.loads(r.stdout)["name"] == HOSTILE and "\x1b" not in r.stdout


def test_list_into_a_closed_pipe_ends_quietly(tmp_path):
    """`python -m engine list | head -1`: no BrokenPipeError traceback."""
    store = Store(tmp_path / "home")
    now = time.time()
    with store.transaction() as db:       # enough rows to overflow a pipe's buffer (64 KiB)
        db.executemany("INSERT INTO runs(id, name, config, status, created) VALUES(?,?,?,?,?)",
                       [(f"r{i:07d}", "x" * 60, json.dumps(CFG), "done", now - i) for i in range(3000)])
    env = {**os.environ, "LOTTERY_HOME": str(store.home)}
    p = subprocess.Popen([sys.executable, "-m", "engine", "list"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()                       # what `head -1` does after its line
    err = p.stderr.read().decode()
    rc = p.wait(60)
    assert first.startswith(b"r0000000"), first
    assert err == "", err
    assert rc != 0      # like a Unix tool killed by SIGPIPE, it does not claim success


def _imported(stderr: str) -> set[str]:
    """Top-level modules listed by `python -X importtime`."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_read_commands_do_not_import_torch(hostile_store):
    home, rid = hostile_store
    for args in (("list",), ("list", "--json"), ("show", rid), ("show", rid, "--json")):
        r = cli(*args, "--home", str(home), home=home, pyflags=["-X", "importtime"])
        assert r.returncode == 0, r.stderr[-2000:]
        mods = _imported(r.stderr)
        assert "sqlite3" in mods                        # the check sees the imports at all
        assert "torch" not in mods and "numpy" not in mods, f"`{' '.join(args)}` imported torch"
