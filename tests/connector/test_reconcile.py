"""Reconciliation: every reconciliation code of spec/findings.md, table-driven, plus invariants."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccm_connector.reconcile import LogEntry, code_mismatch, overlapping_touchpoints, reconcile
from ccm_connector.records import Instant, Touchpoint
from ccm_connector.roster import Staff
from ccm_connector.rules import rule_set_for

CHICAGO = ZoneInfo("America/Chicago")
US = rule_set_for("2026-11").us_locations
ROSTER = {
    "RN7": Staff("RN7", "", "RN", "clinical", "US", "1234567893", None, False, False),
    "MA3": Staff("MA3", "", "MA", "clinical", "US", "1234567893", None, False, False),
    "OFF1": Staff("OFF1", "", "", "non_clinical", "IN", None, None, False, True),
}


def tp(tp_id: str, mrn: str, staff: str, local: str, minutes: int) -> Touchpoint:
    start = dt.datetime.fromisoformat(local).replace(tzinfo=CHICAGO)
    return Touchpoint(tp_id, mrn, staff, Instant(start.astimezone(dt.UTC), -360), minutes, "med_rec", "note")


def entry(entry_id: str, mrn: str | None, sources: tuple[str, ...], performer: str, day: str, minutes: int, arrival: int = 0) -> LogEntry:
    return LogEntry(entry_id, mrn, sources, performer, dt.date.fromisoformat(day), minutes, "med_rec", arrival)


BASE = {
    "TP1": tp("TP1", "P1", "RN7", "2026-11-03T09:00", 25),
    "TP2": tp("TP2", "P2", "MA3", "2026-11-04T10:00", 15),
}

CASES = [
    # (id, entries, touchpoints, expected codes, expected counted minutes)
    ("supported", [entry("E1", "P1", ("TP1",), "RN7", "2026-11-03", 25)], BASE, [], 25),
    ("UNSUPPORTED_ENTRY no source", [entry("E1", "P1", (), "RN7", "2026-11-03", 25)], BASE, ["UNSUPPORTED_ENTRY"], 0),
    ("UNSUPPORTED_ENTRY unknown source", [entry("E1", "P1", ("TP9",), "RN7", "2026-11-03", 25)], BASE, ["UNSUPPORTED_ENTRY"], 0),
    ("PATIENT_MISMATCH", [entry("E1", "P2", ("TP1",), "RN7", "2026-11-03", 25)], BASE, ["PATIENT_MISMATCH"], 0),
    ("PERFORMER_MISMATCH", [entry("E1", "P1", ("TP1",), "MA3", "2026-11-03", 25)], BASE, ["PERFORMER_MISMATCH"], 0),
    ("DATE_MISMATCH", [entry("E1", "P1", ("TP1",), "RN7", "2026-11-04", 25)], BASE, ["DATE_MISMATCH"], 0),
    ("MINUTES_EXCEED_SOURCE", [entry("E1", "P1", ("TP1",), "RN7", "2026-11-03", 40)], BASE, ["MINUTES_EXCEED_SOURCE"], 25),
    ("MINUTES_EXCEED_SOURCE across entries",
     [entry("E1", "P1", ("TP1",), "RN7", "2026-11-03", 20, 0), entry("E2", "P1", ("TP1",), "RN7", "2026-11-03", 10, 1)], BASE,
     ["MINUTES_EXCEED_SOURCE"], 25),
    ("RECORDER_AS_PERFORMER", [entry("E1", "P1", ("TP1",), "OFF1", "2026-11-03", 25)], BASE, ["RECORDER_AS_PERFORMER"], 0),
    ("DUPLICATE_ENTRY same id",
     [entry("E1", "P1", ("TP1",), "RN7", "2026-11-03", 10, 0), entry("E1", "P1", ("TP1",), "RN7", "2026-11-03", 10, 1)], BASE,
     ["DUPLICATE_ENTRY"], 10),
    ("DUPLICATE_ENTRY same content",
     [entry("E1", "P1", ("TP1",), "RN7", "2026-11-03", 10, 0), entry("E9", "P1", ("TP1",), "RN7", "2026-11-03", 10, 1)], BASE,
     ["DUPLICATE_ENTRY"], 10),
    ("OVERLAPPING_TIME",
     [entry("E1", "P1", ("TP1",), "RN7", "2026-11-03", 25, 0), entry("E2", "P2", ("TPX",), "RN7", "2026-11-03", 20, 1)],
     {**BASE, "TPX": tp("TPX", "P2", "RN7", "2026-11-03T09:10", 20)},
     ["OVERLAPPING_TIME", "OVERLAPPING_TIME"], 0),
]


@pytest.mark.parametrize(("name", "entries", "touchpoints", "codes", "counted"), CASES, ids=[c[0] for c in CASES])
def test_reconciliation_codes(name, entries, touchpoints, codes, counted) -> None:
    result = reconcile(entries, touchpoints, ROSTER, CHICAGO, US)
    excluding = sorted(f.code for f in result.findings if f.severity == "exclude")
    assert excluding == sorted(codes)
    assert sum(c.minutes for c in result.counted) == counted


def test_unlogged_practice_time_is_a_warning_per_touchpoint() -> None:
    result = reconcile([entry("E1", "P1", ("TP1",), "RN7", "2026-11-03", 25)], BASE, ROSTER, CHICAGO, US)
    unlogged = [f for f in result.findings if f.code == "UNLOGGED_PRACTICE_TIME"]
    assert [(f.source, f.severity) for f in unlogged] == [("TP2", "warn")]
    assert result.for_month("P2", "2026-11")[1] == unlogged


def test_counted_time_takes_the_practice_records_date_and_performer() -> None:
    late = {"TP3": tp("TP3", "P1", "RN7", "2026-11-30T21:30", 20)}  # 2026-12-01 in UTC and in India
    ok = reconcile([entry("E1", "P1", ("TP3",), "RN7", "2026-11-30", 20)], late, ROSTER, CHICAGO, US)
    assert [(c.date.isoformat(), c.staff_id) for c in ok.counted] == [("2026-11-30", "RN7")]
    assert ok.for_month("P1", "2026-11")[0] and not ok.for_month("P1", "2026-12")[0]
    # The offshore team's calendar says December 1st: the practice's local date decides, and differs.
    india = reconcile([entry("E1", "P1", ("TP3",), "RN7", "2026-12-01", 20)], late, ROSTER, CHICAGO, US)
    assert [f.code for f in india.findings] == ["DATE_MISMATCH"]
    assert india.for_month("P1", "2026-11")[1][0].code == "DATE_MISMATCH"  # the finding stays in the practice's month


def test_overlap_needs_another_patient() -> None:
    same_patient = [tp("A", "P1", "RN7", "2026-11-03T09:00", 30), tp("B", "P1", "RN7", "2026-11-03T09:10", 10)]
    assert overlapping_touchpoints(same_patient) == {}
    back_to_back = [tp("A", "P1", "RN7", "2026-11-03T09:00", 30), tp("B", "P2", "RN7", "2026-11-03T09:30", 10)]
    assert overlapping_touchpoints(back_to_back) == {}


def test_code_mismatch() -> None:
    assert code_mismatch([("99490", 1)], [("99490", 1)]) is None
    finding = code_mismatch([("99490", 1)], [("99490", 1), ("99439", 1)])
    assert finding is not None and finding.code == "CODE_MISMATCH" and finding.severity == "warn"


entries_strategy = st.lists(
    st.builds(
        entry,
        st.text("E", min_size=1, max_size=1).flatmap(lambda p: st.integers(0, 30).map(lambda i: f"{p}{i}")),
        st.sampled_from(["P1", "P2", None]),
        st.lists(st.sampled_from(["TP1", "TP2", "TP9"]), max_size=2, unique=True).map(tuple),
        st.sampled_from(["RN7", "MA3", "OFF1", "ZZ9"]),
        st.sampled_from(["2026-11-03", "2026-11-04"]),
        st.integers(1, 60),
        st.integers(0, 5),
    ),
    max_size=12,
)


@given(entries_strategy)
def test_counted_minutes_never_exceed_the_practice_records(entries) -> None:
    result = reconcile(entries, BASE, ROSTER, CHICAGO, US)
    for tp_id, record in BASE.items():
        assert sum(c.minutes for c in result.counted if tp_id in c.sources) <= record.minutes
    claimed = sum(e.minutes for e in entries)
    excluded = sum(f.minutes for f in result.findings if f.severity == "exclude")
    assert sum(c.minutes for c in result.counted) + excluded == claimed
    for c in result.counted:
        assert all(BASE[s].mrn == c.mrn and BASE[s].staff_id == c.staff_id for s in c.sources)
