"""Value parsers the profiles rely on: HL7 timestamps, dates, NPIs, MBIs, diagnosis codes.

Each raises `BadValue` with a reason that names the problem, never the value (values are PHI).

Timestamps (decided, see docs/hl7-interface.md): a TS with a UTC offset becomes an Instant at
that offset; a TS without one is read as the practice's local time (zoneinfo; in the repeated
hour at the end of daylight time the first occurrence is taken) and its offset is recorded as
unstated (None). A local calendar date is the date in the practice's zone of the instant, or
the date as written when no offset was given.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ..config import is_valid_npi
from ..records import Instant


class BadValue(ValueError):
    """A value in the wrong shape; the message says which shape was expected."""


_TS = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)


@dataclass(frozen=True, slots=True)
class Stamp:
    """An HL7 TS/DTM as written: local wall time, its UTC offset (None if unstated), precision."""

    wall: dt.datetime
    offset_minutes: int | None
    has_day: bool
    has_time: bool


def parse_stamp(text: str) -> Stamp:
    m = _TS.fullmatch(text.strip())
    if not m:
        raise BadValue("not an HL7 date/time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ])")
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    try:
        wall = dt.datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((frac or "0").ljust(6, "0")[:6]),
        )
    except ValueError:
        raise BadValue("not a valid calendar date/time") from None
    offset = None
    if sign:
        if int(oh) > 14 or int(om) > 59:
            raise BadValue("UTC offset out of range")
        offset = (int(oh) * 60 + int(om)) * (1 if sign == "+" else -1)
    return Stamp(wall, offset, day is not None, hour is not None)


def to_instant(stamp: Stamp, zone: ZoneInfo) -> Instant:
    if stamp.offset_minutes is not None:
        aware = stamp.wall.replace(tzinfo=dt.timezone(dt.timedelta(minutes=stamp.offset_minutes)))
        return Instant(aware.astimezone(dt.UTC), stamp.offset_minutes)
    return Instant(stamp.wall.replace(tzinfo=zone, fold=0).astimezone(dt.UTC), None)


def parse_instant(text: str, zone: ZoneInfo) -> Instant:
    stamp = parse_stamp(text)
    if not stamp.has_day:
        raise BadValue("needs at least a full date (YYYYMMDD)")
    return to_instant(stamp, zone)


def local_date(text: str, zone: ZoneInfo) -> dt.date:
    """The practice-local calendar date of a TS (converted when it states an offset)."""
    stamp = parse_stamp(text)
    if not stamp.has_day:
        raise BadValue("needs at least a full date (YYYYMMDD)")
    if stamp.offset_minutes is None or not stamp.has_time:
        return stamp.wall.date()
    return to_instant(stamp, zone).utc.astimezone(zone).date()


def calendar_date(text: str) -> dt.date:
    """A date as written (birth dates: no time-zone conversion)."""
    stamp = parse_stamp(text)
    if not stamp.has_day:
        raise BadValue("needs at least a full date (YYYYMMDD)")
    return stamp.wall.date()


_MBI_LETTER = "AC-HJKMNP-RT-Y"
_MBI = re.compile(
    rf"[1-9][{_MBI_LETTER}][{_MBI_LETTER}0-9][0-9][{_MBI_LETTER}][{_MBI_LETTER}0-9][0-9][{_MBI_LETTER}]{{2}}[0-9]{{2}}"
)


def mbi(text: str) -> str:
    """A Medicare Beneficiary Identifier, upper-case without dashes."""
    value = text.replace("-", "").replace(" ", "").upper()
    if not _MBI.fullmatch(value):
        raise BadValue("not a Medicare Beneficiary Identifier (11 characters, CMS format)")
    return value


def npi(text: str) -> str:
    value = text.strip()
    if not is_valid_npi(value):
        raise BadValue("not a 10-digit NPI with a valid check digit")
    return value


_ICD10 = re.compile(r"[A-Z][0-9][0-9A-Z](?:[0-9A-Z]{1,4})?")


def diagnosis_code(code: str, system: str) -> str:
    """ICD-10 codes in dot form (E119 → E11.9); other systems as written, upper-cased."""
    value = code.strip().upper()
    if system != "I10":
        return value
    bare = value.replace(".", "")
    if not _ICD10.fullmatch(bare):
        raise BadValue("not an ICD-10 code")
    return bare if len(bare) <= 3 else f"{bare[:3]}.{bare[3:]}"


def whole_minutes(text: str) -> int:
    value = text.strip()
    try:
        number = float(value) if re.fullmatch(r"\d{1,4}(\.0*)?", value) else None
    except ValueError:
        number = None
    if number is None or number != int(number) or not 0 < number <= 1440:
        raise BadValue("must be a whole number of minutes from 1 to 1440")
    return int(number)
