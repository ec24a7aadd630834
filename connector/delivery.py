"""Delivery of recorded outbound items: to a folder, or over MLLP, or to the SFTP drop.

Every item was recorded (status pending) before delivery starts, so nothing is lost; an item
is marked sent only after the file is durably in place or the receiver answered AA with MSA-2
matching our MSH-10, so nothing is marked sent that was not received. Re-delivery after a crash
writes the same bytes under the same name, or resends the same control id.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

from . import audit, logs
from .config import Config, Drop
from .hl7.ack import read_ack
from .hl7.mllp import Client, ClientError
from .hl7.reader import ReadError
from .store import make_private_dir, transaction

log = logs.get_logger("delivery")
FILE_KINDS = ("csv", "package")  # files, never MLLP messages
BACKOFF_SECONDS = (1, 2, 5, 10, 30)
_SFTP_DROP = Drop(kind="sftp")
BATCH = 200  # rows read (payloads included) and marked per transaction
PENDING_AFTER = (
    "SELECT * FROM outbound WHERE status = 'pending' AND kind IN (SELECT value FROM json_each(?))"
    " AND id > ? ORDER BY id LIMIT ?"
)
COUNT_PENDING = "SELECT count(*) FROM outbound WHERE status = 'pending' AND kind IN (SELECT value FROM json_each(?))"


def file_name(row: sqlite3.Row) -> str:
    if row["kind"] in FILE_KINDS:
        return row["subject"]
    return f"{row['control_id']}.hl7"


def write_atomically(folder: Path, name: str, data: bytes) -> Path:
    """Write to a temporary name, fsync, then rename: a reader never sees half a file."""
    make_private_dir(folder)
    target = folder / name
    tmp = folder / f".{name}.part"
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def _mark(conn: sqlite3.Connection, rows: list[sqlite3.Row], outcomes: list[tuple[int, str | None]], mode: str, audit_key: bytes | None) -> None:
    """Record delivery outcomes (row id, None = delivered, else the reason) in one transaction,
    with an audit event for every item that left (its content hash, never its content)."""
    now = dt.datetime.now(dt.UTC)
    by_id = {row["id"]: row for row in rows}
    with transaction(conn):
        for row_id, error in outcomes:
            if error is None:
                conn.execute("UPDATE outbound SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?", (now.isoformat(), row_id))
                row = by_id[row_id]
                if audit_key is not None:
                    audit.record(conn, audit_key, "file.delivered", f"outbound:{row_id}", at=now, item=row["kind"], destination=mode,
                                 name=file_name(row), sha256=hashlib.sha256(bytes(row["payload"])).hexdigest())
            else:
                conn.execute("UPDATE outbound SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error, row_id))


async def _send_mllp(host: str, port: int, items: list[sqlite3.Row], timeout: float) -> dict[int, str | None]:
    """Send each item on one connection; None = AA matched, else the reason it was not accepted."""
    outcome: dict[int, str | None] = {}
    try:
        async with Client(host, port, timeout=timeout) as client:
            for row in items:
                try:
                    ack = read_ack(await client.send(bytes(row["payload"])))
                except ReadError as e:
                    outcome[row["id"]] = f"reply is not an ACK: {e}"
                    continue
                if ack.control_id != row["control_id"]:
                    outcome[row["id"]] = f"ACK for another message (MSA-2 {ack.control_id!r})"
                    break  # the stream is out of step: reconnect on the next attempt
                outcome[row["id"]] = None if ack.code in ("AA", "CA") else f"receiver answered {ack.code}"
    except (OSError, ClientError, TimeoutError) as e:
        for row in items:
            outcome.setdefault(row["id"], f"no ACK: {type(e).__name__}")
    return outcome


def deliver_pending(
    conn: sqlite3.Connection,
    kinds: tuple[str, ...],
    mode: str,
    folder: Path,
    host: str | None,
    port: int,
    timeout: float,
    retries: int,
    cfg: Config | None = None,
    audit_key: bytes | None = None,
) -> int:
    """Deliver every pending item of these kinds, a batch at a time; return how many were sent."""
    kinds_json = json.dumps(list(kinds))
    sent = 0
    for attempt in range(retries + 1):
        last = 0
        while rows := conn.execute(PENDING_AFTER, (kinds_json, last, BATCH)).fetchall():
            last = rows[-1]["id"]
            sent += _deliver_batch(conn, rows, mode, folder, host, port, timeout, cfg, audit_key)
        pending = conn.execute(COUNT_PENDING, (kinds_json,)).fetchone()[0]
        if not pending:
            break
        if attempt < retries:
            time.sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
    else:
        logs.event(log, "delivery.pending", level=30, kinds=",".join(kinds), pending=pending, mode=mode)
    return sent


def _deliver_batch(
    conn: sqlite3.Connection, rows: list[sqlite3.Row], mode: str, folder: Path, host: str | None, port: int, timeout: float, cfg: Config | None,
    audit_key: bytes | None,
) -> int:
    # MLLP carries HL7 only: CSV files and packages go to the folder then.
    files = [r for r in rows if mode == "folder" or (mode == "mllp" and r["kind"] in FILE_KINDS)]
    for row in files:
        write_atomically(folder, file_name(row), bytes(row["payload"]))
    # A crash before this mark re-delivers the same bytes under the same name: idempotent.
    outcomes: list[tuple[int, str | None]] = [(row["id"], None) for row in files]
    wire = [r for r in rows if r not in files]
    if wire and mode == "mllp":
        if host is None:
            raise ValueError("MLLP delivery without a host")
        outcomes += list(asyncio.run(_send_mllp(host, port, wire, timeout)).items())
    elif wire and mode == "sftp":
        outcomes += _deliver_sftp(wire, cfg)
    _mark(conn, rows, outcomes, mode, audit_key)
    return sum(error is None for _, error in outcomes)


def _deliver_sftp(rows: list[sqlite3.Row], cfg: Config | None) -> list[tuple[int, str | None]]:
    """Publish to the billing system's SFTP server (temporary name, then rename; host key pinned)."""
    from .exchange import drop_for
    from .sftp import transport

    if cfg is None:
        raise ValueError("SFTP delivery needs the configuration")
    outcomes: list[tuple[int, str | None]] = []
    try:
        with drop_for(_SFTP_DROP, cfg.billing_sftp) as drop:
            for row in rows:
                drop.publish(cfg.billing_sftp.folder, file_name(row), bytes(row["payload"]))
                outcomes.append((row["id"], None))
    except transport.TransportError as e:
        outcomes += [(row["id"], f"SFTP: {type(e).__name__}") for row in rows[len(outcomes):]]
    return outcomes
