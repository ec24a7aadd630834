"""Retention: raw HL7, working files and queue copies go after their periods, audited; records,
hashes, billing output and the audit log stay; a second run does nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from ccm_connector import audit, jobs, retention
from ccm_connector.config import Config, load_config
from ccm_connector.instance import with_values
from ccm_connector.store import open_store

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def ago(days: float) -> str:
    return (NOW - dt.timedelta(days=days)).isoformat(timespec="seconds")


@pytest.fixture
def cfg(local_instance: Path) -> Config:
    config = local_instance / "connector.toml"
    text = with_values(
        config.read_text(),
        {("retention", "working_files_days"): "2", ("retention", "queue_copies_days"): "60"},
    )
    # instance.with_values does not match key names with digits (raw_hl7_days): set it directly.
    text, n = re.subn(r"(?m)^raw_hl7_days = \d+", "raw_hl7_days = 30", text)
    assert n == 1
    config.write_text(text)
    return load_config(config)


def add_message(conn: sqlite3.Connection, control_id: str, days: float, status: str) -> int:
    cur = conn.execute(
        "INSERT INTO inbound_message (sender, control_id, content_hash, received_at, source, message_type, raw, status, ack_code)"
        " VALUES ('EHR^CLINIC', ?, ?, ?, 'mllp:test', 'ADT^A04', ?, ?, 'AA')",
        (
            control_id,
            f"hash-{control_id}",
            ago(days),
            b"MSH|^~\\&|EHR|CLINIC|" + control_id.encode(),
            status,
        ),
    )
    return int(cur.lastrowid)


def add_batch(conn: sqlite3.Connection, sequence: int, days: float, status: str) -> None:
    conn.execute(
        "INSERT INTO queue_batch (id, sequence, period, created_at, file_name, content_hash, document_hash, sealed,"
        " recipients, signer, patients, touchpoints, identifiers, status, sent_at)"
        " VALUES (?, ?, '2026-08', ?, ?, ?, 'doc', ?, '[]', 'SIGNER', 1, 1, 0, ?, ?)",
        (
            f"P-{sequence:06d}",
            sequence,
            ago(days),
            f"wq_P_{sequence:06d}.pgp",
            f"file-{sequence}",
            b"sealed bytes",
            status,
            ago(days) if status == "sent" else None,
        ),
    )


def touch(path: Path, days: float, content: bytes = b"plaintext") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    stamp = (NOW - dt.timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp), follow_symlinks=False)
    return path


@pytest.fixture
def filled(cfg: Config) -> dict:
    conn = open_store(cfg.store.path)
    ids = {
        "old_mapped": add_message(conn, "M1", 40, "mapped"),
        "old_rejected": add_message(conn, "M2", 31, "rejected"),
        "old_ignored": add_message(conn, "M3", 40, "ignored"),
        "old_conflict": add_message(conn, "M4", 40, "conflict"),
        "new_mapped": add_message(conn, "M5", 29, "mapped"),
    }
    conn.execute(
        "INSERT INTO patient (mrn, family, given, message_id) VALUES ('MRN-1', 'DOE', 'JANE', ?)",
        (ids["old_mapped"],),
    )
    conn.execute(
        "INSERT INTO quarantine (at, source, reason, size, content) VALUES (?, 'file:a#1', 'no MSH segment', 4, ?)",
        (ago(45), b"junk"),
    )
    conn.execute(
        "INSERT INTO quarantine (at, source, reason, size, content) VALUES (?, 'file:b#1', 'no MSH segment', 4, ?)",
        (ago(3), b"junk"),
    )
    add_batch(conn, 1, 61, "sent")
    add_batch(conn, 2, 61, "sealed")  # never published: needed to publish it
    add_batch(conn, 3, 10, "sent")
    conn.close()
    work = cfg.store.data_dir / "work"
    billing = cfg.billing.output_dir
    files = {
        "old": touch(work / "returns" / "open-1.tmp", 3),
        "nested_old": touch(work / "x" / "y" / "open-2.tmp", 5),
        "fresh": touch(work / "returns" / "open-3.tmp", 1),
        "billing": touch(billing / "charges-2026-01.csv", 300),
    }
    link = work / "link-to-billing"
    link.symlink_to(files["billing"])
    stamp = (NOW - dt.timedelta(days=9)).timestamp()
    os.utime(link, (stamp, stamp), follow_symlinks=False)
    files["link"] = link
    return {"ids": ids, "files": files}


def test_prune_removes_what_is_due_and_keeps_the_rest(cfg: Config, filled: dict) -> None:
    counts = retention.prune(cfg, NOW)
    assert counts == {"raw_hl7": 3, "quarantine": 1, "queue_copies": 1, "working_files": 3}

    conn = open_store(cfg.store.path)
    raw = {
        r["id"]: (bytes(r["raw"]), r["content_hash"])
        for r in conn.execute("SELECT id, raw, content_hash FROM inbound_message")
    }
    ids = filled["ids"]
    assert raw[ids["old_mapped"]] == (b"", "hash-M1")  # emptied; row and hash kept
    assert raw[ids["old_rejected"]][0] == raw[ids["old_ignored"]][0] == b""
    for kept in ("old_conflict", "new_mapped"):
        assert raw[ids[kept]][0].startswith(b"MSH"), kept
    assert (
        conn.execute("SELECT message_id FROM patient WHERE mrn = 'MRN-1'").fetchone()[0]
        == ids["old_mapped"]
    )
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert [bytes(r[0]) for r in conn.execute("SELECT content FROM quarantine ORDER BY id")] == [
        b"",
        b"junk",
    ]
    sealed = {
        r["sequence"]: r["sealed"] for r in conn.execute("SELECT sequence, sealed FROM queue_batch")
    }
    assert sealed[1] is None and sealed[2] == b"sealed bytes" and sealed[3] == b"sealed bytes"

    files = filled["files"]
    assert (
        not files["old"].exists()
        and not files["nested_old"].exists()
        and not files["link"].is_symlink()
    )
    assert not (cfg.store.data_dir / "work" / "x").exists()  # emptied folders go too
    assert (
        files["fresh"].exists() and files["billing"].read_bytes() == b"plaintext"
    )  # the link's target is kept
    assert (cfg.store.data_dir / "work").is_dir()

    (event,) = conn.execute("SELECT * FROM audit_event WHERE kind = 'retention.pruned'").fetchall()
    detail = json.loads(event["detail"])
    assert detail == {
        **counts,
        "raw_hl7_days": 30,
        "working_files_days": 2,
        "queue_copies_days": 60,
    }
    assert audit.verify(conn, audit.read_key(cfg.audit.key_file)).ok


def test_a_second_prune_does_nothing_and_audits_nothing(cfg: Config, filled: dict) -> None:
    retention.prune(cfg, NOW)
    assert retention.prune(cfg, NOW) == {
        "raw_hl7": 0,
        "quarantine": 0,
        "queue_copies": 0,
        "working_files": 0,
    }
    conn = open_store(cfg.store.path)
    assert (
        conn.execute("SELECT count(*) FROM audit_event WHERE kind = 'retention.pruned'").fetchone()[
            0
        ]
        == 1
    )


def test_a_working_file_younger_than_an_hour_is_never_pruned(cfg: Config) -> None:
    config = Path(cfg.source)
    config.write_text(with_values(config.read_text(), {("retention", "working_files_days"): "0"}))
    cfg = load_config(config)
    young = touch(cfg.store.data_dir / "work" / "in-use.tmp", 0.01)
    old = touch(cfg.store.data_dir / "work" / "done.tmp", 0.1)
    assert retention.prune(cfg, NOW)["working_files"] == 1
    assert young.exists() and not old.exists()


def test_the_retention_job_records_and_audits_its_run(cfg: Config, filled: dict) -> None:
    assert jobs.run_job(cfg, "retention", now=lambda: NOW) == "ok"
    conn = open_store(cfg.store.path)
    row = conn.execute("SELECT outcome, detail FROM job_run WHERE job = 'retention'").fetchone()
    assert row["outcome"] == "ok"
    assert json.loads(row["detail"])["counts"] == {
        "raw_hl7": 3,
        "quarantine": 1,
        "queue_copies": 1,
        "working_files": 3,
    }
    kinds = [r[0] for r in conn.execute("SELECT kind FROM audit_event ORDER BY seq")]
    assert kinds == ["retention.pruned", "job.finished"]
