"""The synthetic practice (connector/synthetic.py): reproducible, mappable, its problems where planted."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from ccm_connector import synthetic
from ccm_connector.exchange_documents import (
    Enrollment,
    PlanOut,
    QueuePatient,
    StaffEntry,
    TouchpointOut,
    WorkQueue,
    build_workqueue,
    parse_return,
)
from ccm_connector.hl7 import reader
from ccm_connector.intake import check_message
from ccm_connector.mappings.profile import load_profile
from ccm_connector.pseudonym import pseudonym
from ccm_connector.reconcile import overlapping_touchpoints
from ccm_connector.records import Instant, Touchpoint
from ccm_connector.roster import load_roster

MONTH = "2026-11"
CHICAGO = ZoneInfo(synthetic.ZONE)
KEY = b"synthetic-test-pseudonym-key-000"


@pytest.fixture(scope="module")
def practice() -> synthetic.Practice:
    return synthetic.generate(7, MONTH)


@pytest.fixture(scope="module")
def mapped(practice: synthetic.Practice) -> list[dict]:
    profile = load_profile("generic-2.5.1", None)
    return [
        check_message(reader.read_message(m.encode()), profile, CHICAGO)
        for m in synthetic.messages(practice)
    ]


def test_the_same_seed_and_month_give_the_same_practice_and_feed(
    practice: synthetic.Practice,
) -> None:
    again = synthetic.generate(7, MONTH)
    assert again == practice
    assert synthetic.messages(again) == synthetic.messages(practice)
    other = synthetic.generate(8, MONTH)
    assert [p.mrn for p in other.patients] != [p.mrn for p in practice.patients]


def test_the_practice_has_the_promised_shape(practice: synthetic.Practice) -> None:
    assert len(practice.patients) == 36
    per_patient = Counter(t.mrn for t in practice.touchpoints)
    assert set(per_patient) == {p.mrn for p in practice.patients}
    assert all(5 <= n <= 25 for n in per_patient.values()), per_patient
    conditions = Counter(
        sum(c is not synthetic.SYMPTOM for c in p.conditions) for p in practice.patients
    )
    assert conditions[1] >= 4 and sum(n for k, n in conditions.items() if k >= 2) >= 25
    assert sum(p.consent is None for p in practice.patients) == 1
    assert all(p.consent.date < dt.date(2026, 11, 1) for p in practice.patients if p.consent)
    assert Counter(p.visit.code for p in practice.patients) == {"99214": 34, "99211": 2}
    assert sum(len(p.stays) for p in practice.patients) == 3
    incomplete = [
        p.mrn for p in practice.patients if set(p.care_plan.elements) != set(synthetic.ELEMENTS)
    ]
    assert incomplete == [practice.planted.incomplete_plan]
    first, last = dt.datetime(2026, 11, 1, tzinfo=CHICAGO), dt.datetime(2026, 12, 1, tzinfo=CHICAGO)
    assert all(first <= t.start < last for t in practice.touchpoints)
    assert {t.staff_id for t in practice.touchpoints} == set(synthetic.CLINICAL)
    assert len({t.activity for t in practice.touchpoints}) >= 8


def test_every_message_maps_without_rejection_or_warning(
    practice: synthetic.Practice, mapped: list[dict]
) -> None:
    assert [
        (m["action"], m["reason"]) for m in mapped if (m["action"], m["reason"]) != ("mapped", None)
    ] == []
    kinds = Counter(m["type"] for m in mapped)
    n = len(practice.patients)
    assert kinds == {
        "ADT^A04": n,
        "PPR^PC1": n,
        "DFT^P03": n,
        "ADT^A01": 3,
        "ADT^A03": 3,
        "MDM^T02": len(practice.touchpoints) + (n - 1) + n,
    }
    assert len({m["control_id"] for m in mapped}) == len(mapped)


def test_the_mapped_touchpoints_are_the_generated_ones(
    practice: synthetic.Practice, mapped: list[dict]
) -> None:
    records = [r for m in mapped for r in m["records"] if r["kind"] == "touchpoint"]
    got = {
        r["id"]: (
            r["mrn"],
            r["staff_id"],
            r["start"]["utc"],
            r["start"]["offset_minutes"],
            r["minutes"],
            r["activity"],
        )
        for r in records
    }
    want = {
        t.id: (
            t.mrn,
            t.staff_id,
            t.start.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            int(t.start.utcoffset().total_seconds() // 60),
            t.minutes,
            t.activity,
        )
        for t in practice.touchpoints
    }
    assert got == want
    services = [r for m in mapped for r in m["records"] if r["kind"] == "service"]
    assert {tuple(s["codes"]) for s in services} == {("99214",), ("99211",)}
    assert {s["practitioner_npi"] for s in services} == {synthetic.BILLING_NPI}


def test_the_only_overlap_is_the_planted_one(practice: synthetic.Practice) -> None:
    records = [
        Touchpoint(
            t.id,
            t.mrn,
            t.staff_id,
            Instant(t.start.astimezone(dt.UTC), None),
            t.minutes,
            t.activity,
            t.summary,
        )
        for t in practice.touchpoints
    ]
    a, b = practice.planted.overlap
    assert overlapping_touchpoints(records) == {a: b, b: a}


def test_the_planted_touchpoints_are_where_the_problems_need_them(
    practice: synthetic.Practice,
) -> None:
    planted = practice.planted
    by_id = {t.id: t for t in practice.touchpoints}
    late = by_id[planted.next_day]
    assert late.start.date() == dt.date(2026, 11, 30)
    assert late.start.astimezone(ZoneInfo(synthetic.OFFSHORE_ZONE)).date() == dt.date(2026, 12, 1)
    stay = next(p.stays[0] for p in practice.patients if p.mrn == by_id[planted.inpatient].mrn)
    assert stay.admitted <= by_id[planted.inpatient].start <= stay.discharged
    targets = [
        planted.unsupported,
        planted.inflated[0],
        planted.recorder_as_performer,
        planted.duplicate,
        planted.next_day,
        *planted.overlap,
    ]
    assert len({by_id[t].mrn for t in targets}) == len(targets)  # one problem per patient
    assert planted.no_consent not in {by_id[t].mrn for t in targets}


def test_the_roster_is_a_valid_roster(practice: synthetic.Practice, tmp_path) -> None:
    path = tmp_path / "roster.csv"
    path.write_text(synthetic.roster_csv(practice.staff))
    roster = load_roster(path)
    assert Counter(s.role for s in roster.values()) == {
        "clinical": 4,
        "practitioner": 1,
        "non_clinical": 3,
    }
    assert [s.staff_id for s in roster.values() if s.offshore_account] == ["OFF1", "OFF2"]
    assert all(
        roster[s].location == "US" and roster[s].supervisor_npi == synthetic.BILLING_NPI
        for s in synthetic.CLINICAL
    )


def _queue(practice: synthetic.Practice) -> bytes:
    """A work queue for the practice as `queue export` would send it (enrolled patients only)."""
    patients = []
    for p in practice.patients:
        if p.consent is None:
            continue
        tps = tuple(
            TouchpointOut(
                t.id,
                t.staff_id,
                "clinical",
                t.start.date(),
                t.start.strftime("%H:%M"),
                t.minutes,
                t.activity,
                t.summary,
            )
            for t in practice.touchpoints
            if t.mrn == p.mrn
        )
        plan = PlanOut(f"CP-{p.mrn}", p.care_plan.date, p.care_plan.elements)
        patients.append(
            QueuePatient(
                pseudonym(KEY, p.mrn),
                (Enrollment(p.consent.program, synthetic.BILLING_NPI, 20),),
                tuple((c.code, "I10") for c in p.conditions),
                plan,
                tps,
                0,
            )
        )
    staff = tuple(
        StaffEntry(s.staff_id, s.name, s.credential, s.role, s.location)
        for s in practice.staff
        if s.staff_id in synthetic.CLINICAL
    )
    return build_workqueue(
        WorkQueue(
            "LOCALDEMO-000001",
            1,
            "LOCALDEMO",
            MONTH,
            dt.datetime(2026, 12, 1, 5, 30, tzinfo=dt.UTC),
            synthetic.ZONE,
            False,
            staff,
            tuple(patients),
        )
    )


def test_the_offshore_team_describes_every_touchpoint_and_plants_its_mistakes(
    practice: synthetic.Practice,
) -> None:
    created = dt.datetime(2026, 12, 1, 4, 0, tzinfo=dt.UTC)
    document = synthetic.offshore_return(
        _queue(practice), synthetic.scenario_for(practice, "R-TEST-1", created)
    )
    assert document == synthetic.offshore_return(
        _queue(practice), synthetic.scenario_for(practice, "R-TEST-1", created)
    )
    ret = parse_return(document)  # schema-valid
    planted = practice.planted
    by_id = {t.id: t for t in practice.touchpoints}
    sent = [t for t in practice.touchpoints if t.mrn != planted.no_consent]
    cited = Counter(ref for e in ret.entries for ref in e.touchpoint_ids)
    assert set(cited) == {t.id for t in sent}
    assert cited[planted.duplicate] == 2 and sum(cited.values()) == len(sent) + 1
    assert len(ret.entries) == len(sent) + 2  # + the duplicate + the entry with no practice record
    [orphan] = [e for e in ret.entries if not e.touchpoint_ids]
    assert orphan.pseudonym == pseudonym(KEY, by_id[planted.unsupported].mrn)
    entry = {e.touchpoint_ids[0]: e for e in ret.entries if e.touchpoint_ids}
    tp_id, extra = planted.inflated
    assert entry[tp_id].minutes == by_id[tp_id].minutes + extra
    assert entry[planted.recorder_as_performer].performer == synthetic.RECORDER
    assert entry[planted.next_day].date == dt.date(2026, 12, 1)
    honest = set(entry) - {tp_id, planted.recorder_as_performer, planted.next_day}
    for ref in honest:
        t = by_id[ref]
        assert (entry[ref].performer, entry[ref].date, entry[ref].minutes, entry[ref].activity) == (
            t.staff_id,
            t.start.date(),
            t.minutes,
            t.activity,
        )
    [draft] = ret.drafts
    assert (
        draft.pseudonym == pseudonym(KEY, planted.incomplete_plan)
        and draft.revises == f"CP-{planted.incomplete_plan}"
    )
    assert {c.element for c in draft.changes} == {"community_services", "review_schedule"}
    assert {c.month for c in ret.codes} == {MONTH} and {c.code for c in ret.codes} <= {
        "99490",
        "99439",
        "99426",
        "99427",
    }
    assert ret.prepared_by == synthetic.TEAM and ret.answers == ("LOCALDEMO-000001",)


def test_the_ehr_answer_signs_the_packet_it_answers(practice: synthetic.Practice) -> None:
    packet = "\r".join(
        [
            "MSH|^~\\&|CCMCONNECTOR|LOCALDEMO|EHR|PRACTICE|20261202090000+0000||MDM^T02^MDM_T02|RV0123456789abcdef01|P|2.5.1",
            "EVN|T02|20261202090000+0000",
            "PID|||MRN100200^^^LOCALDEMO^MR||ABERNATHY^ELEANOR||19400102|F",
            "PV1||O",
            "TXA|1|CCM-REVIEW|TX|20261202090000+0000|||||1234567893^^^^^^^^NPI|||CCMRV-0123456789abcdef01234567|||||DO",
            "OBX|1|TX|TEXT||Review packet||||||F",
        ]
    )
    at = dt.datetime(2026, 12, 3, 8, 15, tzinfo=CHICAGO)
    answer = synthetic.review_answer(packet, at, "SIGN0001")
    message = reader.read_message(answer.encode())
    assert (
        message.type == "MDM^T04"
        and message.control_id == "SIGN0001"
        and message.processing_id == "P"
    )
    txa, pid = message.first("TXA"), message.first("PID")
    assert (txa.get(2), txa.get(12), txa.get(17)) == (
        "CCM-REVIEW",
        "CCMRV-0123456789abcdef01234567",
        "AU",
    )
    assert (txa.get(22, 1), txa.get(22, 9), txa.get(22, 13)) == (
        synthetic.BILLING_NPI,
        "NPI",
        "NPI",
    )
    assert (pid.get(3), pid.get(5, 1), pid.get(5, 2)) == ("MRN100200", "ABERNATHY", "ELEANOR")
    [record] = check_message(message, load_profile("generic-2.5.1", None), CHICAGO)["records"][1:]
    assert record["kind"] == "signature" and record["authenticator_npi"] == synthetic.BILLING_NPI
    returned = reader.read_message(
        synthetic.review_answer(
            packet, at, "SIGN0002", status="IN", reason="Minutes on 11/3 look high"
        ).encode()
    )
    assert returned.first("TXA").get(17) == "IN" and returned.first("OBX").get(3) == "CCM-NOTE"
