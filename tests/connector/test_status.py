"""`status`: counters from every stage's tables, the last run of each job, and what needs a person."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ccm_connector import status
from ccm_connector.config import Config, load_config
from ccm_connector.store import open_store

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
CLI = Path(sys.executable).parent / "ccm-connector"


def ago(days: float) -> str:
    return (NOW - dt.timedelta(days=days)).isoformat(timespec="seconds")


@pytest.fixture
def cfg(local_instance: Path) -> Config:
    return load_config(local_instance / "connector.toml")


def fill(conn: sqlite3.Connection) -> None:
    for i, state in enumerate(["mapped"] * 5 + ["ignored", "rejected", "conflict", "conflict"]):
        conn.execute(
            "INSERT INTO inbound_message (sender, control_id, content_hash, received_at, source, raw, status, ack_code)"
            " VALUES ('EHR', ?, ?, ?, 'mllp:x', X'00', ?, 'AA')",
            (f"C{i}", f"h{i}", ago(1), state),
        )
    for days, reason in (
        (1, "no MSH segment"),
        (2, "no MSH segment"),
        (3, "frame over the size limit"),
        (30, "no MSH segment"),
    ):
        conn.execute(
            "INSERT INTO quarantine (at, source, reason, size, content) VALUES (?, 'mllp:x', ?, 1, X'00')",
            (ago(days), reason),
        )
    conn.execute(
        "INSERT INTO exchange_quarantine (at, direction, name, reason) VALUES (?, 'inbound', 'x.pgp', 'bad file name')",
        (ago(2),),
    )
    for i, (days, state, reason) in enumerate(
        [
            (1, "accepted", None),
            (2, "accepted", None),
            (1, "refused", "signed by a key that is not pinned"),
            (20, "refused", "old"),
        ]
    ):
        conn.execute(
            "INSERT INTO return_file (content_hash, name, size, received_at, status, reason) VALUES (?, 'rt.pgp', 1, ?, ?, ?)",
            (f"r{i}", ago(days), state, reason),
        )
    for seq, state in ((1, "sent"), (2, "sent"), (3, "sealed")):
        conn.execute(
            "INSERT INTO queue_batch (id, sequence, period, created_at, file_name, content_hash, document_hash, recipients,"
            " signer, patients, touchpoints, identifiers, status) VALUES (?, ?, '2026-11', ?, ?, ?, 'd', '[]', 'S', 1, 1, 0, ?)",
            (f"B{seq}", seq, ago(1), f"wq_{seq}.pgp", f"q{seq}", state),
        )
        conn.execute(
            "INSERT INTO queue_item (batch_id, kind, item_key, content_hash, mrn) VALUES (?, 'touchpoint', ?, 'h', 'MRN-1')",
            (f"B{seq}", f"tp{seq}"),
        )
    for kind, state in (
        ("review_packet", "sent"),
        ("charges", "failed"),
        ("charges", "failed"),
        ("review_packet", "pending"),
    ):
        conn.execute(
            "INSERT INTO outbound (kind, subject, destination, payload, status, created_at) VALUES (?, 'MRN-9|2026-10', 'folder', X'00', ?, ?)",
            (kind, state, ago(1)),
        )
    for i, (month, state) in enumerate(
        [
            ("2026-08", "released"),
            ("2026-09", "released"),
            ("2026-10", "released"),
            ("2026-10", "rejected"),
            ("2026-11", "awaiting_signoff"),
            ("2026-11", "awaiting_signoff"),
            ("2026-11", "signed"),
            ("2026-11", "not_billable"),
        ]
    ):
        conn.execute(
            "INSERT INTO patient_month (mrn, month, state, billable, facts, decision, reconciliation, packet, packet_hash, updated_at)"
            " VALUES (?, ?, ?, 1, '{}', '{}', '[]', '{}', 'h', ?)",
            (f"MRN-{i}", month, state, ago(1)),
        )
    runs = [
        ("inbox", ago(0.1), "ok", {"runner": "service", "counts": {"files": 2, "messages": 9}}),
        ("queue_export", ago(1), "ok", {"runner": "service", "counts": {}}),
        (
            "queue_export",
            ago(0.2),
            "failed",
            {"runner": "service", "reason": "queue export: connection refused"},
        ),
        (
            "key_expiry",
            ago(0.5),
            "ok",
            {
                "runner": "service",
                "counts": {
                    "ok": 2,
                    "warn": 1,
                    "fail": 0,
                    "problems": [
                        {
                            "what": "partner key " + "B" * 40,
                            "status": "warn",
                            "detail": "expires in 9 days (2026-11-29); renew and re-pin",
                        }
                    ],
                },
            },
        ),
        ("dispatch", ago(0.01), None, {"runner": "service"}),
    ]
    for job, started, outcome, detail in runs:
        conn.execute(
            "INSERT INTO job_run (job, started_at, finished_at, outcome, detail) VALUES (?, ?, ?, ?, ?)",
            (job, started, started if outcome else None, outcome, json.dumps(detail)),
        )


def test_status_counts_every_stage_and_says_what_needs_a_person(cfg: Config) -> None:
    conn = open_store(cfg.store.path)
    fill(conn)
    result = status.gather(cfg, conn, NOW)
    c = result["counters"]
    assert c["received"] == 9 and c["messages"] == {
        "mapped": 5,
        "ignored": 1,
        "rejected": 1,
        "conflict": 2,
    }
    assert (c["quarantined"], c["exchange_quarantined"], c["conflicts"]) == (4, 1, 2)
    assert (c["queued"], c["sent"], c["queue_files_unsent"]) == (3, 2, 1)
    assert (c["returns_accepted"], c["returns_refused"]) == (2, 2)
    assert c["outbound"] == {"sent": 1, "failed": 2, "pending": 1}
    assert result["patient_months"] == {
        "2026-09": {"released": 1},
        "2026-10": {"rejected": 1, "released": 1},
        "2026-11": {"awaiting_signoff": 2, "not_billable": 1, "signed": 1},
    }
    runs = {r["job"]: r for r in result["jobs"]}
    assert runs["inbox"]["outcome"] == "ok" and runs["inbox"]["detail"]["counts"]["messages"] == 9
    assert runs["queue_export"]["outcome"] == "failed"  # the latest run
    assert runs["dispatch"]["outcome"] == "running"
    assert runs["retention"]["outcome"] == "never run"

    attention = {item["what"]: item for item in result["needs_attention"]}
    assert attention["quarantined HL7 input"]["count"] == 3  # the 30-day-old one is history
    assert (
        attention["quarantined HL7 input"]["reason"]
        == "last 7 days: 2 x no MSH segment; 1 x frame over the size limit"
    )
    assert attention["quarantined exchange files"]["count"] == 1
    assert attention["conflicting messages"]["count"] == 2
    assert attention["refused returns"] == {
        "what": "refused returns",
        "count": 1,
        "reason": "last 7 days: 1 x signed by a key that is not pinned",
    }
    assert attention["patient-months of 2026-11 awaiting sign-off"]["count"] == 2
    assert attention["patient-months of 2026-10 rejected at sign-off"]["count"] == 1
    assert attention["failed outbound charges"]["count"] == 2
    assert "connection refused" in attention["job queue_export failed"]["reason"]
    assert attention["partner key " + "B" * 40]["reason"].startswith("warn: expires in 9 days")
    assert len(attention) == 9
    assert "MRN-" not in json.dumps(result)  # no patient in status

    text = status.render(result)
    assert (
        "HL7: 9 received (conflict 2, ignored 1, mapped 5, rejected 1), 4 quarantined, 2 conflicts"
        in text
    )
    assert "returns: 2 accepted, 2 refused" in text
    assert "  2026-11: 2 awaiting_signoff, 1 not_billable, 1 signed" in text
    assert "  retention     never run" in text
    assert "  ! conflicting messages: 2 (" in text


def test_an_empty_store_needs_nobody(cfg: Config) -> None:
    result = status.gather(cfg, open_store(cfg.store.path), NOW)
    assert result["needs_attention"] == []
    assert result["counters"]["received"] == 0
    assert "needs a person now: nothing" in status.render(result)


def test_status_json_on_the_command_line(cfg: Config) -> None:
    fill(open_store(cfg.store.path))
    out = subprocess.run(
        [str(CLI), "--config", str(cfg.source), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    parsed = json.loads(out.stdout)
    assert set(parsed) == {
        "practice",
        "as_of",
        "counters",
        "patient_months",
        "jobs",
        "needs_attention",
    }
    text = subprocess.run(
        [str(CLI), "--config", str(cfg.source), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 0 and "needs a person now:" in text.stdout
