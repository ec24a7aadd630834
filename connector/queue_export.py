"""The `queue export` stage: what happened since the last queue, sealed and published once.

1. Guard: no queue leaves unless the partner's BAA is in force today (practice time zone).
2. Finish any batch sealed earlier but not yet published (a crash after sealing or during the
   upload): its stored sealed bytes are published again byte for byte, never rebuilt.
3. Select the work: enrolled patients (latest consent per program is "given"), touchpoints,
   care plans and enrolments not yet sent (by id and content hash). Nothing new: no batch.
4. Build the XML (a pure function of the records, `build_queue`), validate it, seal it
   (encrypt to the pinned partner key(s) and our own, sign with ours), and record the batch, its
   items, the file hash and an audit event in one transaction.
5. Publish (temp name + rename) and mark the batch sent with a `file.sent` audit event.

What the queue holds with identifiers off ([identity] send_identifiers = false): pseudonyms
only, never MRN, name or birth date; touchpoint summaries are sent (the team documents from
them) with the patient's MRN, MBI, names and birth date redacted if staff typed them in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from . import audit, logs, rules
from .config import Config
from .errors import InputError, OperationalError
from .exchange import baa_problem, drop_for, now_utc, read_passphrase, stamp
from .exchange_documents import (
    Enrollment,
    Identifiers,
    PlanOut,
    PlanReviewOut,
    QueuePatient,
    StaffEntry,
    TouchpointOut,
    WorkQueue,
    build_workqueue,
)
from .progress import untracked
from .pseudonym import pseudonym, read_key
from .roster import Staff, load_roster
from .sftp import envelope, keyring, naming, transport
from .store import open_store, transaction

log = logs.get_logger("queue_export")

COUNTABLE_ROLES = frozenset({"clinical", "practitioner"})
REDACTED = "[redacted]"


@dataclass(frozen=True)
class ExportResult:
    batch_id: str | None
    file_name: str | None
    patients: int
    touchpoints: int
    republished: tuple[str, ...] = ()

    def summary(self) -> str:
        again = f"; re-published {', '.join(self.republished)}" if self.republished else ""
        if self.batch_id is None:
            return f"queue export: nothing new to send{again}"
        return (
            f"queue export: sent {self.file_name} (batch {self.batch_id}: "
            f"{self.patients} patient(s), {self.touchpoints} new touchpoint(s)){again}"
        )


@dataclass(frozen=True)
class TimeRules:
    """What the queue's hints need from the year's rule set: where time counts, the thresholds."""

    us_locations: frozenset[str]
    thresholds: dict[str, tuple[int, ...]]  # program -> base threshold and each full add-on step


def time_rules(period: str, setting: str) -> TimeRules:
    """Thresholds of each program's non-complex staff-time family (ccm 20/40/60, pcm 30/60/90...)
    from `rules.rule_set_for(period)`. A hint for the offshore team only: billing is decided by
    the rules engine at reconciliation."""
    try:
        rule_set = rules.rule_set_for(period)
    except rules.RuleSetNotFound:
        # No rule year covers the period: no thresholds to show; the latest year's United States.
        return TimeRules(rules.rule_sets()[-1].us_locations, {})
    thresholds: dict[str, tuple[int, ...]] = {}
    for name, program in rule_set.programs.items():
        families = program.families.get(setting) or ()
        family = next((f for f in families if f.route == "pool" and not f.complex), None)
        if family is not None:
            steps = family.cap if family.add_on else 0
            thresholds[name] = tuple(
                family.threshold + i * family.increment for i in range(steps + 1)
            )
    return TimeRules(rule_set.us_locations, thresholds)


def next_threshold(thresholds: tuple[int, ...], minutes: int) -> int | None:
    """The next time threshold above ``minutes``, or None when none is left."""
    return next((t for t in thresholds if t > minutes), None)


def is_countable(staff: Staff | None, us_locations: frozenset[str]) -> bool:
    return (
        staff is not None
        and staff.role in COUNTABLE_ROLES
        and staff.location in us_locations
        and not staff.excluded
        and not staff.offshore_account
    )


def content_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, ensure_ascii=False).encode()).hexdigest()


def redact(text: str, patient: sqlite3.Row | None, mrns: set[str]) -> str:
    """Remove the patient's own identifiers from free text (identifiers off)."""
    words: set[str] = set(m for m in mrns if m)
    if patient is not None:
        for key in ("family", "given", "mbi"):
            value = (patient[key] or "").strip()
            if len(value) >= 2:
                words.add(value)
        if patient["birth_date"]:
            try:
                b = dt.date.fromisoformat(patient["birth_date"])
            except ValueError:
                b = None
            if b is not None:
                words.update(
                    {
                        b.isoformat(),
                        f"{b:%m/%d/%Y}",
                        f"{b.month}/{b.day}/{b.year}",
                        f"{b:%Y%m%d}",
                        f"{b:%m-%d-%Y}",
                        f"{b:%m/%d/%y}",
                    }
                )
    for word in sorted(words, key=len, reverse=True):
        text = re.sub(rf"(?<![\w]){re.escape(word)}(?![\w])", REDACTED, text, flags=re.IGNORECASE)
    return text


