"""Applying a profile to a read message: records, or the reason the message is ignored or rejected.

`apply(message, profile, zone)` is a pure function of its inputs. Outcomes:

- ``mapped``: the records the message yields (possibly with warnings, e.g. a malformed MBI);
- ``ignored``: nothing in it is for us (type not mapped, test message, not a CCM document);
- ``rejected``: it is for us but a value is missing or malformed; the reason names the segment
  and field ("PID-7: not an HL7 date/time ...") but never the value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from ..config import is_valid_npi
from ..hl7.reader import Message, Segment
from ..records import (
    CarePlan,
    Consent,
    Merge,
    Patient,
    Problem,
    Record,
    Service,
    Signature,
    Stay,
    Touchpoint,
)
from . import values
from .profile import FieldRef, Profile

MAPPED, IGNORED, REJECTED = "mapped", "ignored", "rejected"


@dataclass(frozen=True)
class Result:
    action: str  # mapped | ignored | rejected
    reason: str | None
    records: tuple[Record, ...] = ()
    warnings: tuple[str, ...] = ()


class Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Ignore(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _shown(code: str) -> str:
    """A structural code from the message (MSH-9, MSH-11, MSH-12, CX-5, TXA-2, TXA-17) for a
    reason. Only short code-shaped text is quoted; OBX values are never quoted."""
    code = code.strip()
    if len(code) <= 20 and all(c.isascii() and (c.isalnum() or c in "^_.-") for c in code):
        return code
    return "(not shown)"


@dataclass
class _Context:
    message: Message
    profile: Profile
    zone: ZoneInfo
    warnings: list[str] = field(default_factory=list)
    mrn: str | None = None

    @property
    def trigger(self) -> str:
        return self.message.msh.get(9, 2).upper()

    def segment(self, ref: FieldRef, local: Segment | None = None) -> Segment | None:
        if local is not None and local.id == ref.segment:
            return local
        return self.message.first(ref.segment)

    def value(self, ref: FieldRef, local: Segment | None = None) -> str:
        seg = self.segment(ref, local)
        if seg is None:
            return ""
        return seg.get(ref.field, ref.component or 1, ref.subcomponent or 1)

    def first_value(
        self, refs: tuple[FieldRef, ...], local: Segment | None = None
    ) -> tuple[str, FieldRef | None]:
        for ref in refs:
            v = self.value(ref, local)
            if v:
                return v, ref
        return "", None

    def parsed(
        self,
        ref: FieldRef,
        parse: Callable[[str], object],
        local: Segment | None = None,
        required: str | None = None,
    ) -> object:
        raw = self.value(ref, local)
        if not raw:
            if required:
                raise Reject(f"{ref}: {required}")
            return None
        try:
            return parse(raw)
        except values.BadValue as e:
            raise Reject(f"{ref}: {e}") from None


def apply(message: Message, profile: Profile, zone: ZoneInfo) -> Result:
    ctx = _Context(message, profile, zone)
    try:
        builders = profile.messages.get(message.type.upper())
        if builders is None:
            raise Ignore(
                f"MSH-9: message type {_shown(message.type)} is not mapped by profile {profile.name}"
            )
        processing = message.processing_id.upper()
        if profile.header.processing_ids and processing not in profile.header.processing_ids:
            raise Ignore(
                f"MSH-11: processing id {_shown(processing) or '(empty)'} is not mapped by profile {profile.name}"
            )
        if profile.header.versions and message.version not in profile.header.versions:
            raise Reject(
                f"MSH-12: version {_shown(message.version) or '(empty)'} is not accepted by profile {profile.name}"
            )
        records: list[Record] = []
        for name in builders:
            records.extend(BUILDERS[name](ctx))
    except Ignore as e:
        return Result(IGNORED, e.reason)
    except Reject as e:
        return Result(REJECTED, e.reason)
    if not records:
        return Result(IGNORED, "the message yields no records", warnings=tuple(ctx.warnings))
    return Result(MAPPED, None, tuple(records), tuple(ctx.warnings))


# --- identifiers -----------------------------------------------------------------------------------


# CX-5 identifier types that never hold a medical record number (HL7 table 0203).
NOT_AN_MRN = frozenset(
    {
        "SS",
        "SSN",
        "MC",
        "MB",
        "MA",
        "MCD",
        "MCR",
        "DL",
        "PPN",
        "NPI",
        "BC",
        "DN",
        "EI",
        "TAX",
        "U",
        "AN",
        "VN",
    }
)


def _identifier(
    ctx: _Context, seg: Segment, n: int, types: frozenset, authority: str, first_if_untyped: bool
) -> str:
    """The CX repetition whose CX-5 is the most preferred of `types` (and CX-4.1 = authority)."""
    candidates = []
    for r in range(1, len(seg.repetitions(n)) + 1):
        parts = seg.parts(n, r)
        ident = parts[0][0] if parts and parts[0] else ""
        if not ident:
            continue
        id_type = parts[4][0].upper() if len(parts) > 4 else ""
        assigner = parts[3][0] if len(parts) > 3 else ""
        candidates.append((ident, id_type, assigner))
    if authority:
        candidates = [c for c in candidates if c[2].upper() == authority.upper()]
    for wanted in types:
        for ident, id_type, _ in candidates:
            if id_type == wanted:
                return ident
    if first_if_untyped:
        for ident, id_type, _ in candidates:
            if id_type not in NOT_AN_MRN:
                return ident
    return ""


def _ordered(types: frozenset, preference: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t for t in preference if t in types) + tuple(sorted(types - set(preference)))


def _mrn(ctx: _Context, pid: Segment) -> str:
    rules = ctx.profile.patient
    types = _ordered(rules.mrn_id_types, ("MR", "MRN", "PI", "PT", "PN"))
    for ref in rules.mrn_fields:
        seg = pid if ref.segment == pid.id else ctx.message.first(ref.segment)
        if seg is None:
            continue
        if ref.component is not None:
            value = seg.get(ref.field, ref.component, ref.subcomponent or 1)
        else:
            value = _identifier(
                ctx, seg, ref.field, types, rules.mrn_authority, rules.mrn_first_if_untyped
            )  # type: ignore[arg-type]
        if value:
            return value
    return ""


def _npi_from_xcn(ctx: _Context, parts: list[list[str]]) -> str | None:
    """An NPI from one XCN repetition: marked NPI, in an NPI subcomponent, or a mapped local id."""
    rules = ctx.profile.practitioners
    first = parts[0][0] if parts and parts[0] else ""
    markers = {p[0].upper() for i, p in enumerate(parts) if i in (8, 12) and p}
    if first and "NPI" in markers and is_valid_npi(first):
        return first
    for comp in parts:  # e.g. ...^&1356421622&NPI (pMDsoft): the number beside an NPI marker
        if len(comp) > 1 and any(s.upper() == "NPI" for s in comp):
            for s in comp:
                if is_valid_npi(s):
                    return s
    if first and first in rules.local_ids:
        return rules.local_ids[first]
    if first and rules.accept_unmarked_npi and is_valid_npi(first):
        return first
    return None


def _practitioner(
    ctx: _Context, refs: tuple[FieldRef, ...], local: Segment | None = None
) -> str | None:
    for ref in refs:
        seg = ctx.segment(ref, local)
        if seg is None:
            continue
        for r in range(1, len(seg.repetitions(ref.field)) + 1):
            found = _npi_from_xcn(ctx, seg.parts(ref.field, r))
            if found:
                return found
    return None


# --- builders ---------------------------------------------------------------------------------------


def build_patient(ctx: _Context) -> list[Record]:
    rules = ctx.profile.patient
    pid = ctx.message.first("PID")
    if pid is None:
        raise Reject("PID: segment missing")
    mrn = _mrn(ctx, pid)
    if not mrn:
        raise Reject(f"{rules.mrn_fields[0]}: no medical record number")
    ctx.mrn = mrn
    name_seg = ctx.segment(rules.name_field, pid)
    parts = name_seg.parts(rules.name_field.field) if name_seg is not None else []
    # XPN-1 is FN: surname & own-surname prefix & own surname ...; take the first one given
    family = next((s for s in parts[0] if s), "") if parts else ""
    given = parts[1][0] if len(parts) > 1 else ""
    if rules.name_style == "family_comma_given" and "," in family and not given:
        family, _, rest = family.partition(",")
        family, given = family.strip(), rest.strip()
    if not family:
        raise Reject(f"{rules.name_field}: patient family name missing")
    birth = ctx.parsed(rules.birth_date_field, values.calendar_date, pid)
    sex = ctx.value(rules.sex_field, pid).upper()[:1] or None
    death = ctx.parsed(rules.death_date_field, lambda v: values.local_date(v, ctx.zone), pid)
    mbi = None
    for ref in rules.mbi_fields:
        seg = ctx.segment(ref, pid)
        if seg is None:
            continue
        for r in range(1, len(seg.repetitions(ref.field)) + 1):
            p = seg.parts(ref.field, r)
            id_type = p[4][0].upper() if len(p) > 4 else ""
            if rules.mbi_id_types and id_type not in rules.mbi_id_types:
                continue
            try:
                mbi = values.mbi(p[0][0] if p else "")
                break
            except values.BadValue:
                ctx.warnings.append(
                    f"{ref}: identifier typed {_shown(id_type)} is not an MBI; ignored"
                )
        if mbi:
            break
    return [Patient(mrn=mrn, family=family, given=given, birth_date=birth, sex=sex, mbi=mbi, death_date=death)]  # type: ignore[arg-type]


def _require_mrn(ctx: _Context) -> str:
    if ctx.mrn is None:
        pid = ctx.message.first("PID")
        if pid is None:
            raise Reject("PID: segment missing")
        ctx.mrn = _mrn(ctx, pid)
        if not ctx.mrn:
            raise Reject(f"{ctx.profile.patient.mrn_fields[0]}: no medical record number")
    return ctx.mrn


def build_stay(ctx: _Context) -> list[Record]:
    rules = ctx.profile.stay
    mrn = _require_mrn(ctx)
    if ctx.message.first(rules.class_field.segment) is None:
        raise Reject(f"{rules.class_field.segment}: segment missing")
    snf = any(ctx.value(ref).upper() in rules.snf_values for ref in rules.snf_fields)
    kind = (
        "snf"
        if snf
        else "inpatient"
        if ctx.value(rules.class_field).upper() in rules.inpatient_classes
        else None
    )
    if kind is None:
        return []  # an outpatient or emergency visit: not a stay

    def event_date() -> dt.date | None:
        value, ref = ctx.first_value(rules.event_time_fields)
        if not value or ref is None:
            return None
        return ctx.parsed(ref, lambda v: values.local_date(v, ctx.zone))  # type: ignore[return-value]

    admitted = ctx.parsed(rules.admitted_field, lambda v: values.local_date(v, ctx.zone))
    if admitted is None and ctx.trigger in rules.admit_events:
        admitted = event_date()
    if admitted is None:
        raise Reject(f"{rules.admitted_field}: admit date missing")
    discharged = ctx.parsed(rules.discharged_field, lambda v: values.local_date(v, ctx.zone))
    if discharged is None and ctx.trigger in rules.discharge_events:
        discharged = event_date()
        if discharged is None:
            raise Reject(f"{rules.discharged_field}: discharge date missing")
    if discharged is not None and discharged < admitted:  # type: ignore[operator]
        raise Reject(f"{rules.discharged_field}: discharge date before the admit date")
    visit = ctx.value(rules.visit_id_field) or None
    return [Stay(mrn=mrn, admitted=admitted, discharged=discharged, kind=kind, visit_id=visit)]  # type: ignore[arg-type]


def _coded(ctx: _Context, seg: Segment, ref: FieldRef) -> tuple[str, str]:
    """(code, system) from a CE/CWE field, the system normalised by [code_systems]."""
    code = seg.get(ref.field, 1)
    raw_system = seg.get(ref.field, 3).upper()
    if not code:
        raise Reject(f"{ref}: code missing")
    if not raw_system:
        raise Reject(f"{ref.segment}-{ref.field}.3: coding system missing")
    system = ctx.profile.code_systems.get(raw_system, raw_system)
    try:
        return values.diagnosis_code(code, system), system
    except values.BadValue as e:
        raise Reject(f"{ref.segment}-{ref.field}.1: {e}") from None


def build_problems(ctx: _Context) -> list[Record]:
    rules = ctx.profile.problems
    mrn = _require_mrn(ctx)
    segments = ctx.message.every(rules.code_field.segment)
    if not segments:
        raise Reject(f"{rules.code_field.segment}: segment missing")
    out: list[Record] = []
    for seg in segments:
        code, system = _coded(ctx, seg, rules.code_field)
        action = ctx.value(rules.action_field, seg).upper()
        life = {
            ctx.value(rules.status_field, seg).upper(),
            seg.get(rules.status_field.field, 2).upper(),
        } - {""}
        if ctx.trigger in rules.deleted_events or action in rules.deleted_actions:
            status = "deleted"
        elif ctx.value(rules.resolved_date_field, seg) or life & rules.resolved_statuses:
            status = "resolved"
        else:
            status = "active"
        out.append(Problem(mrn=mrn, code=code, system=system, status=status))
    return out


def build_diagnoses(ctx: _Context) -> list[Record]:
    rules = ctx.profile.diagnoses
    mrn = _require_mrn(ctx)
    out: list[Record] = []
    for seg in ctx.message.every(rules.code_field.segment):
        if rules.types and ctx.value(rules.type_field, seg).upper() not in rules.types:
            continue
        code, system = _coded(ctx, seg, rules.code_field)
        out.append(Problem(mrn=mrn, code=code, system=system, status="active"))
    return out


def build_services(ctx: _Context) -> list[Record]:
    rules = ctx.profile.services
    mrn = _require_mrn(ctx)
    lines = ctx.message.every(rules.date_field.segment)
    if not lines:
        raise Reject(f"{rules.date_field.segment}: segment missing")
    groups: dict[tuple[dt.date, str | None, bool], list[tuple[str, str | None]]] = {}
    skipped = 0
    for seg in lines:
        kind = ctx.value(rules.type_field, seg).upper()
        reversed_ = kind in rules.credit_types
        if kind and not reversed_ and kind not in rules.charge_types:
            skipped += 1
            continue
        code, _ = ctx.first_value(rules.code_fields, seg)
        if not code or not rules.wanted(code):
            skipped += 1
            continue
        date = ctx.parsed(
            rules.date_field,
            lambda v: values.local_date(v, ctx.zone),
            seg,
            required="transaction date missing",
        )
        npi = _practitioner(ctx, rules.practitioner_fields, seg)
        txn = ctx.value(rules.transaction_id_field, seg) or None
        groups.setdefault((date, npi, reversed_), []).append((code.upper(), txn))  # type: ignore[arg-type]
    if skipped and not groups:
        ctx.warnings.append(
            f"{len(lines)} {rules.date_field.segment} lines, none with a care-management code"
        )
    out: list[Record] = []
    for (date, npi, reversed_), items in groups.items():
        codes = tuple(dict.fromkeys(code for code, _ in items))
        txn = next((t for _, t in items if t), None)
        out.append(
            Service(
                mrn=mrn,
                date=date,
                codes=codes,
                practitioner_npi=npi,
                transaction_id=txn,
                reversed=reversed_,
            )
        )
    return out


def _observations(ctx: _Context) -> dict[str, list[Segment]]:
    found: dict[str, list[Segment]] = {}
    for seg in ctx.message.every("OBX"):
        found.setdefault(seg.get(3, 1).upper(), []).append(seg)
    return found


def _obx_values(segments: list[Segment], text: bool = False) -> list[str]:
    out = []
    for seg in segments:
        for r in range(1, len(seg.repetitions(5)) + 1):
            v = seg.text(5, r) if text else seg.get(5, 1, 1, r)
            if v:
                out.append(v)
    return out


def build_document(ctx: _Context) -> list[Record]:
    rules = ctx.profile.documents
    mrn = _require_mrn(ctx)
    txa = ctx.message.first(rules.type_field.segment)
    if txa is None:
        raise Reject(f"{rules.type_field.segment}: segment missing")
    doc_type = ctx.value(rules.type_field, txa).upper()
    if doc_type == rules.review_type:
        return build_signature(ctx, txa, mrn)
    if ctx.trigger == "T11":
        raise Ignore("MDM^T11: a cancelled CCM document is not applied; send a corrected document (T08/T10) instead")
    if doc_type not in (rules.touchpoint_type, rules.consent_type, rules.care_plan_type):
        raise Ignore(
            f"{rules.type_field}: document type {_shown(doc_type) or '(empty)'} is not a CCM document"
        )
    completion = ctx.value(rules.completion_field, txa).upper()
    if completion in rules.incomplete_statuses:
        raise Ignore(f"{rules.completion_field}: document not final (status {_shown(completion)})")
    doc_id = ctx.value(rules.id_field, txa)
    if not doc_id:
        raise Reject(f"{rules.id_field}: unique document number missing")
    obs = _observations(ctx)

    def one(obs_id: str, required: bool = True) -> str:
        found = _obx_values(obs.get(obs_id, []))
        if not found:
            if required:
                raise Reject(f"OBX {obs_id}: missing")
            return ""
        if len(set(found)) > 1:
            raise Reject(f"OBX {obs_id}: more than one value")
        return found[0]

    def obs_date(obs_id: str) -> dt.date | None:
        raw = one(obs_id, required=False)
        if not raw:
            return None
        try:
            return values.local_date(raw, ctx.zone)
        except values.BadValue as e:
            raise Reject(f"OBX {obs_id}: {e}") from None

    if doc_type == rules.touchpoint_type:
        start = ctx.parsed(
            rules.time_field,
            lambda v: values.parse_instant(v, ctx.zone),
            txa,
            required="activity date/time missing",
        )
        staff = ctx.value(rules.performer_field, txa)
        if not staff:
            raise Reject(f"{rules.performer_field}: performing staff id missing")
        try:
            minutes = values.whole_minutes(one(rules.minutes_id))
        except values.BadValue as e:
            raise Reject(f"OBX {rules.minutes_id}: {e}") from None
        activity = one(rules.activity_id)
        summary = "\n".join(_obx_values(obs.get(rules.note_id, []), text=True))
        mdm = one(rules.mdm_id, required=False).lower() or None
        if mdm not in (None, "low", "moderate", "high"):
            raise Reject(f"OBX {rules.mdm_id}: must be low, moderate or high")
        return [
            Touchpoint(
                id=doc_id,
                mrn=mrn,
                staff_id=staff,
                start=start,
                minutes=minutes,
                activity=activity,
                summary=summary,
                mdm=mdm,
            )
        ]  # type: ignore[arg-type]

    date = ctx.parsed(
        rules.time_field,
        lambda v: values.local_date(v, ctx.zone),
        txa,
        required="activity date/time missing",
    )
    if doc_type == rules.consent_type:
        program = one(rules.program_id).lower()
        if program not in rules.programs:
            raise Reject(f"OBX {rules.program_id}: not one of {', '.join(sorted(rules.programs))}")
        status_code = one(rules.status_id)
        status = rules.consent_statuses.get(status_code.upper())
        if status is None:
            raise Reject(
                f"OBX {rules.status_id}: not a status listed in [documents.consent_statuses]"
            )
        practitioner = None
        pract_seg = obs.get(rules.practitioner_id, [])
        if pract_seg:
            plain = one(rules.practitioner_id)
            practitioner = _npi_from_xcn(ctx, pract_seg[0].parts(5)) or (
                plain if is_valid_npi(plain) else None
            )
            if practitioner is None:
                raise Reject(f"OBX {rules.practitioner_id}: not a valid NPI")
        else:
            ctx.warnings.append(f"OBX {rules.practitioner_id}: consent names no practitioner")
        return [
            Consent(
                mrn=mrn,
                program=program,
                date=date,
                practitioner_npi=practitioner,
                status=status,
                document_id=doc_id,
            )
        ]  # type: ignore[arg-type]

    elements = []
    for value in _obx_values(obs.get(rules.element_id, [])):
        element = rules.care_plan_elements.get(value.upper())
        if element is None:
            raise Reject(
                f"OBX {rules.element_id}: an element not listed in [documents.care_plan_elements]"
            )
        if element not in elements:
            elements.append(element)
    if not elements:
        raise Reject(f"OBX {rules.element_id}: the care plan lists no elements")
    return [
        CarePlan(
            mrn=mrn,
            date=date,  # type: ignore[arg-type]
            document_id=doc_id,
            elements=tuple(elements),
            shared_on=obs_date(rules.shared_id),
            reviewed_on=obs_date(rules.reviewed_id),
        )
    ]


def build_signature(ctx: _Context, txa: Segment, mrn: str) -> list[Record]:
    """The physician's answer to one of our review packets (signed, or rejected with a reason)."""
    rules = ctx.profile.documents
    doc_id = ctx.value(rules.id_field, txa)
    if not doc_id:
        raise Reject(f"{rules.id_field}: unique document number missing")
    authenticator = None
    if txa.get(rules.authenticator_field.field):
        authenticator = _npi_from_xcn(ctx, txa.parts(rules.authenticator_field.field))
        if authenticator is None:
            raise Reject(f"{rules.authenticator_field}: not a practitioner NPI")
    notes = _obx_values(_observations(ctx).get(rules.note_id, []), text=True)
    return [
        Signature(
            document_id=doc_id,
            mrn=mrn,
            event=ctx.trigger,
            completion=ctx.value(rules.completion_field, txa).upper(),
            availability=ctx.value(rules.availability_field, txa).upper(),
            authenticator_npi=authenticator,
            reason="\n".join(notes) or None,
        )
    ]


