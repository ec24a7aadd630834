"""Facts validation: every kind of invalid input names its JSON path (spec/rules-check.md)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ccm_connector import facts as facts_module
from ccm_connector.facts import (
    CARE_PLAN_ELEMENTS,
    DATE_OF_SERVICE,
    PRACTITIONER_TIME,
    PROGRAMS,
    ROLES,
    SETTINGS,
    Decision,
    Facts,
    FactsError,
    Finding,
    Line,
    Policy,
    _checked_facts,
    _fast_facts,
    _Unsure,
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


# --- the fast path gives exactly what the checked readers give ------------------------------
# facts_from_json first tries fast readers that only decide "certainly valid" and otherwise
# falls back to the checked readers (_checked_facts). These properties compare the two on
# generated valid facts and on mutations of them: the same Facts (with the same types inside),
# or the same error, and the same calls into subclasses of str, int, dict and list.

CALLS: list[str] = []  # methods of the subclasses below called while reading, in order


class Text(str):
    """A str subclass: the checked readers accept it (isinstance), the fast ones must defer."""

    def strip(self, chars: str | None = None) -> str:
        CALLS.append(f"strip {self!s}")
        return super().strip(chars)

    def upper(self) -> str:
        CALLS.append(f"upper {self!s}")
        return super().upper()

    def __eq__(self, other: object) -> bool:
        CALLS.append(f"eq {self!s}")
        return super().__eq__(other)

    def __hash__(self) -> int:
        CALLS.append(f"hash {self!s}")
        return super().__hash__()


class Blank(Text):
    """A str subclass that calls itself blank: only the checked readers may judge it."""

    def strip(self, chars: str | None = None) -> str:
        CALLS.append(f"strip {self!s}")
        return ""


class Count(int):
    def __le__(self, other: object) -> bool:
        CALLS.append(f"le {int(self)}")
        return int(self) <= other


class Items(list):
    def __iter__(self) -> Any:
        CALLS.append("iter list")
        return super().__iter__()


class Fields(dict):
    def get(self, key: Any, default: Any = None) -> Any:
        CALLS.append(f"get {key}")
        return super().get(key, default)


class Hiding(Fields):
    """A dict subclass that hides its "id"."""

    def get(self, key: Any, default: Any = None) -> Any:
        return default if key == "id" else super().get(key, default)


NASTY = [
    None,
    True,
    False,
    0,
    1,
    -5,
    12.0,
    12.5,
    2**70,
    "",
    " ",
    "\t\n",
    "\u3000",
    "x",
    "12",
    "2026-11-03",
    "2026-02-30",
    "2026-1-01",
    "2026-11-3",
    "20261103",
    "2026-11-03T10:00",
    "2026-11-03\n",
    " 2026-11-03",
    "0000-01-01",
    "9999-12-31",
    "\u0662\u0660\u0662\u0666-\u0661\u0661-\u0660\u0663",  # Arabic-Indic digits match \d
    "2026-11",
    "2026-13",
    "2026-00",
    "0000-05",
    "US",
    "us",
    "USA",
    "\u00dcS",
    "U1",
    "ccm",
    "pcm",
    "bhi",
    "fqhc",
    "clinical",
    "practitioner",
    "nurse",
    "problems",
    "caregiver",
    "pool",
    "threshold_met",
    "tp-1",
    "RN7",
    [],
    {},
    ["x"],
    ["E11.9", 5],
    {"a": 1},
    Text("2026-11-03"),
    Text("ccm"),
    Text(" "),
    Blank("x"),
    Count(5),
    Count(0),
    Items(["E11.9"]),
    Hiding({"id": "tp-9", "date": "2026-11-03", "minutes": 5, "staff": "RN7"}),
]
BAD_DATES = ["2026-02-30", "2026-1-01", "2026-11-3", "20261103", "2026-11-31", "2026-13-01"]


@st.composite
def iso_days(draw: st.DrawFn, month: str) -> str:
    """A day of the month mostly (dates repeat), sometimes any date."""
    if draw(st.integers(0, 9)):
        first = date.fromisoformat(month + "-01")
        return (first + timedelta(days=draw(st.integers(0, 27)))).isoformat()
    return draw(st.dates()).isoformat()


def optional(draw: st.DrawFn, obj: dict[str, Any], key: str, value: Any) -> None:
    """Give obj[key] the value, or null, or leave it out."""
    how = draw(st.sampled_from(["value", "value", "null", "absent"]))
    if how != "absent":
        obj[key] = value if how == "value" else None


@st.composite
def valid_facts(draw: st.DrawFn) -> dict[str, Any]:
    month = draw(st.sampled_from(["2024-02", "2025-07", "2026-11", "2026-12"]))
    day = iso_days(month)
    npi = draw(st.sampled_from([NPI, "1245319599"]))
    staff_ids = draw(st.lists(st.sampled_from(["RN7", "DR1", "SCH", "rn 2"]), unique=True))
    obj: dict[str, Any] = {
        "patient": {
            "id": draw(st.sampled_from(["MRN-1001", "p", " x "])),
            "chronic_conditions": draw(st.lists(st.sampled_from(["E11.9", "I10", "N18.3"]))),
        },
        "month": month,
        "billing_practitioner": npi,
    }
    patient = obj["patient"]
    optional(draw, patient, "qmb", draw(st.booleans()))
    optional(draw, patient, "last_visit_before_consent", draw(day))
    optional(draw, patient, "died_on", draw(day))
    optional(draw, obj, "program", draw(st.sampled_from(PROGRAMS)))
    optional(draw, obj, "setting", draw(st.sampled_from(SETTINGS)))
    optional(draw, obj, "complex_mdm", draw(st.booleans()))
    optional(draw, obj, "consent", {"date": draw(day), "practitioner": npi})
    visit = {"date": draw(day), "code": "99214", "practitioner": npi}
    optional(draw, visit, "ccm_discussed", draw(st.booleans()))
    optional(draw, obj, "initiating_visit", visit)
    plan = {"date": draw(day)}
    optional(draw, plan, "reviewed", draw(day))
    optional(draw, plan, "shared_with_patient", draw(day))
    optional(draw, plan, "elements", draw(st.lists(st.sampled_from(CARE_PLAN_ELEMENTS))))
    optional(draw, obj, "care_plan", plan)
    staff: dict[str, Any] = {}
    for staff_id in staff_ids:
        role = draw(st.sampled_from(ROLES))
        member = {"role": role, "location": draw(st.sampled_from(["US", "us", "PR", "IN"]))}
        optional(draw, member, "supervisor", npi)
        if role == "practitioner":
            member["npi"] = npi
        else:
            optional(draw, member, "npi", npi)
        optional(draw, member, "excluded", draw(st.booleans()))
        staff[staff_id] = member
    optional(draw, obj, "staff", staff)
    entries = []
    for i in range(draw(st.integers(0, 25) | st.integers(10, 25))):
        entry = {
            "id": f"tp-{i}",
            "date": draw(day),
            "minutes": draw(st.integers(1, 90)),
            "staff": draw(st.sampled_from([*staff_ids, "GHOST"])),
        }
        optional(draw, entry, "counted_for", draw(st.sampled_from(["99495", "G0181"])))
        entries.append(entry)
    if draw(st.booleans()):
        obj["time"] = entries  # most often: a month's entries are what month close reads
    else:
        optional(draw, obj, "time", entries)
    stays = []
    for start, end in draw(st.lists(st.tuples(day, day), max_size=2)):
        stays.append({"from": min(start, end), "to": max(start, end)})
    optional(draw, obj, "inpatient_stays", stays)
    services = [
        {"code": code, "practitioner": npi, "date": draw(day)}
        for code in draw(st.lists(st.sampled_from(["99495", "G0181", "99213"]), max_size=3))
    ]
    optional(draw, obj, "other_services", services)
    policy: dict[str, Any] = {}
    optional(draw, policy, "practitioner_time", draw(st.sampled_from(PRACTITIONER_TIME)))
    optional(draw, policy, "date_of_service", draw(st.sampled_from(DATE_OF_SERVICE)))
    optional(draw, obj, "policy", policy)
    if draw(st.booleans()):
        obj["note"] = "unknown keys are ignored"
    return obj


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The paths of every value inside `value`."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    out = []
    for key, item in items:
        out.append((*path, key))
        if isinstance(item, (dict, list)):
            out.extend(places(item, (*path, key)))
    return out


def near_misses(value: Any) -> list[Any]:
    """Values a little off from a valid `value` of its type."""
    if isinstance(value, str):
        return ["", " ", "\u3000", f" {value}", value.lower(), value.upper(), None, 7, *BAD_DATES]
    if isinstance(value, bool):
        return [not value, 0, 1, "true", None]
    if isinstance(value, int):
        return [True, False, 0, -value, float(value), str(value), None]
    if isinstance(value, dict):
        return [[value], {}, None, "x"]
    if isinstance(value, list):
        return [tuple(value), [*value, *value[:1]], [None], {}, None]
    return [None, "x", 0]


def subclassed(value: Any) -> list[Any]:
    """`value` as instances of subclasses of its type, which the checked readers accept."""
    if isinstance(value, str):
        return [Text(value), Blank(value)]
    if isinstance(value, int) and not isinstance(value, bool):
        return [Count(value)]
    if isinstance(value, dict):
        return [Fields(value), Hiding(value)]
    if isinstance(value, list):
        return [Items(value)]
    return [value]


NASTY_VALUES = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=12),
    st.from_regex(r"\d{4}-\d{1,2}-\d{1,2}", fullmatch=True),
)


@st.composite
def mutated(draw: st.DrawFn, obj: dict[str, Any]) -> dict[str, Any]:
    """obj with one change: a value replaced by a near miss, a subclass instance or anything,
    a value deleted, a duplicate time id or an odd staff id."""
    kind = draw(
        st.sampled_from(
            ["near miss", "near miss", "subclass", "nasty", "delete", "duplicate id", "staff id"]
        )
    )
    time = obj.get("time") if isinstance(obj.get("time"), list) else []
    entries = [entry for entry in time if isinstance(entry, dict) and "id" in entry]
    if kind == "duplicate id" and len(entries) >= 2:
        first, second = draw(st.lists(st.sampled_from(entries), min_size=2, max_size=2))
        second["id"] = first["id"]
        return obj
    if kind == "staff id" and type(obj.get("staff")) is dict and obj["staff"]:
        member = next(iter(obj["staff"].values()))
        obj["staff"][draw(st.sampled_from(["", " ", 7, None, Text("RN8"), Blank("x")]))] = member
        return obj
    path = draw(st.sampled_from(places(obj)))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    value = parent[path[-1]]
    if kind == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif kind == "near miss":
        parent[path[-1]] = draw(st.sampled_from(near_misses(value)))
    elif kind == "subclass":
        parent[path[-1]] = draw(st.sampled_from(subclassed(value)))
    else:
        parent[path[-1]] = draw(NASTY_VALUES)
    return obj


def outcome(read: Callable[[Any, str], Facts], obj: Any, path: str = "facts") -> Any:
    """What reading gives, comparable exactly: the result with the types of all its parts, or
    the error's fields, text and context; and the calls into the subclasses above."""
    CALLS.clear()
    try:
        result: Any = ("facts", typed(read(obj, path)))
    except FactsError as error:
        result = ("error", error.path, error.message, str(error), error.__context__)
    except Exception as error:  # what the checked readers raise on non-JSON input, e.g. int keys
        result = ("exception", type(error), str(error), error.__context__)
    return result, list(CALLS)


