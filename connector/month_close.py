"""The reconcile stage: for one month, the store's records and returns in, decisions kept.

Reads the practice's records and the accepted returns, runs reconciliation and the rules
engine (pure cores), and keeps each patient-month's decision with the exact facts it was made
from and its review packet's hash. Re-running after new returns or EHR messages updates the
result without double counting: each run recomputes from the records, never from the last run.
A patient-month whose packet changes loses its sign-off and asks again.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from . import audit, logs
from .batches import gc_paused
from .config import Config
from .errors import InputError
from .facts import facts_from_json
from .month_facts import PatientRecords, Policy, month_bounds, month_facts
from .packet import canonical, review_packet
from .packet import text_hash as content_hash_of
from .progress import untracked
from .pseudonym import read_key as read_pseudonym_key
from .pseudonym import reverse_map
from .reconcile import Finding, LogEntry, code_mismatch, reconcile
from .records import CarePlan, Consent, Instant, Patient, Problem, Service, Stay, Touchpoint
from .roster import load_roster
from .rules import decide, rule_set_for
from .store import open_store, transaction

log = logs.get_logger("reconcile")
# Look this far around the month for touchpoints and entries, so that an entry dated across a
# month boundary (the offshore team's calendar day can differ) still finds its practice record.
WINDOW = dt.timedelta(days=31)


@dataclass(frozen=True)
class MonthResult:
    mrn: str
    month: str
    state: str
    decision: dict
    reconciliation: list[dict]
    changed: bool

    def to_json(self) -> dict:
        return {
            "patient": self.mrn,
            "month": self.month,
            "decision": self.decision,
            "reconciliation": [{k: f[k] for k in ("code", "severity", "entry", "source", "message")} for f in self.reconciliation],
        }


def parse_month(month: str) -> str:
    try:
        dt.date.fromisoformat(month + "-01")
    except ValueError:
        raise InputError(f"--month: must be YYYY-MM, got {month!r}") from None
    if len(month) != 7:
        raise InputError(f"--month: must be YYYY-MM, got {month!r}")
    return month


def utc_bounds(month: str, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    first, last = month_bounds(month)
    start = dt.datetime.combine(first, dt.time(0), zone).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(0), zone).astimezone(dt.UTC)
    return start, end


def _date(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def load_touchpoints(conn: sqlite3.Connection, start: dt.datetime, end: dt.datetime) -> dict[str, Touchpoint]:
    """The practice's touchpoints around the month (see WINDOW), by id."""
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: this reads every touchpoint of the month
    rows = cur.execute(
        "SELECT id, mrn, staff_id, start_utc, start_offset, minutes, activity, summary, mdm FROM touchpoint"
        " WHERE start_utc >= ? AND start_utc < ?",
        ((start - WINDOW).isoformat(), (end + WINDOW).isoformat()),
    )
    out = {}
    for tp_id, mrn, staff, start_utc, offset, minutes, activity, summary, mdm in rows:
        when = dt.datetime.fromisoformat(start_utc)
        when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        out[tp_id] = Touchpoint(tp_id, mrn, staff, Instant(when, offset), minutes, activity, summary, mdm)
    return out


def mdm_attestations(touchpoints: dict[str, Touchpoint], roster: dict, month: str, zone: dt.tzinfo) -> dict[str, frozenset[str]]:
    """Per patient, the NPIs of practitioners who documented moderate or high MDM in the month."""
    found: dict[str, set[str]] = defaultdict(set)
    for tp in touchpoints.values():
        member = roster.get(tp.staff_id)
        if tp.mdm in ("moderate", "high") and member is not None and member.npi and tp.start.local(zone).strftime("%Y-%m") == month:
            found[tp.mrn].add(member.npi)
    return {mrn: frozenset(npis) for mrn, npis in found.items()}


