"""The reconcile stage: for one month, the store's records and returns in, decisions kept.

Reads the practice's records and the accepted returns, runs reconciliation and the rules
engine (pure cores), and keeps each patient-month's decision with the exact facts it was made
from and its review packet's hash. Re-running after new returns or EHR messages updates the
result without double counting: each run recomputes from the records, never from the last run.
A patient-month whose packet changes loses its sign-off and asks again.

A large practice is judged in shards of patients, one process each (`Shard`, `shard_view`,
`reconcile.Elsewhere`); every process reads one snapshot of the store and the calling process
keeps all results in one transaction. The results do not depend on the number of processes.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import sqlite3
import threading
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from itertools import chain

import orjson

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
from .reconcile import (
    CountedTime,
    Elsewhere,
    Finding,
    LogEntry,
    code_mismatch,
    overlapping_times,
    reconcile,
    repeated_arrivals,
)
from .records import CarePlan, Consent, Instant, Patient, Problem, Service, Stay, Touchpoint
from .roster import load_roster
from .rules import decide, rule_set_for
from .store import open_store, snapshot, transaction

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


def touchpoint_rows(conn: sqlite3.Connection, start: dt.datetime, end: dt.datetime) -> list[tuple]:
    """The touchpoint rows around the month (see WINDOW), the start already a UTC datetime."""
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: this reads every touchpoint of the month
    rows = cur.execute(
        "SELECT id, mrn, staff_id, start_utc, start_offset, minutes, activity, summary, mdm FROM touchpoint"
        " WHERE start_utc >= ? AND start_utc < ?",
        ((start - WINDOW).isoformat(), (end + WINDOW).isoformat()),
    )
    return [(r[0], r[1], r[2], _utc(r[3]), *r[4:]) for r in rows]


def _utc(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def touchpoint_of(row: tuple) -> Touchpoint:
    tp_id, mrn, staff, when, offset, minutes, activity, summary, mdm = row
    return Touchpoint(tp_id, mrn, staff, Instant(when, offset), minutes, activity, summary, mdm)


def mdm_attestations(touchpoints: dict[str, Touchpoint], roster: dict, month: str, zone: dt.tzinfo) -> dict[str, frozenset[str]]:
    """Per patient, the NPIs of practitioners who documented moderate or high MDM in the month."""
    found: dict[str, set[str]] = defaultdict(set)
    for tp in touchpoints.values():
        member = roster.get(tp.staff_id)
        if tp.mdm in ("moderate", "high") and member is not None and member.npi and tp.start.local(zone).strftime("%Y-%m") == month:
            found[tp.mrn].add(member.npi)
    return {mrn: frozenset(npis) for mrn, npis in found.items()}


def entry_rows(conn: sqlite3.Connection, first: dt.date, last: dt.date, pseudonyms: dict[str, str]) -> list[tuple]:
    """Entries of accepted returns around the month (see WINDOW), in arrival order (the index):
    (entry id, mrn, cited touchpoint ids, performer, date text, minutes, activity, description)."""
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: this reads every entry of the month
    rows = cur.execute(
        "SELECT e.entry_id, e.mrn, e.pseudonym, e.touchpoint_ids, e.performer, e.date, e.minutes, e.activity, e.description"
        " FROM return_entry e JOIN return_file f ON f.id = e.return_file_id"
        " WHERE f.status = 'accepted' AND e.date >= ? AND e.date <= ? ORDER BY f.id, e.rowid",
        ((first - WINDOW).isoformat(), (last + WINDOW).isoformat()),
    ).fetchall()
    # One decode for every entry's cited ids (stored as JSON arrays) instead of one per entry.
    cited = orjson.loads("[" + ",".join(r[3] for r in rows) + "]") if rows else []
    return [
        (entry_id, mrn or pseudonyms.get(pseud), tuple(ids), performer, day, minutes, activity, description)
        for (entry_id, mrn, pseud, _, performer, day, minutes, activity, description), ids in zip(rows, cited, strict=True)
    ]


def log_entries(rows: list[tuple], arrivals: Iterable[int]) -> list[LogEntry]:
    """The `entry_rows` at the given arrivals as log entries."""
    days: dict[str, dt.date] = {}
    out = []
    for arrival in arrivals:
        entry_id, mrn, ids, performer, day, minutes, activity, _ = rows[arrival]
        date = days.get(day) or days.setdefault(day, dt.date.fromisoformat(day))
        out.append(LogEntry(entry_id, mrn, ids, performer, date, minutes, activity, arrival))
    return out


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
    entries: list[LogEntry], descriptions: dict[int, str], counted: list[CountedTime], findings: list[Finding], touchpoints: dict[str, Touchpoint], zone: dt.tzinfo
) -> list[dict]:
    """One patient-month's log entries with the practice records they cite, for the review packet.

    `descriptions` by arrival; `counted` and `findings` the patient-month's. Entries are told
    apart by arrival, since a repeated entry shares its original's id.
    """
    minutes = {c.arrival: c.minutes for c in counted}
    codes: dict[int | None, list[str]] = defaultdict(list)
    for f in findings:
        if f.entry:
            codes[f.arrival].append(f.code)
    return [
        {
            "entry": e.entry_id,
            "date": e.date.isoformat(),
            "minutes": e.minutes,
            "performer": e.performer,
            "activity": e.activity,
            "description": descriptions[e.arrival],
            "sources": list(e.touchpoint_ids),
            "source_records": [_source_record(touchpoints[t], zone) for t in e.touchpoint_ids if t in touchpoints],
            "counted": minutes.get(e.arrival, 0),
            "findings": sorted(codes[e.arrival]) if e.arrival in codes else [],
        }
        for e in entries
    ]


def _source_record(tp: Touchpoint, zone: dt.tzinfo) -> dict:
    local = tp.start.utc.astimezone(zone).isoformat(timespec="minutes")
    return {"id": tp.id, "staff": tp.staff_id, "local_start": local, "minutes": tp.minutes, "activity": tp.activity}


PARALLEL_FROM = 500  # patients per process below which starting another process costs more than it saves
MAX_PROCESSES = 8


@dataclass(frozen=True)
class Shard:
    """One of `count` disjoint sets of the practice's patients, by a hash of the MRN."""

    index: int = 0
    count: int = 1

    def holds(self, mrn: str | None) -> bool:
        """Whether this shard judges the patient (entries of no known patient go to the first)."""
        if self.count == 1:
            return True
        if mrn is None:
            return self.index == 0
        return zlib.crc32(mrn.encode()) % self.count == self.index

    def of(self, mrns: Iterable[str | None]) -> set[str | None]:
        """The patients (and None, for the first shard) this shard judges among `mrns`."""
        return {mrn for mrn in mrns if self.holds(mrn)}


