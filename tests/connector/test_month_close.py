"""The reconcile stage in shards: any number of processes gives the whole month's result."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import threading
import zlib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from billing_fixtures import add_patient, add_return, add_touchpoint
from hypothesis import given, settings
from hypothesis import strategies as st

from ccm_connector.config import load_config
from ccm_connector.month_close import (
    Shard,
    log_entries,
    process_count,
    reconcile_month,
    shard_view,
    touchpoint_of,
)
from ccm_connector.reconcile import reconcile
from ccm_connector.roster import Staff
from ccm_connector.rules import rule_set_for
from ccm_connector.store import open_store

CHICAGO = ZoneInfo("America/Chicago")
US = rule_set_for("2026-11").us_locations
ROSTER = {
    "RN7": Staff("RN7", "", "RN", "clinical", "US", "1234567893", None, False, False),
    "MA3": Staff("MA3", "", "MA", "clinical", "US", "1234567893", None, False, False),
}
PATIENTS = ["P1", "P2", "P3", "P4", "P5"]


def row(tp_id: str, mrn: str, staff: str, minute: int, minutes: int) -> tuple:
    """A touchpoint row as the stage reads it: 2026-11-03 09:00 Chicago plus `minute`."""
    local = dt.datetime(2026, 11, 3, 9, 0, tzinfo=CHICAGO) + dt.timedelta(minutes=minute)
    return (tp_id, mrn, staff, local.astimezone(dt.UTC), -360, minutes, "call", "note", None)


touchpoint_rows = st.lists(
    st.tuples(st.sampled_from(PATIENTS), st.sampled_from(["RN7", "MA3"]), st.integers(0, 120), st.integers(1, 30)),
    min_size=1, max_size=10,
).map(lambda items: [row(f"T{i}", *item) for i, item in enumerate(items)])


def entries_for(rows: list[tuple]):
    ids = [r[0] for r in rows] + ["T-none"]
    one = st.tuples(
        st.sampled_from(["E1", "E2", "E3", "E4", "E5", "E6"]),  # few ids: they repeat, across patients too
        st.sampled_from([*PATIENTS, None]),
        st.lists(st.sampled_from(ids), max_size=3, unique=True),
        st.sampled_from(["RN7", "MA3"]),
        st.sampled_from(["2026-11-03", "2026-11-04"]),
        st.integers(1, 40),
    )
    return st.lists(one, max_size=12).map(lambda items: [(i, m, tuple(s), p, d, n, "call", "d") for i, m, s, p, d, n in items])


def by_patient_month(results) -> dict:
    out = {}
    for mrn in PATIENTS:
        for month in ("2026-10", "2026-11", "2026-12"):
            counted, findings = [], []
            for r in results:
                c, f = r.for_month(mrn, month)
                counted += c
                findings += f
            out[(mrn, month)] = (sorted(counted, key=repr), sorted(findings, key=repr))
    return out


@settings(max_examples=300)
@given(touchpoint_rows.flatmap(lambda rows: st.tuples(st.just(rows), entries_for(rows))), st.integers(2, 4))
def test_shards_add_up_to_the_whole_month(data, count) -> None:
    rows, entries = data
    whole = reconcile(log_entries(entries, range(len(entries))), {r[0]: touchpoint_of(r) for r in rows}, ROSTER, CHICAGO, US)
    parts = []
    for index in range(count):
        touchpoints, own, elsewhere = shard_view(rows, entries, Shard(index, count))
        parts.append(reconcile(log_entries(entries, own), touchpoints, ROSTER, CHICAGO, US, elsewhere))
    assert by_patient_month(parts) == by_patient_month([whole])


def shard_of(mrn: str, count: int) -> int:
    return zlib.crc32(mrn.encode()) % count


@pytest.fixture
def practice(local_instance: Path):
    """A practice whose planted problems cross shards: overlaps, repeated ids and citations
    of other patients' records, with the patients spread over three shards."""
    cfg = load_config(local_instance / "connector.toml")
    conn = open_store(cfg.store.path)
    mrns = [f"MRN{i}" for i in range(12)]
    assert {shard_of(m, 3) for m in mrns} == {0, 1, 2}
    for i, mrn in enumerate(mrns):
        add_patient(conn, mrn)
        add_touchpoint(conn, f"TP{i}a", mrn, "RN7", dt.datetime(2026, 11, 3, 8, 0) + dt.timedelta(minutes=30 * i), 25)
        add_touchpoint(conn, f"TP{i}b", mrn, "MA3", dt.datetime(2026, 11, 14, 8, 0) + dt.timedelta(minutes=30 * i), 20)
    # MRN0's and MRN4's (different shards) RN7 times overlap.
    add_touchpoint(conn, "TPover", "MRN4", "RN7", dt.datetime(2026, 11, 3, 8, 10), 15)
    entries = [
        {"id": f"E{i}{part}", "mrn": mrn, "sources": [f"TP{i}{part}"], "performer": "RN7" if part == "a" else "MA3",
         "date": "2026-11-03" if part == "a" else "2026-11-14", "minutes": 25 if part == "a" else 20}
        for i, mrn in enumerate(mrns) for part in "ab"
    ]
    entries += [
        {"id": "Eover", "mrn": "MRN4", "sources": ["TPover"], "performer": "RN7", "date": "2026-11-03", "minutes": 15},
        {"id": "Ecross", "mrn": "MRN4", "sources": ["TP1b", "TP4b"], "performer": "MA3", "date": "2026-11-14", "minutes": 10},
        {"id": "Eghost", "mrn": "MRN6", "sources": ["TP-none"], "performer": "MA3", "date": "2026-11-14", "minutes": 10},
    ]
    for a, b in (("MRN0", "MRN4"), ("MRN2", "MRN10"), ("MRN1", "MRN4")):
        assert shard_of(a, 2) != shard_of(b, 2) and shard_of(a, 3) != shard_of(b, 3)
    add_return(conn, cfg.identity.pseudonym_key_file, entries)
    # A later return repeats an id MRN2's entry used first, for MRN10.
    add_return(conn, cfg.identity.pseudonym_key_file, [
        {"id": "E2a", "mrn": "MRN10", "sources": ["TP10a"], "performer": "RN7", "date": "2026-11-03", "minutes": 5},
    ], name="r2")
    return cfg, conn


