"""EHR dialect profiles: TOML data files, loaded and checked before any message is mapped.

A profile says which messages are mapped into which records and where each value sits in
that EHR's messages. `load_profile(name, profile_dir)` looks in the practice's own folder
first, then among the shipped profiles (profiles/*.toml). Every problem is reported as
``FILE: [section] key: reason`` and loading raises one ProfileError listing all of them.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import is_valid_npi
from ..errors import InputError
from ..facts import CARE_PLAN_ELEMENTS

BUILDERS = ("patient", "stay", "problems", "diagnoses", "services", "document", "merge")
CONSENT_STATUSES = ("given", "declined", "withdrawn")


class ProfileError(InputError):
    """A profile that cannot be used; the message names the file, the key and the reason."""


class Invalid(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FieldRef:
    """SEG-n[.c[.s]]: a field, or one component / subcomponent of it."""

    segment: str
    field: int
    component: int | None = None
    subcomponent: int | None = None

    def __str__(self) -> str:
        parts = [f"{self.segment}-{self.field}"]
        if self.component is not None:
            parts.append(str(self.component))
        if self.subcomponent is not None:
            parts.append(str(self.subcomponent))
        return ".".join(parts)


_REF = re.compile(r"([A-Z][A-Z0-9]{2})-(\d{1,3})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?")
_CODE = re.compile(r"[A-Z0-9]{5}")


def parse_ref(text: str) -> FieldRef:
    m = _REF.fullmatch(text)
    if not m or int(m.group(2)) == 0 or any(g is not None and int(g) == 0 for g in m.groups()[2:]):
        raise Invalid(f"{text!r} is not a field reference like PID-3, FT1-25.1 or PV1-7.9.1")
    seg, fld, comp, sub = m.groups()
    return FieldRef(seg, int(fld), int(comp) if comp else None, int(sub) if sub else None)


# --- checks ----------------------------------------------------------------------------------


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {value!r}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {value!r}")
    return value


def _ref(value: Any) -> FieldRef:
    return parse_ref(_string(value))


def _list(item: Callable[[Any], Any], minimum: int = 0) -> Callable[[Any], tuple]:
    def check(value: Any) -> tuple:
        if not isinstance(value, list):
            raise Invalid(f"must be a list, got {value!r}")
        if len(value) < minimum:
            raise Invalid(f"must hold at least {minimum} item(s)")
        out = []
        for i, v in enumerate(value, start=1):
            try:
                out.append(item(v))
            except Invalid as e:
                raise Invalid(f"item {i}: {e}") from None
        return tuple(out)

    return check


def _codes(value: Any) -> frozenset[str]:
    """Case-insensitive code list: stored upper-case."""
    return frozenset(s.upper() for s in _list(_string)(value))


def _one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _trigger(value: Any) -> str:
    value = _string(value).upper()
    if not re.fullmatch(r"[A-Z0-9]{2,4}", value):
        raise Invalid(f"{value!r} is not a trigger event like A01 or PC3")
    return value


def _code_range(value: Any) -> tuple[str, str]:
    text = _string(value).upper()
    low, _, high = text.partition("-")
    high = high or low
    if (
        not (_CODE.fullmatch(low) and _CODE.fullmatch(high))
        or low[0].isdigit() != high[0].isdigit()
    ):
        raise Invalid(f"{text!r} is not a 5-character code or a range like 99202-99205")
    if low[0].isalpha() and low[0] != high[0]:
        raise Invalid(f"{text!r}: a range must keep its letter (G0556-G0558)")
    if high < low:
        raise Invalid(f"{text!r}: the range ends before it starts")
    return low, high


def _table(value_check: Callable[[Any], Any], key_upper: bool = True) -> Callable[[Any], dict]:
    def check(value: Any) -> dict:
        if not isinstance(value, dict):
            raise Invalid("must be a table")
        out = {}
        for k, v in value.items():
            try:
                out[k.upper() if key_upper else k] = value_check(v)
            except Invalid as e:
                raise Invalid(f"{k}: {e}") from None
        return out

    return check


def _npi(value: Any) -> str:
    value = _string(value)
    if not is_valid_npi(value):
        raise Invalid(f"{value!r} is not a 10-digit NPI with a valid check digit")
    return value


def _messages(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise Invalid("must be a table")
    out = {}
    for key, builders in value.items():
        if not re.fullmatch(r"[A-Z0-9]{3}(\^[A-Z0-9]{2,4})?", key.upper()):
            raise Invalid(f"{key!r} is not a message type like ADT^A01")
        try:
            names = _list(_one_of(*BUILDERS), minimum=1)(builders)
        except Invalid as e:
            raise Invalid(f"{key}: {e}") from None
        out[key.upper()] = names
    return out


def spec(check: Callable[[Any], Any]) -> Any:
    return field(metadata={"check": check})


# --- sections ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    description: str = spec(_string)
    processing_ids: frozenset = spec(_codes)
    versions: tuple = spec(_list(_string))


@dataclass(frozen=True)
class PatientRules:
    mrn_fields: tuple = spec(_list(_ref, minimum=1))
    mrn_id_types: frozenset = spec(_codes)
    mrn_authority: str = spec(_string)
    mrn_first_if_untyped: bool = spec(_boolean)
    name_field: FieldRef = spec(_ref)
    name_style: str = spec(_one_of("components", "family_comma_given"))
    birth_date_field: FieldRef = spec(_ref)
    sex_field: FieldRef = spec(_ref)
    death_date_field: FieldRef = spec(_ref)
    mbi_fields: tuple = spec(_list(_ref))
    mbi_id_types: frozenset = spec(_codes)


@dataclass(frozen=True)
class StayRules:
    admit_events: frozenset = spec(lambda v: frozenset(_list(_trigger)(v)))
    discharge_events: frozenset = spec(lambda v: frozenset(_list(_trigger)(v)))
    admitted_field: FieldRef = spec(_ref)
    discharged_field: FieldRef = spec(_ref)
    event_time_fields: tuple = spec(_list(_ref))
    class_field: FieldRef = spec(_ref)
    inpatient_classes: frozenset = spec(_codes)
    snf_fields: tuple = spec(_list(_ref))
    snf_values: frozenset = spec(_codes)
    visit_id_field: FieldRef = spec(_ref)


@dataclass(frozen=True)
class ProblemRules:
    action_field: FieldRef = spec(_ref)
    code_field: FieldRef = spec(_ref)
    status_field: FieldRef = spec(_ref)
    resolved_date_field: FieldRef = spec(_ref)
    deleted_events: frozenset = spec(lambda v: frozenset(_list(_trigger)(v)))
    deleted_actions: frozenset = spec(_codes)
    resolved_statuses: frozenset = spec(_codes)


@dataclass(frozen=True)
class DiagnosisRules:
    code_field: FieldRef = spec(_ref)
    type_field: FieldRef = spec(_ref)
    types: frozenset = spec(_codes)


@dataclass(frozen=True)
class ServiceRules:
    date_field: FieldRef = spec(_ref)
    code_fields: tuple = spec(_list(_ref, minimum=1))
    type_field: FieldRef = spec(_ref)
    charge_types: frozenset = spec(_codes)
    credit_types: frozenset = spec(_codes)
    transaction_id_field: FieldRef = spec(_ref)
    practitioner_fields: tuple = spec(_list(_ref))
    codes: tuple = spec(_list(_code_range, minimum=1))

    def wanted(self, code: str) -> bool:
        code = code.upper()
        if not _CODE.fullmatch(code):
            return False
        for low, high in self.codes:
            if low[0].isalpha() and code[0] != low[0]:
                continue
            if low <= code <= high:
                return True
        return False


@dataclass(frozen=True)
class DocumentRules:
    type_field: FieldRef = spec(_ref)
    id_field: FieldRef = spec(_ref)
    time_field: FieldRef = spec(_ref)
    performer_field: FieldRef = spec(_ref)
    completion_field: FieldRef = spec(_ref)
    incomplete_statuses: frozenset = spec(_codes)
    touchpoint_type: str = spec(lambda v: _string(v).upper())
    consent_type: str = spec(lambda v: _string(v).upper())
    care_plan_type: str = spec(lambda v: _string(v).upper())
    review_type: str = spec(lambda v: _string(v).upper())
    availability_field: FieldRef = spec(_ref)
    authenticator_field: FieldRef = spec(_ref)
    minutes_id: str = spec(lambda v: _string(v).upper())
    activity_id: str = spec(lambda v: _string(v).upper())
    mdm_id: str = spec(lambda v: _string(v).upper())
    note_id: str = spec(lambda v: _string(v).upper())
    program_id: str = spec(lambda v: _string(v).upper())
    status_id: str = spec(lambda v: _string(v).upper())
    practitioner_id: str = spec(lambda v: _string(v).upper())
    element_id: str = spec(lambda v: _string(v).upper())
    shared_id: str = spec(lambda v: _string(v).upper())
    reviewed_id: str = spec(lambda v: _string(v).upper())
    programs: frozenset = spec(lambda v: frozenset(s.lower() for s in _list(_string, minimum=1)(v)))
    consent_statuses: dict = spec(_table(_one_of(*CONSENT_STATUSES)))
    care_plan_elements: dict = spec(_table(_one_of(*CARE_PLAN_ELEMENTS)))


@dataclass(frozen=True)
class MergeRules:
    retired_field: FieldRef = spec(_ref)
    retired_id_types: frozenset = spec(_codes)


@dataclass(frozen=True)
class PractitionerRules:
    accept_unmarked_npi: bool = spec(_boolean)
    local_ids: dict = spec(_table(_npi, key_upper=False))


SECTIONS: dict[str, type] = {
    "profile": Header,
    "patient": PatientRules,
    "stay": StayRules,
    "problems": ProblemRules,
    "diagnoses": DiagnosisRules,
    "services": ServiceRules,
    "documents": DocumentRules,
    "merge": MergeRules,
    "practitioners": PractitionerRules,
}


@dataclass(frozen=True)
class Profile:
    name: str
    source: str  # the file it came from (for messages)
    header: Header
    messages: dict[str, tuple[str, ...]]
    patient: PatientRules
    stay: StayRules
    problems: ProblemRules
    diagnoses: DiagnosisRules
    services: ServiceRules
    documents: DocumentRules
    merge: MergeRules
    practitioners: PractitionerRules
    code_systems: dict[str, str]


# --- loading -------------------------------------------------------------------------------------


def _section(name: str, cls: type, raw: Any, problems: list[str]) -> Any:
    if not isinstance(raw, dict):
        problems.append(
            f"[{name}]: section is missing" if raw is None else f"[{name}]: must be a table"
        )
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            problems.append(f"[{name}] {key}: unknown key (known: {', '.join(fields)})")
    values = {}
    for key, f in fields.items():
        if key not in raw:
            problems.append(f"[{name}] {key}: required")
            continue
        try:
            values[key] = f.metadata["check"](raw[key])
        except Invalid as e:
            problems.append(f"[{name}] {key}: {e}")
    if len(values) != len(fields):
        return None
    return cls(**values)


def profile_from_text(text: str, name: str, source: str) -> Profile:
    """Parse and check a profile's TOML text; raise ProfileError listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{source}: not valid TOML: {e}") from None
    problems: list[str] = []
    known = set(SECTIONS) | {"messages", "code_systems"}
    for key in raw:
        if key not in known:
            problems.append(f"[{key}]: unknown section (known: {', '.join(sorted(known))})")
    sections = {n: _section(n, cls, raw.get(n), problems) for n, cls in SECTIONS.items()}
    messages: dict[str, tuple[str, ...]] = {}
    if not isinstance(raw.get("messages"), dict):
        problems.append(
            "[messages]: section is missing"
            if "messages" not in raw
            else "[messages]: must be a table"
        )
    else:
        try:
            messages = _messages(raw["messages"])
        except Invalid as e:
            problems.append(f"[messages] {e}")
        if not messages and not problems:
            problems.append("[messages]: maps no message type")
    code_systems: dict[str, str] = {}
    if not isinstance(raw.get("code_systems"), dict):
        problems.append(
            "[code_systems]: section is missing"
            if "code_systems" not in raw
            else "[code_systems]: must be a table"
        )
    else:
        try:
            code_systems = _table(lambda v: _string(v).upper())(raw["code_systems"])
        except Invalid as e:
            problems.append(f"[code_systems] {e}")
    if problems:
        raise ProfileError(f"{source}: invalid mapping profile\n  " + "\n  ".join(problems))
    return Profile(
        name=name,
        source=source,
        messages=messages,
        code_systems=code_systems,
        **{("header" if n == "profile" else n): s for n, s in sections.items()},
    )


