"""The durable store: one SQLite file, schema by numbered migrations.

Every stage reads pending work here and records its result in one transaction. The file is
created 0600 inside a 0700 folder; WAL with synchronous=FULL, because an HL7 ACK or a file
acknowledgement depends on the commit having reached the disk.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import OperationalError

MIGRATION_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


class SchemaTooNew(OperationalError):
    """The store was written by a newer release; refusing to touch it."""


def migrations() -> list[Migration]:
    """The packaged migrations, in version order."""
    found = []
    for entry in resources.files("ccm_connector").joinpath("migrations").iterdir():
        m = MIGRATION_NAME.fullmatch(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..n without gaps: {versions}")
    return found


def make_private_dir(path: Path) -> None:
    """Create a folder (and parents) readable by the owner only; tighten an existing one."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _touch_private(path: Path) -> None:
    """Create the store file 0600 before SQLite does; tighten an existing one.

    An existing store is never opened here: closing any descriptor of a database file drops
    every POSIX lock this process holds on it, including other SQLite connections' locks
    (the service's listener and jobs share the process), which corrupts WAL locking.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return
    os.close(fd)


def connect(path: Path) -> sqlite3.Connection:
    """Open the store without migrating (for `doctor` and tests that inspect versions)."""
    make_private_dir(path.parent)
    _touch_private(path)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.chmod(side, 0o600)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] or 0


def migrate(conn: sqlite3.Connection, available: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations, each in its own transaction; return the versions applied."""
    available = migrations() if available is None else available
    current = schema_version(conn)
    newest = available[-1].version if available else 0
    if current > newest:
        raise SchemaTooNew(
            f"store schema version {current} is newer than this release knows ({newest}); "
            "upgrade ccm-connector before using this store"
        )
    applied = []
    for mig in available:
        if mig.version <= current:
            continue
        try:
            conn.executescript("BEGIN IMMEDIATE;\n" + mig.sql)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                (mig.version, mig.name),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise OperationalError(f"migration {mig.version:04d}_{mig.name} failed: {e}") from None
        applied.append(mig.version)
    return applied


def open_store(path: Path) -> sqlite3.Connection:
    """Open the store, creating or upgrading its schema."""
    try:
        conn = connect(path)
    except (sqlite3.Error, OSError) as e:
        raise OperationalError(f"cannot open store {path}: {e}") from None
    migrate(conn)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic unit of work; BEGIN IMMEDIATE so writers queue instead of failing mid-way."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Reads that all see the store as it was at the first of them (one WAL read transaction).

    Inside a transaction already begun, the reads are that transaction's.
    """
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN DEFERRED")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")  # a read transaction: nothing to commit, the snapshot ends
