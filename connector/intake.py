"""The intake stage: HL7 messages in (MLLP, files, the inbox folder), records and ACK decisions out.

One message is one unit of work, done in one transaction: look the message up (dedupe), store
it raw, map it with the practice's profile, store its records (merges applied), write the audit
event, commit. Only then is the ACK built, so an AA always means "durably stored"; a crash
before the commit sends no ACK and the sender resends.

Outcomes and the ACK each one gets (docs/hl7-interface.md):

| outcome    | stored as                  | ACK | why                                                    |
|------------|----------------------------|-----|--------------------------------------------------------|
| mapped     | inbound_message + records  | AA  |                                                        |
| ignored    | inbound_message (reason)   | AA  | not for us (type, test message, not a CCM document): a retry would not help |
| rejected   | inbound_message (reason)   | AE  | for us, but a value is missing or malformed            |
| conflict   | inbound_message (reason)   | AE  | MSH-10 reused by the same sender with other content: stored, not mapped, flagged |
| duplicate  | nothing new (resends + 1)  | as the first time | identical resend: never processed twice  |
| unreadable | quarantine (reason)        | AR  | not an HL7 message, bad MSH, bad character set, oversize |
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from . import audit, logs
from .config import Config
from .errors import InputError, OperationalError
from .hl7 import ack as acks
from .hl7 import mllp, reader
from .mappings import apply as mapping
from .mappings.profile import Profile, load_profile
from .progress import untracked
from .records import (
    CarePlan,
    Consent,
    Merge,
    Patient,
    Problem,
    Record,
    Service,
    Signature,
    Stay,
    Touchpoint,
    kind_of,
)
from .store import make_private_dir, open_store, transaction

log = logs.get_logger("intake")

MAPPED, IGNORED, REJECTED, CONFLICT, DUPLICATE, UNREADABLE = (
    "mapped",
    "ignored",
    "rejected",
    "conflict",
    "duplicate",
    "unreadable",
)
OUTCOMES = (MAPPED, IGNORED, REJECTED, CONFLICT, DUPLICATE, UNREADABLE)
MAX_FILE_BYTES = 256 * 1_048_576
MAX_INBOX_FILES = 1000  # per pickup run; the rest wait for the next run
_MERGE_DEPTH = 50
STOP_POLL_SECONDS = 0.2  # how often serve_mllp looks at its stop event


@dataclass(frozen=True)
class Outcome:
    status: str  # one of OUTCOMES
    ack: str  # AA | AE | AR
    reason: str | None = None
    message_id: int | None = None  # inbound_message.id
    quarantine_id: int | None = None
    control_id: str | None = None
    message_type: str | None = None
    records: int = 0


class RecordConflict(Exception):
    """Storing a record would contradict what is stored; the message is rejected instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Intake:
    """The stage's core, bound to one store connection, profile and practice time zone."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        profile: Profile,
        zone: ZoneInfo,
        audit_key: bytes,
        application: str = "CCMCONNECTOR",
        clock: Callable[[], dt.datetime] = _now,
        on_signature: SignatureHandler | None = None,
    ) -> None:
        self.on_signature = on_signature
        self.conn = conn
        self.profile = profile
        self.zone = zone
        self.audit_key = audit_key
        self.application = application
        self.clock = clock

    # --- one message ---------------------------------------------------------------------------

    def take(self, item: reader.Message | reader.Unreadable, source: str) -> Outcome:
        """Store and map one message (or quarantine unreadable bytes); commit; return the outcome.

        Raises sqlite3.Error / OperationalError when the store cannot take it (nothing is ACKed).
        """
        if isinstance(item, reader.Unreadable):
            control = item.header.control_id if item.header else None
            return self.quarantine(item.raw, len(item.raw), source, item.reason, control)
        message = item
        now = self.clock()
        with transaction(self.conn) as conn:
            rows = conn.execute(
                "SELECT id, content_hash, status, reason, ack_code FROM inbound_message WHERE sender = ? AND control_id = ? ORDER BY id",
                (message.sender, message.control_id),
            ).fetchall()
            same = next((r for r in rows if r["content_hash"] == message.content_hash), None)
            if same is not None:
                conn.execute(
                    "UPDATE inbound_message SET resends = resends + 1 WHERE id = ?", (same["id"],)
                )
                outcome = Outcome(
                    DUPLICATE,
                    same["ack_code"],
                    same["reason"] if same["ack_code"] != acks.ACCEPT else None,
                    same["id"],
                    control_id=message.control_id,
                    message_type=message.type,
                )
                self._audit(conn, f"inbound_message:{same['id']}", outcome, source, now)
            elif rows:
                reason = f"MSH-10 already used by this sender for message {rows[0]['id']} with different content; stored for review, not mapped"
                message_id = self._insert_message(
                    conn, message, source, now, CONFLICT, reason, acks.ERROR, 0
                )
                outcome = Outcome(
                    CONFLICT,
                    acks.ERROR,
                    reason,
                    message_id,
                    control_id=message.control_id,
                    message_type=message.type,
                )
                self._audit(conn, f"inbound_message:{message_id}", outcome, source, now)
            else:
                outcome = self._map_and_store(conn, message, source, now)
        self._log(outcome, source)
        return outcome

    def _map_and_store(
        self, conn: sqlite3.Connection, message: reader.Message, source: str, now: dt.datetime
    ) -> Outcome:
        try:
            result = mapping.apply(message, self.profile, self.zone)
        except Exception as e:  # a bug in a builder must not stop the line; the raw message is kept
            logs.event(
                log,
                "hl7.mapping_failed",
                level=40,
                exc_info=True,
                control_id=message.control_id,
                error=type(e).__name__,
            )
            result = mapping.Result(
                mapping.REJECTED,
                f"internal error while mapping ({type(e).__name__}); reported in the log",
            )
        status, reason = result.action, result.reason
        if status == mapping.MAPPED and result.warnings:
            reason = "; ".join(result.warnings)
        code = acks.ERROR if status == mapping.REJECTED else acks.ACCEPT
        stored = len(result.records)
        message_id = self._insert_message(conn, message, source, now, status, reason, code, stored)
        if status == mapping.MAPPED:
            conn.execute("SAVEPOINT records")
            try:
                store_records(conn, result.records, message_id, self.on_signature)
                conn.execute("RELEASE records")
            except RecordConflict as e:
                conn.execute("ROLLBACK TO records")
                conn.execute("RELEASE records")
                status, reason, code, stored = REJECTED, e.reason, acks.ERROR, 0
                conn.execute(
                    "UPDATE inbound_message SET status = ?, reason = ?, ack_code = ?, records = 0 WHERE id = ?",
                    (status, reason, code, message_id),
                )
        outcome = Outcome(
            status,
            code,
            reason,
            message_id,
            control_id=message.control_id,
            message_type=message.type,
            records=stored,
        )
        self._audit(conn, f"inbound_message:{message_id}", outcome, source, now)
        return outcome

    def _insert_message(
        self,
        conn: sqlite3.Connection,
        message: reader.Message,
        source: str,
        now: dt.datetime,
        status: str,
        reason: str | None,
        code: str,
        records: int,
    ) -> int:
        cur = conn.execute(
            "INSERT INTO inbound_message (sender, control_id, content_hash, received_at, source, message_type, raw, status, reason, ack_code, records)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.sender,
                message.control_id,
                message.content_hash,
                _iso(now),
                source,
                message.type,
                message.raw,
                status,
                reason,
                code,
                records,
            ),
        )
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def quarantine(
        self, content: bytes, size: int, source: str, reason: str, control_id: str | None = None
    ) -> Outcome:
        now = self.clock()
        with transaction(self.conn) as conn:
            cur = conn.execute(
                "INSERT INTO quarantine (at, source, reason, control_id, size, content) VALUES (?, ?, ?, ?, ?, ?)",
                (_iso(now), source, reason, control_id or None, size, content),
            )
            qid = int(cur.lastrowid)  # type: ignore[arg-type]
            outcome = Outcome(
                UNREADABLE, acks.REJECT, reason, quarantine_id=qid, control_id=control_id or None
            )
            self._audit(conn, f"quarantine:{qid}", outcome, source, now)
        self._log(outcome, source)
        return outcome

    def _audit(
        self,
        conn: sqlite3.Connection,
        subject: str,
        outcome: Outcome,
        source: str,
        now: dt.datetime,
    ) -> None:
        audit.record(
            conn,
            self.audit_key,
            "hl7.received",
            subject,
            at=now,
            via=source.split(":", 1)[0],
            control_id=outcome.control_id,
            type=outcome.message_type,
            outcome=outcome.status,
            ack=outcome.ack,
            records=outcome.records,
        )

    def _log(self, outcome: Outcome, source: str) -> None:
        level = 20 if outcome.status in (MAPPED, IGNORED, DUPLICATE) else 30
        logs.event(
            log,
            "hl7.received",
            level=level,
            via=source.split(":", 1)[0],
            message_id=outcome.message_id,
            quarantine_id=outcome.quarantine_id,
            control_id=outcome.control_id,
            type=outcome.message_type,
            outcome=outcome.status,
            ack=outcome.ack,
            records=outcome.records,
            reason=outcome.reason,
        )

    # --- MLLP ------------------------------------------------------------------------------------

    def ack_for(self, outcome: Outcome, header: reader.Header | None) -> bytes:
        return acks.build_ack(
            header,
            outcome.ack,
            control_id=uuid.uuid4().hex[:20],
            now=self.clock(),
            application=self.application,
            reason=outcome.reason if outcome.ack != acks.ACCEPT else None,
            error_code=_error_code(outcome),
        )


def _error_code(outcome: Outcome) -> int | None:
    if outcome.ack == acks.ACCEPT:
        return None
    if outcome.status == CONFLICT:
        return 205
    if outcome.status == UNREADABLE:
        return (
            100
            if "MSH" in (outcome.reason or "")[:6] or "segment" in (outcome.reason or "")
            else 207
        )
    reason = outcome.reason or ""
    if "missing" in reason:
        return 101
    if (
        "not an HL7" in reason
        or "not a valid" in reason
        or "must be" in reason
        or "not a " in reason
    ):
        return 102
    if "is not in" in reason or "is not one of" in reason:
        return 103
    if "MSH-12" in reason:
        return 203
    return 207


class MllpReceiver:
    """Adapts Intake to the MLLP server: frames → outcomes → ACK bytes."""

    def __init__(self, intake: Intake, max_frame_bytes: int) -> None:
        self.intake = intake
        self.max_frame_bytes = max_frame_bytes

    def frame(self, data: bytes, peer: str) -> bytes | None:
        source = f"mllp:{peer}"
        try:
            try:
                message = reader.read_message(data)
            except reader.ReadError as e:
                header = e.header or reader.peek_header(data)
                outcome = self.intake.quarantine(
                    data, len(data), source, e.reason, header.control_id if header else None
                )
                return self.intake.ack_for(outcome, header)
            outcome = self.intake.take(message, source)
            return self.intake.ack_for(outcome, message.header)
        except (sqlite3.Error, OperationalError) as e:
            logs.event(
                log, "hl7.not_stored", level=40, via="mllp", peer=peer, error=type(e).__name__
            )
            return None

    def junk(self, data: bytes, peer: str, reason: str) -> None:
        try:
            self.intake.quarantine(data, len(data), f"mllp:{peer}", reason)
        except (sqlite3.Error, OperationalError) as e:
            logs.event(
                log, "hl7.not_stored", level=40, via="mllp", peer=peer, error=type(e).__name__
            )

    def oversize(self, head: bytes, size: int, peer: str) -> bytes:
        header = reader.peek_header(head)
        reason = f"frame of {size} bytes exceeds the {self.max_frame_bytes}-byte limit ([mllp] max_frame_bytes)"
        try:
            outcome = self.intake.quarantine(
                head, size, f"mllp:{peer}", reason, header.control_id if header else None
            )
        except (sqlite3.Error, OperationalError):
            outcome = Outcome(
                UNREADABLE, acks.REJECT, reason, control_id=header.control_id if header else None
            )
        return self.intake.ack_for(outcome, header)

    def event(self, name: str, peer: str, **fields: object) -> None:
        level = 30 if name == "mllp.refused" else 20
        logs.event(log, name, level=level, peer=peer, **fields)


# --- records -------------------------------------------------------------------------------------


def survivor(conn: sqlite3.Connection, mrn: str) -> str:
    """The MRN a record for `mrn` is stored under (merges followed)."""
    seen = {mrn}
    for _ in range(_MERGE_DEPTH):
        row = conn.execute(
            "SELECT surviving_mrn FROM mrn_merge WHERE retired_mrn = ?", (mrn,)
        ).fetchone()
        if row is None or row[0] in seen:
            return mrn
        mrn = row[0]
        seen.add(mrn)
    return mrn


def _d(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _same_patient(conn: sqlite3.Connection, table: str, value: str, mrn: str, what: str) -> None:
    row = conn.execute(_DOCUMENT_OWNER[table], (value,)).fetchone()
    if row is not None and survivor(conn, row[0]) != mrn:
        raise RecordConflict(
            f"TXA-12: this {what} document id is already recorded for another patient"
        )


SignatureHandler = Callable[[sqlite3.Connection, Signature, int], None]


def store_records(
    conn: sqlite3.Connection, records: Iterable[Record], message_id: int, on_signature: SignatureHandler | None = None
) -> int:
    """Store mapped records inside the caller's transaction; returns how many were stored.

    A physician's answer to a review packet is not stored as a record: `on_signature` applies
    it (signoff.apply_ehr_answer); when it cannot apply, RecordConflict rejects the message.
    """
    count = 0
    survivors: dict[str, str] = {}
    for rec in records:
        if isinstance(rec, Signature):
            if on_signature is None:
                raise RecordConflict("TXA-2: answers to review packets are not accepted on this path")
            on_signature(conn, dataclasses.replace(rec, mrn=survivor(conn, rec.mrn)), message_id)
            count += 1
            continue
        if isinstance(rec, Merge):
            _store_merge(conn, rec, message_id)
            survivors.clear()
            count += 1
            continue
        mrn = survivors.get(rec.mrn) or survivors.setdefault(rec.mrn, survivor(conn, rec.mrn))
        if isinstance(rec, Patient):
            conn.execute(
                "INSERT INTO patient (mrn, family, given, birth_date, sex, mbi, death_date, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (mrn) DO UPDATE SET family = excluded.family, given = excluded.given,"
                " birth_date = excluded.birth_date, sex = excluded.sex, mbi = coalesce(excluded.mbi, patient.mbi),"
                " death_date = coalesce(excluded.death_date, patient.death_date), message_id = excluded.message_id"
                " WHERE (patient.family, patient.given, patient.birth_date, patient.sex, patient.mbi, patient.death_date)"
                " IS NOT (excluded.family, excluded.given, excluded.birth_date, excluded.sex, coalesce(excluded.mbi, patient.mbi),"
                " coalesce(excluded.death_date, patient.death_date))",
                (mrn, rec.family, rec.given, _d(rec.birth_date), rec.sex, rec.mbi, _d(rec.death_date), message_id),
            )
        elif isinstance(rec, Problem):
            conn.execute(
                "INSERT INTO problem (mrn, code, system, status, message_id) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (mrn, code, system) DO UPDATE SET status = excluded.status, message_id = excluded.message_id"
                " WHERE problem.status IS NOT excluded.status",
                (mrn, rec.code, rec.system, rec.status, message_id),
            )
        elif isinstance(rec, Service):
            for code in rec.codes:
                key = (mrn, rec.date.isoformat(), code, rec.practitioner_npi)
                if rec.reversed:
                    conn.execute(
                        "DELETE FROM service WHERE mrn = ? AND date = ? AND code = ? AND practitioner_npi IS ?",
                        key,
                    )
                    continue
                row = conn.execute(
                    "SELECT id FROM service WHERE mrn = ? AND date = ? AND code = ? AND practitioner_npi IS ?",
                    key,
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO service (mrn, date, code, practitioner_npi, transaction_id, message_id) VALUES (?, ?, ?, ?, ?, ?)",
                        (*key, rec.transaction_id, message_id),
                    )
                else:
                    conn.execute(
                        "UPDATE service SET transaction_id = ?, message_id = ? WHERE id = ?",
                        (rec.transaction_id, message_id, row[0]),
                    )
        elif isinstance(rec, Stay):
            _store_stay(conn, rec, mrn, message_id)
        elif isinstance(rec, Consent):
            if rec.document_id:
                _same_patient(conn, "consent", rec.document_id, mrn, "consent")
            conn.execute(
                "INSERT INTO consent (mrn, program, date, practitioner_npi, status, document_id, message_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (document_id) DO UPDATE SET mrn = excluded.mrn, program = excluded.program, date = excluded.date,"
                " practitioner_npi = excluded.practitioner_npi, status = excluded.status, message_id = excluded.message_id",
                (
                    mrn,
                    rec.program,
                    rec.date.isoformat(),
                    rec.practitioner_npi,
                    rec.status,
                    rec.document_id,
                    message_id,
                ),
            )
        elif isinstance(rec, Touchpoint):
            _same_patient(conn, "touchpoint", rec.id, mrn, "touchpoint")
            conn.execute(
                "INSERT INTO touchpoint (id, mrn, staff_id, start_utc, start_offset, minutes, activity, summary, mdm, message_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET mrn = excluded.mrn, staff_id = excluded.staff_id, start_utc = excluded.start_utc,"
                " start_offset = excluded.start_offset, minutes = excluded.minutes, activity = excluded.activity,"
                " summary = excluded.summary, mdm = excluded.mdm, message_id = excluded.message_id",
                (
                    rec.id,
                    mrn,
                    rec.staff_id,
                    _iso(rec.start.utc),
                    rec.start.offset_minutes,
                    rec.minutes,
                    rec.activity,
                    rec.summary,
                    rec.mdm,
                    message_id,
                ),
            )
        elif isinstance(rec, CarePlan):
            _same_patient(conn, "care_plan", rec.document_id, mrn, "care plan")
            conn.execute(
                "INSERT INTO care_plan (document_id, mrn, date, elements, shared_on, reviewed_on, message_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (document_id) DO UPDATE SET mrn = excluded.mrn, date = excluded.date, elements = excluded.elements,"
                " shared_on = coalesce(excluded.shared_on, care_plan.shared_on),"
                " reviewed_on = coalesce(excluded.reviewed_on, care_plan.reviewed_on), message_id = excluded.message_id",
                (
                    rec.document_id,
                    mrn,
                    rec.date.isoformat(),
                    json.dumps(list(rec.elements)),
                    _d(rec.shared_on),
                    _d(rec.reviewed_on),
                    message_id,
                ),
            )
        else:  # pragma: no cover - records.Record is closed
            raise TypeError(f"unknown record {kind_of(rec)}")
        count += 1
    return count


def _store_stay(conn: sqlite3.Connection, rec: Stay, mrn: str, message_id: int) -> None:
    if rec.visit_id:
        row = conn.execute(
            "SELECT admitted FROM stay WHERE mrn = ? AND kind = ? AND visit_id = ?",
            (mrn, rec.kind, rec.visit_id),
        ).fetchone()
        if row is not None:
            conn.execute(
                "UPDATE OR REPLACE stay SET admitted = ?, discharged = coalesce(?, discharged), message_id = ?"
                " WHERE mrn = ? AND kind = ? AND admitted = ?",
                (rec.admitted.isoformat(), _d(rec.discharged), message_id, mrn, rec.kind, row[0]),
            )
            return
    conn.execute(
        "INSERT INTO stay (mrn, admitted, discharged, kind, visit_id, message_id) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (mrn, admitted, kind) DO UPDATE SET discharged = coalesce(excluded.discharged, stay.discharged),"
        " visit_id = coalesce(excluded.visit_id, stay.visit_id), message_id = excluded.message_id",
        (mrn, rec.admitted.isoformat(), _d(rec.discharged), rec.kind, rec.visit_id, message_id),
    )


# Statements that move a retired MRN's records to its survivor, written out per table (no SQL is
# assembled at run time). Tables whose uniqueness includes the MRN keep the survivor's row when
# both have one; the others are keyed by document id.
_MOVE_KEEPING_SURVIVOR = (
    ("UPDATE OR IGNORE problem SET mrn = ? WHERE mrn = ?", "DELETE FROM problem WHERE mrn = ?"),
    ("UPDATE OR IGNORE service SET mrn = ? WHERE mrn = ?", "DELETE FROM service WHERE mrn = ?"),
    ("UPDATE OR IGNORE stay SET mrn = ? WHERE mrn = ?", "DELETE FROM stay WHERE mrn = ?"),
)
_MOVE = (
    "UPDATE consent SET mrn = ? WHERE mrn = ?",
    "UPDATE touchpoint SET mrn = ? WHERE mrn = ?",
    "UPDATE care_plan SET mrn = ? WHERE mrn = ?",
)
# The patient a document id is recorded for, per document table.
_DOCUMENT_OWNER = {
    "consent": "SELECT mrn FROM consent WHERE document_id = ?",
    "touchpoint": "SELECT mrn FROM touchpoint WHERE id = ?",
    "care_plan": "SELECT mrn FROM care_plan WHERE document_id = ?",
}


def _store_merge(conn: sqlite3.Connection, rec: Merge, message_id: int) -> None:
    target = survivor(conn, rec.surviving_mrn)
    retired = rec.retired_mrn
    if target == retired:
        raise RecordConflict("MRG-1: the merge would make the retired MRN its own survivor")
    row = conn.execute(
        "SELECT surviving_mrn FROM mrn_merge WHERE retired_mrn = ?", (retired,)
    ).fetchone()
    if row is not None:
        if survivor(conn, row[0]) == target:
            return  # already merged the same way
        raise RecordConflict("MRG-1: the retired MRN was already merged into another patient")
    conn.execute(
        "INSERT INTO mrn_merge (retired_mrn, surviving_mrn, message_id) VALUES (?, ?, ?)",
        (retired, target, message_id),
    )
    conn.execute(
        "UPDATE mrn_merge SET surviving_mrn = ? WHERE surviving_mrn = ?", (target, retired)
    )
    if conn.execute("SELECT 1 FROM patient WHERE mrn = ?", (target,)).fetchone():
        conn.execute("DELETE FROM patient WHERE mrn = ?", (retired,))
    else:
        conn.execute("UPDATE patient SET mrn = ? WHERE mrn = ?", (target, retired))
    for move, drop_duplicates in _MOVE_KEEPING_SURVIVOR:
        conn.execute(move, (target, retired))
        conn.execute(drop_duplicates, (retired,))
    for move in _MOVE:
        conn.execute(move, (target, retired))


# --- files and the inbox ---------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts by outcome over files and messages."""

    counts: Counter = field(default_factory=Counter)
    files: int = 0
    unreadable_files: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1

    def line(self) -> str:
        parts = ", ".join(f"{self.counts.get(k, 0)} {k}" for k in OUTCOMES)
        bad = (
            f"; {len(self.unreadable_files)} file(s) could not be read"
            if self.unreadable_files
            else ""
        )
        return f"{self.files} file(s): {parts}{bad}"

    @property
    def needs_attention(self) -> bool:
        return any(self.counts.get(k) for k in (REJECTED, CONFLICT, UNREADABLE))


