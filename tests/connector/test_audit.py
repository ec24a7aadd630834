"""The audit chain: appended events verify; an edited, removed or re-ordered row is caught."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ccm_connector import audit
from ccm_connector.store import open_store

KEY = b"k" * 32


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = open_store(tmp_path / "s.db")
    for i in range(5):
        audit.record(c, KEY, "hl7.received", f"msg-{i}", sender="EHR", count=i)
    return c


def test_an_untouched_chain_verifies(conn: sqlite3.Connection) -> None:
    verdict = audit.verify(conn, KEY)
    assert verdict.ok and verdict.events == 5


def test_the_store_refuses_updates_and_deletes(conn: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_event SET subject = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_event WHERE seq = 2")


def tamper(db: Path, sql: str) -> None:
    """Edit the store as an attacker would: with the sqlite3 tool, triggers dropped."""
    script = "DROP TRIGGER audit_event_no_update; DROP TRIGGER audit_event_no_delete; " + sql
    subprocess.run(["sqlite3", str(db), script], check=True, timeout=30)


def test_an_edited_row_is_caught(conn: sqlite3.Connection, tmp_path: Path) -> None:
    conn.close()
    tamper(tmp_path / "s.db", "UPDATE audit_event SET detail = '{\"count\":99}' WHERE seq = 3;")
    verdict = audit.verify(open_store(tmp_path / "s.db"), KEY)
    assert verdict.broken_at == 3 and "edited" in verdict.reason


def test_a_removed_row_is_caught(conn: sqlite3.Connection, tmp_path: Path) -> None:
    conn.close()
    tamper(tmp_path / "s.db", "DELETE FROM audit_event WHERE seq = 2;")
    verdict = audit.verify(open_store(tmp_path / "s.db"), KEY)
    assert verdict.broken_at == 3


def test_a_wrong_key_fails_at_the_first_event(conn: sqlite3.Connection) -> None:
    assert audit.verify(conn, b"x" * 32).broken_at == 1


def test_audit_verify_command_reports_the_break(local_instance: Path) -> None:
    cli = Path(sys.executable).parent / "ccm-connector"
    config = local_instance / "connector.toml"
    key = audit.read_key(local_instance / "secrets/audit.key")
    conn = open_store(local_instance / "data/connector.db")
    for i in range(3):
        audit.record(conn, key, "file.sent", f"sha-{i}")
    conn.close()
    ok = subprocess.run([str(cli), "--config", str(config), "audit", "verify"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "intact: 3 events" in ok.stdout
    tamper(local_instance / "data/connector.db", "UPDATE audit_event SET kind = 'file.received' WHERE seq = 2;")
    bad = subprocess.run([str(cli), "--config", str(config), "audit", "verify"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "BROKEN at event 2" in bad.stdout
