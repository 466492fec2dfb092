"""Who owns a run, and who may manage it (a class on one shared server).

    check_name(raw)        a person's name, validated: one line, 1–64 characters of letters,
                           digits, spaces and . _ - @ ' (no HTML, path separators or control
                           characters). Names are metadata only: never part of a path.
    teachers()             $LOTTERY_TEACHERS, comma-separated names (validated like any name)
    max_per_person()       $LOTTERY_MAX_PER_PERSON (default 3; 0 = no limit): queued plus
                           running runs one person may have; teachers have no limit
    may_manage(run, actor) whether `actor` may cancel, resume or delete `run`

An actor of None is the CLI or an administrator: unrestricted. A named actor may
manage the runs it owns; a teacher manages every run. A run without an owner
(made by the CLI, or before owners existed) is managed by teachers only, once
people act under names. Nothing here imports Streamlit.
"""

from __future__ import annotations

import os
import re
import unicodedata

from .settings import env_int

MAX_NAME = 64
DEFAULT_MAX_PER_PERSON = 3
# Letters and digits of any script (\w), space and a few signs names and e-mail addresses use.
_NAME_RE = re.compile(r"[\w .@'-]+")
_ALLOWED = "letters, digits, spaces and . _ - @ '"


class OwnerError(ValueError):
    """A refused name, setting or action; one line meant for people."""


def check_name(raw, what: str = "name") -> str:
    """The name as stored (NFC, surrounding spaces stripped, inner runs of spaces made one),
    or OwnerError saying what is allowed."""
    if not isinstance(raw, str):
        raise OwnerError(f"{what} must be text, got {type(raw).__name__}")
    name = re.sub(" +", " ", unicodedata.normalize("NFC", raw).strip())
    if not name:
        raise OwnerError(f"{what} is empty; type 1–{MAX_NAME} characters ({_ALLOWED})")
    if len(name) > MAX_NAME:
        raise OwnerError(f"{what} is {len(name):,} characters long; at most {MAX_NAME} are allowed")
    if not _NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not _NAME_RE.fullmatch(c)})
        shown = ", ".join(repr(c) if c.isprintable() else f"U+{ord(c):04X}" for c in bad[:5])
        raise OwnerError(f"{what} may only hold {_ALLOWED} (1–{MAX_NAME} characters); not {shown}")
    return name


def teachers() -> frozenset[str]:
    """Names in $LOTTERY_TEACHERS (comma-separated). A bad name there is a setting error."""
    raw = os.environ.get("LOTTERY_TEACHERS", "")
    out = set()
    for part in raw.split(","):
        if part.strip():
            try:
                out.add(check_name(part, "a name in LOTTERY_TEACHERS"))
            except OwnerError as e:
                raise OwnerError(str(e)) from None
    return frozenset(out)


def is_teacher(actor: str | None, teacher: bool | set | frozenset | None = None) -> bool:
    """`teacher` True/False decides; a set names the teachers; None reads $LOTTERY_TEACHERS."""
    if actor is None:
        return False
    if isinstance(teacher, bool):
        return teacher
    names = teachers() if teacher is None else teacher
    return actor in names


def shared_server(env=os.environ) -> bool:
    """Set up for several people: teachers named, or a login proxy's user header trusted."""
    return any((env.get(k) or "").strip() for k in ("LOTTERY_TEACHERS", "LOTTERY_TRUST_USER_HEADER"))


def max_per_person(value: int | None = None) -> int:
    """The per-person cap: `value`, else $LOTTERY_MAX_PER_PERSON, else 3 on a shared server
    and 0 (no limit) on a personal machine, where a typed name only labels the runs and a cap
    would only keep its one user from their own sweeps."""
    if value is None:
        value = env_int("LOTTERY_MAX_PER_PERSON", 0, error=OwnerError)
        if value is None:
            return DEFAULT_MAX_PER_PERSON if shared_server() else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OwnerError(f"LOTTERY_MAX_PER_PERSON must be an integer ≥ 0, got {value!r}")
    return value


def cap_message(active: int, cap: int) -> str:
    return (f"you already have {active} run{'s' if active != 1 else ''} queued or running (the limit per person "
            f"is {cap}, LOTTERY_MAX_PER_PERSON); wait for one to finish or cancel one")


def may_manage(run: dict, actor: str | None, teacher: bool | set | frozenset | None = None) -> bool:
    if actor is None or is_teacher(actor, teacher):
        return True
    return run.get("owner") is not None and run.get("owner") == actor


def refusal(run: dict, actor: str, what: str) -> str:
    owner = run.get("owner")
    whose = f"{owner}'s" if owner else "a run without an owner (only a teacher may manage it)"
    return f"{actor} may not {what} run {run['id']}: it is {whose}; only its owner or a teacher may"
