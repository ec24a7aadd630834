"""The facts of one patient-month (the rules engine's input) and its decision (the output).

Shapes and field meanings are fixed by spec/rules-check.md. `facts_from_json` turns one parsed
JSON object into `Facts`, checking every field and naming the JSON path of the first problem.

Validation conventions (the spec lists the kinds of invalid input; these fill in the rest):
- Fields the spec marks required (patient.id, patient.chronic_conditions, month,
  billing_practitioner) must be present and not null. Inside an optional object that is given,
  the fields without which it means nothing are required too (consent.date and .practitioner;
  initiating_visit.date, .code, .practitioner; care_plan.date; a time entry's id, date, minutes
  and staff; a staff member's role and location, and npi for a practitioner; a stay's from and
  to; a service's code, practitioner and date).
- Any other field may be absent or null, which means its default.
- Unknown keys are ignored, so callers may carry extra context.
- Time entry ids must be unique: findings name entries by id.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from .errors import InputError

PROGRAMS = ("ccm", "pcm", "apcm")
SETTINGS = ("physician", "fqhc", "rhc")
ROLES = ("clinical", "practitioner", "non_clinical")
PRACTITIONER_TIME = ("pool", "physician_codes", "maximize")
DATE_OF_SERVICE = ("month_end", "threshold_met")
# cms-rules.md §3.5: the nine elements a comprehensive care plan typically includes.
CARE_PLAN_ELEMENTS = (
    "problems",
    "outcomes",
    "goals",
    "symptoms",
    "interventions",
    "medications",
    "community_services",
    "coordination",
    "review_schedule",
)

# spec/findings.md, "Rules engine" table. Reconciliation codes belong to another component.
SEVERITY = {
    "NO_CONSENT": "block",
    "CONSENT_OTHER_PRACTITIONER": "block",
    "NO_INITIATING_VISIT": "block",
    "TOO_FEW_CONDITIONS": "block",
    "NO_CARE_PLAN": "block",
    "BELOW_THRESHOLD": "block",
    "EXCLUSIVE_SERVICE": "block",
    "ALREADY_BILLED": "block",
    "NOT_IN_EFFECT": "block",
    "OFFSHORE_PERFORMER": "exclude",
    "NON_CLINICAL_PERFORMER": "exclude",
    "NOT_SUPERVISED_BY_BILLER": "exclude",
    "EXCLUDED_STAFF": "exclude",
    "UNKNOWN_STAFF": "exclude",
    "BEFORE_CONSENT": "exclude",
    "OUTSIDE_MONTH": "exclude",
    "DURING_INPATIENT_STAY": "exclude",
    "AFTER_DEATH": "exclude",
    "COUNTED_ELSEWHERE": "exclude",
    "COMPLEX_BELOW_60": "warn",
    "UNBILLED_MINUTES": "info",
    "TCM_SAME_MONTH": "info",
    "OTHER_PRACTITIONER_SERVICE": "warn",
    "PATIENT_DECEASED": "warn",
    "CARE_PLAN_NOT_SHARED": "warn",
    "CARE_PLAN_STALE": "warn",
    "CARE_PLAN_INCOMPLETE": "warn",
}


class FactsError(InputError):
    """Invalid facts; str() is "<json path>: <what is wrong>"."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# --- facts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Patient:
    id: str
    chronic_conditions: frozenset[str]  # distinct qualifying ICD-10 codes
    qmb: bool = False
    last_visit_before_consent: date | None = None
    died_on: date | None = None


@dataclass(frozen=True, slots=True)
class Consent:
    date: date
    practitioner: str


@dataclass(frozen=True, slots=True)
class InitiatingVisit:
    date: date
    code: str
    practitioner: str
    ccm_discussed: bool = False


@dataclass(frozen=True, slots=True)
class CarePlan:
    date: date
    reviewed: date | None = None
    shared_with_patient: date | None = None
    elements: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class StaffMember:
    role: str  # clinical | practitioner | non_clinical
    location: str  # ISO 3166-1 alpha-2, upper case
    supervisor: str | None = None  # NPI of the supervising practitioner (clinical staff)
    npi: str | None = None  # practitioners
    excluded: bool = False  # OIG exclusion list or revoked enrollment


@dataclass(frozen=True, slots=True)
class TimeEntry:
    id: str
    date: date
    minutes: int
    staff: str
    counted_for: str | None = None  # another billed service that already used these minutes


@dataclass(frozen=True, slots=True)
class Stay:
    """An inpatient or SNF stay, both days inclusive (JSON `from` / `to`)."""

    start: date
    end: date