def load_entries(conn: sqlite3.Connection, first: dt.date, last: dt.date, pseudonyms: dict[str, str]) -> tuple[list[LogEntry], dict[str, str]]:
    """Entries of accepted returns around the month, in arrival order, and descriptions by entry id."""
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: this reads every entry of the month
    rows = cur.execute(
        "SELECT e.entry_id, e.mrn, e.pseudonym, e.touchpoint_ids, e.performer, e.date, e.minutes, e.activity, e.description"
        " FROM return_entry e JOIN return_file f ON f.id = e.return_file_id"
        " WHERE f.status = 'accepted' AND e.date >= ? AND e.date <= ? ORDER BY f.id, e.rowid",
        ((first - WINDOW).isoformat(), (last + WINDOW).isoformat()),
    )
    entries, descriptions = [], {}
    for arrival, (entry_id, mrn, pseud, sources, performer, day, minutes, activity, description) in enumerate(rows):
        entries.append(
            LogEntry(entry_id, mrn or pseudonyms.get(pseud), tuple(json.loads(sources)), performer, dt.date.fromisoformat(day), minutes, activity, arrival)
        )
        descriptions.setdefault(entry_id, description)
    return entries, descriptions


def load_patient_records(conn: sqlite3.Connection, mrns: set[str]) -> dict[str, PatientRecords]:
    """Every record of the given patients, grouped by MRN (records already follow merges)."""
    grouped: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in conn.execute("SELECT * FROM patient"):
        if r["mrn"] in mrns:
            grouped[r["mrn"]]["patient"].append(Patient(r["mrn"], r["family"], r["given"], _date(r["birth_date"]), r["sex"], r["mbi"], _date(r["death_date"])))
    for r in conn.execute("SELECT mrn, code, system, status FROM problem"):
        if r["mrn"] in mrns:
            grouped[r["mrn"]]["problems"].append(Problem(r["mrn"], r["code"], r["system"], r["status"]))
    services: dict[tuple, list[str]] = defaultdict(list)
    for r in conn.execute("SELECT mrn, date, code, practitioner_npi FROM service ORDER BY id"):
        if r["mrn"] in mrns:
            services[(r["mrn"], r["date"], r["practitioner_npi"])].append(r["code"])
    for (mrn, day, npi), codes in services.items():
        grouped[mrn]["services"].append(Service(mrn, dt.date.fromisoformat(day), tuple(codes), npi))
    for r in conn.execute("SELECT mrn, admitted, discharged, kind FROM stay"):
        if r["mrn"] in mrns:
            grouped[r["mrn"]]["stays"].append(Stay(r["mrn"], dt.date.fromisoformat(r["admitted"]), _date(r["discharged"]), r["kind"]))
    for r in conn.execute("SELECT mrn, program, date, practitioner_npi, status, document_id FROM consent ORDER BY id"):
        if r["mrn"] in mrns:
            grouped[r["mrn"]]["consents"].append(Consent(r["mrn"], r["program"], dt.date.fromisoformat(r["date"]), r["practitioner_npi"], r["status"], r["document_id"]))
    for r in conn.execute("SELECT * FROM care_plan"):
        if r["mrn"] in mrns:
            grouped[r["mrn"]]["care_plans"].append(
                CarePlan(r["mrn"], dt.date.fromisoformat(r["date"]), r["document_id"], tuple(json.loads(r["elements"])), _date(r["shared_on"]), _date(r["reviewed_on"]))
            )
    return {
        mrn: PatientRecords(
            patient=(g["patient"] or [None])[0],
            problems=tuple(g["problems"]),
            services=tuple(g["services"]),
            stays=tuple(g["stays"]),
            consents=tuple(g["consents"]),
            care_plans=tuple(g["care_plans"]),
            died_on=g["patient"][0].death_date if g["patient"] else None,
        )
        for mrn, g in ((m, grouped[m]) for m in mrns)
    }


def patients_in_scope(conn: sqlite3.Connection, last: dt.date, touchpoints: dict[str, Touchpoint], entries: list[LogEntry]) -> set[str]:
    """Everyone with a consent on record by month end, or practice time or log entries near it."""
    mrns = {r[0] for r in conn.execute("SELECT DISTINCT mrn FROM consent WHERE date <= ?", (last.isoformat(),))}
    mrns |= {tp.mrn for tp in touchpoints.values()}
    mrns |= {e.mrn for e in entries if e.mrn}
    return mrns


def proposed_codes(conn: sqlite3.Connection, month: str, pseudonyms: dict[str, str]) -> dict[str, list[tuple[str, int]]]:
    """The latest accepted return's proposed codes per patient for the month."""
    latest: dict[str, tuple[int, list[tuple[str, int]]]] = {}
    for r in conn.execute(
        "SELECT p.return_file_id AS f, p.pseudonym, p.mrn, p.code, p.units FROM proposed_code p"
        " JOIN return_file r ON r.id = p.return_file_id WHERE r.status = 'accepted' AND p.month = ? ORDER BY p.return_file_id",
        (month,),
    ):
        mrn = r["mrn"] or pseudonyms.get(r["pseudonym"])
        if mrn is None:
            continue
        if mrn not in latest or latest[mrn][0] < r["f"]:
            latest[mrn] = (r["f"], [])
        latest[mrn][1].append((r["code"], r["units"]))
    return {mrn: lines for mrn, (_, lines) in latest.items()}


