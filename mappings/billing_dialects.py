"""Billing system dialects as data (mappings/billing/NAME.toml): how charges are written."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from ..errors import InputError
from ..hl7.outbound import BillingDialect

FIELDS = {
    "name": str,
    "version": str,
    "cpt_in_ft1_7": bool,
    "cpt_in_ft1_25": bool,
    "date_of_service": str,
    "diagnosis_system": str,
    "code_system": str,
}
CHOICES = {"version": ("2.3", "2.3.1", "2.4", "2.5", "2.5.1"), "date_of_service": ("DR", "TS")}


def _text(name: str, folder: Path | None) -> tuple[str, str]:
    if folder is not None and (folder / "billing" / f"{name}.toml").is_file():
        path = folder / "billing" / f"{name}.toml"
        return path.read_text(encoding="utf-8"), str(path)
    shipped = resources.files("ccm_connector.mappings").joinpath("billing", f"{name}.toml")
    if not shipped.is_file():
        raise InputError(f"[billing] profile: no billing dialect named {name!r}")
    return shipped.read_text(encoding="utf-8"), f"mappings/billing/{name}.toml"


def billing_dialect(name: str, folder: Path | None = None) -> BillingDialect:
    """Load and check a billing dialect; errors name the file, the key and the reason."""
    text, where = _text(name, folder)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{where}: not valid TOML: {e}") from None
    for key, value in data.items():
        if key not in FIELDS:
            raise InputError(f"{where}: {key}: unknown key (known: {', '.join(FIELDS)})")
        if not isinstance(value, FIELDS[key]):
            raise InputError(f"{where}: {key}: must be {FIELDS[key].__name__}, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise InputError(f"{where}: {key}: must be one of {', '.join(CHOICES[key])}, got {value!r}")
    if "name" not in data:
        raise InputError(f"{where}: name: required")
    if not (data.get("cpt_in_ft1_7", True) or data.get("cpt_in_ft1_25", True)):
        raise InputError(f"{where}: cpt_in_ft1_7: the code must go in FT1-7 or FT1-25")
    return BillingDialect(**data)