@dataclass(frozen=True, slots=True)
class OtherService:
    code: str
    practitioner: str
    date: date


@dataclass(frozen=True, slots=True)
class Policy:
    # "maximize" by default: cms-rules.md T16 recommends the higher-paying family by default.
    practitioner_time: str = "maximize"
    date_of_service: str = "month_end"  # cms-rules.md §4.8 recommendation


@dataclass(frozen=True, slots=True)
class Facts:
    patient: Patient
    month: str  # YYYY-MM
    billing_practitioner: str
    program: str = "ccm"
    setting: str = "physician"
    complex_mdm: bool = False
    consent: Consent | None = None
    initiating_visit: InitiatingVisit | None = None
    care_plan: CarePlan | None = None
    staff: dict[str, StaffMember] = field(default_factory=dict)
    time: tuple[TimeEntry, ...] = ()
    inpatient_stays: tuple[Stay, ...] = ()
    other_services: tuple[OtherService, ...] = ()
    policy: Policy = Policy()

    @property
    def first_day(self) -> date:
        return date(int(self.month[:4]), int(self.month[5:]), 1)

    @property
    def last_day(self) -> date:
        year, month = int(self.month[:4]), int(self.month[5:])
        return date(year, month, calendar.monthrange(year, month)[1])


# --- decision ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason; `entry` and `minutes` are set for exclusions (and minutes for UNBILLED_MINUTES)."""

    code: str
    message: str
    entry: str | None = None
    minutes: int | None = None

    def __post_init__(self) -> None:
        if self.code not in SEVERITY:
            raise ValueError(f"unknown finding code {self.code!r}")

    @property
    def severity(self) -> str:
        return SEVERITY[self.code]

    def to_json(self) -> dict[str, Any]:
        # Keys that do not apply are omitted rather than written as null.
        out: dict[str, Any] = {"code": self.code, "severity": self.severity}
        if self.entry is not None:
            out["entry"] = self.entry
        if self.minutes is not None:
            out["minutes"] = self.minutes
        out["message"] = self.message
        return out


@dataclass(frozen=True, slots=True)
class Line:
    code: str
    units: int
    date_of_service: date

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "units": self.units,
            "date_of_service": self.date_of_service.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    patient: str
    month: str
    program: str
    billable: bool
    lines: tuple[Line, ...]
    countable_minutes: int
    excluded_minutes: int
    findings: tuple[Finding, ...]
    rules: str  # name of the rule set that applied, e.g. "cms-2026"

    def to_json(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "month": self.month,
            "program": self.program,
            "billable": self.billable,
            "lines": [line.to_json() for line in self.lines],
            "minutes": {"countable": self.countable_minutes, "excluded": self.excluded_minutes},
            "findings": [finding.to_json() for finding in self.findings],
            "rules": self.rules,
        }


# --- reading JSON --------------------------------------------------------------------------

T = TypeVar("T")
Reader = Callable[[Any, str], T]
_REQUIRED: Any = object()
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_COUNTRY = re.compile(r"[A-Za-z]{2}")


