"""Outbound HL7 v2 messages built with hl7apy and validated before delivery.

DFT^P03 carries charges to the billing system (one FT1 per code line); MDM^T02 carries a
document to the EHR (a review packet awaiting the physician's signature, or an approved care
plan). Inputs are plain values: this module knows HL7, not CCM.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


class OutboundError(ValueError):
    """A message could not be built or did not validate; says which message and why."""


def escape(text: str) -> str:
    """HL7 escape sequences for the default encoding characters; line breaks become spaces."""
    for raw, escaped in ESCAPES:
        text = text.replace(raw, escaped)
    return " ".join(text.split("\n")).replace("\r", " ")


def ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S") + (moment.strftime("%z") if moment.tzinfo else "")


def d8(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


@dataclass(frozen=True)
class Party:
    application: str
    facility: str


@dataclass(frozen=True)
class PatientId:
    mrn: str
    assigning_authority: str
    family: str = ""
    given: str = ""
    birth_date: dt.date | None = None
    sex: str = ""


@dataclass(frozen=True)
class ChargeLine:
    transaction_id: str  # FT1-2: stable per patient-month-code
    code: str
    description: str
    units: int  # negative for a reversal
    date_of_service: dt.date
    diagnoses: tuple[str, ...]  # ICD-10-CM codes
    performing_npi: str
    billing_npi: str
    transaction_type: str = "CG"  # CG charge, CD credit (reversal)


@dataclass(frozen=True)
class BillingDialect:
    """How the billing system wants charges: set by a billing profile (mappings/billing/)."""

    name: str
    version: str = "2.5.1"
    cpt_in_ft1_7: bool = True
    cpt_in_ft1_25: bool = True
    date_of_service: str = "DR"  # DR (start^end) or TS
    diagnosis_system: str = "I10"
    code_system: str = "CPT4"


def _message(kind: str, structure: str, version: str, sender: Party, receiver: Party, control_id: str, now: dt.datetime) -> Message:
    m = Message(structure, version=version, validation_level=VALIDATION_LEVEL.STRICT)
    m.msh.msh_3, m.msh.msh_4 = sender.application, sender.facility
    m.msh.msh_5, m.msh.msh_6 = receiver.application, receiver.facility
    m.msh.msh_7 = ts(now)
    m.msh.msh_9 = kind + "^" + structure if version >= "2.3.1" else kind
    m.msh.msh_10 = control_id
    m.msh.msh_11 = "P"
    m.msh.msh_12 = version
    return m


def _pid(m: Message, patient: PatientId) -> None:
    m.pid.pid_3 = f"{escape(patient.mrn)}^^^{escape(patient.assigning_authority)}^MR"
    if patient.family or patient.given:
        m.pid.pid_5 = f"{escape(patient.family)}^{escape(patient.given)}"
    if patient.birth_date:
        m.pid.pid_7 = d8(patient.birth_date)
    if patient.sex:
        m.pid.pid_8 = patient.sex


def _validated(m: Message, what: str) -> str:
    try:
        m.validate()
    except Exception as e:  # hl7apy raises several types; name the message, not the data
        raise OutboundError(f"{what}: does not validate: {type(e).__name__}") from None
    return m.to_er7()


def dft_p03(
    lines: list[ChargeLine], patient: PatientId, sender: Party, receiver: Party, control_id: str, now: dt.datetime, dialect: BillingDialect
) -> str:
    """One DFT^P03 for one patient-month: one FT1 per code line."""
    if not lines:
        raise OutboundError(f"DFT^P03 {control_id}: no charge lines")
    m = _message("DFT^P03", "DFT_P03", dialect.version, sender, receiver, control_id, now)
    m.evn.evn_1 = "P03"
    m.evn.evn_2 = ts(now)
    _pid(m, patient)
    m.pv1.pv1_2 = "O"
    for i, line in enumerate(lines, start=1):
        fin = m.add_group("DFT_P03_FINANCIAL")
        ft1 = fin.ft1
        ft1.ft1_1 = str(i)
        ft1.ft1_2 = escape(line.transaction_id)
        day = d8(line.date_of_service)
        ft1.ft1_4 = f"{day}^{day}" if dialect.date_of_service == "DR" else day
        ft1.ft1_6 = line.transaction_type
        coded = f"{escape(line.code)}^{escape(line.description)}^{dialect.code_system}"
        ft1.ft1_7 = coded if dialect.cpt_in_ft1_7 else f"{escape(line.code)}"
        ft1.ft1_10 = str(line.units)
        for code in line.diagnoses:
            ft1.add_field("ft1_19").value = f"{escape(code)}^^{dialect.diagnosis_system}"
        ft1.ft1_20 = f"{line.performing_npi}^^^^^^^^NPI"
        ft1.ft1_21 = f"{line.billing_npi}^^^^^^^^NPI"
        if dialect.cpt_in_ft1_25:
            ft1.ft1_25 = f"{escape(line.code)}^{escape(line.description)}^{dialect.code_system}"
    return _validated(m, f"DFT^P03 {control_id}")


@dataclass(frozen=True)
class Document:
    document_type: str  # TXA-2, e.g. CCM-REVIEW, CCM-PLAN
    document_id: str  # TXA-12
    created: dt.datetime
    status: str  # TXA-17: DO (documented, awaiting signature), AU (authenticated)
    author_npi: str | None
    text_lines: tuple[str, ...]
    observations: tuple[tuple[str, str, str], ...] = ()  # (identifier, value type, value)


def mdm_t02(doc: Document, patient: PatientId, sender: Party, receiver: Party, control_id: str, now: dt.datetime) -> str:
    """An MDM^T02 (original document notification and content)."""
    m = _message("MDM^T02", "MDM_T02", "2.5.1", sender, receiver, control_id, now)
    m.evn.evn_1 = "T02"
    m.evn.evn_2 = ts(now)
    _pid(m, patient)
    m.pv1.pv1_2 = "O"
    m.txa.txa_1 = "1"
    m.txa.txa_2 = escape(doc.document_type)
    m.txa.txa_3 = "TX"
    m.txa.txa_4 = ts(doc.created)
    if doc.author_npi:
        m.txa.txa_9 = f"{doc.author_npi}^^^^^^^^NPI"
    m.txa.txa_12 = escape(doc.document_id)
    m.txa.txa_17 = doc.status
    rows = [("TEXT", "TX", line) for line in doc.text_lines] + list(doc.observations)
    for i, (ident, vtype, value) in enumerate(rows, start=1):
        group = m.add_group("MDM_T02_OBXNTE_SUPPGRP")
        group.obx.obx_1 = str(i)
        group.obx.obx_2 = vtype
        group.obx.obx_3 = escape(ident)
        group.obx.obx_5 = escape(value) if value else '""'
        group.obx.obx_11 = "F"
    return _validated(m, f"MDM^T02 {control_id}")