def drafts_for_month(conn: sqlite3.Connection, month: str, pseudonyms: dict[str, str]) -> dict[str, dict]:
    """The latest care-plan draft per patient among returns answering this month's queues.

    A draft belongs to the month of the work queue it answers, so a month's packet always shows
    the same draft whether or not it has been decided since (the decision is not in the packet).
    """
    periods = {r["id"]: r["period"] for r in conn.execute("SELECT id, period FROM queue_batch")}
    months = {r["id"]: {periods.get(b) for b in json.loads(r["answers"] or "[]")} for r in conn.execute("SELECT id, answers FROM return_file WHERE status = 'accepted'")}
    drafts = {}
    for r in conn.execute("SELECT * FROM care_plan_draft ORDER BY id"):
        mrn = r["mrn"] or pseudonyms.get(r["pseudonym"])
        if mrn and month in months.get(r["return_file_id"], ()):
            drafts[mrn] = {"id": r["id"], "revises": r["revises"], "changes": json.loads(r["changes"])}
    return drafts


def finding_json(f: Finding) -> dict:
    return {**f.to_json(), "minutes": f.minutes}


def log_with_sources(
    entries: list[LogEntry], descriptions: dict[str, str], counted: dict[str, int], findings: list[Finding], touchpoints: dict[str, Touchpoint], zone: dt.tzinfo
) -> list[dict]:
    """The month's log entries with the practice records they cite, for the review packet."""
    codes: dict[str, list[str]] = defaultdict(list)
    for f in findings:
        if f.entry:
            codes[f.entry].append(f.code)
    out = []
    for e in entries:
        sources = [touchpoints[t] for t in e.touchpoint_ids if t in touchpoints]
        out.append(
            {
                "entry": e.entry_id,
                "date": e.date.isoformat(),
                "minutes": e.minutes,
                "performer": e.performer,
                "activity": e.activity,
                "description": descriptions[e.entry_id],
                "sources": list(e.touchpoint_ids),
                "source_records": [
                    {"id": t.id, "staff": t.staff_id, "local_start": t.start.local(zone).isoformat(timespec="minutes"), "minutes": t.minutes, "activity": t.activity}
                    for t in sources
                ],
                "counted": counted.get(e.entry_id, 0),
                "findings": sorted(codes.get(e.entry_id, [])),
            }
        )
    return out


def reconcile_month(
    cfg: Config, month: str, conn: sqlite3.Connection | None = None, at: dt.datetime | None = None, track: Callable = untracked
) -> list[MonthResult]:
    """Reconcile and decide every patient-month of `month`; keep the results; return them."""
    month = parse_month(month)
    own = conn is None
    conn = conn or open_store(cfg.store.path)
    try:
        with gc_paused():
            return _reconcile(cfg, month, conn, at or dt.datetime.now(dt.UTC), track)
    finally:
        if own:
            conn.close()


