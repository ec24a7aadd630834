"""Facts validation: every kind of invalid input names its JSON path (spec/rules-check.md)."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

from ccm_connector.facts import (
    Decision,
    FactsError,
    Finding,
    Line,
    Policy,
    facts_from_json,
)

NPI = "1234567893"


def valid() -> dict[str, Any]:
    return {
        "patient": {
            "id": "MRN-1001",
            "chronic_conditions": ["E11.9", "I10"],
            "qmb": False,
            "last_visit_before_consent": "2026-02-10",
            "died_on": None,
        },
        "month": "2026-11",
        "program": "ccm",
        "setting": "physician",
        "billing_practitioner": NPI,
        "complex_mdm": False,
        "consent": {"date": "2026-03-01", "practitioner": NPI},
        "initiating_visit": {
            "date": "2026-02-10",
            "code": "99214",
            "practitioner": NPI,
            "ccm_discussed": True,
        },
        "care_plan": {
            "date": "2026-03-01",
            "reviewed": "2026-10-15",
            "shared_with_patient": "2026-03-02",
            "elements": ["problems", "goals"],
        },
        "staff": {
            "RN7": {"role": "clinical", "location": "US", "supervisor": NPI, "excluded": False},
            "DR1": {"role": "practitioner", "npi": NPI, "location": "US"},
        },
        "time": [
            {
                "id": "tp-1",
                "date": "2026-11-03",
                "minutes": 12,
                "staff": "RN7",
                "counted_for": None,
            },
            {"id": "tp-2", "date": "2026-11-04", "minutes": 8, "staff": "RN7", "counted_for": None},
            {"id": "tp-3", "date": "2026-11-05", "minutes": 5, "staff": "DR1", "counted_for": None},
        ],
        "inpatient_stays": [{"from": "2026-11-05", "to": "2026-11-12"}],
        "other_services": [{"code": "G0181", "practitioner": NPI, "date": "2026-11-20"}],
        "policy": {"practitioner_time": "pool", "date_of_service": "month_end"},
    }


def changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """valid() with the value at `path` replaced (or removed when value is DELETE)."""
    obj = copy.deepcopy(valid())
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


DELETE = object()

INVALID = [
    # missing required fields
    (("month",), DELETE, "facts.month: is required"),
    (("billing_practitioner",), DELETE, "facts.billing_practitioner: is required"),
    (("patient",), DELETE, "facts.patient: is required"),
    (("patient", "id"), DELETE, "facts.patient.id: is required"),
    (("patient", "chronic_conditions"), DELETE, "facts.patient.chronic_conditions: is required"),
    (("patient", "id"), None, "facts.patient.id: is required"),
    (("consent", "practitioner"), DELETE, "facts.consent.practitioner: is required"),
    (("initiating_visit", "code"), DELETE, "facts.initiating_visit.code: is required"),
    (("care_plan", "date"), DELETE, "facts.care_plan.date: is required"),
    (("staff", "RN7", "location"), DELETE, "facts.staff.RN7.location: is required"),
    (("staff", "DR1", "npi"), DELETE, "facts.staff.DR1.npi: is required"),
    (("time", 1, "minutes"), DELETE, "facts.time[1].minutes: is required"),
    (("time", 0, "id"), DELETE, "facts.time[0].id: is required"),
    (("inpatient_stays", 0, "from"), DELETE, "facts.inpatient_stays[0].from: is required"),
    (
        ("other_services", 0, "practitioner"),
        DELETE,
        "facts.other_services[0].practitioner: is required",
    ),
    # wrong types
    (("patient",), "MRN-1", 'facts.patient: must be an object, got "MRN-1"'),
    (("patient", "id"), 1001, "facts.patient.id: must be a non-empty string, got 1001"),
    (("patient", "id"), " ", 'facts.patient.id: must be a non-empty string, got " "'),
    (
        ("patient", "chronic_conditions"),
        "E11.9",
        'facts.patient.chronic_conditions: must be an array, got "E11.9"',
    ),
    (
        ("patient", "chronic_conditions", 1),
        10,
        "facts.patient.chronic_conditions[1]: must be a non-empty string, got 10",
    ),
    (("patient", "qmb"), "no", 'facts.patient.qmb: must be true or false, got "no"'),
    (("complex_mdm",), 1, "facts.complex_mdm: must be true or false, got 1"),
    (
        ("billing_practitioner",),
        1234567893,
        "facts.billing_practitioner: must be a non-empty string, got 1234567893",
    ),
    (
        ("initiating_visit", "ccm_discussed"),
        "yes",
        'facts.initiating_visit.ccm_discussed: must be true or false, got "yes"',
    ),
    (("staff",), [], "facts.staff: must be an object, got []"),
    (("time",), {}, "facts.time: must be an array, got {}"),
    (("time", 2), "tp-3", 'facts.time[2]: must be an object, got "tp-3"'),
    (
        ("staff", "RN7", "excluded"),
        "false",
        'facts.staff.RN7.excluded: must be true or false, got "false"',
    ),
    (("consent",), "2026-03-01", 'facts.consent: must be an object, got "2026-03-01"'),
    # minutes not a positive integer
    (("time", 2, "minutes"), -5, "facts.time[2].minutes: must be a positive integer, got -5"),
    (("time", 0, "minutes"), 0, "facts.time[0].minutes: must be a positive integer, got 0"),
    (("time", 0, "minutes"), 12.5, "facts.time[0].minutes: must be a positive integer, got 12.5"),
    (("time", 0, "minutes"), 12.0, "facts.time[0].minutes: must be a positive integer, got 12.0"),
    (("time", 0, "minutes"), "12", 'facts.time[0].minutes: must be a positive integer, got "12"'),
    (("time", 0, "minutes"), True, "facts.time[0].minutes: must be a positive integer, got true"),
    # bad dates and months
    (
        ("time", 1, "date"),
        "2026-02-30",
        'facts.time[1].date: must be a date YYYY-MM-DD, got "2026-02-30"',
    ),
    (
        ("time", 1, "date"),
        "2026-11-3",
        'facts.time[1].date: must be a date YYYY-MM-DD, got "2026-11-3"',
    ),
    (
        ("time", 1, "date"),
        "20261103",
        'facts.time[1].date: must be a date YYYY-MM-DD, got "20261103"',
    ),
    (
        ("consent", "date"),
        "03/01/2026",
        'facts.consent.date: must be a date YYYY-MM-DD, got "03/01/2026"',
    ),
    (
        ("patient", "died_on"),
        20261110,
        "facts.patient.died_on: must be a date YYYY-MM-DD, got 20261110",
    ),
    (
        ("care_plan", "reviewed"),
        "2026-10-15T10:00",
        'facts.care_plan.reviewed: must be a date YYYY-MM-DD, got "2026-10-15T10:00"',
    ),
    (("month",), "2026-13", 'facts.month: must be a month YYYY-MM, got "2026-13"'),
    (("month",), "2026-11-01", 'facts.month: must be a month YYYY-MM, got "2026-11-01"'),
    (("month",), 202611, "facts.month: must be a month YYYY-MM, got 202611"),
    (
        ("inpatient_stays", 0, "to"),
        "2026-11-01",
        'facts.inpatient_stays[0].to: must not be before from (2026-11-05), got "2026-11-01"',
    ),
    # unknown enum values
    (("program",), "bhi", 'facts.program: must be one of ccm, pcm, apcm, got "bhi"'),
    (
        ("setting",),
        "hospital",
        'facts.setting: must be one of physician, fqhc, rhc, got "hospital"',
    ),
    (
        ("staff", "RN7", "role"),
        "nurse",
        'facts.staff.RN7.role: must be one of clinical, practitioner, non_clinical, got "nurse"',
    ),
    (
        ("policy", "practitioner_time"),
        "max",
        'facts.policy.practitioner_time: must be one of pool, physician_codes, maximize, got "max"',
    ),
    (
        ("policy", "date_of_service"),
        "first",
        'facts.policy.date_of_service: must be one of month_end, threshold_met, got "first"',
    ),
    (
        ("care_plan", "elements", 1),
        "caregiver",
        "facts.care_plan.elements[1]: must be one of problems, outcomes, goals, symptoms, interventions, "
        'medications, community_services, coordination, review_schedule, got "caregiver"',
    ),
    (
        ("staff", "RN7", "location"),
        "USA",
        'facts.staff.RN7.location: must be a two-letter ISO country code, got "USA"',
    ),
    # ids
    (("time", 2, "id"), "tp-1", 'facts.time[2].id: duplicate entry id "tp-1" (also at index 0)'),
]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    INVALID,
    ids=[m.split(":")[0] + f"#{i}" for i, (_, _, m) in enumerate(INVALID)],
)
def test_invalid_input_names_its_path(path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(FactsError) as raised:
        facts_from_json(changed(path, value))
    assert str(raised.value) == message


def test_the_spec_example_path_inside_an_array() -> None:
    obj = valid()
    obj["time"][2]["minutes"] = -5
    with pytest.raises(FactsError) as raised:
        facts_from_json(obj, "facts[3]")
    assert str(raised.value) == "facts[3].time[2].minutes: must be a positive integer, got -5"
    assert raised.value.path == "facts[3].time[2].minutes"


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(FactsError, match=r"^facts: must be an object, got \[1, 2\]$"):
        facts_from_json([1, 2])


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(FactsError) as raised:
        facts_from_json(changed(("month",), "x" * 500))
    assert len(str(raised.value)) < 120


def test_valid_facts_are_read() -> None:
    facts = facts_from_json(valid())
    assert facts.patient.chronic_conditions == frozenset({"E11.9", "I10"})
    assert facts.time[0].date == date(2026, 11, 3)
    assert facts.inpatient_stays[0].start == date(2026, 11, 5)
    assert facts.staff["DR1"].npi == NPI
    assert (facts.first_day, facts.last_day) == (date(2026, 11, 1), date(2026, 11, 30))


def test_only_required_fields_give_the_defaults() -> None:
    facts = facts_from_json(
        {
            "patient": {"id": "p", "chronic_conditions": []},
            "month": "2024-02",
            "billing_practitioner": NPI,
        }
    )
    assert (facts.program, facts.setting, facts.complex_mdm) == ("ccm", "physician", False)
    assert facts.policy == Policy(practitioner_time="maximize", date_of_service="month_end")
    assert (facts.consent, facts.initiating_visit, facts.care_plan) == (None, None, None)
    assert (facts.staff, facts.time, facts.inpatient_stays, facts.other_services) == (
        {},
        (),
        (),
        (),
    )
    assert facts.last_day == date(2024, 2, 29)


def test_null_optional_fields_mean_their_default_and_unknown_keys_are_ignored() -> None:
    obj = valid()
    obj.update(program=None, policy=None, time=None, note="free text from the caller")
    obj["staff"]["RN7"]["credential"] = "RN"
    facts = facts_from_json(obj)
    assert (facts.program, facts.policy, facts.time) == ("ccm", Policy(), ())


def test_lower_case_location_is_normalised() -> None:
    assert (
        facts_from_json(changed(("staff", "RN7", "location"), "pr")).staff["RN7"].location == "PR"
    )


def test_duplicate_conditions_count_once() -> None:
    facts = facts_from_json(changed(("patient", "chronic_conditions"), ["I10", "I10"]))
    assert len(facts.patient.chronic_conditions) == 1


def test_decision_json_has_the_spec_shape_and_key_order() -> None:
    decision = Decision(
        patient="MRN-1001",
        month="2026-11",
        program="ccm",
        billable=True,
        lines=(Line("99490", 1, date(2026, 11, 30)), Line("99439", 1, date(2026, 11, 30))),
        countable_minutes=45,
        excluded_minutes=10,
        findings=(
            Finding(
                "OFFSHORE_PERFORMER",
                "performed by staff located outside the United States",
                "tp-91",
                10,
            ),
            Finding("TCM_SAME_MONTH", "TCM billed this month"),
        ),
        rules="cms-2026",
    )
    out = decision.to_json()
    assert list(out) == [
        "patient",
        "month",
        "program",
        "billable",
        "lines",
        "minutes",
        "findings",
        "rules",
    ]
    assert out["lines"][0] == {"code": "99490", "units": 1, "date_of_service": "2026-11-30"}
    assert out["minutes"] == {"countable": 45, "excluded": 10}
    assert list(out["findings"][0]) == ["code", "severity", "entry", "minutes", "message"]
    assert out["findings"][0]["severity"] == "exclude"
    # Keys that do not apply are omitted, not null.
    assert out["findings"][1] == {
        "code": "TCM_SAME_MONTH",
        "severity": "info",
        "message": "TCM billed this month",
    }


def test_unknown_finding_codes_are_refused() -> None:
    with pytest.raises(ValueError):
        Finding("UNSUPPORTED_ENTRY", "reconciliation codes are another component's")