def kept(conn) -> list[tuple]:
    return [tuple(r) for r in conn.execute("SELECT mrn, state, billable, facts, decision, reconciliation, packet, packet_hash FROM patient_month ORDER BY mrn")]


def test_any_number_of_processes_keeps_the_same_month(practice, monkeypatch) -> None:
    cfg, conn = practice
    methods = []
    real = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: methods.append(method) or real(method))
    one = reconcile_month(cfg, "2026-11", conn, processes=1)
    alone = kept(conn)
    codes = {f["code"] for r in one for f in r.reconciliation}
    assert {"OVERLAPPING_TIME", "DUPLICATE_ENTRY", "PATIENT_MISMATCH", "UNSUPPORTED_ENTRY"} <= codes
    conn.execute("DELETE FROM patient_month")
    three = reconcile_month(cfg, "2026-11", conn, processes=3)
    assert kept(conn) == alone
    assert [r.to_json() for r in three] == [r.to_json() for r in one]
    assert methods == ["fork"]  # one thread here: forked workers
    # Nothing changed since: a sharded re-run changes nothing either.
    assert not any(r.changed for r in reconcile_month(cfg, "2026-11", conn, processes=2))


def test_a_process_with_threads_starts_its_workers_in_fresh_interpreters(practice, monkeypatch) -> None:
    cfg, conn = practice
    reconcile_month(cfg, "2026-11", conn, processes=1)
    alone = kept(conn)
    conn.execute("DELETE FROM patient_month")
    methods = []
    real = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: methods.append(method) or real(method))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # the service runs threads: fork would be unsafe
    other.start()
    try:
        reconcile_month(cfg, "2026-11", conn, processes=2)
    finally:
        stop.set()
        other.join()
    assert methods == ["spawn"]
    assert kept(conn) == alone


def test_a_repeated_entry_id_shows_each_entry_in_its_own_packet(practice) -> None:
    cfg, conn = practice
    reconcile_month(cfg, "2026-11", conn, processes=1)
    logs = {
        r["mrn"]: [e for e in json.loads(r["packet"])["activity_log"] if e["entry"] == "E2a"]
        for r in conn.execute("SELECT mrn, packet FROM patient_month WHERE mrn IN ('MRN2', 'MRN10')")
    }
    assert [(e["minutes"], e["counted"], e["findings"]) for e in logs["MRN2"]] == [(25, 25, [])]
    assert [(e["minutes"], e["counted"], e["findings"]) for e in logs["MRN10"]] == [(5, 0, ["DUPLICATE_ENTRY"])]


def test_one_process_per_usable_cpu_for_a_large_practice(practice, monkeypatch) -> None:
    _, conn = practice
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert process_count(conn) == 1  # 12 patients: starting a worker would cost more than it saves
    conn.executemany("INSERT INTO patient (mrn, family, given) VALUES (?, 'DOE', 'JO')", [(f"X{i}",) for i in range(988)])
    assert process_count(conn) == 2  # 1,000 patients: 500 each
    conn.executemany("INSERT INTO patient (mrn, family, given) VALUES (?, 'DOE', 'JO')", [(f"Y{i}",) for i in range(4000)])
    assert process_count(conn) == 3  # as many as the CPUs this process may use