# --- reading the practice's records --------------------------------------------------------------


@dataclass
class Work:
    queue_patients: list[QueuePatient]
    staff: list[StaffEntry]
    items: list[tuple[str, str, str, str]]  # (kind, key, hash, mrn) carried by this batch
    pending: int  # items not sent before
    touchpoints: int  # new touchpoints in this batch


def _surviving(merges: dict[str, str], mrn: str) -> str:
    seen = set()
    while mrn in merges and mrn not in seen:
        seen.add(mrn)
        mrn = merges[mrn]
    return mrn


def select_work(
    conn: sqlite3.Connection,
    roster: dict[str, Staff],
    zone: dt.tzinfo,
    period: str,
    key: bytes,
    send_identifiers: bool,
    time: TimeRules,
    track: Callable = untracked,
) -> Work:
    """Everything the next queue holds, read from the record tables (read-only)."""
    merges = {
        r["retired_mrn"]: r["surviving_mrn"]
        for r in conn.execute("SELECT retired_mrn, surviving_mrn FROM mrn_merge")
    }
    aliases: dict[str, set[str]] = defaultdict(set)
    for retired in merges:
        aliases[_surviving(merges, retired)].add(retired)

    latest: dict[tuple[str, str], sqlite3.Row] = {}
    for c in conn.execute(
        "SELECT id, mrn, program, date, practitioner_npi, status FROM consent ORDER BY date, id"
    ):
        latest[(_surviving(merges, c["mrn"]), c["program"])] = c
    enrolled: dict[str, list[sqlite3.Row]] = defaultdict(list)
    for (mrn, _program), c in sorted(latest.items()):
        if c["status"] == "given":
            enrolled[mrn].append(c)

    sent = {
        (r["kind"], r["item_key"], r["content_hash"])
        for r in conn.execute("SELECT kind, item_key, content_hash FROM queue_item")
    }
    patients = {
        r["mrn"]: r for r in conn.execute("SELECT mrn, family, given, birth_date, mbi FROM patient")
    }
    conditions: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for p in conn.execute("SELECT mrn, code, system FROM problem WHERE status = 'active'"):
        conditions[_surviving(merges, p["mrn"])].add((p["code"], p["system"]))
    plans: dict[str, sqlite3.Row] = {}
    for cp in conn.execute(
        "SELECT document_id, mrn, date, elements, shared_on, reviewed_on FROM care_plan ORDER BY date, document_id"
    ):
        plans[_surviving(merges, cp["mrn"])] = cp
    reviews: dict[str, list[sqlite3.Row]] = defaultdict(list)
    for r in conn.execute(
        "SELECT v.draft_id, v.mrn, v.outcome, v.reason, v.new_document_id, v.decided_at, d.revises, f.return_id"
        " FROM care_plan_review v JOIN care_plan_draft d ON d.id = v.draft_id JOIN return_file f ON f.id = d.return_file_id"
        " ORDER BY v.draft_id"
    ):
        reviews[_surviving(merges, r["mrn"])].append(r)
    touchpoints: dict[str, list[sqlite3.Row]] = defaultdict(list)
    for t in conn.execute(
        "SELECT id, mrn, staff_id, start_utc, minutes, activity, summary FROM touchpoint ORDER BY start_utc, id"
    ):
        touchpoints[_surviving(merges, t["mrn"])].append(t)

    items: list[tuple[str, str, str, str]] = []
    pending = 0
    new_touchpoints = 0
    staff_used: set[str] = set()
    out: list[QueuePatient] = []
    for mrn in track(sorted(enrolled, key=lambda m: pseudonym(key, m)), len(enrolled), "export"):
        patient = patients.get(mrn)
        own_ids = {mrn} | aliases.get(mrn, set())
        countable = 0
        tps: list[TouchpointOut] = []
        for t in touchpoints.get(mrn, []):
            local = dt.datetime.fromisoformat(t["start_utc"].replace("Z", "+00:00")).astimezone(
                zone
            )
            member = roster.get(t["staff_id"])
            if local.strftime("%Y-%m") == period and is_countable(member, time.us_locations):
                countable += t["minutes"]
            h = content_hash(
                t["id"],
                t["mrn"],
                t["staff_id"],
                t["start_utc"],
                t["minutes"],
                t["activity"],
                t["summary"],
            )
            if ("touchpoint", t["id"], h) in sent:
                continue
            items.append(("touchpoint", t["id"], h, mrn))
            pending += 1
            new_touchpoints += 1
            staff_used.add(t["staff_id"])
            summary = t["summary"] if send_identifiers else redact(t["summary"], patient, own_ids)
            tps.append(
                TouchpointOut(
                    id=t["id"],
                    staff_id=t["staff_id"],
                    role=member.role if member else "unknown",
                    date=local.date(),
                    start=local.strftime("%H:%M"),
                    minutes=t["minutes"],
                    activity=t["activity"],
                    summary=summary,
                )
            )
        enrollments = []
        for c in enrolled[mrn]:
            h = content_hash(c["program"], c["practitioner_npi"])
            key_ = f"{mrn}#{c['program']}#{c['id']}"
            if ("enrollment", key_, h) not in sent:
                pending += 1
            items.append(("enrollment", key_, h, mrn))
            threshold = next_threshold(time.thresholds.get(c["program"], ()), countable)
            enrollments.append(Enrollment(c["program"], c["practitioner_npi"], threshold))
        plan_out = None
        cp = plans.get(mrn)
        if cp is not None:
            elements = tuple(json.loads(cp["elements"]))
            h = content_hash(
                cp["document_id"], cp["date"], elements, cp["shared_on"], cp["reviewed_on"]
            )
            if ("care_plan", cp["document_id"], h) not in sent:
                pending += 1
            items.append(("care_plan", cp["document_id"], h, mrn))
            plan_out = PlanOut(
                document_id=cp["document_id"],
                date=dt.date.fromisoformat(cp["date"]),
                elements=elements,
                shared_on=dt.date.fromisoformat(cp["shared_on"]) if cp["shared_on"] else None,
                reviewed_on=dt.date.fromisoformat(cp["reviewed_on"]) if cp["reviewed_on"] else None,
            )
        plan_reviews = []
        for r in reviews.get(mrn, []):
            h = content_hash(r["draft_id"], r["outcome"], r["reason"], r["new_document_id"])
            if ("plan_review", str(r["draft_id"]), h) in sent:
                continue
            pending += 1
            items.append(("plan_review", str(r["draft_id"]), h, mrn))
            plan_reviews.append(
                PlanReviewOut(
                    return_id=r["return_id"],
                    revises=r["revises"],
                    outcome=r["outcome"],
                    new_document_id=r["new_document_id"],
                    decided=dt.datetime.fromisoformat(r["decided_at"]).astimezone(zone).date(),
                    reason=r["reason"],
                )
            )
        identifiers = None
        if send_identifiers and patient is not None:
            identifiers = Identifiers(
                mrn=mrn,
                family=patient["family"],
                given=patient["given"],
                birth_date=dt.date.fromisoformat(patient["birth_date"])
                if patient["birth_date"]
                else None,
            )
        out.append(
            QueuePatient(
                pseudonym=pseudonym(key, mrn),
                enrollments=tuple(enrollments),
                conditions=tuple(sorted(conditions.get(mrn, ()))),
                care_plan=plan_out,
                touchpoints=tuple(tps),
                countable_minutes=countable,
                identifiers=identifiers,
                plan_reviews=tuple(plan_reviews),
            )
        )
    staff = [
        StaffEntry(s.staff_id, s.name, s.credential, s.role, s.location)
        for sid in sorted(staff_used)
        if (s := roster.get(sid)) is not None
    ]
    return Work(
        out, staff, [i for i in items if (i[0], i[1], i[2]) not in sent], pending, new_touchpoints
    )


