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
from collections.abc import Iterable, Mapping
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


@dataclass
class Reconciliation:
    counted: list[CountedTime] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # Which patient-month each finding belongs to: (mrn or None, YYYY-MM).
    finding_months: list[tuple[str | None, str]] = field(default_factory=list)

    def add(self, finding: Finding, mrn: str | None, month: str) -> None:
        self.findings.append(finding)
        self.finding_months.append((mrn, month))
        self.__dict__.pop("_index", None)

    def for_month(self, mrn: str, month: str) -> tuple[list[CountedTime], list[Finding]]:
        """The counted time and findings of one patient-month (indexed once, on first use)."""
        if not hasattr(self, "_index"):
            index: dict[tuple[str | None, str], tuple[list, list]] = defaultdict(lambda: ([], []))
            for c in self.counted:
                index[(c.mrn, month_of(c.date))][0].append(c)
            for f, key in zip(self.findings, self.finding_months, strict=True):
                index[key][1].append(f)
            self._index = index
        counted, findings = self._index.get((mrn, month), ([], []))
        return list(counted), list(findings)


def month_of(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def local_date(tp: Touchpoint, zone: dt.tzinfo) -> dt.date:
    return tp.start.utc.astimezone(zone).date()


def overlapping_touchpoints(touchpoints: Iterable[Touchpoint]) -> dict[str, str]:
    """Touchpoint id → the id of another patient's touchpoint by the same staff that overlaps it."""
    by_staff: dict[str, list[Touchpoint]] = defaultdict(list)
    for tp in touchpoints:
        by_staff[tp.staff_id].append(tp)
    overlaps: dict[str, str] = {}
    for items in by_staff.values():
        items.sort(key=lambda t: (t.start.utc, t.id))
        for i, a in enumerate(items):
            a_end = a.start.utc + dt.timedelta(minutes=a.minutes)
            for b in items[i + 1 :]:
                if b.start.utc >= a_end:
                    break
                if b.mrn != a.mrn:
                    overlaps.setdefault(a.id, b.id)
                    overlaps.setdefault(b.id, a.id)
    return overlaps


def reconcile(
    entries: Iterable[LogEntry],
    touchpoints: Mapping[str, Touchpoint],
    roster: Mapping[str, Staff],
    zone: dt.tzinfo,
    us_locations: frozenset[str],
) -> Reconciliation:
    """Check every entry against the practice records it cites; keep what they support.

    `us_locations`: the rule year's United States (cms-rules §4.7), to recognise offshore
    documentation accounts named as performers.
    """
    result = Reconciliation()
    local_dates = {tp_id: local_date(tp, zone) for tp_id, tp in touchpoints.items()}
    remaining = {tp_id: tp.minutes for tp_id, tp in touchpoints.items()}
    overlaps = overlapping_touchpoints(touchpoints.values())
    seen_ids: set[str] = set()
    seen_content: set[tuple] = set()
    cited: set[str] = set()
    for entry in sorted(entries, key=lambda e: (e.arrival, e.entry_id)):
        sources = [touchpoints[t] for t in entry.touchpoint_ids if t in touchpoints]
        month = month_of(local_dates[sources[0].id]) if sources else month_of(entry.date)
        mrn = sources[0].mrn if sources else entry.mrn
        content = (entry.touchpoint_ids, entry.performer, entry.date, entry.minutes, entry.mrn)
        problem = _first_problem(entry, sources, roster, local_dates, overlaps, us_locations, entry.entry_id in seen_ids or content in seen_content)
        seen_ids.add(entry.entry_id)
        seen_content.add(content)
        # An entry that cites a touchpoint describes it, even wrongly: its own finding says how.
        cited.update(t.id for t in sources)
        if problem is not None:
            result.add(problem, mrn, month)
            continue
        granted = _claim(sources, entry.minutes, remaining)
        if granted < entry.minutes:
            excess = entry.minutes - granted
            result.add(
                Finding("MINUTES_EXCEED_SOURCE", entry.entry_id, ",".join(entry.touchpoint_ids),
                        f"claims {entry.minutes} minutes; the practice record leaves {granted}; {excess} excluded", excess),
                mrn, month,
            )
        if granted:
            result.counted.append(
                CountedTime(entry.entry_id, mrn, local_dates[sources[0].id], sources[0].staff_id, granted, tuple(t.id for t in sources))
            )
    for tp in sorted(touchpoints.values(), key=lambda t: (t.start.utc, t.id)):
        if tp.id not in cited:
            result.add(
                Finding("UNLOGGED_PRACTICE_TIME", None, tp.id, f"{tp.minutes} minutes of practice time that no log entry describes"),
                tp.mrn, month_of(local_dates[tp.id]),
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
) -> Finding | None:
    """The reason the whole entry cannot count, or None. Order: most fundamental first."""
    cite = ",".join(entry.touchpoint_ids) or None
    whole = entry.minutes

    def finding(code: str, message: str) -> Finding:
        return Finding(code, entry.entry_id, cite, message, whole)

    if duplicate:
        return finding("DUPLICATE_ENTRY", "the same entry (id, or same source and content) arrived before")
    if not entry.touchpoint_ids or len(sources) != len(entry.touchpoint_ids):
        return finding("UNSUPPORTED_ENTRY", "refers to no practice record" if not sources else "cites a practice record that does not exist")
    performer = roster.get(entry.performer)
    if performer is not None and (performer.offshore_account or performer.location not in us_locations and performer.role == "non_clinical"):
        return finding("RECORDER_AS_PERFORMER", "an offshore or documentation account is named as the performer")
    # Plain loops: this runs for every entry of every month (bench/bench_month_close.py).
    for tp in sources:
        if tp.mrn != entry.mrn:
            return finding("PATIENT_MISMATCH", "the entry's patient differs from its practice record's")
    for tp in sources:
        if tp.staff_id != entry.performer:
            return finding("PERFORMER_MISMATCH", "the entry's performer differs from its practice record's")
    for tp in sources:
        if local_dates[tp.id] != entry.date:
            return finding("DATE_MISMATCH", "the entry's date differs from its practice record's local date")
    for tp in sources:
        if tp.id in overlaps:
            return finding("OVERLAPPING_TIME", f"the performer's practice record {tp.id} overlaps {overlaps[tp.id]} for another patient")
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
