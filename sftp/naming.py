"""The drop's folder layout and file names, and the check every name passes before use.

Work queues:  ``wq_<practice id>_<sequence, 6+ digits>.pgp``   (published by the practice)
Returns:      ``rt_<practice id>_<return id>.pgp``              (published by the offshore team)
In flight:    ``.<final name>.part``                            (a temporary upload name; never picked up)

A name from a listing is data, never a path: it must pass `check_safe` (no path separators, no
``..``, no control or format characters, no leading dot or dash, bounded length) and then the
pattern of its folder before anything is read, moved or recorded under it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

PRACTICE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}"
RETURN_ID = r"[A-Za-z0-9][A-Za-z0-9-]{0,63}"
QUEUE_NAME = re.compile(rf"wq_(?P<practice>{PRACTICE})_(?P<sequence>[0-9]{{6,12}})\.pgp")
RETURN_NAME = re.compile(rf"rt_(?P<practice>{PRACTICE})_(?P<return_id>{RETURN_ID})\.pgp")
TEMP_SUFFIX = ".part"
MAX_NAME = 160


class UnsafeName(ValueError):
    """A name that must not be used; the message is the reason (it never quotes the name)."""


@dataclass(frozen=True)
class QueueName:
    practice: str
    sequence: int


@dataclass(frozen=True)
class ReturnName:
    practice: str
    return_id: str


def check_safe(name: str) -> str:
    """Return the name if it is safe to use as a single file name in a drop folder."""
    if not isinstance(name, str) or not name:
        raise UnsafeName("empty file name")
    if len(name) > MAX_NAME:
        raise UnsafeName(f"file name longer than {MAX_NAME} characters")
    if "/" in name or "\\" in name:
        raise UnsafeName("file name contains a path separator")
    if ".." in name:
        raise UnsafeName("file name contains '..'")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name):
        raise UnsafeName("file name contains a control character")
    if name[0] in ".-" or name != name.strip():
        raise UnsafeName("file name starts with '.', '-' or a space")
    return name


def queue_name(practice: str, sequence: int) -> str:
    name = f"wq_{practice}_{sequence:06d}.pgp"
    parse_queue_name(name)
    return name


def return_name(practice: str, return_id: str) -> str:
    name = f"rt_{practice}_{return_id}.pgp"
    parse_return_name(name)
    return name


def parse_queue_name(name: str) -> QueueName:
    m = QUEUE_NAME.fullmatch(check_safe(name))
    if not m:
        raise UnsafeName("not a work-queue file name (wq_<practice>_<sequence>.pgp)")
    return QueueName(m.group("practice"), int(m.group("sequence")))


def parse_return_name(name: str) -> ReturnName:
    m = RETURN_NAME.fullmatch(check_safe(name))
    if not m:
        raise UnsafeName("not a return file name (rt_<practice>_<return id>.pgp)")
    return ReturnName(m.group("practice"), m.group("return_id"))


def temp_name(final: str) -> str:
    """The in-flight name of an upload: hidden, so it never matches a pattern."""
    return "." + check_safe(final) + TEMP_SUFFIX


def is_in_flight(name: str) -> bool:
    """An upload still under its temporary name (ours or the partner's): skipped, not refused."""
    return (
        name.startswith(".")
        and name.endswith(TEMP_SUFFIX)
        and "/" not in name
        and ".." not in name[1:]
    )


def shown(name: str) -> str:
    """A printable, bounded rendering of an untrusted name for reasons and quarantine records."""
    return ascii(name[:MAX_NAME])[1:-1] + ("..." if len(name) > MAX_NAME else "")