def shipped_profiles() -> list[str]:
    folder = resources.files("ccm_connector.mappings").joinpath("profiles")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name: str, profile_dir: Path | None = None) -> Profile:
    """A profile by name (the practice's folder first, then the shipped ones) or by .toml path."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        try:
            return profile_from_text(path.read_text(encoding="utf-8"), path.stem, str(path))
        except (OSError, UnicodeDecodeError) as e:
            raise ProfileError(f"{path}: cannot read profile: {e.__class__.__name__}") from None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ProfileError(f"profile name {name!r}: use letters, digits, '.', '_' or '-'")
    if profile_dir is not None:
        path = profile_dir / f"{name}.toml"
        if path.is_file():
            try:
                return profile_from_text(path.read_text(encoding="utf-8"), name, str(path))
            except (OSError, UnicodeDecodeError) as e:
                raise ProfileError(f"{path}: cannot read profile: {e.__class__.__name__}") from None
    shipped = resources.files("ccm_connector.mappings").joinpath("profiles", f"{name}.toml")
    if not shipped.is_file():
        where = f"{profile_dir} or " if profile_dir is not None else ""
        raise ProfileError(
            f"mapping profile {name!r} not found in {where}the shipped profiles ({', '.join(shipped_profiles())})"
        )
    return profile_from_text(shipped.read_text(encoding="utf-8"), name, f"{name}.toml (shipped)")