def _shown(value: Any) -> str:
    """The offending value as JSON, shortened."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _get(obj: dict[str, Any], key: str, path: str, read: Reader[T], default: Any = _REQUIRED) -> T:
    """obj[key] read with `read`; absent or null gives `default`, or an error if required."""
    where = f"{path}.{key}"
    value = obj.get(key)
    if value is None:
        if default is _REQUIRED:
            raise FactsError(where, "is required")
        return default
    return read(value, where)


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FactsError(path, f"must be an object, got {_shown(value)}")
    return value


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FactsError(path, f"must be a non-empty string, got {_shown(value)}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise FactsError(path, f"must be true or false, got {_shown(value)}")
    return value


def _positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FactsError(path, f"must be a positive integer, got {_shown(value)}")
    return value


def _date(value: Any, path: str) -> date:
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise FactsError(path, f"must be a date YYYY-MM-DD, got {_shown(value)}")


def _month(value: Any, path: str) -> str:
    match = _MONTH.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) == 0:
        raise FactsError(path, f"must be a month YYYY-MM, got {_shown(value)}")
    return value


def _location(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _COUNTRY.fullmatch(value):
        raise FactsError(path, f"must be a two-letter ISO country code, got {_shown(value)}")
    return value.upper()


def _one_of(choices: tuple[str, ...]) -> Reader[str]:
    def read(value: Any, path: str) -> str:
        if value not in choices:
            raise FactsError(path, f"must be one of {', '.join(choices)}, got {_shown(value)}")
        return value

    return read


def _list(read_item: Reader[T]) -> Reader[tuple[T, ...]]:
    def read(value: Any, path: str) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise FactsError(path, f"must be an array, got {_shown(value)}")
        return tuple(read_item(item, f"{path}[{i}]") for i, item in enumerate(value))

    return read


def _patient(value: Any, path: str) -> Patient:
    obj = _object(value, path)
    return Patient(
        id=_get(obj, "id", path, _text),
        chronic_conditions=frozenset(_get(obj, "chronic_conditions", path, _list(_text))),
        qmb=_get(obj, "qmb", path, _bool, False),
        last_visit_before_consent=_get(obj, "last_visit_before_consent", path, _date, None),
        died_on=_get(obj, "died_on", path, _date, None),
    )


def _consent(value: Any, path: str) -> Consent:
    obj = _object(value, path)
    return Consent(
        date=_get(obj, "date", path, _date), practitioner=_get(obj, "practitioner", path, _text)
    )


def _initiating_visit(value: Any, path: str) -> InitiatingVisit:
    obj = _object(value, path)
    return InitiatingVisit(
        date=_get(obj, "date", path, _date),
        code=_get(obj, "code", path, _text),
        practitioner=_get(obj, "practitioner", path, _text),
        ccm_discussed=_get(obj, "ccm_discussed", path, _bool, False),
    )


def _care_plan(value: Any, path: str) -> CarePlan:
    obj = _object(value, path)
    return CarePlan(
        date=_get(obj, "date", path, _date),
        reviewed=_get(obj, "reviewed", path, _date, None),
        shared_with_patient=_get(obj, "shared_with_patient", path, _date, None),
        elements=frozenset(_get(obj, "elements", path, _list(_one_of(CARE_PLAN_ELEMENTS)), ())),
    )


def _staff_member(value: Any, path: str) -> StaffMember:
    obj = _object(value, path)
    role = _get(obj, "role", path, _one_of(ROLES))
    return StaffMember(
        role=role,
        location=_get(obj, "location", path, _location),
        supervisor=_get(obj, "supervisor", path, _text, None),
        npi=_get(obj, "npi", path, _text, _REQUIRED if role == "practitioner" else None),
        excluded=_get(obj, "excluded", path, _bool, False),
    )


def _staff(value: Any, path: str) -> dict[str, StaffMember]:
    obj = _object(value, path)
    for staff_id in obj:
        if not staff_id.strip():
            raise FactsError(path, "staff ids must be non-empty")
    return {
        staff_id: _staff_member(member, f"{path}.{staff_id}") for staff_id, member in obj.items()
    }


def _time_entry(value: Any, path: str) -> TimeEntry:
    obj = _object(value, path)
    return TimeEntry(
        id=_get(obj, "id", path, _text),
        date=_get(obj, "date", path, _date),
        minutes=_get(obj, "minutes", path, _positive_int),
        staff=_get(obj, "staff", path, _text),
        counted_for=_get(obj, "counted_for", path, _text, None),
    )


def _time(value: Any, path: str) -> tuple[TimeEntry, ...]:
    entries = _list(_time_entry)(value, path)
    first_index: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if entry.id in first_index:
            raise FactsError(
                f"{path}[{i}].id",
                f"duplicate entry id {_shown(entry.id)} (also at index {first_index[entry.id]})",
            )
        first_index[entry.id] = i
    return entries


def _stay(value: Any, path: str) -> Stay:
    obj = _object(value, path)
    start = _get(obj, "from", path, _date)
    end = _get(obj, "to", path, _date)
    if end < start:
        raise FactsError(
            f"{path}.to", f"must not be before from ({start.isoformat()}), got {_shown(obj['to'])}"
        )
    return Stay(start=start, end=end)


def _other_service(value: Any, path: str) -> OtherService:
    obj = _object(value, path)
    return OtherService(
        code=_get(obj, "code", path, _text),
        practitioner=_get(obj, "practitioner", path, _text),
        date=_get(obj, "date", path, _date),
    )


def _policy(value: Any, path: str) -> Policy:
    obj = _object(value, path)
    default = Policy()
    return Policy(
        practitioner_time=_get(
            obj, "practitioner_time", path, _one_of(PRACTITIONER_TIME), default.practitioner_time
        ),
        date_of_service=_get(
            obj, "date_of_service", path, _one_of(DATE_OF_SERVICE), default.date_of_service
        ),
    )


def facts_from_json(obj: Any, path: str = "facts") -> Facts:
    """Facts from one parsed JSON object; raises FactsError naming the JSON path of a problem."""
    try:
        return _fast_facts(obj)
    except _Unsure:
        pass  # not inside the handler: the FactsError must not carry _Unsure as its context
    return _checked_facts(obj, path)


def _checked_facts(obj: Any, path: str) -> Facts:
    """facts_from_json by the checked readers alone: the meaning of every check."""
    obj = _object(obj, path)
    return Facts(
        patient=_get(obj, "patient", path, _patient),
        month=_get(obj, "month", path, _month),
        billing_practitioner=_get(obj, "billing_practitioner", path, _text),
        program=_get(obj, "program", path, _one_of(PROGRAMS), "ccm"),
        setting=_get(obj, "setting", path, _one_of(SETTINGS), "physician"),
        complex_mdm=_get(obj, "complex_mdm", path, _bool, False),
        consent=_get(obj, "consent", path, _consent, None),
        initiating_visit=_get(obj, "initiating_visit", path, _initiating_visit, None),
        care_plan=_get(obj, "care_plan", path, _care_plan, None),
        staff=_get(obj, "staff", path, _staff, {}),
        time=_get(obj, "time", path, _time, ()),
        inpatient_stays=_get(obj, "inpatient_stays", path, _list(_stay), ()),
        other_services=_get(obj, "other_services", path, _list(_other_service), ()),
        policy=_get(obj, "policy", path, _policy, Policy()),
    )


# --- fast path -----------------------------------------------------------------------------
# Month close calls facts_from_json once per patient-month (10,000-50,000 times a run, see
# bench/bench_month_close.py), nearly always on valid facts, and the checked readers above build
# a JSON path for every field even when nothing is wrong. The fast readers below only decide
# "certainly valid": they accept exact builtin types only (so no subclass method runs), read the
# keys in the same order as the checked readers and raise _Unsure at the first doubt. Then
# _checked_facts reads the object again and gives its result or its precise FactsError, so the
# checked readers stay the one definition of what is valid.


class _Unsure(Exception):
    """A fast reader cannot vouch for a value; the checked readers decide."""


_MEMO_MAX = 4096


def _memo(read: Reader[T]) -> Callable[[Any], T]:
    """A fast reader for `read` (a checked reader of strings that never returns None): its
    result for an exact str, remembered by value, since dates, months, locations and enum values
    repeat a lot; _Unsure where `read` raises."""
    known: dict[str, T] = {}

    def fast(value: Any) -> T:
        if type(value) is not str:
            raise _Unsure
        result = known.get(value)
        if result is None:
            try:
                result = read(value, "")
            except FactsError:
                raise _Unsure from None
            if len(known) >= _MEMO_MAX:
                known.clear()
            known[value] = result
        return result

    return fast


_fast_date = _memo(_date)
_fast_month = _memo(_month)
_fast_location = _memo(_location)
_fast_program = _memo(_one_of(PROGRAMS))
_fast_setting = _memo(_one_of(SETTINGS))
_fast_role = _memo(_one_of(ROLES))
_fast_element = _memo(_one_of(CARE_PLAN_ELEMENTS))
_fast_practitioner_time = _memo(_one_of(PRACTITIONER_TIME))
_fast_date_of_service = _memo(_one_of(DATE_OF_SERVICE))


def _fast_object(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Unsure
    return value


def _fast_list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise _Unsure
    return value


def _fast_text(value: Any) -> str:
    if type(value) is not str or not value.strip():
        raise _Unsure
    return value


def _fast_flag(value: Any) -> bool:
    """An optional true or false, false when absent."""
    if value is None:
        return False
    if value is True or value is False:
        return value
    raise _Unsure


def _fast_optional(read: Callable[[Any], T], value: Any, default: Any = None) -> T:
    return default if value is None else read(value)


def _fast_items(read: Callable[[Any], T], value: Any) -> tuple[T, ...]:
    return () if value is None else tuple(map(read, _fast_list(value)))


def _fast_patient(value: Any) -> Patient:
    obj = _fast_object(value)
    return Patient(
        id=_fast_text(obj.get("id")),
        chronic_conditions=frozenset(map(_fast_text, _fast_list(obj.get("chronic_conditions")))),
        qmb=_fast_flag(obj.get("qmb")),
        last_visit_before_consent=_fast_optional(_fast_date, obj.get("last_visit_before_consent")),
        died_on=_fast_optional(_fast_date, obj.get("died_on")),
    )


def _fast_consent(value: Any) -> Consent:
    obj = _fast_object(value)
    return Consent(
        date=_fast_date(obj.get("date")), practitioner=_fast_text(obj.get("practitioner"))
    )


def _fast_initiating_visit(value: Any) -> InitiatingVisit:
    obj = _fast_object(value)
    return InitiatingVisit(
        date=_fast_date(obj.get("date")),
        code=_fast_text(obj.get("code")),
        practitioner=_fast_text(obj.get("practitioner")),
        ccm_discussed=_fast_flag(obj.get("ccm_discussed")),
    )


def _fast_care_plan(value: Any) -> CarePlan:
    obj = _fast_object(value)
    return CarePlan(
        date=_fast_date(obj.get("date")),
        reviewed=_fast_optional(_fast_date, obj.get("reviewed")),
        shared_with_patient=_fast_optional(_fast_date, obj.get("shared_with_patient")),
        elements=frozenset(_fast_items(_fast_element, obj.get("elements"))),
    )


def _fast_staff_member(value: Any) -> StaffMember:
    obj = _fast_object(value)
    role = _fast_role(obj.get("role"))
    location = _fast_location(obj.get("location"))
    supervisor = _fast_optional(_fast_text, obj.get("supervisor"))
    npi = obj.get("npi")
    return StaffMember(
        role=role,
        location=location,
        supervisor=supervisor,
        npi=_fast_text(npi) if npi is not None or role == "practitioner" else None,
        excluded=_fast_flag(obj.get("excluded")),
    )


def _fast_staff(value: Any) -> dict[str, StaffMember]:
    obj = _fast_object(value)
    for staff_id in obj:
        if type(staff_id) is not str or not staff_id.strip():
            raise _Unsure
    return {staff_id: _fast_staff_member(member) for staff_id, member in obj.items()}


def _fast_time_entry(value: Any) -> TimeEntry:
    # The hottest reader (a month has tens of entries), so the simple checks are written out.
    if type(value) is not dict:
        raise _Unsure
    entry_id = value.get("id")
    if type(entry_id) is not str or not entry_id.strip():
        raise _Unsure
    day = _fast_date(value.get("date"))
    minutes = value.get("minutes")
    if type(minutes) is not int or minutes <= 0:
        raise _Unsure
    staff = value.get("staff")
    if type(staff) is not str or not staff.strip():
        raise _Unsure
    counted_for = value.get("counted_for")
    if counted_for is not None:
        counted_for = _fast_text(counted_for)
    return TimeEntry(entry_id, day, minutes, staff, counted_for)


def _fast_time(value: Any) -> tuple[TimeEntry, ...]:
    entries = tuple(map(_fast_time_entry, _fast_list(value)))
    if len({entry.id for entry in entries}) != len(entries):
        raise _Unsure  # a duplicate id, which _time names
    return entries


def _fast_stay(value: Any) -> Stay:
    obj = _fast_object(value)
    start = _fast_date(obj.get("from"))
    end = _fast_date(obj.get("to"))
    if end < start:
        raise _Unsure
    return Stay(start=start, end=end)


def _fast_other_service(value: Any) -> OtherService:
    obj = _fast_object(value)
    return OtherService(
        code=_fast_text(obj.get("code")),
        practitioner=_fast_text(obj.get("practitioner")),
        date=_fast_date(obj.get("date")),
    )


def _fast_policy(value: Any) -> Policy:
    obj = _fast_object(value)
    default = Policy()
    return Policy(
        practitioner_time=_fast_optional(
            _fast_practitioner_time, obj.get("practitioner_time"), default.practitioner_time
        ),
        date_of_service=_fast_optional(
            _fast_date_of_service, obj.get("date_of_service"), default.date_of_service
        ),
    )


def _fast_facts(value: Any) -> Facts:
    obj = _fast_object(value)
    return Facts(
        patient=_fast_patient(obj.get("patient")),
        month=_fast_month(obj.get("month")),
        billing_practitioner=_fast_text(obj.get("billing_practitioner")),
        program=_fast_optional(_fast_program, obj.get("program"), "ccm"),
        setting=_fast_optional(_fast_setting, obj.get("setting"), "physician"),
        complex_mdm=_fast_flag(obj.get("complex_mdm")),
        consent=_fast_optional(_fast_consent, obj.get("consent")),
        initiating_visit=_fast_optional(_fast_initiating_visit, obj.get("initiating_visit")),
        care_plan=_fast_optional(_fast_care_plan, obj.get("care_plan")),
        staff=_fast_optional(_fast_staff, obj.get("staff"), {}),
        time=_fast_optional(_fast_time, obj.get("time"), ()),
        inpatient_stays=_fast_items(_fast_stay, obj.get("inpatient_stays")),
        other_services=_fast_items(_fast_other_service, obj.get("other_services")),
        policy=_fast_optional(_fast_policy, obj.get("policy"), Policy()),
    )
