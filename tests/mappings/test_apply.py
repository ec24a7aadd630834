"""mappings/apply.py: what each profile makes of each fixture (tests/fixtures/hl7), and why it refuses."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ccm_connector.hl7 import reader
from ccm_connector.mappings.apply import IGNORED, MAPPED, REJECTED, Result, apply
from ccm_connector.mappings.profile import Profile, load_profile, profile_from_text
from ccm_connector.records import (
    CarePlan,
    Consent,
    Instant,
    Merge,
    Patient,
    Problem,
    Service,
    Stay,
    Touchpoint,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
CHICAGO = ZoneInfo("America/Chicago")
GENERIC = load_profile("generic-2.5.1")


def variant(name: str, *edits: tuple[str, str]) -> Profile:
    text = (
        resources.files("ccm_connector.mappings")
        .joinpath("profiles", f"{name}.toml")
        .read_text(encoding="utf-8")
    )
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return profile_from_text(text, f"{name}-variant", "test")


def mapped(fixture: str, profile: Profile = GENERIC, index: int = 0) -> Result:
    item = reader.read_file((FIXTURES / fixture).read_bytes()).items[index]
    assert isinstance(item, reader.Message)
    return apply(item, profile, CHICAGO)


def edited(fixture: str, old: str, new: str, profile: Profile = GENERIC) -> Result:
    data = (FIXTURES / fixture).read_bytes()
    assert old.encode() in data, old
    return apply(reader.read_message(data.replace(old.encode(), new.encode(), 1)), profile, CHICAGO)


def of(result: Result, kind: type) -> list:
    return [r for r in result.records if isinstance(r, kind)]


def test_patient_demographics_and_mbi() -> None:
    r = mapped("adt_a04_cr.hl7")
    assert r.action == MAPPED and r.warnings == ()
    assert r.records == (
        Patient("MRN1001", "TESTPATIENT", "ALPHA", dt.date(1948, 2, 12), "F", "1EG4TE5MK73"),
    )


def test_a_malformed_mbi_is_skipped_with_a_warning_not_a_rejection() -> None:
    r = edited("adt_a04_cr.hl7", "1EG4TE5MK73^^^CMS^MC", "123-45-6789^^^CMS^MC")
    assert r.action == MAPPED and of(r, Patient)[0].mbi is None
    assert r.warnings == ("PID-3: identifier typed MC is not an MBI; ignored",)


def test_touchpoint() -> None:
    r = mapped("mdm_touchpoint.hl7")
    assert r.action == MAPPED
    (tp,) = of(r, Touchpoint)
    assert tp == Touchpoint(
        id="TP-0001",
        mrn="MRN1001",
        staff_id="RN042",
        start=Instant(dt.datetime(2026, 11, 3, 16, 15, tzinfo=dt.UTC), -360),
        minutes=22,
        activity="MEDREC",
        summary="Reviewed medication list by phone.\nSent refill request to pharmacy.",
    )


def test_consent_and_care_plan() -> None:
    (consent,) = of(mapped("mdm_consent.hl7"), Consent)
    assert consent == Consent(
        "MRN1001", "ccm", dt.date(2026, 11, 1), "1234567893", "given", "CN-0001"
    )
    (plan,) = of(mapped("mdm_care_plan.hl7"), CarePlan)
    assert plan == CarePlan(
        "MRN1001",
        dt.date(2026, 11, 2),
        "CP-0001",
        ("problems", "goals", "medications", "symptoms", "interventions"),
        shared_on=dt.date(2026, 11, 3),
    )


def test_stays_admit_discharge_and_snf() -> None:
    assert of(mapped("adt_a01_inpatient.hl7"), Stay) == [
        Stay("MRN1001", dt.date(2026, 11, 5), None, "inpatient", "V-7001")
    ]
    assert of(mapped("adt_a03_discharge.hl7"), Stay) == [
        Stay("MRN1001", dt.date(2026, 11, 5), dt.date(2026, 11, 12), "inpatient", "V-7001")
    ]
    # no PV1-44: the A01 event time (EVN-2) is the admit date
    assert of(mapped("adt_a01_snf.hl7"), Stay) == [
        Stay("MRN6006", dt.date(2026, 11, 5), None, "snf", "V-8001")
    ]
    outpatient = edited("adt_a01_inpatient.hl7", "PV1|1|I|", "PV1|1|O|")
    assert outpatient.action == MAPPED and of(outpatient, Stay) == []


def test_merge() -> None:
    assert of(mapped("adt_a40_merge.hl7"), Merge) == [Merge("MRN1001", "MRN9009")]
    same = edited("adt_a40_merge.hl7", "MRG|MRN9009", "MRG|MRN1001")
    assert (same.action, same.reason) == (REJECTED, "MRG-1: the retired MRN is the surviving MRN")


def test_problems_with_status_and_code_systems() -> None:
    r = mapped("ppr_pc1_problems.hl7")
    assert of(r, Problem) == [
        Problem("MRN1001", "E11.9", "I10", "active"),
        Problem("MRN1001", "I10", "I10", "active"),
        Problem("MRN1001", "J45.909", "I10", "resolved"),
    ]
    assert of(mapped("ppr_pc3_delete.hl7"), Problem) == [
        Problem("MRN1001", "I10", "I10", "deleted")
    ]


def test_diagnoses_become_problems_only_where_a_profile_asks() -> None:
    assert of(mapped("adt_a08_diagnoses.hl7"), Problem) == []
    profile = variant(
        "generic-2.5.1",
        ('"ADT^A08" = ["patient"]', '"ADT^A08" = ["patient", "diagnoses"]'),
        ("types = []", 'types = ["F"]'),
    )
    assert of(mapped("adt_a08_diagnoses.hl7", profile), Problem) == [
        Problem("MRN1001", "N18.3", "I10", "active")
    ]


def test_generic_services_from_ft1_7_with_npis_and_the_lab_line_skipped() -> None:
    r = mapped("generic_dft_p03.hl7")
    assert of(r, Service) == [
        Service("MRN1001", dt.date(2026, 11, 4), ("G0181",), "1245319599", "TX-1"),
        Service(
            "MRN1001", dt.date(2026, 11, 4), ("99214",), "1234567893", "TX-2"
        ),  # NPI from PV1-7
    ]
    credit = mapped("generic_dft_p03_credit.hl7")
    assert of(credit, Service) == [
        Service("MRN1001", dt.date(2026, 11, 4), ("G0181",), "1245319599", "TX-1R", reversed=True)
    ]


def test_ecw_style_dft_cpt_in_ft1_25_comma_names_and_local_provider_ids() -> None:
    profile = variant("ecw-2.3", ('# DOC1 = "1234567893"', 'DOC1 = "1932102084"'))
    r = mapped("ecw_dft_p03.hl7", profile)
    assert r.action == MAPPED
    (patient,) = of(r, Patient)
    assert (patient.family, patient.given) == ("TESTPATIENT", "BETA R")
    assert of(r, Service) == [
        Service("MRN4004", dt.date(2026, 11, 5), ("99214", "99490"), "1932102084", None)
    ]
    generic = mapped("ecw_dft_p03.hl7", variant("generic-2.5.1"))
    assert (
        of(generic, Patient)[0].family == "TESTPATIENT, BETA R"
    )  # the generic profile does not split names
    assert of(generic, Service)[0].practitioner_npi is None


def test_pmdsoft_dft_npi_from_pv1_subcomponents_and_mrn_from_pid2() -> None:
    r = mapped("pmdsoft_dft_p03.hl7", load_profile("pmdsoft-2.3"))
    assert of(r, Service) == [
        Service("MRN5005", dt.date(2026, 10, 7), ("99490",), "1356421622", None)
    ]
    wrong_version = edited(
        "pmdsoft_dft_p03.hl7", "|P|2.3|", "|P|2.5.1|", load_profile("pmdsoft-2.3")
    )
    assert (wrong_version.action, wrong_version.reason) == (
        REJECTED,
        "MSH-12: version 2.5.1 is not accepted by profile pmdsoft-2.3",
    )


def test_quirky_fixtures_map_like_the_plain_one() -> None:
    plain = mapped("adt_a04_cr.hl7").records
    for name in (
        "adt_a04_lf.hl7",
        "adt_a04_crlf.hl7",
        "many_messages.hl7",
        "batch_with_trailers.hl7",
    ):
        assert mapped(name).records == plain
    assert of(mapped("adt_a04_8859-1.hl7"), Patient)[0].given == "JOSÉ"
    assert of(mapped("delimiters_custom.hl7"), Patient)[0].mrn == "MRN2002"


@pytest.mark.parametrize(
    "fixture, old, new, reason",
    [
        (
            "adt_a04_cr.hl7",
            "19480212",
            "Aug 15, 1942",
            "PID-7: not an HL7 date/time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ])",
        ),
        (
            "adt_a04_cr.hl7",
            "MRN1001^^^NORTHCLINIC^MR~1EG4TE5MK73^^^CMS^MC",
            "1EG4TE5MK73^^^CMS^MC",
            "PID-3: no medical record number",
        ),
        ("adt_a04_cr.hl7", "TESTPATIENT^ALPHA^Q", "", "PID-5: patient family name missing"),
        (
            "mdm_touchpoint.hl7",
            "CCM-MIN^Minutes^L||22",
            "CCM-MIN^Minutes^L||0",
            "OBX CCM-MIN: must be a whole number of minutes from 1 to 1440",
        ),
        ("mdm_touchpoint.hl7", "OBX|1|NM|CCM-MIN", "OBX|1|NM|OTHER", "OBX CCM-MIN: missing"),
        ("mdm_touchpoint.hl7", "|TP-0001|", "||", "TXA-12: unique document number missing"),
        (
            "mdm_touchpoint.hl7",
            "|RN042^NURSE^NORA^^^^^^ROSTER|",
            "||",
            "TXA-5: performing staff id missing",
        ),
        (
            "mdm_touchpoint.hl7",
            "|20261103101500-0600|",
            "|yesterday|",
            "TXA-4: not an HL7 date/time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ])",
        ),
        (
            "mdm_consent.hl7",
            "||ccm",
            "||ltc",
            "OBX CCM-PROGRAM: not one of apcm, ccm, pcm",
        ),
        (
            "mdm_consent.hl7",
            "||given",
            "||maybe",
            "OBX CCM-STATUS: not a status listed in [documents.consent_statuses]",
        ),
        (
            "mdm_consent.hl7",
            "||1234567893^DOCTOR",
            "||1234567890^DOCTOR",
            "OBX CCM-PRACT: not a valid NPI",
        ),
        (
            "mdm_care_plan.hl7",
            "||symptoms",
            "||vibes",
            "OBX CCM-ELEM: an element not listed in [documents.care_plan_elements]",
        ),
        (
            "ppr_pc1_problems.hl7",
            "E119^Type 2 diabetes mellitus without complications^I10",
            "E119^Type 2 diabetes",
            "PRB-3.3: coding system missing",
        ),
        (
            "ppr_pc1_problems.hl7",
            "E119^Type 2 diabetes mellitus without complications^I10",
            "diabetes^Type 2 diabetes^I10",
            "PRB-3.1: not an ICD-10 code",
        ),
        (
            "adt_a03_discharge.hl7",
            "20261112143000-0600",
            "20261101143000-0600",
            "PV1-45: discharge date before the admit date",
        ),
        (
            "generic_dft_p03.hl7",
            "TX-1||20261104^20261104",
            "TX-1||",
            "FT1-4: transaction date missing",
        ),
    ],
)
def test_rejections_name_the_field_never_the_value(
    fixture: str, old: str, new: str, reason: str
) -> None:
    r = edited(fixture, old, new)
    assert (r.action, r.reason, r.records) == (REJECTED, reason, ())


@pytest.mark.parametrize(
    "fixture, old, new, reason",
    [
        (
            "adt_a04_cr.hl7",
            "|P|2.5.1",
            "|T|2.5.1",
            "MSH-11: processing id T is not mapped by profile generic-2.5.1",
        ),
        (
            "adt_a04_cr.hl7",
            "ADT^A04^ADT_A01",
            "SIU^S12^SIU_S12",
            "MSH-9: message type SIU^S12 is not mapped by profile generic-2.5.1",
        ),
        (
            "mdm_touchpoint.hl7",
            "|CCM-TOUCH|",
            "|DS|",
            "TXA-2: document type DS is not a CCM document",
        ),
        ("mdm_touchpoint.hl7", "||||AU", "||||IP", "TXA-17: document not final (status IP)"),
    ],
)
def test_ignored_messages_say_why(fixture: str, old: str, new: str, reason: str) -> None:
    r = edited(fixture, old, new)
    assert (r.action, r.reason, r.records) == (IGNORED, reason, ())


def test_a_touchpoint_without_an_offset_is_read_in_the_practice_zone() -> None:
    r = edited("mdm_touchpoint.hl7", "|20261103101500-0600|", "|20261103101500|")
    (tp,) = of(r, Touchpoint)
    assert tp.start == Instant(dt.datetime(2026, 11, 3, 16, 15, tzinfo=dt.UTC), None)


def test_reasons_never_quote_what_could_be_patient_data() -> None:
    assert "1942" not in edited("adt_a04_cr.hl7", "19480212", "Aug 15, 1942").reason
    assert "Jane" not in edited("mdm_care_plan.hl7", "||symptoms", "||Jane Doe").reason
    assert "Jane" not in edited("mdm_consent.hl7", "||given", "||Jane Doe").reason
    doc = edited("mdm_touchpoint.hl7", "|CCM-TOUCH|", "|Jane Doe|")
    assert (doc.action, doc.reason) == (IGNORED, "TXA-2: document type (not shown) is not a CCM document")


def test_a_death_date_in_pid_29_is_kept_as_the_practice_local_date() -> None:
    pid = "PID|1||MRN1001^^^NORTHCLINIC^MR||TESTPATIENT^ALPHA||19480212|F"
    died = pid + "|" * 21 + "20261201033000+0000"  # 21:30 on Nov 30 in Chicago
    assert died.split("|")[29] == "20261201033000+0000"
    r = edited("adt_a03_discharge.hl7", pid, died)
    assert r.action == MAPPED
    assert of(r, Patient)[0].death_date == dt.date(2026, 11, 30)
    bad = edited("adt_a03_discharge.hl7", pid, pid + "|" * 21 + "2026-13")
    assert bad.action == REJECTED and "PID-29" in bad.reason


def test_a_touchpoint_can_carry_the_practitioners_mdm() -> None:
    note = "OBX|4|TX|CCM-NOTE^Summary^L||Sent refill request to pharmacy."
    r = edited("mdm_touchpoint.hl7", note, note + "\rOBX|5|ST|CCM-MDM^MDM^L||High")
    assert r.action == MAPPED and of(r, Touchpoint)[0].mdm == "high"
    assert of(mapped("mdm_touchpoint.hl7"), Touchpoint)[0].mdm is None
    bad = edited("mdm_touchpoint.hl7", note, note + "\rOBX|5|ST|CCM-MDM^MDM^L||extreme")
    assert bad.action == REJECTED and "CCM-MDM" in bad.reason