# --- the stage -----------------------------------------------------------------------------------


def export_queue(
    cfg: Config, drop: transport.Drop | None = None, now: dt.datetime | None = None, track: Callable = untracked
) -> ExportResult:
    """Run the stage once; idempotent (a second run with nothing new sends nothing)."""
    now = now or now_utc()
    local_now = now.astimezone(cfg.zone)
    problem = baa_problem(cfg.partner, local_now.date())
    if problem:
        logs.event(log, "queue.refused", reason="baa")
        raise InputError(problem)
    conn = open_store(cfg.store.path)
    try:
        return _export(cfg, conn, drop or drop_for(cfg.drop, cfg.sftp), now, local_now, track)
    finally:
        conn.close()
        keyring.stop_agent(cfg.pgp.gnupg_home)


def _keys(cfg: Config) -> tuple[bytes, bytes]:
    try:
        return read_key(cfg.identity.pseudonym_key_file), audit.read_key(cfg.audit.key_file)
    except (OSError, ValueError) as e:
        raise InputError(f"key file: {e}") from None


def _export(
    cfg: Config,
    conn: sqlite3.Connection,
    drop: transport.Drop,
    now: dt.datetime,
    local_now: dt.datetime,
    track: Callable = untracked,
) -> ExportResult:
    pseudonym_key, audit_key = _keys(cfg)
    roster = load_roster(cfg.roster.file)
    recipients = list(dict.fromkeys([*cfg.pgp.partner_fingerprints, cfg.pgp.practice_fingerprint]))
    signer = cfg.pgp.practice_fingerprint
    passphrase = read_passphrase(cfg.pgp.passphrase_file, "[pgp] passphrase_file")
    period = local_now.strftime("%Y-%m")
    try:
        with drop:
            republished = tuple(_publish_pending(cfg, conn, drop, audit_key))
            with transaction(conn):
                work = select_work(
                    conn,
                    roster,
                    cfg.zone,
                    period,
                    pseudonym_key,
                    cfg.identity.send_identifiers,
                    time_rules(period, cfg.billing.setting_kind),
                    track,
                )
                if work.pending == 0:
                    logs.event(log, "queue.nothing_new", republished=len(republished))
                    return ExportResult(None, None, 0, 0, republished)
                row = conn.execute(
                    "SELECT coalesce(max(sequence), 0) + 1 FROM queue_batch"
                ).fetchone()
                sequence = int(row[0])
                batch_id = f"{cfg.practice.id}-{sequence:06d}"
                file_name = naming.queue_name(cfg.practice.id, sequence)
                document = build_workqueue(
                    WorkQueue(
                        batch_id=batch_id,
                        sequence=sequence,
                        practice_id=cfg.practice.id,
                        period=period,
                        created=now,
                        time_zone=cfg.practice.time_zone,
                        identifiers=cfg.identity.send_identifiers,
                        staff=tuple(work.staff),
                        patients=tuple(work.queue_patients),
                    )
                )
                try:
                    sealed = envelope.seal(
                        cfg.pgp.gnupg_home,
                        document,
                        recipients,
                        signer,
                        passphrase,
                        cfg.pgp.gpg_binary,
                    )
                except (envelope.SealError, keyring.KeyringError) as e:
                    raise OperationalError(f"queue export: {e}") from None
                file_hash = hashlib.sha256(sealed).hexdigest()
                conn.execute(
                    "INSERT INTO queue_batch (id, sequence, period, created_at, file_name, content_hash, document_hash,"
                    " sealed, recipients, signer, patients, touchpoints, identifiers, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'sealed')",
                    (
                        batch_id,
                        sequence,
                        period,
                        stamp(now),
                        file_name,
                        file_hash,
                        hashlib.sha256(document).hexdigest(),
                        sealed,
                        json.dumps(recipients),
                        signer,
                        len(work.queue_patients),
                        work.touchpoints,
                        int(cfg.identity.send_identifiers),
                    ),
                )
                conn.executemany(
                    "INSERT INTO queue_item (batch_id, kind, item_key, content_hash, mrn) VALUES (?, ?, ?, ?, ?)",
                    [(batch_id, kind, key, h, mrn) for kind, key, h, mrn in work.items],
                )
                audit.record(
                    conn,
                    audit_key,
                    "queue.sealed",
                    batch_id,
                    file=file_name,
                    content_hash=file_hash,
                    patients=len(work.queue_patients),
                    touchpoints=work.touchpoints,
                    recipients=recipients,
                    signer=signer,
                )
            logs.event(
                log,
                "queue.sealed",
                batch=batch_id,
                patients=len(work.queue_patients),
                touchpoints=work.touchpoints,
            )
            _publish(
                cfg,
                conn,
                drop,
                audit_key,
                batch_id,
                file_name,
                sealed,
                file_hash,
                recipients,
                signer,
            )
    except transport.TransportError as e:
        raise OperationalError(f"queue export: {e}") from None
    return ExportResult(
        batch_id, file_name, len(work.queue_patients), work.touchpoints, republished
    )


