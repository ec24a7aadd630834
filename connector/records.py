"""The practice's canonical records: what mapping profiles produce from HL7 and the store keeps.

These are the practice's own record of truth. The offshore log may only describe them.
Dates are local calendar dates of the practice; instants are UTC with the source offset kept.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Instant:
    """A moment as the source stated it: UTC plus the source's UTC offset in minutes (None if unstated)."""

    utc: dt.datetime
    offset_minutes: int | None

    def local(self, zone: dt.tzinfo) -> dt.datetime:
        return self.utc.astimezone(zone)


@dataclass(frozen=True, slots=True)
class Patient:
    mrn: str
    family: str
    given: str
    birth_date: dt.date | None
    sex: str | None
    mbi: str | None  # Medicare Beneficiary Identifier
    death_date: dt.date | None = None  # PID-29, the practice-local date


@dataclass(frozen=True, slots=True)
class Problem:
    mrn: str
    code: str  # ICD-10-CM, dot form (E11.9)
    system: str  # I10 | SNOMED | ...
    status: str  # active | resolved | deleted


@dataclass(frozen=True, slots=True)
class Service:
    """A service the EHR billed (DFT^P03): E/M, AWV, IPPE, TCM, G0181/G0182, ESRD, care management."""

    mrn: str
    date: dt.date
    codes: tuple[str, ...]
    practitioner_npi: str | None
    transaction_id: str | None = None
    reversed: bool = False  # a credit line (FT1-6 CD): the EHR took these codes back


@dataclass(frozen=True, slots=True)
class Stay:
    mrn: str
    admitted: dt.date
    discharged: dt.date | None  # None while still admitted
    kind: str  # inpatient | snf
    visit_id: str | None = None


@dataclass(frozen=True, slots=True)
class Consent:
    mrn: str
    program: str  # ccm | pcm | apcm
    date: dt.date
    practitioner_npi: str | None
    status: str  # given | declined | withdrawn
    document_id: str | None = None


@dataclass(frozen=True, slots=True)
class Touchpoint:
    """One CCM activity performed by in-house staff, as the EHR recorded it."""

    id: str  # the EHR document id (TXA-12)
    mrn: str
    staff_id: str
    start: Instant
    minutes: int
    activity: str
    summary: str
    mdm: str | None = None  # the practitioner's medical decision making: low | moderate | high


@dataclass(frozen=True, slots=True)
class CarePlan:
    mrn: str
    date: dt.date
    document_id: str
    elements: tuple[str, ...]
    shared_on: dt.date | None = None  # the date a copy reached the patient
    reviewed_on: dt.date | None = None


@dataclass(frozen=True, slots=True)
class Merge:
    """ADT^A40: records of the retired MRN follow the surviving one from now on."""

    surviving_mrn: str
    retired_mrn: str


@dataclass(frozen=True, slots=True)
class Signature:
    """The billing physician's answer, from the EHR, to a review packet we sent (MDM T04/T06/T08/T11)."""

    document_id: str  # our TXA-12 (CCMRV-...), which carries the packet hash
    mrn: str
    event: str  # the MDM trigger: T04, T06, T08, T11
    completion: str  # TXA-17: AU/LA signed; IN/CA rejected
    availability: str  # TXA-19: CA/OB/UN rejected
    authenticator_npi: str | None  # TXA-22
    reason: str | None  # OBX CCM-NOTE text, for a rejection


Record = Patient | Problem | Service | Stay | Consent | Touchpoint | CarePlan | Merge | Signature

KINDS: dict[type, str] = {
    Patient: "patient",
    Problem: "problem",
    Service: "service",
    Stay: "stay",
    Consent: "consent",
    Touchpoint: "touchpoint",
    CarePlan: "care_plan",
    Merge: "merge",
    Signature: "signature",
}


def kind_of(record: Record) -> str:
    return KINDS[type(record)]
