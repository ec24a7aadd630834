"""The exchange documents' content: the work queue built from plain data, the return read into it.

Pure functions, no I/O: `build_workqueue` turns a `WorkQueue` into XML bytes valid against
sftp/schemas/workqueue-1.xsd; `parse_return` turns return bytes (already decrypted) into a
`Return`, through the hardened parser and return-1.xsd. Both ends validate against the same
shipped schemas (`ccm_connector.sftp.documents`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from lxml import etree

from .sftp import documents
from .sftp.documents import RETURN_NS, WORKQUEUE_NS, DocumentRefused

WQ = "{" + WORKQUEUE_NS + "}"
RT = "{" + RETURN_NS + "}"
# Characters XML 1.0 cannot carry (C0 controls other than tab/newline/CR, surrogates, U+FFFE/F).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def utc_stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- work queue ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffEntry:
    staff_id: str
    name: str
    credential: str
    role: str
    location: str


@dataclass(frozen=True)
class Identifiers:
    mrn: str
    family: str
    given: str
    birth_date: dt.date | None


@dataclass(frozen=True)
class Enrollment:
    program: str
    billing_npi: str | None
    next_threshold: int | None


@dataclass(frozen=True)
class PlanOut:
    document_id: str
    date: dt.date
    elements: tuple[str, ...]
    shared_on: dt.date | None = None
    reviewed_on: dt.date | None = None


@dataclass(frozen=True)
class PlanReviewOut:
    """The physician's decision on a draft the team sent (identified by their return id)."""

    return_id: str
    revises: str | None
    outcome: str  # approved | rejected
    new_document_id: str | None
    decided: dt.date
    reason: str | None


@dataclass(frozen=True)
class TouchpointOut:
    id: str
    staff_id: str
    role: str
    date: dt.date
    start: str  # HH:MM local
    minutes: int
    activity: str
    summary: str


@dataclass(frozen=True)
class QueuePatient:
    pseudonym: str
    enrollments: tuple[Enrollment, ...]
    conditions: tuple[tuple[str, str], ...]  # (code, system)
    care_plan: PlanOut | None
    touchpoints: tuple[TouchpointOut, ...]
    countable_minutes: int
    identifiers: Identifiers | None = None
    plan_reviews: tuple[PlanReviewOut, ...] = ()


@dataclass(frozen=True)
class WorkQueue:
    batch_id: str
    sequence: int
    practice_id: str
    period: str  # YYYY-MM
    created: dt.datetime
    time_zone: str
    identifiers: bool
    staff: tuple[StaffEntry, ...]
    patients: tuple[QueuePatient, ...]


def _attrs(el: etree._Element, **values: object) -> None:
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        el.set(key, xml_text(str(value)))