def read_input_file(path: Path) -> bytes:
    """A file's bytes, or InputError saying why it cannot be read."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InputError(f"{path}: not a regular file")
        if size > MAX_FILE_BYTES:
            raise InputError(
                f"{path}: {size} bytes is over the {MAX_FILE_BYTES}-byte limit for one HL7 file"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.__class__.__name__})") from None


def ingest_bytes(intake: Intake, data: bytes, name: str, track: Callable = untracked) -> Tally:
    """Every message of one file's bytes, each in its own transaction."""
    tally = Tally(files=1)
    contents = reader.read_file(data)
    digest = hashlib.sha256(data).hexdigest()
    for item in track(contents.items, len(contents.items), "ingest"):
        tally.add(intake.take(item, f"file:{name}#{item.index}"))
    with transaction(intake.conn) as conn:
        audit.record(
            conn,
            intake.audit_key,
            "hl7.file",
            f"file:{digest}",
            items=len(contents.items),
            notes=list(contents.notes),
            **dict(tally.counts),
        )
    logs.event(
        log,
        "hl7.file",
        file_hash=digest[:16],
        items=len(contents.items),
        notes="; ".join(contents.notes) or None,
        **dict(tally.counts),
    )
    return tally


def ingest_files(
    intake: Intake, paths: Iterable[Path], complain: Callable[[str], None], track: Callable = untracked
) -> Tally:
    """`ingest FILE...`: every readable file is ingested; unreadable ones are named via complain."""
    total = Tally()
    for path in paths:
        try:
            data = read_input_file(path)
        except InputError as e:
            total.unreadable_files.append(str(path))
            complain(str(e))
            continue
        try:
            part = ingest_bytes(intake, data, path.name, track)
        except sqlite3.Error as e:
            raise OperationalError(
                f"store: cannot store messages ({e.__class__.__name__}: {e})"
            ) from None
        total.files += 1
        total.counts.update(part.counts)
    return total


