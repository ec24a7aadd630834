"""Physician review and sign-off of patient-months.

A review packet goes to the EHR as an MDM^T02 document awaiting signature (TXA-17 "DO"),
its document id carrying the packet's hash. A signature comes back from the EHR (MDM with
TXA-17 authenticated and TXA-22 the billing practitioner) or from `ccm-connector signoff`.
Either way it binds to the packet hash: if the patient-month changed since, it does not sign.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass

from . import audit, logs
from .config import Config
from .errors import InputError
from .hl7.outbound import Document, Party, PatientId, mdm_t02
from .month_close import parse_month
from .packet import packet_text
from .records import Signature
from .store import transaction

log = logs.get_logger("signoff")
DOCUMENT_PREFIX = "CCMRV-"
REVIEW_DOCUMENT_TYPE = "CCM-REVIEW"
CARE_PLAN_DOCUMENT_TYPE = "CCM-PLAN"
# HL7 table 0271 (document completion status): authenticated or legally authenticated signs.
SIGNED_STATUSES = frozenset({"AU", "LA"})
# A document returned incomplete or cancelled is the physician's rejection.
REJECTED_STATUSES = frozenset({"IN", "CA"})
REJECTED_AVAILABILITY = frozenset({"CA", "OB", "UN"})  # HL7 table 0273


@dataclass(frozen=True)
class SignOff:
    """A physician's decision on one review packet, from the EHR or the CLI."""

    document_id: str | None  # our TXA-12 (carries the packet hash); None from the CLI
    mrn: str
    month: str | None
    npi: str
    outcome: str  # approved | rejected
    reason: str | None
    via: str  # hl7:<message id> | cli


def document_id(digest: str) -> str:
    return DOCUMENT_PREFIX + digest[:24]


def outcome_of(completion: str, availability: str) -> str | None:
    """approved / rejected / None (not a decision) from TXA-17 and TXA-19."""
    if completion in REJECTED_STATUSES or availability in REJECTED_AVAILABILITY:
        return "rejected"
    if completion in SIGNED_STATUSES:
        return "approved"
    return None


def record_signature(conn: sqlite3.Connection, key: bytes, sig: SignOff, now: dt.datetime, cfg: Config) -> str:
    """Apply a signature inside the caller's transaction; return what happened (for output and audit).

    Refused (InputError): unknown patient-month, a month not awaiting sign-off, an NPI that is
    not the billing practitioner's, or a document whose packet has changed since it was sent.
    """
    if sig.document_id is not None:
        row = conn.execute(
            "SELECT * FROM patient_month WHERE mrn = ? AND substr(packet_hash, 1, 24) = ?", (sig.mrn, sig.document_id.removeprefix(DOCUMENT_PREFIX))
        ).fetchone()
        if row is None:
            raise InputError(f"document {sig.document_id}: no patient-month has this packet any more (it changed after it was sent); a new packet will be sent")
    else:
        row = conn.execute("SELECT * FROM patient_month WHERE mrn = ? AND month = ?", (sig.mrn, sig.month)).fetchone()
        if row is None:
            raise InputError(f"that patient-month of {sig.month} is not reconciled yet (run `ccm-connector reconcile --month {sig.month}`)")
    # Error messages reach stderr and logs: name the month, never the patient.
    where = f"the patient-month of {row['month']}"
    if row["state"] in ("released",):
        raise InputError(f"{where}: already released to billing; void it first (`ccm-connector billing void`)")
    if row["state"] == "not_billable" and sig.outcome == "approved":
        raise InputError(f"{where}: not billable, nothing to approve (see `ccm-connector reconcile --month {row['month']}`)")
    billing_npi = json.loads(row["facts"])["billing_practitioner"]
    if sig.npi != billing_npi:
        raise InputError(f"{where}: NPI {sig.npi} is not its billing practitioner; only the billing practitioner may sign")
    stamp = now.isoformat()
    conn.execute(
        "UPDATE signoff SET voided_at = ?, void_reason = 'superseded by a later decision' WHERE mrn = ? AND month = ? AND voided_at IS NULL",
        (stamp, row["mrn"], row["month"]),
    )
    conn.execute(
        "INSERT INTO signoff (mrn, month, packet_hash, npi, outcome, reason, via, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (row["mrn"], row["month"], row["packet_hash"], sig.npi, sig.outcome, sig.reason, sig.via, stamp),
    )
    state = "signed" if sig.outcome == "approved" else "rejected"
    conn.execute("UPDATE patient_month SET state = ?, updated_at = ? WHERE mrn = ? AND month = ?", (state, stamp, row["mrn"], row["month"]))
    audit.record(conn, key, f"signoff.{sig.outcome}", f"{row['mrn']}|{row['month']}", at=now, hash=row["packet_hash"], npi=sig.npi, via=sig.via)
    draft = json.loads(row["packet"])["care_plan"]["draft"]
    if draft is not None:
        decide_draft(conn, key, cfg, row, draft, sig, now)
    return f"{where} {state} by NPI {sig.npi}"


