"""Reconciliation: the offshore activity log checked against the practice's own records.

A pure function of its inputs. The offshore log may only *describe* practice touchpoints; every
minute that survives becomes a time entry for the rules engine, dated and attributed as the
practice recorded it. Everything else stays visible as a finding (spec/findings.md,
"Reconciliation"). Entries are taken in arrival order, so the first entry to claim a touchpoint's
minutes gets them and a later one claiming the same minutes is the one cut back.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .records import Touchpoint
from .roster import Staff

SEVERITY = {
    "UNSUPPORTED_ENTRY": "exclude",
    "PATIENT_MISMATCH": "exclude",
    "PERFORMER_MISMATCH": "exclude",
    "DATE_MISMATCH": "exclude",
    "MINUTES_EXCEED_SOURCE": "exclude",
    "RECORDER_AS_PERFORMER": "exclude",
    "DUPLICATE_ENTRY": "exclude",
    "OVERLAPPING_TIME": "exclude",
    "UNLOGGED_PRACTICE_TIME": "warn",
    "CODE_MISMATCH": "warn",
}


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One activity-log entry of an accepted offshore return."""

    entry_id: str
    mrn: str | None  # resolved from the entry's pseudonym; None when no patient has it
    touchpoint_ids: tuple[str, ...]
    performer: str
    date: dt.date
    minutes: int
    activity: str
    arrival: int  # order of arrival across returns (return sequence, then position)


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    entry: str | None
    source: str | None
    message: str
    minutes: int = 0  # minutes this finding takes out of the count
    # The entry's arrival: tells apart entries that share an id (a DUPLICATE_ENTRY and its original).
    arrival: int | None = field(default=None, compare=False)

    @property
    def severity(self) -> str:
        return SEVERITY[self.code]

    def to_json(self) -> dict:
        return {"code": self.code, "severity": self.severity, "entry": self.entry, "source": self.source, "message": self.message}


@dataclass(frozen=True, slots=True)
class CountedTime:
    """Minutes of a log entry that the practice's records support, as the practice recorded them."""

    entry_id: str
    mrn: str
    date: dt.date  # the practice record's local date
    staff_id: str  # the practice record's performer
    minutes: int
    sources: tuple[str, ...]
    arrival: int | None = field(default=None, compare=False)  # the entry's


@dataclass
class Reconciliation:
    counted: list[CountedTime] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # Which patient-month each finding belongs to: (mrn or None, YYYY-MM).
    finding_months: list[tuple[str | None, str]] = field(default_factory=list)
    # Every entry with the patient-month its counted time or finding belongs to.
    entry_months: list[tuple[LogEntry, str | None, str]] = field(default_factory=list)

    def add(self, finding: Finding, mrn: str | None, month: str) -> None:
        self.findings.append(finding)
        self.finding_months.append((mrn, month))
        self.__dict__.pop("_index", None)

    def for_month(self, mrn: str, month: str) -> tuple[list[CountedTime], list[Finding]]:
        """The counted time and findings of one patient-month (indexed once, on first use)."""
        counted, findings, _ = self._indexed().get((mrn, month), ([], [], []))
        return list(counted), list(findings)

    def entries_for(self, mrn: str, month: str) -> list[LogEntry]:
        """The log entries whose counted time or findings belong to the patient-month, in arrival order."""
        return list(self._indexed().get((mrn, month), ([], [], []))[2])

    def _indexed(self) -> dict[tuple[str | None, str], tuple[list, list, list]]:
        if not hasattr(self, "_index"):
            index: dict[tuple[str | None, str], tuple[list, list, list]] = defaultdict(lambda: ([], [], []))
            for c in self.counted:
                index[(c.mrn, month_of(c.date))][0].append(c)
            for f, key in zip(self.findings, self.finding_months, strict=True):
                index[key][1].append(f)
            for e, mrn, month in self.entry_months:
                index[(mrn, month)][2].append(e)
            self._index = index
        return self._index


