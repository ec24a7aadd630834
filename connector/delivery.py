"""Delivery of recorded outbound items: to a folder, or over MLLP, or to the SFTP drop.

Every item was recorded (status pending) before delivery starts, so nothing is lost; an item
is marked sent only after the file is durably in place or the receiver answered AA with MSA-2
matching our MSH-10, so nothing is marked sent that was not received. Re-delivery after a crash
writes the same bytes under the same name, or resends the same control id.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
import time
from pathlib import Path

from . import logs
from .config import Config, Drop
from .hl7.ack import read_ack
from .hl7.mllp import Client, ClientError
from .hl7.reader import ReadError
from .store import make_private_dir, transaction

log = logs.get_logger("delivery")
FILE_KINDS = ("csv", "package")  # files, never MLLP messages
BACKOFF_SECONDS = (1, 2, 5, 10, 30)
_SFTP_DROP = Drop(kind="sftp")
PENDING = "SELECT * FROM outbound WHERE status = 'pending' AND kind IN (SELECT value FROM json_each(?)) ORDER BY id"


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


def _mark(conn: sqlite3.Connection, row_id: int, sent: bool, error: str | None) -> None:
    with transaction(conn):
        if sent:
            conn.execute("UPDATE outbound SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                         (dt.datetime.now(dt.UTC).isoformat(), row_id))
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
) -> int:
    """Deliver every pending item of these kinds; return how many were marked sent."""
    kinds_json = (json.dumps(list(kinds)),)
    sent = 0
    for attempt in range(retries + 1):
        rows = conn.execute(PENDING, kinds_json).fetchall()
        if not rows:
            break
        # MLLP carries HL7 only: CSV files and packages go to the folder then.
        files = [r for r in rows if mode == "folder" or (mode == "mllp" and r["kind"] in FILE_KINDS)]
        for row in files:
            write_atomically(folder, file_name(row), bytes(row["payload"]))
            _mark(conn, row["id"], True, None)
            sent += 1
        wire = [r for r in rows if r not in files]
        if wire and mode == "mllp":
            if host is None:
                raise ValueError("MLLP delivery without a host")
            for row_id, error in asyncio.run(_send_mllp(host, port, wire, timeout)).items():
                _mark(conn, row_id, error is None, error)
                sent += error is None
        elif wire and mode == "sftp":
            sent += _deliver_sftp(conn, wire, cfg)
        if attempt < retries and conn.execute(PENDING, kinds_json).fetchone():
            time.sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
    failed = len(conn.execute(PENDING, kinds_json).fetchall())
    if failed:
        logs.event(log, "delivery.pending", level=30, kinds=",".join(kinds), pending=failed, mode=mode)
    return sent


def _deliver_sftp(conn: sqlite3.Connection, rows: list[sqlite3.Row], cfg: Config | None) -> int:
    """Publish to the billing system's SFTP server (temporary name, then rename; host key pinned)."""
    from .exchange import drop_for
    from .sftp import transport

    if cfg is None:
        raise ValueError("SFTP delivery needs the configuration")
    sent = 0
    try:
        with drop_for(_SFTP_DROP, cfg.billing_sftp) as drop:
            for row in rows:
                drop.publish(cfg.billing_sftp.folder, file_name(row), bytes(row["payload"]))
                _mark(conn, row["id"], True, None)
                sent += 1
    except transport.TransportError as e:
        for row in rows[sent:]:
            _mark(conn, row["id"], False, f"SFTP: {type(e).__name__}")
    return sent