def build_merge(ctx: _Context) -> list[Record]:
    rules = ctx.profile.merge
    out: list[Record] = []
    survivor: str | None = None
    types = _ordered(rules.retired_id_types, ("MR", "MRN", "PI"))
    for seg in ctx.message.segments:
        if seg.id == "PID":
            survivor = _mrn(ctx, seg)
        elif seg.id == rules.retired_field.segment:
            if not survivor:
                raise Reject(
                    f"{rules.retired_field.segment}: no PID with a medical record number before it"
                )
            retired = _identifier(ctx, seg, rules.retired_field.field, types, "", True)  # type: ignore[arg-type]
            if not retired:
                raise Reject(f"{rules.retired_field}: retired medical record number missing")
            if retired == survivor:
                raise Reject(f"{rules.retired_field}: the retired MRN is the surviving MRN")
            out.append(Merge(surviving_mrn=survivor, retired_mrn=retired))
    if not out:
        raise Reject(f"{rules.retired_field.segment}: segment missing")
    return out


BUILDERS: dict[str, Callable[[_Context], list[Record]]] = {
    "patient": build_patient,
    "stay": build_stay,
    "problems": build_problems,
    "diagnoses": build_diagnoses,
    "services": build_services,
    "document": build_document,
    "merge": build_merge,
}
