"""Build one patient-month's facts (spec/rules-check.md) from the practice's records.

A pure function: the records of one patient, the roster, the time that survived
reconciliation and the billing policy in; the facts JSON object out. The store-reading side is
in `month_close.py`. Choices the records cannot settle are made conservatively and named here.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .reconcile import CountedTime
from .records import CarePlan, Consent, Patient, Problem, Service, Stay
from .roster import Staff

# The qualifying face-to-face visits are the rule year's `initiating_visit_codes` (rule data).
# 99211 is a face-to-face visit that never qualifies; it is still offered to the engine as an
# initiating-visit candidate so that the engine says why the month cannot bill.
NON_QUALIFYING_VISIT = "99211"
# G0506 (extensive CCM assessment) is billed with the initiating visit: CCM was discussed.
CCM_PLANNING_ADDON = "G0506"


@dataclass(frozen=True)
class PatientRecords:
    """Everything the practice holds for one patient (after MRN merges)."""

    patient: Patient | None
    problems: tuple[Problem, ...] = ()
    services: tuple[Service, ...] = ()
    stays: tuple[Stay, ...] = ()
    consents: tuple[Consent, ...] = ()
    care_plans: tuple[CarePlan, ...] = ()
    died_on: dt.date | None = None


@dataclass(frozen=True)
class Policy:
    practitioner_time: str = "maximize"
    date_of_service: str = "month_end"
    setting: str = "physician"
    default_billing_npi: str | None = None
    visit_codes: frozenset = frozenset()  # the rule year's qualifying initiating-visit codes
    non_condition_chapters: frozenset = frozenset()  # the rule year's ICD-10-CM chapters that never count
    complex_mdm: bool = False
    extra: dict = field(default_factory=dict)


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    year, mon = int(month[:4]), int(month[5:7])
    return dt.date(year, mon, 1), dt.date(year, mon, calendar.monthrange(year, mon)[1])


def is_visit(code: str, qualifying: frozenset) -> bool:
    return code in qualifying or code == NON_QUALIFYING_VISIT


def consent_in_force(consents: Iterable[Consent], month: str) -> Consent | None:
    """The consent that covers the month: the latest 'given' on or before its last day, unless a
    withdrawal or refusal came after it and before the month began (a withdrawal takes effect at
    the end of the month it is made in, cms-rules §3.3)."""
    first, last = month_bounds(month)
    current: Consent | None = None
    for c in sorted(consents, key=lambda c: (c.date, c.status != "given")):
        if c.date > last:
            break
        if c.status == "given":
            current = c
        elif current is not None and c.date < first:
            current = None
    return current


def chronic_conditions(problems: Iterable[Problem], excluded_chapters: frozenset) -> list[str]:
    """Distinct active ICD-10 problem codes outside the chapters that are never conditions."""
    codes = {
        p.code.upper()
        for p in problems
        if p.status == "active" and p.system.upper() in ("I10", "ICD10", "ICD-10", "ICD10CM", "ICD-10-CM") and p.code[:1].upper() not in excluded_chapters
    }
    return sorted(codes)


def visits(services: Iterable[Service], qualifying: frozenset) -> list[Service]:
    return sorted((s for s in services if any(is_visit(c, qualifying) for c in s.codes)), key=lambda s: s.date)


def last_visit_before(services: Iterable[Service], day: dt.date, npi: str, qualifying: frozenset) -> dt.date | None:
    """The billing practitioner's last qualifying face-to-face visit on or before `day`."""
    dates = [s.date for s in services if s.practitioner_npi == npi and s.date <= day and any(c in qualifying for c in s.codes)]
    return max(dates) if dates else None


def initiating_visit(services: tuple[Service, ...], consent: Consent, npi: str, qualifying: frozenset) -> dict | None:
    """The visit that started care management: the latest visit on or before consent, the
    billing practitioner's first. CCM counts as discussed when consent was documented that day
    or G0506 was billed with the visit (the records hold nothing more specific)."""
    candidates = [s for s in visits(services, qualifying) if s.date <= consent.date]
    if not candidates:
        return None
    own = [s for s in candidates if s.practitioner_npi == npi]
    visit = (own or candidates)[-1]
    same_day_codes = {c for s in services if s.date == visit.date for c in s.codes}
    code = next((c for c in visit.codes if c in qualifying), NON_QUALIFYING_VISIT)
    return {
        "date": visit.date.isoformat(),
        "code": code,
        "practitioner": visit.practitioner_npi or "",
        "ccm_discussed": visit.date == consent.date or CCM_PLANNING_ADDON in same_day_codes,
    }


