"""Store fixtures for reconciliation, sign-off and billing tests: practice records and a return,
written straight into the store (intake and exchange have their own tests)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from zoneinfo import ZoneInfo

from ccm_connector.pseudonym import pseudonym, read_key

CHICAGO = ZoneInfo("America/Chicago")
NPI = "1234567893"


def add_patient(conn: sqlite3.Connection, mrn: str, conditions=("E11.9", "I10"), consent=dt.date(2026, 1, 5), visit=dt.date(2026, 1, 5)) -> None:
    conn.execute("INSERT INTO patient (mrn, family, given, birth_date, sex) VALUES (?, ?, ?, ?, ?)", (mrn, "DOE", "JANE", "1950-02-03", "F"))
    for code in conditions:
        conn.execute("INSERT INTO problem (mrn, code, system, status) VALUES (?, ?, 'I10', 'active')", (mrn, code))
    if visit:
        conn.execute("INSERT INTO service (mrn, date, code, practitioner_npi) VALUES (?, ?, '99214', ?)", (mrn, visit.isoformat(), NPI))
    if consent:
        conn.execute(
            "INSERT INTO consent (mrn, program, date, practitioner_npi, status, document_id) VALUES (?, 'ccm', ?, ?, 'given', ?)",
            (mrn, consent.isoformat(), NPI, f"CONS-{mrn}"),
        )
    elements = ["problems", "outcomes", "goals", "symptoms", "interventions", "medications", "community_services", "coordination", "review_schedule"]
    conn.execute(
        "INSERT INTO care_plan (document_id, mrn, date, elements, shared_on, reviewed_on) VALUES (?, ?, '2026-01-06', ?, '2026-01-07', '2026-10-01')",
        (f"PLAN-{mrn}", mrn, json.dumps(elements)),
    )


def add_touchpoint(conn: sqlite3.Connection, tp_id: str, mrn: str, staff: str, local: dt.datetime, minutes: int) -> None:
    start = local.replace(tzinfo=CHICAGO).astimezone(dt.UTC)
    conn.execute(
        "INSERT INTO touchpoint (id, mrn, staff_id, start_utc, start_offset, minutes, activity, summary) VALUES (?, ?, ?, ?, ?, ?, 'med_rec', 'note')",
        (tp_id, mrn, staff, start.isoformat(), int(local.replace(tzinfo=CHICAGO).utcoffset().total_seconds() // 60), minutes),
    )


def add_batch(conn: sqlite3.Connection, batch_id: str = "B1", period: str = "2026-11", sequence: int = 1) -> None:
    """A work-queue batch already sent for `period` (returns answer it)."""
    conn.execute(
        "INSERT INTO queue_batch (id, sequence, period, created_at, file_name, content_hash, document_hash, recipients, signer,"
        " patients, touchpoints, identifiers, status) VALUES (?, ?, ?, '2026-11-02T00:00:00+00:00', ?, ?, 'd', '[]', 's', 0, 0, 0, 'sent')",
        (batch_id, sequence, period, f"wq_{batch_id}.pgp", f"h-{batch_id}"),
    )


def add_return(conn: sqlite3.Connection, key_file, entries: list[dict], proposed: list[tuple[str, str, str, int]] = (), name: str = "r1",
               drafts: list[tuple[str, str | None, list[dict]]] = (), answers: list[str] = ()) -> int:
    key = read_key(key_file)
    file_id = conn.execute(
        "INSERT INTO return_file (content_hash, name, size, received_at, status, return_id, answers) VALUES (?, ?, 1, '2026-12-01T00:00:00+00:00', 'accepted', ?, ?)",
        (f"hash-{name}", name, name, json.dumps(list(answers))),
    ).lastrowid
    for mrn, revises, changes in drafts:
        conn.execute(
            "INSERT INTO care_plan_draft (return_file_id, pseudonym, revises, changes) VALUES (?, ?, ?, ?)",
            (file_id, pseudonym(key, mrn), revises, json.dumps(changes)),
        )
    for e in entries:
        conn.execute(
            "INSERT INTO return_entry (entry_id, return_file_id, pseudonym, mrn, touchpoint_ids, performer, date, minutes, activity, description)"
            " VALUES (?, ?, ?, NULL, ?, ?, ?, ?, 'med_rec', 'described')",
            (e["id"], file_id, pseudonym(key, e["mrn"]), json.dumps(e["sources"]), e["performer"], e["date"], e["minutes"]),
        )
    for mrn, month, code, units in proposed:
        conn.execute("INSERT INTO proposed_code (return_file_id, pseudonym, month, code, units) VALUES (?, ?, ?, ?, ?)", (file_id, pseudonym(key, mrn), month, code, units))
    return file_id
