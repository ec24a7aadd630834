"""The store: numbered migrations (fresh, upgrade, refuse newer), permissions, pragmas."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from ccm_connector.store import (
    Migration,
    SchemaTooNew,
    connect,
    migrate,
    migrations,
    open_store,
    schema_version,
    snapshot,
    transaction,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_store_gets_every_migration(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "d" / "s.db")
    assert schema_version(conn) == migrations()[-1].version
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "job_run", "audit_event", "inbound_message"} <= tables


def test_store_file_and_folder_are_private(tmp_path: Path) -> None:
    db = tmp_path / "data" / "s.db"
    conn = open_store(db)
    conn.execute("INSERT INTO job_run (job, started_at) VALUES (?, ?)", ("x", "2026-01-01T00:00:00Z"))
    assert mode(db.parent) == 0o700
    assert mode(db) == 0o600
    assert mode(db.with_name("s.db-wal")) & 0o077 == 0


def test_journal_is_wal_and_sync_is_full(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_migrating_twice_applies_nothing_the_second_time(tmp_path: Path) -> None:
    conn = connect(tmp_path / "s.db")
    assert migrate(conn) == [m.version for m in migrations()]
    assert migrate(conn) == []


def test_an_older_store_is_upgraded_in_order(tmp_path: Path) -> None:
    conn = connect(tmp_path / "s.db")
    first, *rest = migrations()
    assert migrate(conn, [first]) == [1]
    assert schema_version(conn) == 1
    assert migrate(conn) == [m.version for m in rest]
    assert schema_version(conn) == migrations()[-1].version


def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "s.db")
    newer = migrations()[-1].version + 1
    conn.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'future', 'x')", (newer,))
    conn.close()
    with pytest.raises(SchemaTooNew, match=f"schema version {newer} is newer"):
        open_store(tmp_path / "s.db")


def test_a_failing_migration_leaves_nothing_half_applied(tmp_path: Path) -> None:
    conn = connect(tmp_path / "s.db")
    broken = [Migration(1, "ok", "CREATE TABLE a (x);"), Migration(2, "bad", "CREATE TABLE b (x); CREATE TABLE b (y);")]
    with pytest.raises(Exception, match="0002_bad failed"):
        migrate(conn, broken)
    assert schema_version(conn) == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "a" in tables and "b" not in tables


def test_a_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "s.db")
    with pytest.raises(RuntimeError):
        with transaction(conn):
            conn.execute("INSERT INTO job_run (job, started_at) VALUES (?, ?)", ("x", "t"))
            raise RuntimeError("boom")
    assert conn.execute("SELECT count(*) FROM job_run").fetchone()[0] == 0


def test_hostile_strings_round_trip_through_parameters(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "s.db")
    for value in ("' OR 1=1 --", "a;DROP TABLE job_run;", "nul\x00byte", "x" * 10_000):
        conn.execute("INSERT INTO job_run (job, started_at) VALUES (?, ?)", (value, "t"))
        assert conn.execute("SELECT job FROM job_run WHERE job = ?", (value,)).fetchone()[0] == value


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_sqlite_is_new_enough_for_what_we_use() -> None:
    assert sqlite3.sqlite_version_info >= (3, 35)


def test_reads_in_a_snapshot_do_not_see_what_is_written_meanwhile(tmp_path: Path) -> None:
    reader, writer = open_store(tmp_path / "s.db"), open_store(tmp_path / "s.db")
    with snapshot(reader):
        assert reader.execute("SELECT count(*) FROM patient").fetchone()[0] == 0
        writer.execute("INSERT INTO patient (mrn, family, given) VALUES ('M1', 'DOE', 'JO')")
        assert reader.execute("SELECT count(*) FROM patient").fetchone()[0] == 0
    assert reader.execute("SELECT count(*) FROM patient").fetchone()[0] == 1
