"""Progress for long commands: a bar on a terminal, plain lines otherwise.

    for item in progress(items, total=len(items), label="ingest"):
        ...

On a TTY stderr it redraws one line (`ingest [#######.......]  48%  480/1000`) at most ten times a
second and ends it with a newline. Anywhere else (a pipe, a log file, journald) it writes a plain
line at each tenth of the way (or every `step` items when the total is unknown) and one at the
end. Labels and counts only: never pass anything that names a patient.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")
WIDTH = 30
REDRAW_SECONDS = 0.1


Track = "Callable[[Iterable[T], int | None, str], Iterable[T]]"


def untracked(iterable: Iterable[T], total: int | None = None, label: str = "") -> Iterable[T]:
    """No progress output: what stages use unless a command asks for `progress`."""
    return iterable


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    label: str = "",
    stream: TextIO | None = None,
    step: int = 1000,
) -> Iterator[T]:
    out = stream or sys.stderr
    tty = out.isatty()
    done, last_draw, last_tenth = 0, 0.0, 0
    for item in iterable:
        yield item
        done += 1
        if tty:
            now = time.monotonic()
            if now - last_draw >= REDRAW_SECONDS or done == total:
                out.write("\r" + bar(label, done, total))
                out.flush()
                last_draw = now
        elif total:
            tenth = done * 10 // total
            if tenth > last_tenth and done < total:
                out.write(f"{label}: {done}/{total} ({tenth * 10}%)\n")
                last_tenth = tenth
        elif done % step == 0:
            out.write(f"{label}: {done}\n")
    if tty:
        out.write("\r" + bar(label, done, total) + "\n")
    else:
        out.write(f"{label}: done, {done}" + (f"/{total}" if total else "") + "\n")
    out.flush()


def bar(label: str, done: int, total: int | None) -> str:
    if not total:
        return f"{label} {done}"
    filled = min(WIDTH, done * WIDTH // total)
    return f"{label} [{'#' * filled}{'.' * (WIDTH - filled)}] {min(100, done * 100 // total):3d}%  {done}/{total}"