def typed(value: Any) -> Any:
    """value with every part paired with its type (so a str subclass never equals a str)."""
    if dataclasses.is_dataclass(value):
        parts = [(f.name, typed(getattr(value, f.name))) for f in dataclasses.fields(value)]
        return (type(value), parts)
    if isinstance(value, frozenset):
        return (frozenset, sorted((typed(item) for item in value), key=repr))
    if isinstance(value, dict):
        return (type(value), [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, (tuple, list)):
        return (type(value), [typed(item) for item in value])
    return (type(value), str(value) if isinstance(value, str) else value)


def fast_only(obj: Any) -> Facts | None:
    """The fast readers alone: None where they defer to the checked ones."""
    try:
        return _fast_facts(obj)
    except _Unsure:
        return None


@given(st.data())
@settings(max_examples=400, deadline=None)
def test_the_fast_path_gives_what_the_checked_readers_give(data: st.DataObject) -> None:
    obj = data.draw(valid_facts())
    for _ in range(data.draw(st.integers(0, 3))):
        obj = data.draw(mutated(obj))
    frozen = copy.deepcopy(obj)
    expected = outcome(_checked_facts, obj)
    assert outcome(facts_from_json, obj) == expected
    assert outcome(facts_from_json, obj, "facts[7]") == outcome(_checked_facts, obj, "facts[7]")
    CALLS.clear()
    fast = fast_only(obj)
    assert CALLS == []  # the fast readers never call into subclasses
    event(expected[0][0])
    event("fast path" if fast is not None else "checked readers")
    if fast is not None:
        assert ("facts", typed(fast)) == expected[0]
    assert typed(obj) == typed(frozen)  # reading never changes its input


@pytest.mark.parametrize("path", places(valid()), ids=repr)
def test_every_field_with_every_kind_of_wrong_value(path: tuple[Any, ...]) -> None:
    value: Any = valid()
    for key in path:
        value = value[key]
    for other in [DELETE, *near_misses(value), *subclassed(value), *NASTY]:
        obj = changed(path, other)
        assert outcome(facts_from_json, obj) == outcome(_checked_facts, obj), (path, other)
        CALLS.clear()
        fast = fast_only(obj)
        assert CALLS == []
        if fast is not None:
            assert typed(fast) == typed(_checked_facts(obj, "facts")), (path, other)


@pytest.mark.parametrize("staff_id", ["", " ", 7, None, Text("RN8"), Blank("x")], ids=repr)
def test_odd_staff_ids(staff_id: Any) -> None:
    obj = valid()
    obj["staff"][staff_id] = obj["staff"]["RN7"]
    assert outcome(facts_from_json, obj) == outcome(_checked_facts, obj)
    assert fast_only(obj) is None


@given(valid_facts())
@settings(max_examples=100, deadline=None)
def test_the_fast_path_takes_valid_facts(obj: dict[str, Any]) -> None:
    # Otherwise a fast path that always deferred would pass the property above, slowly.
    fast = fast_only(obj)
    assert fast is not None
    assert typed(fast) == typed(_checked_facts(obj, "facts"))


@pytest.mark.parametrize(("path", "value", "message"), INVALID)
def test_the_fast_path_defers_every_listed_invalid_input(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    assert fast_only(changed(path, value)) is None


def test_remembered_strings_stay_right_when_the_memory_is_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(facts_module, "_MEMO_MAX", 3)
    obj = valid()
    obj["time"] = [
        {"id": f"tp-{i}", "date": f"2026-11-{1 + i % 9:02d}", "minutes": 5, "staff": "RN7"}
        for i in range(40)
    ]
    assert typed(facts_from_json(obj)) == typed(_checked_facts(obj, "facts"))
    obj["time"][30]["date"] = "2026-11-31"
    with pytest.raises(FactsError, match=r"^facts\.time\[30\]\.date: must be a date"):
        facts_from_json(obj)