def _unique_target(folder: Path, name: str) -> Path:
    target = folder / name
    for n in range(1, 10_000):
        if not target.exists():
            return target
        target = folder / f"{name}.{n}"
    raise OperationalError(f"{folder}: too many files named {name}")


def pickup_inbox(
    intake: Intake, inbox: Path, stable_seconds: int, now: float | None = None
) -> Tally:
    """Ingest the inbox's files that have not changed for stable_seconds, then move each to
    processed/ (all mapped, ignored or duplicate) or error/ (anything unreadable, rejected or in
    conflict, or the file itself unreadable). A crash before the move means the file is read
    again next time; dedupe makes that harmless."""
    now = time.time() if now is None else now
    processed, failed = inbox / "processed", inbox / "error"
    make_private_dir(inbox)
    make_private_dir(processed)
    make_private_dir(failed)
    total = Tally()
    candidates = []
    with os.scandir(inbox) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            if now - st.st_mtime >= stable_seconds:
                candidates.append((st.st_mtime, entry.name))
    for _, name in sorted(candidates)[:MAX_INBOX_FILES]:
        path = inbox / name
        try:
            data = read_input_file(path)
        except InputError as e:
            total.unreadable_files.append(name)
            logs.event(log, "inbox.unreadable", level=30, reason=str(e).split(": ", 1)[-1])
            destination = failed
        else:
            part = ingest_bytes(intake, data, name)
            total.files += 1
            total.counts.update(part.counts)
            destination = failed if part.needs_attention else processed
        os.replace(path, _unique_target(destination, name))
    logs.event(
        log,
        "inbox.pickup",
        files=total.files,
        unreadable_files=len(total.unreadable_files),
        **dict(total.counts),
    )
    return total