@dataclass(frozen=True)
class Judged:
    """One patient-month's outcome as the canonical JSON texts that are kept."""

    mrn: str
    billable: bool
    blocks: tuple[str, ...]  # the rule findings that block billing
    facts: str
    decision: str
    reconciliation: str
    packet: str
    packet_hash: str


@dataclass(frozen=True)
class ShardJudged:
    judged: list[Judged]
    entries: int
    touchpoints: int


@dataclass(frozen=True)
class ShardInputs:
    """What one shard reconciles: see `reconcile.Elsewhere` for how shards add up to the month."""

    touchpoints: dict[str, Touchpoint]
    entries: list[LogEntry]
    descriptions: dict[int, str]  # by arrival
    patients: set[str]  # the shard's patients in scope
    own_touchpoints: int
    elsewhere: Elsewhere | None


def shard_inputs(conn: sqlite3.Connection, month: str, zone: dt.tzinfo, pseudonyms: dict[str, str], shard: Shard) -> ShardInputs:
    first, last = month_bounds(month)
    start, end = utc_bounds(month, zone)
    tp_rows = touchpoint_rows(conn, start, end)
    rows = entry_rows(conn, first, last, pseudonyms)
    # In scope: everyone with a consent on record by month end, or practice time or log entries near it.
    in_scope = {r[0] for r in conn.execute("SELECT DISTINCT mrn FROM consent WHERE date <= ?", (last.isoformat(),))}
    in_scope |= {r[1] for r in tp_rows} | {r[1] for r in rows if r[1]}
    patients = shard.of(in_scope)
    if shard.count == 1:
        touchpoints, own, elsewhere = {r[0]: touchpoint_of(r) for r in tp_rows}, range(len(rows)), None
    else:
        touchpoints, own, elsewhere = shard_view(tp_rows, rows, shard)
    own_touchpoints = sum(1 for tp in touchpoints.values() if tp.mrn in patients)
    return ShardInputs(touchpoints, log_entries(rows, own), {a: rows[a][7] for a in own}, patients, own_touchpoints, elsewhere)


