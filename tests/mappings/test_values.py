"""mappings/values.py: HL7 timestamps with and without offsets, local dates, MBI, NPI, ICD-10, minutes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from ccm_connector.mappings import values
from ccm_connector.records import Instant

CHICAGO = ZoneInfo("America/Chicago")
UTC = dt.UTC


def test_a_timestamp_with_an_offset_keeps_it() -> None:
    assert values.parse_instant("20261103101500-0600", CHICAGO) == Instant(
        dt.datetime(2026, 11, 3, 16, 15, tzinfo=UTC), -360
    )
    assert values.parse_instant("20261103101500.25+0530", CHICAGO) == Instant(
        dt.datetime(2026, 11, 3, 4, 45, 0, 250000, tzinfo=UTC), 330
    )


def test_a_timestamp_without_an_offset_is_practice_local_time_with_the_offset_unstated() -> None:
    assert values.parse_instant("20260701090000", CHICAGO) == Instant(
        dt.datetime(2026, 7, 1, 14, 0, tzinfo=UTC), None
    )  # CDT
    assert values.parse_instant("20260105090000", CHICAGO) == Instant(
        dt.datetime(2026, 1, 5, 15, 0, tzinfo=UTC), None
    )  # CST
    assert values.parse_instant("20260105", CHICAGO) == Instant(
        dt.datetime(2026, 1, 5, 6, 0, tzinfo=UTC), None
    )  # midnight local


def test_the_repeated_hour_at_the_end_of_daylight_time_is_its_first_occurrence() -> None:
    assert values.parse_instant("20261101013000", CHICAGO).utc == dt.datetime(
        2026, 11, 1, 6, 30, tzinfo=UTC
    )  # 01:30 CDT


def test_local_dates_follow_the_practice_zone() -> None:
    assert values.local_date("20261031233000-0700", CHICAGO) == dt.date(
        2026, 11, 1
    )  # 01:30 in Chicago
    assert values.local_date("20261031233000", CHICAGO) == dt.date(2026, 10, 31)  # as written
    assert values.local_date("20261031", CHICAGO) == dt.date(2026, 10, 31)
    assert values.calendar_date("19480212000000+0215") == dt.date(
        1948, 2, 12
    )  # birth dates never shift


@pytest.mark.parametrize(
    "text",
    [
        "Aug 15, 1942",
        "2026-11-03",
        "20261340",
        "20260230",
        "202611",
        "20261103101500+1500",
        "2026110310150",
        "",
    ],
)
def test_malformed_or_partial_dates_are_refused_without_echoing_the_value(text: str) -> None:
    with pytest.raises(values.BadValue) as e:
        values.local_date(text, CHICAGO)
    assert text == "" or text not in str(e.value)


def test_mbi() -> None:
    assert values.mbi("1EG4-TE5-MK73") == "1EG4TE5MK73"
    for bad in ("1EG4TE5MK7", "0EG4TE5MK73", "1SG4TE5MK73", "123-45-6789"):
        with pytest.raises(values.BadValue):
            values.mbi(bad)


def test_npi_and_icd10_and_minutes() -> None:
    assert values.npi("1234567893") == "1234567893"
    with pytest.raises(values.BadValue):
        values.npi("1234567890")
    assert values.diagnosis_code("e119", "I10") == "E11.9"
    assert values.diagnosis_code("I10", "I10") == "I10"
    assert values.diagnosis_code("J45.909", "I10") == "J45.909"
    assert values.diagnosis_code("596.5", "I9") == "596.5"
    with pytest.raises(values.BadValue):
        values.diagnosis_code("aortic stenosis", "I10")
    assert values.whole_minutes("22") == 22 and values.whole_minutes("20.0") == 20
    for bad in ("0", "-5", "2.5", "abc", "1441", ""):
        with pytest.raises(values.BadValue):
            values.whole_minutes(bad)