# --- wiring from configuration -----------------------------------------------------------------------


def open_intake(cfg: Config, profile_name: str | None = None) -> Intake:
    """The stage as configured: store, profile, time zone, audit key, our application name."""
    profile = load_profile(profile_name or cfg.intake.profile, cfg.intake.profile_dir)
    try:
        key = audit.read_key(cfg.audit.key_file)
    except (OSError, ValueError) as e:
        raise InputError(f"[audit] key_file: {e}") from None
    conn = open_store(cfg.store.path)

    def on_signature(conn: sqlite3.Connection, answer: Signature, message_id: int) -> None:
        from .signoff import apply_ehr_answer

        try:
            apply_ehr_answer(conn, key, cfg, answer, message_id, _now())
        except InputError as e:
            raise RecordConflict(str(e)) from None

    return Intake(conn, profile, cfg.zone, key, cfg.mllp.application, on_signature=on_signature)


def _server(cfg: Config, port: int | None) -> tuple[Intake, mllp.Server]:
    intake = open_intake(cfg)
    tls = None
    if cfg.mllp.tls_certificate is not None and cfg.mllp.tls_private_key is not None:
        try:
            tls = mllp.server_tls(str(cfg.mllp.tls_certificate), str(cfg.mllp.tls_private_key))
        except (OSError, ValueError) as e:
            intake.conn.close()
            raise InputError(
                f"[mllp] tls_certificate: cannot load the certificate and key ({e.__class__.__name__})"
            ) from None
    limits = mllp.Limits(
        cfg.mllp.max_frame_bytes, float(cfg.mllp.idle_timeout_seconds), cfg.mllp.max_connections
    )
    receiver = MllpReceiver(intake, cfg.mllp.max_frame_bytes)
    return intake, mllp.Server(
        receiver, cfg.mllp.host, cfg.mllp.port if port is None else port, limits, tls
    )


