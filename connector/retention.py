"""Retention: prune what [retention] says may go; keep billing output and the audit log.

| what | where | after | how |
|---|---|---|---|
| raw inbound HL7 | `inbound_message.raw`, `quarantine.content` | `raw_hl7_days` | emptied; the row, its hash and its links stay |
| decrypted working files | files under `[store] data_dir/work/` | `working_files_days` (never younger than an hour) | deleted |
| our copies of sent work queues | `queue_batch.sealed` of batches already sent | `queue_copies_days` | set to NULL; the row and its hashes stay |

Never touched: billing output (`[billing] output_dir`, `billing_*`, `outbound`), `audit_event`,
records, returns. A message in conflict waits for a person and keeps its raw bytes whatever
its age.

Idempotent and crash-safe: the database part and its audit event are one transaction; the audit
event is written before the files are deleted, so a kill half-way leaves files that the next
run deletes (and audits again), never a deletion without its event.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from . import audit, logs
from .config import Config
from .store import open_store, transaction

log = logs.get_logger("retention")

WORK_DIR = "work"
MIN_FILE_AGE = dt.timedelta(hours=1)  # a working file younger than this may be in use


@dataclass(frozen=True)
class Pruned:
    raw_hl7: int = 0
    quarantine: int = 0
    queue_copies: int = 0
    working_files: int = 0


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="microseconds")


def old_working_files(root: Path, before: dt.datetime) -> list[Path]:
    """Files (and symlinks, never followed) under root last modified before `before`."""
    if not root.is_dir() or root.is_symlink():
        return []
    cutoff = before.timestamp()
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            path = Path(folder) / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if (
                stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)
            ) and info.st_mtime < cutoff:
                found.append(path)
    return sorted(found)


def _remove_empty_dirs(root: Path) -> None:
    for folder, _dirs, _files in sorted(os.walk(root, followlinks=False), key=lambda w: -len(w[0])):
        if Path(folder) != root:
            try:
                os.rmdir(folder)
            except OSError:
                pass  # not empty


def prune(cfg: Config, now: dt.datetime | None = None) -> dict:
    """Prune everything past its retention period; return the counts (also in the audit log)."""
    now = now or dt.datetime.now(dt.UTC)
    r = cfg.retention
    raw_before = _stamp(now - dt.timedelta(days=r.raw_hl7_days))
    queue_before = _stamp(now - dt.timedelta(days=r.queue_copies_days))
    files = old_working_files(
        cfg.store.data_dir / WORK_DIR,
        now - max(dt.timedelta(days=r.working_files_days), MIN_FILE_AGE),
    )
    key = audit.read_key(cfg.audit.key_file)
    conn = open_store(cfg.store.path)
    try:
        conn.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed, not left readable
        with transaction(conn):
            pruned = Pruned(
                raw_hl7=_prune_raw(conn, raw_before),
                quarantine=conn.execute(
                    "UPDATE quarantine SET content = X'' WHERE julianday(at) < julianday(?) AND length(content) > 0",
                    (raw_before,),
                ).rowcount,
                queue_copies=_prune_queue_copies(conn, queue_before),
                working_files=len(files),
            )
            counts = asdict(pruned)
            if any(counts.values()):
                audit.record(
                    conn,
                    key,
                    "retention.pruned",
                    "retention",
                    at=now,
                    raw_hl7_days=r.raw_hl7_days,
                    working_files_days=r.working_files_days,
                    queue_copies_days=r.queue_copies_days,
                    **counts,
                )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # old pages leave the write-ahead log too
    finally:
        conn.close()
    for path in files:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    if files:
        _remove_empty_dirs(cfg.store.data_dir / WORK_DIR)
    logs.event(log, "retention.pruned", **counts)
    return counts


def _prune_raw(conn: sqlite3.Connection, before: str) -> int:
    # A 'conflict' waits for a person: its bytes stay whatever their age.
    return conn.execute(
        "UPDATE inbound_message SET raw = X'' WHERE julianday(received_at) < julianday(?)"
        " AND length(raw) > 0 AND status != 'conflict'",
        (before,),
    ).rowcount


def _prune_queue_copies(conn: sqlite3.Connection, before: str) -> int:
    return conn.execute(
        "UPDATE queue_batch SET sealed = NULL WHERE status = 'sent' AND julianday(sent_at) < julianday(?)"
        " AND sealed IS NOT NULL",
        (before,),
    ).rowcount