def build_workqueue(q: WorkQueue) -> bytes:
    """The work-queue XML (UTF-8), validated against its schema before it is returned."""
    root = etree.Element(WQ + "workQueue", nsmap={None: WORKQUEUE_NS})
    _attrs(
        root,
        version="1",
        batchId=q.batch_id,
        sequence=q.sequence,
        practiceId=q.practice_id,
        period=q.period,
        created=utc_stamp(q.created),
        timeZone=q.time_zone,
        identifiers=q.identifiers,
    )
    staff = etree.SubElement(root, WQ + "staff")
    for s in q.staff:
        _attrs(
            etree.SubElement(staff, WQ + "member"),
            id=s.staff_id,
            name=s.name,
            credential=s.credential,
            role=s.role,
            location=s.location,
        )
    patients = etree.SubElement(root, WQ + "patients")
    for p in q.patients:
        el = etree.SubElement(patients, WQ + "patient")
        _attrs(el, pseudonym=p.pseudonym)
        if q.identifiers and p.identifiers is not None:
            ids = p.identifiers
            _attrs(
                etree.SubElement(el, WQ + "identifiers"),
                mrn=ids.mrn,
                family=ids.family,
                given=ids.given,
                birthDate=ids.birth_date.isoformat() if ids.birth_date else None,
            )
        for e in p.enrollments:
            _attrs(
                etree.SubElement(el, WQ + "enrollment"),
                program=e.program,
                billingPractitioner=e.billing_npi,
                nextThreshold=e.next_threshold,
            )
        conditions = etree.SubElement(el, WQ + "conditions")
        for code, system in p.conditions:
            _attrs(etree.SubElement(conditions, WQ + "condition"), code=code, system=system)
        if p.care_plan is not None:
            cp = p.care_plan
            plan = etree.SubElement(el, WQ + "carePlan")
            _attrs(
                plan,
                documentId=cp.document_id,
                date=cp.date.isoformat(),
                sharedOn=cp.shared_on.isoformat() if cp.shared_on else None,
                reviewedOn=cp.reviewed_on.isoformat() if cp.reviewed_on else None,
            )
            for element in cp.elements:
                etree.SubElement(plan, WQ + "element").text = xml_text(element)
        for review in p.plan_reviews:
            el_review = etree.SubElement(el, WQ + "carePlanReview")
            _attrs(
                el_review,
                returnId=review.return_id,
                revises=review.revises,
                outcome=review.outcome,
                newDocumentId=review.new_document_id,
                decided=review.decided.isoformat(),
            )
            if review.reason:
                etree.SubElement(el_review, WQ + "reason").text = xml_text(review.reason)
        tps = etree.SubElement(el, WQ + "touchpoints")
        for t in p.touchpoints:
            tp = etree.SubElement(tps, WQ + "touchpoint")
            _attrs(
                tp,
                id=t.id,
                staffId=t.staff_id,
                role=t.role,
                date=t.date.isoformat(),
                start=t.start,
                minutes=t.minutes,
                activity=t.activity,
            )
            etree.SubElement(tp, WQ + "summary").text = xml_text(t.summary)
        _attrs(etree.SubElement(el, WQ + "monthToDate"), countableMinutes=p.countable_minutes)
    data = documents.serialize(root)
    problems = documents.validate(
        etree.ElementTree(etree.fromstring(data, documents.safe_parser())), WORKQUEUE_NS
    )
    if problems:
        raise DocumentRefused("the work queue built does not match its schema", problems)
    return data


@dataclass(frozen=True)
class QueueSummary:
    batch_id: str
    sequence: int
    practice_id: str
    period: str
    patients: int
    touchpoints: int


def read_workqueue(data: bytes) -> QueueSummary:
    """Check a work queue (hardened parse + schema) and summarise it (the offshore side's check)."""
    root = documents.check(data, WORKQUEUE_NS).getroot()
    return QueueSummary(
        batch_id=root.get("batchId"),
        sequence=int(root.get("sequence")),
        practice_id=root.get("practiceId"),
        period=root.get("period"),
        patients=len(root.findall(f"{WQ}patients/{WQ}patient")),
        touchpoints=len(root.findall(f"{WQ}patients/{WQ}patient/{WQ}touchpoints/{WQ}touchpoint")),
    )


# --- return --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    entry_id: str
    pseudonym: str
    touchpoint_ids: tuple[str, ...]
    performer: str
    date: dt.date
    minutes: int
    activity: str
    description: str


@dataclass(frozen=True)
class Change:
    element: str
    action: str  # add | revise | remove
    text: str


@dataclass(frozen=True)
class Draft:
    pseudonym: str
    revises: str | None
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class ProposedCode:
    pseudonym: str
    month: str
    code: str
    units: int


@dataclass(frozen=True)
class Return:
    return_id: str
    practice_id: str
    created: dt.datetime
    answers: tuple[str, ...]
    prepared_by: tuple[str, ...]
    entries: tuple[Entry, ...] = ()
    drafts: tuple[Draft, ...] = ()
    codes: tuple[ProposedCode, ...] = field(default=())


