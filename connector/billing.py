"""Billing output: release signed, billable patient-months once; void to correct.

`close_month` turns each signed patient-month whose signature still matches its packet into
charge lines (one FT1 per code line in a DFT^P03), a CSV charge file and a documentation
package. Everything to be sent is recorded in the store (outbound, pending) in the same
transaction as the release; delivery then marks each item sent, so a crash between the two
re-delivers the same bytes and never releases twice.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from . import audit, logs
from .batches import gc_paused
from .config import Config
from .delivery import deliver_pending
from .documentation import package_html, package_xml
from .errors import InputError
from .hl7.outbound import BillingDialect, ChargeLine, Party, PatientId, dft_p03
from .mappings.billing_dialects import billing_dialect
from .month_close import parse_month
from .progress import untracked
from .store import transaction

log = logs.get_logger("billing")

# Short descriptions printed with the codes (CPT descriptors abbreviated; not the AMA text).
CODE_DESCRIPTIONS = {
    "99490": "CCM clinical staff first 20 min",
    "99439": "CCM clinical staff each addl 20 min",
    "99487": "Complex CCM first 60 min",
    "99489": "Complex CCM each addl 30 min",
    "99491": "CCM physician/QHP first 30 min",
    "99437": "CCM physician/QHP each addl 30 min",
    "99424": "PCM physician/QHP first 30 min",
    "99425": "PCM physician/QHP each addl 30 min",
    "99426": "PCM clinical staff first 30 min",
    "99427": "PCM clinical staff each addl 30 min",
    "G0556": "APCM level 1",
    "G0557": "APCM level 2",
    "G0558": "APCM level 3",
    "G0511": "RHC/FQHC general care management",
}
CSV_COLUMNS = (
    "practice_id", "mrn", "family", "given", "birth_date", "month", "transaction_id", "transaction_type", "code",
    "units", "date_of_service", "diagnoses", "performing_npi", "billing_npi", "rules", "packet_hash",
)


def transaction_id(practice: str, mrn: str, month: str, code: str, release: int, reversal: bool = False) -> str:
    """FT1-2: 12 characters (the 2.5.1 length), stable for the patient-month, code and release."""
    key = f"{practice}|{mrn}|{month}|{code}|{release}|{'R' if reversal else 'C'}".encode()
    return base64.b32encode(hashlib.sha256(key).digest()).decode()[:12]


@dataclass(frozen=True)
class Release:
    mrn: str
    month: str
    lines: list[ChargeLine]
    patient: PatientId
    packet: dict
    signoff: dict


def _patient_id(cfg: Config, conn: sqlite3.Connection, mrn: str) -> PatientId:
    row = conn.execute("SELECT family, given, birth_date, sex FROM patient WHERE mrn = ?", (mrn,)).fetchone()
    if row is None:
        return PatientId(mrn, cfg.practice.id)
    birth = dt.date.fromisoformat(row["birth_date"]) if row["birth_date"] else None
    return PatientId(mrn, cfg.practice.id, row["family"], row["given"], birth, row["sex"] or "")


def charge_lines(cfg: Config, mrn: str, month: str, decision: dict, facts: dict, release: int, reversal: bool = False) -> list[ChargeLine]:
    npi = facts["billing_practitioner"]
    diagnoses = tuple(facts["patient"]["chronic_conditions"])
    return [
        ChargeLine(
            transaction_id=transaction_id(cfg.practice.id, mrn, month, ln["code"], release, reversal),
            code=ln["code"],
            description=CODE_DESCRIPTIONS.get(ln["code"], ln["code"]),
            units=ln["units"],
            date_of_service=dt.date.fromisoformat(ln["date_of_service"]),
            diagnoses=diagnoses,
            performing_npi=npi,
            billing_npi=npi,
            transaction_type="CD" if reversal else "CG",
        )
        for ln in decision["lines"]
    ]


def csv_text(cfg: Config, rows: list[tuple[PatientId, str, list[ChargeLine], dict]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for patient, month, lines, meta in rows:
        for ln in lines:
            writer.writerow([
                cfg.practice.id, patient.mrn, patient.family, patient.given, patient.birth_date.isoformat() if patient.birth_date else "",
                month, ln.transaction_id, ln.transaction_type, ln.code, ln.units, ln.date_of_service.isoformat(),
                ";".join(ln.diagnoses), ln.performing_npi, ln.billing_npi, meta["rules"], meta["packet_hash"],
            ])
    return out.getvalue()


def _queue(conn: sqlite3.Connection, kind: str, subject: str, control: str | None, destination: str, payload: bytes, now: dt.datetime) -> None:
    conn.execute(
        "INSERT INTO outbound (kind, subject, control_id, destination, payload, status, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
        (kind, subject, control, destination, payload, now.isoformat()),
    )


def releasable(conn: sqlite3.Connection, month: str) -> list[sqlite3.Row]:
    """Signed, billable patient-months whose current approval binds to the current packet."""
    return conn.execute(
        "SELECT pm.*, s.npi AS signer, s.at AS signed_at, s.via AS signed_via FROM patient_month pm"
        " JOIN signoff s ON s.mrn = pm.mrn AND s.month = pm.month AND s.voided_at IS NULL AND s.outcome = 'approved'"
        "   AND s.packet_hash = pm.packet_hash"
        " WHERE pm.month = ? AND pm.state = 'signed' AND pm.billable = 1"
        "   AND NOT EXISTS (SELECT 1 FROM billing_release r WHERE r.mrn = pm.mrn AND r.month = pm.month AND r.status = 'released')"
        " ORDER BY pm.mrn",
        (month,),
    ).fetchall()


def close_month(cfg: Config, conn: sqlite3.Connection, month: str, now: dt.datetime | None = None, track: Callable = untracked) -> dict:
    """Release every signed, billable patient-month of `month` once, then deliver what is pending."""
    month = parse_month(month)
    now = now or dt.datetime.now(dt.UTC)
    dialect = billing_dialect(cfg.billing.profile, cfg.intake.profile_dir)
    sender = Party(cfg.mllp.application, cfg.practice.id)
    receiver = Party(cfg.billing.receiving_application, cfg.billing.receiving_facility)
    key = audit.read_key(cfg.audit.key_file)
    released: list[tuple[PatientId, str, list[ChargeLine], dict]] = []
    with gc_paused(), transaction(conn):
        rows = releasable(conn, month)
        for row in track(rows, len(rows), "close-month"):
            released.append(_release(cfg, conn, key, row, dialect, sender, receiver, now))
        if released:
            seq = conn.execute("SELECT count(*) FROM outbound WHERE kind = 'csv' AND subject LIKE ?", (f"charges-{month}-%",)).fetchone()[0] + 1
            name = f"charges-{month}-{seq:03d}.csv"
            _queue(conn, "csv", name, None, cfg.billing.delivery, csv_text(cfg, released).encode("utf-8"), now)
    delivered = deliver_billing(cfg, conn)
    logs.event(log, "close_month.finished", month=month, released=len(released), lines=sum(len(r[2]) for r in released), delivered=delivered)
    return {"released": len(released), "lines": sum(len(r[2]) for r in released), "delivered": delivered}


def _release(cfg: Config, conn: sqlite3.Connection, key: bytes, row: sqlite3.Row, dialect: BillingDialect, sender: Party, receiver: Party, now: dt.datetime):
    mrn, month = row["mrn"], row["month"]
    facts, decision, packet = json.loads(row["facts"]), json.loads(row["decision"]), json.loads(row["packet"])
    number = conn.execute("SELECT count(*) FROM billing_release WHERE mrn = ? AND month = ?", (mrn, month)).fetchone()[0] + 1
    lines = charge_lines(cfg, mrn, month, decision, facts, number)
    patient = _patient_id(cfg, conn, mrn)
    release_id = conn.execute(
        "INSERT INTO billing_release (mrn, month, packet_hash, released_at, status) VALUES (?, ?, ?, ?, 'released')",
        (mrn, month, row["packet_hash"], now.isoformat()),
    ).lastrowid
    for ln in lines:
        conn.execute(
            "INSERT INTO billing_line (release_id, transaction_id, code, units, date_of_service) VALUES (?, ?, ?, ?, ?)",
            (release_id, ln.transaction_id, ln.code, ln.units, ln.date_of_service.isoformat()),
        )
    control = f"CH{release_id:08d}"
    _queue(conn, "charges", f"{mrn}|{month}|{number}", control, cfg.billing.delivery, dft_p03(lines, patient, sender, receiver, control, now, dialect).encode(), now)
    signoff = {"npi": row["signer"], "at": row["signed_at"], "via": row["signed_via"], "packet_hash": row["packet_hash"]}
    xml = package_xml(cfg.practice.id, packet, signoff, [(ln.transaction_id, ln.code, ln.units, ln.date_of_service.isoformat()) for ln in lines])
    base = f"package-{month}-{_safe(mrn)}-{number}"
    _queue(conn, "package", base + ".xml", None, "folder", xml, now)
    _queue(conn, "package", base + ".html", None, "folder", package_html(xml), now)
    conn.execute("UPDATE patient_month SET state = 'released', updated_at = ? WHERE mrn = ? AND month = ?", (now.isoformat(), mrn, month))
    audit.record(conn, key, "billing.released", f"{mrn}|{month}", at=now, hash=row["packet_hash"], control_id=control,
                 lines=[[ln.code, ln.units, ln.transaction_id] for ln in lines])
    return patient, month, lines, {"rules": decision["rules"], "packet_hash": row["packet_hash"]}


def _safe(mrn: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in mrn)[:40] or "patient"


def void(cfg: Config, conn: sqlite3.Connection, mrn: str, month: str, now: dt.datetime | None = None) -> dict:
    """Send a reversal of a released patient-month and reopen it for sign-off."""
    month = parse_month(month)
    now = now or dt.datetime.now(dt.UTC)
    dialect = billing_dialect(cfg.billing.profile, cfg.intake.profile_dir)
    key = audit.read_key(cfg.audit.key_file)
    with transaction(conn):
        release = conn.execute(
            "SELECT * FROM billing_release WHERE mrn = ? AND month = ? AND status = 'released'", (mrn, month)
        ).fetchone()
        if release is None:
            raise InputError(f"that patient-month of {month}: nothing released to void")
        lines = conn.execute("SELECT * FROM billing_line WHERE release_id = ? AND reversal = 0 ORDER BY rowid", (release["id"],)).fetchall()
        pm = conn.execute("SELECT facts FROM patient_month WHERE mrn = ? AND month = ?", (mrn, month)).fetchone()
        facts = json.loads(pm["facts"])
        reversal = [
            ChargeLine(transaction_id(cfg.practice.id, mrn, month, ln["code"], release["id"], True), ln["code"],
                       CODE_DESCRIPTIONS.get(ln["code"], ln["code"]), ln["units"], dt.date.fromisoformat(ln["date_of_service"]),
                       tuple(facts["patient"]["chronic_conditions"]), facts["billing_practitioner"], facts["billing_practitioner"], "CD")
            for ln in lines
        ]
        for ln in reversal:
            conn.execute(
                "INSERT INTO billing_line (release_id, transaction_id, code, units, date_of_service, reversal) VALUES (?, ?, ?, ?, ?, 1)",
                (release["id"], ln.transaction_id, ln.code, ln.units, ln.date_of_service.isoformat()),
            )
        control = f"RV{release['id']:08d}"
        patient = _patient_id(cfg, conn, mrn)
        sender, receiver = Party(cfg.mllp.application, cfg.practice.id), Party(cfg.billing.receiving_application, cfg.billing.receiving_facility)
        _queue(conn, "reversal", f"{mrn}|{month}|{release['id']}", control, cfg.billing.delivery, dft_p03(reversal, patient, sender, receiver, control, now, dialect).encode(), now)
        _queue(conn, "csv", f"reversal-{month}-{_safe(mrn)}-{release['id']}.csv", None, cfg.billing.delivery,
               csv_text(cfg, [(patient, month, reversal, {"rules": json.loads(conn.execute("SELECT decision FROM patient_month WHERE mrn = ? AND month = ?", (mrn, month)).fetchone()[0])["rules"], "packet_hash": release["packet_hash"]})]).encode(), now)
        conn.execute("UPDATE billing_release SET status = 'voided', voided_at = ? WHERE id = ?", (now.isoformat(), release["id"]))
        conn.execute("UPDATE signoff SET voided_at = ?, void_reason = 'billing voided' WHERE mrn = ? AND month = ? AND voided_at IS NULL", (now.isoformat(), mrn, month))
        conn.execute("UPDATE patient_month SET state = 'awaiting_signoff', updated_at = ? WHERE mrn = ? AND month = ?", (now.isoformat(), mrn, month))
        audit.record(conn, key, "billing.voided", f"{mrn}|{month}", at=now, release=release["id"], control_id=control, lines=len(reversal))
    delivered = deliver_billing(cfg, conn)
    logs.event(log, "billing.voided", lines=len(reversal), delivered=delivered)
    return {"reversed_lines": len(reversal), "delivered": delivered}


def deliver_billing(cfg: Config, conn: sqlite3.Connection) -> int:
    b = cfg.billing
    key = audit.read_key(cfg.audit.key_file)
    sent = deliver_pending(conn, ("charges", "reversal", "csv"), b.delivery, b.output_dir, b.mllp_host, b.mllp_port, b.ack_timeout_seconds, b.retries, cfg, key)
    # Documentation packages always go to the billing folder (for the billing staff and audits).
    return sent + deliver_pending(conn, ("package",), "folder", b.output_dir / "packages", None, 0, b.ack_timeout_seconds, 0, cfg, key)