def _reconcile(cfg: Config, month: str, conn: sqlite3.Connection, now: dt.datetime, track: Callable) -> list[MonthResult]:
    zone = cfg.zone
    first, last = month_bounds(month)
    start, end = utc_bounds(month, zone)
    roster = load_roster(cfg.roster.file)
    touchpoints = load_touchpoints(conn, start, end)
    known = [r[0] for r in conn.execute("SELECT mrn FROM patient")]
    pseudonyms = reverse_map(read_pseudonym_key(cfg.identity.pseudonym_key_file), known)
    entries, descriptions = load_entries(conn, first, last, pseudonyms)
    rule_set = rule_set_for(month)
    result = reconcile(entries, touchpoints, roster, zone, rule_set.us_locations)
    mrns = patients_in_scope(conn, last, touchpoints, entries)
    records = load_patient_records(conn, mrns)
    proposals = proposed_codes(conn, month, pseudonyms)
    drafts = drafts_for_month(conn, month, pseudonyms)
    policy = Policy(cfg.billing.practitioner_time, cfg.billing.date_of_service, cfg.billing.setting_kind,
                    (cfg.practice.billing_npis or (None,))[0], visit_codes=rule_set.initiating_visit_codes,
                    non_condition_chapters=rule_set.non_condition_chapters)
    counted_by_entry = {c.entry_id: c.minutes for c in result.counted}
    attested = mdm_attestations(touchpoints, roster, month, zone)
    by_id = {e.entry_id: e for e in entries}
    judged = []
    for mrn in track(sorted(mrns), len(mrns), "reconcile"):
        counted, findings = result.for_month(mrn, month)
        if not counted and not findings and not _has_consent(records[mrn], last):
            continue  # nothing happened this month for someone never enrolled by then
        facts = month_facts(mrn, month, records[mrn], counted, roster, policy, attested.get(mrn, frozenset()))
        decision = decide(facts_from_json(facts), rule_set).to_json()
        mismatch = code_mismatch(proposals.get(mrn, []), [(ln["code"], ln["units"]) for ln in decision["lines"]]) if mrn in proposals else None
        findings = findings + ([mismatch] if mismatch else [])
        reconciliation = [finding_json(f) for f in findings]
        involved = {f.entry for f in findings if f.entry} | {c.entry_id for c in counted}
        month_entries = [by_id[e] for e in sorted(involved) if e in by_id]
        packet = review_packet(facts, decision, reconciliation, log_with_sources(month_entries, descriptions, counted_by_entry, findings, touchpoints, zone), drafts.get(mrn))
        judged.append((mrn, facts, decision, reconciliation, packet))
    results = _keep_all(conn, audit.read_key(cfg.audit.key_file), month, judged, now)
    logs.event(log, "reconcile.finished", month=month, patient_months=len(results), entries=len(entries), touchpoints=len(touchpoints),
               changed=sum(r.changed for r in results))
    return results


def _has_consent(records: PatientRecords, last: dt.date) -> bool:
    return any(c.date <= last for c in records.consents)


def _keep_all(conn: sqlite3.Connection, key: bytes, month: str, judged: list[tuple], now: dt.datetime) -> list[MonthResult]:
    """Store the month's results in one transaction; void sign-offs whose packet no longer matches."""
    stamp = now.isoformat()
    results = []
    with transaction(conn):
        existing = {r["mrn"]: r for r in conn.execute("SELECT mrn, state, packet_hash FROM patient_month WHERE month = ?", (month,))}
        for mrn, facts, decision, reconciliation, packet in judged:
            packet_text = canonical(packet)
            digest = content_hash_of(packet_text)
            row = existing.get(mrn)
            if row is not None and row["packet_hash"] == digest:
                results.append(MonthResult(mrn, month, row["state"], decision, reconciliation, False))
                continue
            if row is not None and row["state"] == "released":
                # Billed content is never changed in place; the billing lead must void to correct it.
                audit.record(conn, key, "patient_month.changed_after_release", f"{mrn}|{month}", at=now, new_hash=digest)
                results.append(MonthResult(mrn, month, "released", decision, reconciliation, False))
                continue
            state = "awaiting_signoff" if decision["billable"] else "not_billable"
            conn.execute(
                "INSERT INTO patient_month (mrn, month, state, billable, facts, decision, reconciliation, packet, packet_hash, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mrn, month) DO UPDATE SET state = excluded.state,"
                " billable = excluded.billable, facts = excluded.facts, decision = excluded.decision,"
                " reconciliation = excluded.reconciliation, packet = excluded.packet, packet_hash = excluded.packet_hash,"
                " updated_at = excluded.updated_at",
                (mrn, month, state, int(decision["billable"]), canonical(facts), canonical(decision), canonical(reconciliation), packet_text, digest, stamp),
            )
            voided = 0
            if row is not None:
                voided = conn.execute(
                    "UPDATE signoff SET voided_at = ?, void_reason = 'the packet changed after signing'"
                    " WHERE mrn = ? AND month = ? AND voided_at IS NULL AND packet_hash != ?",
                    (stamp, mrn, month, digest),
                ).rowcount
            audit.record(conn, key, "patient_month.decided", f"{mrn}|{month}", at=now, hash=digest, billable=decision["billable"],
                         blocks=sorted({f["code"] for f in decision["findings"] if f["severity"] == "block"}), signoffs_voided=voided)
            results.append(MonthResult(mrn, month, state, decision, reconciliation, True))
    return results