def month_of(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def local_date(tp: Touchpoint, zone: dt.tzinfo) -> dt.date:
    return tp.start.utc.astimezone(zone).date()


def overlapping_touchpoints(touchpoints: Iterable[Touchpoint]) -> dict[str, str]:
    """Touchpoint id → the id of another patient's touchpoint by the same staff that overlaps it."""
    return overlapping_times((t.id, t.mrn, t.staff_id, t.start.utc, t.minutes) for t in touchpoints)


def overlapping_times(times: Iterable[tuple[str, str, str, dt.datetime, int]]) -> dict[str, str]:
    """`overlapping_touchpoints` over (id, mrn, staff id, UTC start, minutes) tuples."""
    by_staff: dict[str, list[tuple[dt.datetime, str, str, int]]] = defaultdict(list)
    for tp_id, mrn, staff, start, minutes in times:
        by_staff[staff].append((start, tp_id, mrn, minutes))
    overlaps: dict[str, str] = {}
    for items in by_staff.values():
        items.sort()
        for i, (a_start, a_id, a_mrn, a_minutes) in enumerate(items):
            a_end = a_start + dt.timedelta(minutes=a_minutes)
            j = i + 1
            while j < len(items) and items[j][0] < a_end:  # the later times that start before this one ends
                b_id, b_mrn = items[j][1], items[j][2]
                if b_mrn != a_mrn:
                    overlaps.setdefault(a_id, b_id)
                    overlaps.setdefault(b_id, a_id)
                j += 1
    return overlaps


@dataclass(frozen=True)
class Elsewhere:
    """What reconciling one shard of a practice's patients needs to know about the others.

    Reconciliation is per patient except in three places, which this carries in from the whole
    month (connector/month_close.py reconciles large months in shards, one process each):
    a staff member's times overlap across patients, an entry id repeats across patients, and an
    entry may cite another patient's touchpoint (which then is not unlogged practice time).
    """

    overlaps: Mapping[str, str]  # overlapping_touchpoints over every touchpoint of the month
    repeats: frozenset[int]  # arrivals of entries whose id arrived before, anywhere
    cited: frozenset[str]  # touchpoint ids cited by entries of other shards (any entry will do)


def repeated_arrivals(ids: Sequence[str]) -> frozenset[int]:
    """Of entry ids in arrival order, the arrivals (indexes) whose id arrived before (`Elsewhere.repeats`)."""
    if len(set(ids)) == len(ids):
        return frozenset()  # the usual month: no id repeats
    seen: set[str] = set()
    out = set()
    for arrival, entry_id in enumerate(ids):
        if entry_id in seen:
            out.add(arrival)
        seen.add(entry_id)
    return frozenset(out)


def reconcile(
    entries: Iterable[LogEntry],
    touchpoints: Mapping[str, Touchpoint],
    roster: Mapping[str, Staff],
    zone: dt.tzinfo,
    us_locations: frozenset[str],
    elsewhere: Elsewhere | None = None,
) -> Reconciliation:
    """Check every entry against the practice records it cites; keep what they support.

    `us_locations`: the rule year's United States (cms-rules §4.7), to recognise offshore
    documentation accounts named as performers. `elsewhere`: when `entries` are one shard's
    (every entry whose first cited touchpoint, or else whose patient, is the shard's) and
    `touchpoints` the shard's patients' plus those its entries cite, what the rest of the month
    says; the union of the shards' results is then the whole month's.
    """
    result = Reconciliation()
    local_dates = {tp_id: local_date(tp, zone) for tp_id, tp in touchpoints.items()}
    months = {day: month_of(day) for day in set(local_dates.values())}
    remaining = {tp_id: tp.minutes for tp_id, tp in touchpoints.items()}
    overlaps = elsewhere.overlaps if elsewhere else overlapping_touchpoints(touchpoints.values())
    repeats = elsewhere.repeats if elsewhere else frozenset()
    seen_ids: set[str] = set()
    seen_content: set[tuple] = set()
    cited: set[str] = set(elsewhere.cited) if elsewhere else set()
    for entry in sorted(entries, key=lambda e: (e.arrival, e.entry_id)):
        ids = entry.touchpoint_ids
        sources = [touchpoints[t] for t in ids if t in touchpoints]
        if sources:
            first_day = local_dates[sources[0].id]
            month, mrn = months[first_day], sources[0].mrn
        else:
            month, mrn = month_of(entry.date), entry.mrn
        content = (ids, entry.performer, entry.date, entry.minutes, entry.mrn)
        duplicate = entry.entry_id in seen_ids or entry.arrival in repeats or content in seen_content
        problem = _first_problem(entry, sources, roster, local_dates, overlaps, us_locations, duplicate)
        seen_ids.add(entry.entry_id)
        seen_content.add(content)
        # An entry that cites a touchpoint describes it, even wrongly: its own finding says how.
        cited.update(ids)
        result.entry_months.append((entry, mrn, month))
        if problem is not None:
            code, message = problem
            result.add(Finding(code, entry.entry_id, ",".join(ids) or None, message, entry.minutes, entry.arrival), mrn, month)
            continue
        granted = _claim(sources, entry.minutes, remaining)
        if granted < entry.minutes:
            excess = entry.minutes - granted
            result.add(
                Finding("MINUTES_EXCEED_SOURCE", entry.entry_id, ",".join(ids),
                        f"claims {entry.minutes} minutes; the practice record leaves {granted}; {excess} excluded", excess, entry.arrival),
                mrn, month,
            )
        if granted:
            # No problem: every cited record exists, so the sources are the cited ids.
            result.counted.append(CountedTime(entry.entry_id, mrn, first_day, sources[0].staff_id, granted, ids, entry.arrival))
    unlogged = [tp for tp_id, tp in touchpoints.items() if tp_id not in cited]
    for tp in sorted(unlogged, key=lambda t: (t.start.utc, t.id)):
        result.add(
            Finding("UNLOGGED_PRACTICE_TIME", None, tp.id, f"{tp.minutes} minutes of practice time that no log entry describes"),
            tp.mrn, months[local_dates[tp.id]],
        )
    return result


def _first_problem(
    entry: LogEntry,
    sources: list[Touchpoint],
    roster: Mapping[str, Staff],
    local_dates: Mapping[str, dt.date],
    overlaps: Mapping[str, str],
    us_locations: frozenset[str],
    duplicate: bool,
) -> tuple[str, str] | None:
    """The code and message of the reason the whole entry cannot count, or None.

    Order: most fundamental first. Plain loops: this runs for every entry of every month
    (bench/bench_month_close.py).
    """
    if duplicate:
        return "DUPLICATE_ENTRY", "the same entry (id, or same source and content) arrived before"
    if not entry.touchpoint_ids or len(sources) != len(entry.touchpoint_ids):
        return "UNSUPPORTED_ENTRY", "refers to no practice record" if not sources else "cites a practice record that does not exist"
    performer = roster.get(entry.performer)
    if performer is not None and (performer.offshore_account or performer.location not in us_locations and performer.role == "non_clinical"):
        return "RECORDER_AS_PERFORMER", "an offshore or documentation account is named as the performer"
    for tp in sources:
        if tp.mrn != entry.mrn:
            return "PATIENT_MISMATCH", "the entry's patient differs from its practice record's"
    for tp in sources:
        if tp.staff_id != entry.performer:
            return "PERFORMER_MISMATCH", "the entry's performer differs from its practice record's"
    for tp in sources:
        if local_dates[tp.id] != entry.date:
            return "DATE_MISMATCH", "the entry's date differs from its practice record's local date"
    for tp in sources:
        if tp.id in overlaps:
            return "OVERLAPPING_TIME", f"the performer's practice record {tp.id} overlaps {overlaps[tp.id]} for another patient"
    return None


def _claim(sources: list[Touchpoint], wanted: int, remaining: dict[str, int]) -> int:
    """Take up to `wanted` minutes from the sources' remaining minutes; return what was granted."""
    granted = 0
    for tp in sources:
        take = min(wanted - granted, remaining[tp.id])
        remaining[tp.id] -= take
        granted += take
    return granted


def code_mismatch(proposed: Iterable[tuple[str, int]], computed: Iterable[tuple[str, int]]) -> Finding | None:
    """CODE_MISMATCH when the offshore team's proposed (code, units) differ from the engine's."""
    p, c = sorted(proposed), sorted(computed)
    if p == c:
        return None
    shown = lambda lines: ", ".join(f"{code}x{units}" for code, units in lines) or "nothing"  # noqa: E731
    return Finding("CODE_MISMATCH", None, None, f"proposed {shown(p)}; the rules compute {shown(c)}")