def shard_view(tp_rows: list[tuple], rows: list[tuple], shard: Shard) -> tuple[dict[str, Touchpoint], list[int], Elsewhere]:
    """The touchpoints and the entries (by arrival) one shard reconciles, and what the others add.

    An entry belongs to the shard of the patient its findings go to (`home_of`); the shard's
    touchpoints are its patients' plus any other its entries cite, so that a citation of
    another patient's record is judged as the whole month would judge it.
    """
    mrn_of = {r[0]: r[1] for r in tp_rows}
    ours = shard.of(set(mrn_of.values()) | {r[1] for r in rows})
    own = [arrival for arrival, r in enumerate(rows) if home_of(r[2], r[1], mrn_of) in ours]
    cited_by_own = set(chain.from_iterable(rows[arrival][2] for arrival in own))
    elsewhere = Elsewhere(
        overlaps=overlapping_times((r[0], r[1], r[2], r[3], r[5]) for r in tp_rows),
        repeats=repeated_arrivals([r[0] for r in rows]),
        # Another shard's entry cites one of this shard's records only after its own first one.
        cited=frozenset(chain.from_iterable(r[2] for r in rows if len(r[2]) > 1)),
    )
    touchpoints = {r[0]: touchpoint_of(r) for r in tp_rows if r[1] in ours or r[0] in cited_by_own}
    return touchpoints, own, elsewhere


def home_of(touchpoint_ids: tuple[str, ...], mrn: str | None, mrn_of: dict[str, str]) -> str | None:
    """The patient whose month an entry's findings go to: its first cited record's, else its own."""
    for tp_id in touchpoint_ids:
        if tp_id in mrn_of:
            return mrn_of[tp_id]
    return mrn


def reconcile_month(
    cfg: Config, month: str, conn: sqlite3.Connection | None = None, at: dt.datetime | None = None, track: Callable = untracked,
    processes: int | None = None,
) -> list[MonthResult]:
    """Reconcile and decide every patient-month of `month`; keep the results; return them.

    `processes`: how many processes judge the month's patients (None: one per usable CPU for a
    large practice, see `process_count`); the results are the same whatever the number.
    """
    month = parse_month(month)
    own = conn is None
    conn = conn or open_store(cfg.store.path)
    try:
        with gc_paused():
            return _reconcile(cfg, month, conn, at or dt.datetime.now(dt.UTC), track, processes or process_count(conn))
    finally:
        if own:
            conn.close()