def applied_elements(current: list[str], changes: list[dict]) -> list[str]:
    """The plan's element list after a draft's element-by-element changes."""
    elements = list(current)
    for change in changes:
        name = change["element"]
        if change["action"] == "remove":
            elements = [e for e in elements if e != name]
        elif name not in elements:
            elements.append(name)
    return elements


def decide_draft(conn: sqlite3.Connection, key: bytes, cfg: Config, row: sqlite3.Row, draft: dict, sig: SignOff, now: dt.datetime) -> None:
    """The physician's decision on the month's care-plan draft, taken once with its sign-off.

    Approved: the revised plan becomes the current plan (the next queue carries it) and goes to
    the EHR as an MDM^T02 CCM-PLAN. Rejected: the reason goes back to the offshore team.
    """
    if conn.execute("SELECT 1 FROM care_plan_review WHERE draft_id = ?", (draft["id"],)).fetchone():
        return
    mrn, new_id = row["mrn"], None
    if sig.outcome == "approved":
        current = json.loads(row["facts"])["care_plan"] or {"elements": []}
        elements = applied_elements(current["elements"], draft["changes"])
        day = now.astimezone(cfg.zone).date().isoformat()
        new_id = f"CCMPLAN-{draft['id']}"
        conn.execute(
            "INSERT INTO care_plan (document_id, mrn, date, elements, reviewed_on) VALUES (?, ?, ?, ?, ?)",
            (new_id, mrn, day, json.dumps(elements), day),
        )
        patient = conn.execute("SELECT * FROM patient WHERE mrn = ?", (mrn,)).fetchone()
        text = tuple(f"{c['action']} {c['element']}: {c.get('text') or ''}".strip() for c in draft["changes"])
        doc = Document(CARE_PLAN_DOCUMENT_TYPE, new_id, now, "AU", sig.npi, text, tuple(("CCM-ELEM", "ST", e) for e in elements))
        control = f"CP{draft['id']:010d}"
        message = mdm_t02(doc, PatientId(mrn, cfg.practice.id, *_name(patient)), Party(cfg.mllp.application, cfg.practice.id),
                          Party(cfg.signoff.ehr_application, cfg.signoff.ehr_facility), control, now)
        conn.execute(
            "INSERT INTO outbound (kind, subject, control_id, destination, payload, status, created_at) VALUES ('care_plan', ?, ?, 'ehr', ?, 'pending', ?)",
            (f"{mrn}|{new_id}", control, message.encode(), now.isoformat()),
        )
    conn.execute(
        "INSERT INTO care_plan_review (draft_id, mrn, month, outcome, reason, new_document_id, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (draft["id"], mrn, row["month"], sig.outcome, sig.reason, new_id, now.isoformat()),
    )
    audit.record(conn, key, f"care_plan.{sig.outcome}", f"{mrn}|{row['month']}", at=now, draft=draft["id"], document=new_id)


def signoff_command(cfg: Config, conn: sqlite3.Connection, mrn: str, month: str, npi: str, reject: bool, reason: str | None) -> str:
    if reject and not reason:
        raise InputError("--reject needs --reason: the offshore team and the audit trail need to know why")
    sig = SignOff(None, mrn, parse_month(month), npi, "rejected" if reject else "approved", reason, "cli")
    now = dt.datetime.now(dt.UTC)
    with transaction(conn):
        result = record_signature(conn, audit.read_key(cfg.audit.key_file), sig, now, cfg)
    logs.event(log, "signoff.recorded", outcome=sig.outcome, via="cli")
    return result


def packet_document(cfg: Config, row: sqlite3.Row, patient: sqlite3.Row | None, now: dt.datetime) -> tuple[str, str]:
    """(control id, MDM^T02 text) for one patient-month's review packet."""
    packet = json.loads(row["packet"])
    doc = Document(
        REVIEW_DOCUMENT_TYPE, document_id(row["packet_hash"]), now, "DO", packet["billing_practitioner"] or None,
        tuple(packet_text(packet)), (("CCM-HASH", "ST", row["packet_hash"]), ("CCM-MONTH", "ST", row["month"])),
    )
    pid = PatientId(row["mrn"], cfg.practice.id, *(_name(patient)))
    control = "RV" + row["packet_hash"][:18]
    return control, mdm_t02(doc, pid, Party(cfg.mllp.application, cfg.practice.id), Party(cfg.signoff.ehr_application, cfg.signoff.ehr_facility), control, now)


