"""Outbound HL7 built with hl7apy: DFT^P03 per billing dialect, MDM^T02 documents."""

from __future__ import annotations

import datetime as dt

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

import hl7 as python_hl7
from ccm_connector.hl7.outbound import (
    BillingDialect,
    ChargeLine,
    Document,
    OutboundError,
    Party,
    PatientId,
    dft_p03,
    escape,
    mdm_t02,
)

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-6)))
SENDER, RECEIVER = Party("CCMCONNECTOR", "PRACTICE"), Party("BILLING", "PRACTICE")
PATIENT = PatientId("MRN1", "PRACTICE", "O'HARA|X", "ANN^B", dt.date(1950, 1, 2), "F")
LINES = [
    ChargeLine("T1", "99490", "CCM first 20 min", 1, dt.date(2026, 11, 30), ("E11.9", "I10"), "1234567893", "1234567893"),
    ChargeLine("T2", "99439", "CCM addl 20 min", 2, dt.date(2026, 11, 30), ("E11.9", "I10"), "1234567893", "1234567893"),
]


def test_generic_dft_has_one_ft1_per_line_with_codes_in_both_fields() -> None:
    text = dft_p03(LINES, PATIENT, SENDER, RECEIVER, "C1", NOW, BillingDialect("generic-2.5.1"))
    assert parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    msg = python_hl7.parse(text)
    ft1 = msg.segments("FT1")
    assert [str(s[7][0][0]) for s in ft1] == ["99490", "99439"]
    assert [str(s[25][0][0]) for s in ft1] == ["99490", "99439"]
    assert str(ft1[0][4]) == "20261130^20261130"  # DR
    assert [str(s[10]) for s in ft1] == ["1", "2"]
    assert str(msg.segment("MSH")[9]) == "DFT^P03^DFT_P03"
    # Delimiters in data are escaped, not structure.
    assert "|O'HARA\\F\\X^ANN\\S\\B|" in text


def test_ecw_dialect_puts_cpt_in_ft1_25_only_and_a_plain_date() -> None:
    dialect = BillingDialect("ecw", version="2.3", cpt_in_ft1_7=False, date_of_service="TS")
    text = dft_p03(LINES, PATIENT, SENDER, RECEIVER, "C2", NOW, dialect)
    ft1 = python_hl7.parse(text).segments("FT1")
    assert str(ft1[0][4]) == "20261130" and str(ft1[0][7]) == "99490"
    assert str(ft1[0][25][0][0]) == "99490"
    assert "|2.3" in text.split("\r")[0]


def test_no_lines_is_refused() -> None:
    with pytest.raises(OutboundError, match="no charge lines"):
        dft_p03([], PATIENT, SENDER, RECEIVER, "C3", NOW, BillingDialect("g"))


def test_escape_covers_every_delimiter() -> None:
    assert escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
    assert escape("two\nlines") == "two lines"


def test_mdm_t02_carries_the_document() -> None:
    doc = Document("CCM-REVIEW", "CCMRV-abc", NOW, "DO", "1234567893", ("line one", "codes: 99490 x1"), (("CCM-HASH", "ST", "abc"),))
    text = mdm_t02(doc, PATIENT, SENDER, Party("EHR", "CLINIC"), "M1", NOW)
    assert parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    msg = python_hl7.parse(text)
    txa = msg.segment("TXA")
    assert (str(txa[2]), str(txa[12]), str(txa[17])) == ("CCM-REVIEW", "CCMRV-abc", "DO")
    assert [str(s[3]) for s in msg.segments("OBX")] == ["TEXT", "TEXT", "CCM-HASH"]