def process_count(conn: sqlite3.Connection) -> int:
    """One process per usable CPU (CPUAffinity/taskset limit it), one per PARALLEL_FROM patients."""
    patients = conn.execute("SELECT COUNT(*) FROM patient").fetchone()[0]
    return max(1, min(len(os.sched_getaffinity(0)), MAX_PROCESSES, patients // PARALLEL_FROM))


def _reconcile(cfg: Config, month: str, conn: sqlite3.Connection, now: dt.datetime, track: Callable, processes: int) -> list[MonthResult]:
    key = audit.read_key(cfg.audit.key_file)
    if processes == 1:
        results, shards = _keep_all(conn, key, month, iter([judge_shard(cfg, month, conn, Shard(), track)]), now)
    else:
        # fork is quick and safe while this process runs one thread (the CLI); the service runs
        # threads, and a lock held by one of them would be copied into a forked child: start
        # fresh interpreters there instead (spawn: no server process, no socket, a second more).
        method = "fork" if threading.active_count() == 1 else "spawn"
        with ProcessPoolExecutor(processes - 1, mp_context=multiprocessing.get_context(method)) as pool:
            others = [pool.submit(judge_shard_apart, cfg, month, Shard(i, processes)) for i in range(1, processes)]
            first = judge_shard(cfg, month, conn, Shard(0, processes), track)
            # This shard's results are kept while the workers finish theirs.
            results, shards = _keep_all(conn, key, month, _as_they_finish(first, others), now)
    logs.event(log, "reconcile.finished", month=month, patient_months=len(results), entries=sum(s.entries for s in shards),
               touchpoints=sum(s.touchpoints for s in shards), changed=sum(r.changed for r in results), processes=processes)
    return results


def _as_they_finish(first: ShardJudged, others: list[Future]) -> Iterator[ShardJudged]:
    """This process's shard, then each worker's as it becomes available."""
    yield first
    for future in others:
        yield future.result()


def judge_shard_apart(cfg: Config, month: str, shard: Shard) -> ShardJudged:
    """`judge_shard` in a worker process, on its own connection to the store (reads only)."""
    with gc_paused(), closing(open_store(cfg.store.path)) as conn:
        return judge_shard(cfg, month, conn, shard)


def judge_shard(cfg: Config, month: str, conn: sqlite3.Connection, shard: Shard, track: Callable = untracked) -> ShardJudged:
    """Reconcile and decide the shard's patient-months of `month` (reads the store, writes nothing).

    All of it from one snapshot of the store, so that EHR messages or returns arriving meanwhile
    wait for the next run. (Each process has its own snapshot: a record arriving between two
    processes' starts can be seen by one shard and not another for this run; the month is judged
    again at the next run.)
    """
    with snapshot(conn):
        return _judge_shard(cfg, month, conn, shard, track)


def _judge_shard(cfg: Config, month: str, conn: sqlite3.Connection, shard: Shard, track: Callable) -> ShardJudged:
    zone = cfg.zone
    _, last = month_bounds(month)
    roster = load_roster(cfg.roster.file)
    known = [r[0] for r in conn.execute("SELECT mrn FROM patient")]
    pseudonyms = reverse_map(read_pseudonym_key(cfg.identity.pseudonym_key_file), known)
    inputs = shard_inputs(conn, month, zone, pseudonyms, shard)
    touchpoints = inputs.touchpoints
    rule_set = rule_set_for(month)
    result = reconcile(inputs.entries, touchpoints, roster, zone, rule_set.us_locations, inputs.elsewhere)
    records = load_patient_records(conn, inputs.patients)
    proposals = proposed_codes(conn, month, pseudonyms)
    drafts = drafts_for_month(conn, month, pseudonyms)
    policy = Policy(cfg.billing.practitioner_time, cfg.billing.date_of_service, cfg.billing.setting_kind,
                    (cfg.practice.billing_npis or (None,))[0], visit_codes=rule_set.initiating_visit_codes,
                    non_condition_chapters=rule_set.non_condition_chapters)
    attested = mdm_attestations(touchpoints, roster, month, zone)
    judged = []
    for mrn in track(sorted(inputs.patients), len(inputs.patients), "reconcile" if shard.count == 1 else f"reconcile (1 of {shard.count} processes)"):
        counted, findings = result.for_month(mrn, month)
        if not counted and not findings and not _has_consent(records[mrn], last):
            continue  # nothing happened this month for someone never enrolled by then
        facts = month_facts(mrn, month, records[mrn], counted, roster, policy, attested.get(mrn, frozenset()))
        decision = decide(facts_from_json(facts), rule_set).to_json()
        mismatch = code_mismatch(proposals.get(mrn, []), [(ln["code"], ln["units"]) for ln in decision["lines"]]) if mrn in proposals else None
        findings = findings + ([mismatch] if mismatch else [])
        reconciliation = [finding_json(f) for f in findings]
        log_entries = log_with_sources(result.entries_for(mrn, month), inputs.descriptions, counted, findings, touchpoints, zone)
        packet = canonical(review_packet(facts, decision, reconciliation, log_entries, drafts.get(mrn)))
        judged.append(Judged(
            mrn, decision["billable"], tuple(sorted({f["code"] for f in decision["findings"] if f["severity"] == "block"})),
            canonical(facts), canonical(decision), canonical(reconciliation), packet, content_hash_of(packet),
        ))
    return ShardJudged(judged, len(inputs.entries), inputs.own_touchpoints)


def _has_consent(records: PatientRecords, last: dt.date) -> bool:
    return any(c.date <= last for c in records.consents)


def _keep_all(
    conn: sqlite3.Connection, key: bytes, month: str, shards: Iterator[ShardJudged], now: dt.datetime
) -> tuple[list[MonthResult], list[ShardJudged]]:
    """Store the month's results in one transaction; void sign-offs whose packet no longer matches.

    `shards` yields each shard's results as they become available. Returns the results by MRN
    and the shards kept.
    """
    results = []
    kept = []
    with transaction(conn):
        existing = {r["mrn"]: r for r in conn.execute("SELECT mrn, state, packet_hash FROM patient_month WHERE month = ?", (month,))}
        for shard in shards:
            kept.append(shard)
            results += [_keep(conn, key, month, j, existing.get(j.mrn), now) for j in sorted(shard.judged, key=lambda j: j.mrn)]
    return sorted(results, key=lambda r: r.mrn), kept


def _keep(conn: sqlite3.Connection, key: bytes, month: str, j: Judged, row: sqlite3.Row | None, now: dt.datetime) -> MonthResult:
    """Store one patient-month's result unless it is unchanged or already released."""
    decision, reconciliation = orjson.loads(j.decision), orjson.loads(j.reconciliation)
    if row is not None and row["packet_hash"] == j.packet_hash:
        return MonthResult(j.mrn, month, row["state"], decision, reconciliation, False)
    if row is not None and row["state"] == "released":
        # Billed content is never changed in place; the billing lead must void to correct it.
        audit.record(conn, key, "patient_month.changed_after_release", f"{j.mrn}|{month}", at=now, new_hash=j.packet_hash)
        return MonthResult(j.mrn, month, "released", decision, reconciliation, False)
    stamp = now.isoformat()
    state = "awaiting_signoff" if j.billable else "not_billable"
    conn.execute(
        "INSERT INTO patient_month (mrn, month, state, billable, facts, decision, reconciliation, packet, packet_hash, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mrn, month) DO UPDATE SET state = excluded.state,"
        " billable = excluded.billable, facts = excluded.facts, decision = excluded.decision,"
        " reconciliation = excluded.reconciliation, packet = excluded.packet, packet_hash = excluded.packet_hash,"
        " updated_at = excluded.updated_at",
        (j.mrn, month, state, int(j.billable), j.facts, j.decision, j.reconciliation, j.packet, j.packet_hash, stamp),
    )
    voided = 0
    if row is not None:
        voided = conn.execute(
            "UPDATE signoff SET voided_at = ?, void_reason = 'the packet changed after signing'"
            " WHERE mrn = ? AND month = ? AND voided_at IS NULL AND packet_hash != ?",
            (stamp, j.mrn, month, j.packet_hash),
        ).rowcount
    audit.record(conn, key, "patient_month.decided", f"{j.mrn}|{month}", at=now, hash=j.packet_hash, billable=j.billable,
                 blocks=list(j.blocks), signoffs_voided=voided)
    return MonthResult(j.mrn, month, state, decision, reconciliation, True)