def _publish_pending(
    cfg: Config, conn: sqlite3.Connection, drop: transport.Drop, audit_key: bytes
) -> list[str]:
    """Publish batches sealed by an earlier run that did not finish: the same bytes, the same name."""
    done = []
    rows = conn.execute(
        "SELECT id, file_name, sealed, content_hash, recipients, signer FROM queue_batch WHERE status = 'sealed' ORDER BY sequence"
    ).fetchall()
    for r in rows:
        sealed = bytes(r["sealed"])
        if hashlib.sha256(sealed).hexdigest() != r["content_hash"]:
            raise OperationalError(
                f"queue export: stored batch {r['id']} does not match its recorded hash; not sending it"
            )
        _publish(
            cfg,
            conn,
            drop,
            audit_key,
            r["id"],
            r["file_name"],
            sealed,
            r["content_hash"],
            json.loads(r["recipients"]),
            r["signer"],
        )
        done.append(r["file_name"])
    return done


def _publish(
    cfg: Config,
    conn: sqlite3.Connection,
    drop: transport.Drop,
    audit_key: bytes,
    batch_id: str,
    file_name: str,
    sealed: bytes,
    file_hash: str,
    recipients: list[str],
    signer: str,
) -> None:
    drop.publish(cfg.drop.queue_dir, file_name, sealed)
    with transaction(conn):
        conn.execute(
            "UPDATE queue_batch SET status = 'sent', sent_at = ? WHERE id = ? AND status = 'sealed'",
            (stamp(), batch_id),
        )
        audit.record(
            conn,
            audit_key,
            "file.sent",
            file_hash,
            file=file_name,
            batch=batch_id,
            bytes=len(sealed),
            recipients=recipients,
            signer=signer,
            drop=cfg.drop.kind,
        )
    logs.event(log, "file.sent", batch=batch_id, file=file_name, bytes=len(sealed))


def archived_copy(conn: sqlite3.Connection, batch_id: str) -> bytes | None:
    """Our sealed copy of a batch (encrypted to the practice key too)."""
    row = conn.execute("SELECT sealed FROM queue_batch WHERE id = ?", (batch_id,)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else None