def parse_return(data: bytes) -> Return:
    """Read a decrypted return: hardened parse, return-1.xsd, then into dataclasses."""
    root = documents.check(data, RETURN_NS).getroot()
    return Return(
        return_id=root.get("returnId"),
        practice_id=root.get("practiceId"),
        created=dt.datetime.fromisoformat(root.get("created").replace("Z", "+00:00")),
        answers=tuple(b.get("id") for b in root.iterfind(f"{RT}answers/{RT}batch")),
        prepared_by=tuple(u.get("id") for u in root.iterfind(f"{RT}preparedBy/{RT}user")),
        entries=tuple(
            Entry(
                entry_id=e.get("id"),
                pseudonym=e.get("patient"),
                touchpoint_ids=tuple(t.get("ref") for t in e.iterfind(f"{RT}touchpoint")),
                performer=e.get("performer"),
                date=dt.date.fromisoformat(e.get("date")),
                minutes=int(e.get("minutes")),
                activity=e.get("activity"),
                description=e.findtext(f"{RT}description") or "",
            )
            for e in root.iterfind(f"{RT}activityLog/{RT}entry")
        ),
        drafts=tuple(
            Draft(
                pseudonym=d.get("patient"),
                revises=d.get("revises"),
                changes=tuple(
                    Change(c.get("element"), c.get("action"), c.text or "")
                    for c in d.iterfind(f"{RT}change")
                ),
            )
            for d in root.iterfind(f"{RT}carePlanDrafts/{RT}draft")
        ),
        codes=tuple(
            ProposedCode(pm.get("patient"), pm.get("month"), c.get("code"), int(c.get("units")))
            for pm in root.iterfind(f"{RT}proposedCodes/{RT}patientMonth")
            for c in pm.iterfind(f"{RT}code")
        ),
    )


def build_return(r: Return) -> bytes:
    """Return XML from its content (for the offshore team's tooling and for tests)."""
    root = etree.Element(RT + "return", nsmap={None: RETURN_NS})
    _attrs(
        root,
        version="1",
        returnId=r.return_id,
        practiceId=r.practice_id,
        created=utc_stamp(r.created),
    )
    answers = etree.SubElement(root, RT + "answers")
    for batch in r.answers:
        _attrs(etree.SubElement(answers, RT + "batch"), id=batch)
    prepared = etree.SubElement(root, RT + "preparedBy")
    for user in r.prepared_by:
        _attrs(etree.SubElement(prepared, RT + "user"), id=user)
    log = etree.SubElement(root, RT + "activityLog")
    for e in r.entries:
        el = etree.SubElement(log, RT + "entry")
        _attrs(
            el,
            id=e.entry_id,
            patient=e.pseudonym,
            performer=e.performer,
            date=e.date.isoformat(),
            minutes=e.minutes,
            activity=e.activity,
        )
        for ref in e.touchpoint_ids:
            _attrs(etree.SubElement(el, RT + "touchpoint"), ref=ref)
        etree.SubElement(el, RT + "description").text = xml_text(e.description)
    drafts = etree.SubElement(root, RT + "carePlanDrafts")
    for d in r.drafts:
        el = etree.SubElement(drafts, RT + "draft")
        _attrs(el, patient=d.pseudonym, revises=d.revises)
        for c in d.changes:
            ch = etree.SubElement(el, RT + "change")
            _attrs(ch, element=c.element, action=c.action)
            ch.text = xml_text(c.text)
    codes = etree.SubElement(root, RT + "proposedCodes")
    months: dict[tuple[str, str], etree._Element] = {}
    for c in r.codes:
        key = (c.pseudonym, c.month)
        if key not in months:
            months[key] = etree.SubElement(codes, RT + "patientMonth")
            _attrs(months[key], patient=c.pseudonym, month=c.month)
        _attrs(etree.SubElement(months[key], RT + "code"), code=c.code, units=c.units)
    return documents.serialize(root)
