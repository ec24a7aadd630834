"""The append-only, hash-chained audit log.

Each event's MAC is HMAC-SHA256(key, previous MAC + canonical JSON of the event). The key is
held in a file outside the store, so someone who can edit the database cannot re-chain it.
Events carry ids, hashes, counts and reasons only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise ValueError(f"audit key file {path} holds fewer than 32 bytes")
    return key


def _canonical(at: str, kind: str, subject: str, detail: str) -> bytes:
    return json.dumps([at, kind, subject, detail], ensure_ascii=False, separators=(",", ":")).encode()


def _mac(key: bytes, prev: str, at: str, kind: str, subject: str, detail: str) -> str:
    return hmac.new(key, prev.encode() + _canonical(at, kind, subject, detail), hashlib.sha256).hexdigest()


def record(conn: sqlite3.Connection, key: bytes, kind: str, subject: str, at: dt.datetime | None = None, **detail: Any) -> int:
    """Append one event inside the caller's transaction; return its sequence number."""
    stamp = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="microseconds")
    body = json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    row = conn.execute("SELECT mac FROM audit_event ORDER BY seq DESC LIMIT 1").fetchone()
    prev = row[0] if row else GENESIS
    mac = _mac(key, prev, stamp, kind, subject, body)
    cur = conn.execute(
        "INSERT INTO audit_event (at, kind, subject, detail, prev_mac, mac) VALUES (?, ?, ?, ?, ?, ?)",
        (stamp, kind, subject, body, prev, mac),
    )
    return int(cur.lastrowid)


@dataclass(frozen=True)
class Verdict:
    events: int
    broken_at: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(conn: sqlite3.Connection, key: bytes) -> Verdict:
    """Walk the chain; report the first event whose link or MAC does not hold."""
    prev = GENESIS
    count = 0
    expected_seq = None
    for row in conn.execute("SELECT seq, at, kind, subject, detail, prev_mac, mac FROM audit_event ORDER BY seq"):
        seq, at, kind, subject, detail, prev_mac, mac = row
        if expected_seq is not None and seq != expected_seq:
            return Verdict(count, seq, f"events {expected_seq}..{seq - 1} are missing")
        if prev_mac != prev:
            return Verdict(count, seq, "link to the previous event is broken")
        if not hmac.compare_digest(mac, _mac(key, prev, at, kind, subject, detail)):
            return Verdict(count, seq, "content does not match its MAC (edited)")
        prev = mac
        count += 1
        expected_seq = seq + 1
    return Verdict(count, None, None)