async def _serve(
    cfg: Config,
    intake: Intake,
    server: mllp.Server,
    until: Callable[[], Awaitable[None]],
    announce: Callable[[str, int], None] | None,
) -> None:
    try:
        bound = await server.start()
    except OSError as e:
        raise OperationalError(
            f"[mllp] cannot listen on {cfg.mllp.host}:{server.port} ({e.strerror or e.__class__.__name__})"
        ) from None
    logs.event(
        log,
        "mllp.listening",
        host=cfg.mllp.host,
        port=bound,
        tls=server.tls is not None,
        profile=intake.profile.name,
    )
    if announce is not None:
        announce(cfg.mllp.host, bound)
    await until()
    logs.event(log, "mllp.stopping", active=server.active)
    await server.close()


def listen(
    cfg: Config, port: int | None = None, announce: Callable[[str, int], None] | None = None
) -> int:
    """`ccm-connector listen`: the MLLP listener until SIGTERM or SIGINT; returns the exit code."""
    intake, server = _server(cfg, port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await _serve(cfg, intake, server, stop.wait, announce)

    try:
        asyncio.run(main())
    finally:
        intake.conn.close()
    return 0


def serve_mllp(cfg: Config, stop: threading.Event) -> None:
    """The listener for `run` (connector/service.py): serves in the calling thread until `stop`
    is set, then closes and returns. Installs no signal handlers."""
    intake, server = _server(cfg, None)

    async def until_stopped() -> None:
        while not stop.is_set():
            await asyncio.sleep(STOP_POLL_SECONDS)

    try:
        asyncio.run(_serve(cfg, intake, server, until_stopped, None))
    finally:
        intake.conn.close()


# --- mapping check ----------------------------------------------------------------------------------


def record_json(rec: Record) -> dict:
    """A record as JSON-ready fields, with its kind."""
    out: dict = {"kind": kind_of(rec)}
    for f in dataclasses.fields(rec):
        name, value = f.name, getattr(rec, f.name)
        if name == "kind":  # Stay.kind (inpatient | snf) would hide the record's kind
            name = f"{out['kind']}_kind"
        if isinstance(value, dt.date):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        elif hasattr(value, "offset_minutes"):
            value = {"utc": _iso(value.utc), "offset_minutes": value.offset_minutes}
        out[name] = value
    return out


def check_message(
    item: reader.Message | reader.Unreadable, profile: Profile, zone: ZoneInfo
) -> dict:
    """What intake would do with one message, without storing anything (dedupe aside)."""
    if isinstance(item, reader.Unreadable):
        return {
            "index": item.index,
            "control_id": item.header.control_id if item.header else None,
            "type": (f"{item.header.message_code}^{item.header.trigger}".rstrip("^") or None)
            if item.header
            else None,
            "action": mapping.REJECTED,
            "reason": item.reason,
            "records": [],
        }
    try:
        result = mapping.apply(item, profile, zone)
    except Exception as e:  # same guard as intake: report, never crash
        logs.event(
            log,
            "hl7.mapping_failed",
            level=40,
            exc_info=True,
            control_id=item.control_id,
            error=type(e).__name__,
        )
        result = mapping.Result(
            mapping.REJECTED,
            f"internal error while mapping ({type(e).__name__}); reported in the log",
        )
    return {
        "index": item.index,
        "control_id": item.control_id,
        "type": item.type,
        "action": result.action,
        "reason": result.reason
        if result.action != mapping.MAPPED
        else ("; ".join(result.warnings) or None),
        "records": [record_json(r) for r in result.records],
    }


def mapping_check(
    paths: Iterable[Path],
    profile: Profile,
    zone: ZoneInfo,
    emit: Callable[[dict], None],
    complain: Callable[[str], None],
) -> bool:
    """Map files without writing anything; emit one dict per message. False if a file was unreadable."""
    ok = True
    for path in paths:
        try:
            data = read_input_file(path)
        except InputError as e:
            complain(str(e))
            ok = False
            continue
        for item in reader.read_file(data).items:
            emit({"file": str(path), **check_message(item, profile, zone)})
    return ok