def _name(patient: sqlite3.Row | None) -> tuple:
    if patient is None:
        return ("", "", None, "")
    birth = dt.date.fromisoformat(patient["birth_date"]) if patient["birth_date"] else None
    return (patient["family"], patient["given"], birth, patient["sex"] or "")


def dispatch_packets(cfg: Config, conn: sqlite3.Connection, now: dt.datetime | None = None) -> dict:
    """Queue an MDM^T02 for every patient-month awaiting sign-off whose packet was not sent yet,
    then deliver what is pending. Idempotent: one outbound row per packet hash."""
    now = now or dt.datetime.now(dt.UTC)
    queued = 0
    rows = conn.execute("SELECT * FROM patient_month WHERE state = 'awaiting_signoff' ORDER BY month, mrn").fetchall()
    with transaction(conn):
        for row in rows:
            subject = f"{row['mrn']}|{row['month']}|{row['packet_hash']}"
            if conn.execute("SELECT 1 FROM outbound WHERE kind = 'review_packet' AND subject = ?", (subject,)).fetchone():
                continue
            patient = conn.execute("SELECT * FROM patient WHERE mrn = ?", (row["mrn"],)).fetchone()
            control, text = packet_document(cfg, row, patient, now)
            conn.execute(
                "INSERT INTO outbound (kind, subject, control_id, destination, payload, status, created_at) VALUES ('review_packet', ?, ?, ?, ?, 'pending', ?)",
                (subject, control, "ehr", text.encode(), now.isoformat()),
            )
            queued += 1
    delivered = deliver_to_ehr(cfg, conn)
    logs.event(log, "packets.dispatched", queued=queued, delivered=delivered)
    return {"queued": queued, "delivered": delivered}


def deliver_to_ehr(cfg: Config, conn: sqlite3.Connection) -> int:
    """Deliver pending documents for the EHR: to a folder, or over MLLP (sent only on AA)."""
    from .delivery import deliver_pending

    folder = cfg.signoff.folder or (cfg.store.data_dir / "outbox" / "ehr")
    return deliver_pending(conn, ("review_packet", "care_plan"), cfg.signoff.delivery, folder, cfg.signoff.ehr_mllp_host, cfg.signoff.ehr_mllp_port,
                           30, 3, cfg, audit.read_key(cfg.audit.key_file))


def record_plan_shared(cfg: Config, conn: sqlite3.Connection, mrn: str, shared_on: str) -> str:
    """Record the date a copy of the patient's current care plan reached the patient (CLI)."""
    try:
        day = dt.date.fromisoformat(shared_on)
    except ValueError:
        raise InputError(f"--care-plan-shared: must be a date YYYY-MM-DD, got {shared_on!r}") from None
    now = dt.datetime.now(dt.UTC)
    if day > now.astimezone(cfg.zone).date():
        raise InputError("--care-plan-shared: the date is in the future")
    with transaction(conn):
        plan = conn.execute(
            "SELECT document_id, date FROM care_plan WHERE mrn = ? AND date <= ? ORDER BY date DESC, document_id DESC LIMIT 1", (mrn, day.isoformat())
        ).fetchone()
        if plan is None:
            raise InputError("--care-plan-shared: that patient has no care plan dated on or before that day")
        conn.execute("UPDATE care_plan SET shared_on = ? WHERE document_id = ?", (day.isoformat(), plan["document_id"]))
        audit.record(conn, audit.read_key(cfg.audit.key_file), "care_plan.shared", plan["document_id"], at=now, shared_on=day.isoformat(), via="cli")
    return f"care plan {plan['document_id']} of {plan['date']} recorded as shared with the patient on {day}"


def apply_ehr_answer(conn: sqlite3.Connection, key: bytes, cfg: Config, answer: Signature, message_id: int, now: dt.datetime) -> str:
    """Apply the EHR's answer to a review packet (inside intake's transaction).

    Raises InputError (the message is then rejected with the reason) when it is neither signed
    nor rejected, names no practitioner, or cannot apply (another NPI, a changed packet).
    """
    outcome = "rejected" if answer.event == "T11" else outcome_of(answer.completion, answer.availability)
    if outcome is None:
        raise InputError(f"TXA-17: status {answer.completion or '(empty)'} neither signs nor rejects the review packet")
    if answer.authenticator_npi is None:
        raise InputError("TXA-22: the authenticating practitioner is missing")
    decision = SignOff(answer.document_id, answer.mrn, None, answer.authenticator_npi, outcome,
                       answer.reason if outcome == "rejected" else None, f"hl7:{message_id}")
    return record_signature(conn, key, decision, now, cfg)
