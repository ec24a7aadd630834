"""The practice's staff roster: who may perform billable time, and who only documents it.

A CSV file kept by the practice (template in config/roster.example.csv). Staff are not
patients: names here are not PHI, but logs still carry staff ids only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .config import is_valid_npi
from .errors import InputError

ROLES = ("clinical", "practitioner", "non_clinical")
COLUMNS = ("staff_id", "name", "credential", "role", "location", "supervisor_npi", "npi", "excluded", "offshore_account")


@dataclass(frozen=True)
class Staff:
    staff_id: str
    name: str
    credential: str
    role: str  # clinical | practitioner | non_clinical
    location: str  # ISO 3166 alpha-2 country or US territory code
    supervisor_npi: str | None
    npi: str | None
    excluded: bool  # OIG exclusion list or revoked enrollment
    offshore_account: bool  # a documentation account of the offshore team


def _flag(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "yes", "1"):
        return True
    if v in ("false", "no", "0", ""):
        return False
    raise InputError(f"{where}: must be true or false, got {value!r}")


def staff_from_row(row: dict[str, str], where: str) -> Staff:
    staff_id = (row.get("staff_id") or "").strip()
    if not staff_id:
        raise InputError(f"{where} staff_id: required")
    role = (row.get("role") or "").strip()
    if role not in ROLES:
        raise InputError(f"{where} role: must be one of {', '.join(ROLES)}, got {role!r}")
    location = (row.get("location") or "").strip().upper()
    if len(location) != 2 or not location.isalpha():
        raise InputError(f"{where} location: must be a two-letter country code, got {location!r}")
    npis = {}
    for key in ("supervisor_npi", "npi"):
        value = (row.get(key) or "").strip()
        if value and not is_valid_npi(value):
            raise InputError(f"{where} {key}: not a valid NPI: {value!r}")
        npis[key] = value or None
    if role == "practitioner" and not npis["npi"]:
        raise InputError(f"{where} npi: required for a practitioner")
    return Staff(
        staff_id=staff_id,
        name=(row.get("name") or "").strip(),
        credential=(row.get("credential") or "").strip(),
        role=role,
        location=location,
        supervisor_npi=npis["supervisor_npi"],
        npi=npis["npi"],
        excluded=_flag(row.get("excluded") or "", f"{where} excluded"),
        offshore_account=_flag(row.get("offshore_account") or "", f"{where} offshore_account"),
    )


def load_roster(path: Path) -> dict[str, Staff]:
    """Read the roster CSV; raise InputError naming the file, line and column of a problem."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("staff_id", "role", "location") if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
            staff: dict[str, Staff] = {}
            for row in reader:
                where = f"{path}:{reader.line_num}"
                member = staff_from_row(row, where)
                if member.staff_id in staff:
                    raise InputError(f"{where} staff_id: {member.staff_id!r} appears twice")
                staff[member.staff_id] = member
    except FileNotFoundError:
        raise InputError(f"{path}: roster file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read roster: {e}") from None
    return staff