def care_plan_in_force(plans: Iterable[CarePlan], month: str) -> dict | None:
    _, last = month_bounds(month)
    current = [p for p in plans if p.date <= last]
    if not current:
        return None
    plan = max(current, key=lambda p: (p.date, p.document_id))
    shared = min((p.shared_on for p in current if p.shared_on and p.shared_on >= plan.date), default=plan.shared_on)
    return {
        "date": plan.date.isoformat(),
        "reviewed": (plan.reviewed_on or plan.date).isoformat(),
        "shared_with_patient": shared.isoformat() if shared else None,
        "elements": sorted(set(plan.elements)),
    }


def stays_in_month(stays: Iterable[Stay], month: str) -> list[dict]:
    first, last = month_bounds(month)
    out = []
    for s in sorted(stays, key=lambda s: s.admitted):
        end = s.discharged or last
        if s.admitted <= last and end >= first:
            out.append({"from": max(s.admitted, first).isoformat(), "to": min(end, last).isoformat()})
    return out


def services_in_month(services: Iterable[Service], month: str) -> list[dict]:
    first, last = month_bounds(month)
    return [
        {"code": code, "practitioner": s.practitioner_npi or "", "date": s.date.isoformat()}
        for s in sorted(services, key=lambda s: (s.date, s.codes))
        if first <= s.date <= last
        for code in s.codes
    ]


def staff_entry(member: Staff) -> dict:
    entry: dict = {"role": member.role, "location": member.location, "excluded": member.excluded}
    if member.supervisor_npi:
        entry["supervisor"] = member.supervisor_npi
    if member.npi:
        entry["npi"] = member.npi
    return entry


def month_facts(
    mrn: str,
    month: str,
    records: PatientRecords,
    counted: Iterable[CountedTime],
    roster: Mapping[str, Staff],
    policy: Policy,
    mdm_attested_by: frozenset[str] = frozenset(),
) -> dict:
    """The rules engine's facts for one patient-month, as a JSON-ready dict.

    `mdm_attested_by`: NPIs of practitioners who documented moderate or high medical decision
    making for the patient this month (touchpoints with OBX CCM-MDM); complex CCM needs the
    billing practitioner's.
    """
    consent = consent_in_force(records.consents, month)
    npi = (consent.practitioner_npi if consent else None) or policy.default_billing_npi or ""
    time = sorted(counted, key=lambda c: (c.date, c.entry_id))
    staff_ids = sorted({c.staff_id for c in time})
    return {
        "patient": {
            "id": mrn,
            "chronic_conditions": chronic_conditions(records.problems, policy.non_condition_chapters),
            "qmb": False,  # QMB status is not in the EHR feed; G0558 is never assumed
            "last_visit_before_consent": _iso(last_visit_before(records.services, consent.date, npi, policy.visit_codes)) if consent else None,
            "died_on": _iso(records.died_on),
        },
        "month": month,
        "program": consent.program if consent else "ccm",
        "setting": policy.setting,
        "billing_practitioner": npi,
        "complex_mdm": policy.complex_mdm or (bool(npi) and npi in mdm_attested_by),
        "consent": {"date": consent.date.isoformat(), "practitioner": consent.practitioner_npi or ""} if consent else None,
        "initiating_visit": initiating_visit(records.services, consent, npi, policy.visit_codes) if consent else None,
        "care_plan": care_plan_in_force(records.care_plans, month),
        "staff": {sid: staff_entry(roster[sid]) for sid in staff_ids if sid in roster},
        "time": [{"id": c.entry_id, "date": c.date.isoformat(), "minutes": c.minutes, "staff": c.staff_id, "counted_for": None} for c in time],
        "inpatient_stays": stays_in_month(records.stays, month),
        "other_services": services_in_month(records.services, month),
        "policy": {"practitioner_time": policy.practitioner_time, "date_of_service": policy.date_of_service},
    }


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None
