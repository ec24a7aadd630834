"""The connector's configuration: one TOML file, validated up front.

Each section is a frozen dataclass whose fields carry their check as metadata, so the schema,
the defaults and the typed result are the same thing. Every problem is reported as
``[section] key: what is wrong`` and loading raises one InputError listing all of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InputError

CONFIG_ENV = "CCM_CONNECTOR_CONFIG"
DEFAULT_CONFIG = "connector.toml"


class Invalid(ValueError):
    """A value failed its check; the message completes ``[section] key: ...``."""


@dataclass(frozen=True)
class Context:
    """What checks need besides the value: where relative paths start."""

    base: Path


Check = Callable[[Any, Context], Any]


def setting(default: Any = None, check: Check | None = None, required: bool = False) -> Any:
    """A config key: its default, the check that converts and validates it, whether it must be set."""
    return field(default=default, metadata={"check": check, "required": required})


def _shown(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


# --- checks: each returns the converted value or raises Invalid ---------------------------------


def text(value: Any, ctx: Context) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {_shown(value)}")
    return value


def nonempty(value: Any, ctx: Context) -> str:
    value = text(value, ctx)
    if not value.strip():
        raise Invalid("must not be empty")
    return value


def identifier(value: Any, ctx: Context) -> str:
    value = text(value, ctx)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", value):
        raise Invalid(f"must be 1-40 letters, digits, '.', '_' or '-', got {_shown(value)}")
    return value


def boolean(value: Any, ctx: Context) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {_shown(value)}")
    return value


def integer_between(low: int, high: int) -> Check:
    def check(value: Any, ctx: Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Invalid(f"must be {low}-{high}, got {_shown(value)}")
        return value

    return check


port_number = integer_between(1, 65535)


def one_of(*choices: str) -> Check:
    def check(value: Any, ctx: Context) -> str:
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, got {_shown(value)}")
        return value

    return check


def zone_name(value: Any, ctx: Context) -> str:
    value = nonempty(value, ctx)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"unknown time zone {_shown(value)} (use an IANA name such as America/Chicago)") from None
    return value


def host_name(value: Any, ctx: Context) -> str:
    value = nonempty(value, ctx)
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*", value):
        raise Invalid(f"must be a host name or IP address, got {_shown(value)}")
    return value


def optional(check: Check) -> Check:
    """Empty string means 'not set'."""

    def wrapped(value: Any, ctx: Context) -> Any:
        if value == "" or value is None:
            return None
        return check(value, ctx)

    return wrapped


def iso_date(value: Any, ctx: Context) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise Invalid(f"must be a date YYYY-MM-DD, got {_shown(value)}")


def file_path(value: Any, ctx: Context) -> Path:
    value = nonempty(value, ctx)
    p = Path(value).expanduser()
    return p if p.is_absolute() else (ctx.base / p)


def secret_file(value: Any, ctx: Context) -> Path:
    """A file holding a secret: it must exist and be readable by its owner only."""
    p = file_path(value, ctx)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise Invalid(f"secret file {p} does not exist") from None
    if not stat.S_ISREG(mode):
        raise Invalid(f"secret file {p} is not a regular file")
    if mode & 0o077:
        raise Invalid(
            f"secret file {p} is readable by group or others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    return p


def private_dir(value: Any, ctx: Context) -> Path:
    """A folder holding secrets (a GnuPG home): owner-only if it exists."""
    p = file_path(value, ctx)
    if p.exists():
        mode = p.stat().st_mode
        if not stat.S_ISDIR(mode):
            raise Invalid(f"{p} is not a folder")
        if mode & 0o077:
            raise Invalid(f"folder {p} is open to group or others (mode {stat.S_IMODE(mode):04o}); chmod 700 it")
    return p


def pgp_fingerprint(value: Any, ctx: Context) -> str:
    value = text(value, ctx).replace(" ", "").upper()
    if not re.fullmatch(r"[0-9A-F]{40}", value):
        raise Invalid(f"must be a full 40-hex-digit OpenPGP fingerprint, got {_shown(value)}")
    return value


def list_of(check: Check, minimum: int = 0) -> Check:
    def wrapped(value: Any, ctx: Context) -> tuple:
        if not isinstance(value, list):
            raise Invalid(f"must be a list, got {_shown(value)}")
        if len(value) < minimum:
            raise Invalid(f"must hold at least {minimum} item(s)")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(check(item, ctx))
            except Invalid as e:
                raise Invalid(f"item {i + 1}: {e}") from None
        return tuple(out)

    return wrapped


def npi_number(value: Any, ctx: Context) -> str:
    value = text(value, ctx)
    if not is_valid_npi(value):
        raise Invalid(f"must be a 10-digit NPI with a valid check digit, got {_shown(value)}")
    return value


def is_valid_npi(value: str) -> bool:
    """NPI check digit: Luhn over '80840' + the first nine digits."""
    if not re.fullmatch(r"\d{10}", value):
        return False
    digits = [int(c) for c in "80840" + value[:9]]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return (10 - total % 10) % 10 == int(value[9])


def ssh_fingerprint(value: Any, ctx: Context) -> str:
    value = nonempty(value, ctx)
    if not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", value):
        raise Invalid(f"must be an OpenSSH SHA256 fingerprint (SHA256:...), got {_shown(value)}")
    return value.rstrip("=")


def cron_time(value: Any, ctx: Context) -> str:
    value = nonempty(value, ctx)
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise Invalid(f"must be a local time HH:MM, got {_shown(value)}")
    return value


# --- sections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Practice:
    id: str = setting(check=identifier, required=True)
    name: str = setting(check=nonempty, required=True)
    time_zone: str = setting(check=zone_name, required=True)
    billing_npis: tuple = setting((), check=list_of(npi_number))


@dataclass(frozen=True)
class Store:
    path: Path = setting(check=file_path, required=True)
    data_dir: Path = setting(check=file_path, required=True)


@dataclass(frozen=True)
class Logging:
    level: str = setting("info", check=one_of("debug", "info", "warning", "error"))
    file: Path | None = setting(None, check=optional(file_path))


@dataclass(frozen=True)
class Mllp:
    host: str = setting("127.0.0.1", check=host_name)
    port: int = setting(2575, check=port_number)
    max_frame_bytes: int = setting(1_048_576, check=integer_between(1024, 64 * 1_048_576))
    idle_timeout_seconds: int = setting(300, check=integer_between(1, 86_400))
    max_connections: int = setting(10, check=integer_between(1, 1000))
    tls_certificate: Path | None = setting(None, check=optional(file_path))
    tls_private_key: Path | None = setting(None, check=optional(secret_file))
    application: str = setting("CCMCONNECTOR", check=nonempty)


@dataclass(frozen=True)
class Intake:
    inbox: Path = setting(check=file_path, required=True)
    stable_seconds: int = setting(5, check=integer_between(0, 3600))
    profile: str = setting("generic-2.5.1", check=nonempty)
    profile_dir: Path | None = setting(None, check=optional(file_path))


@dataclass(frozen=True)
class Roster:
    file: Path = setting(check=file_path, required=True)


@dataclass(frozen=True)
class Identity:
    pseudonym_key_file: Path = setting(check=secret_file, required=True)
    send_identifiers: bool = setting(False, check=boolean)


@dataclass(frozen=True)
class Pgp:
    gnupg_home: Path = setting(check=private_dir, required=True)
    gpg_binary: str = setting("gpg", check=nonempty)
    practice_fingerprint: str = setting(check=pgp_fingerprint, required=True)
    passphrase_file: Path | None = setting(None, check=optional(secret_file))
    partner_fingerprints: tuple = setting(check=list_of(pgp_fingerprint, minimum=1), required=True)
    expiry_warning_days: int = setting(30, check=integer_between(0, 365))


@dataclass(frozen=True)
class Partner:
    name: str = setting(check=nonempty, required=True)
    baa_effective: dt.date | None = setting(None, check=optional(iso_date))
    baa_end: dt.date | None = setting(None, check=optional(iso_date))


@dataclass(frozen=True)
class Drop:
    kind: str = setting("sftp", check=one_of("sftp", "local"))
    local_path: Path | None = setting(None, check=optional(file_path))
    queue_dir: str = setting("queues", check=nonempty)
    returns_dir: str = setting("returns", check=nonempty)
    processed_dir: str | None = setting("processed", check=optional(nonempty))
    after_pickup: str = setting("move", check=one_of("move", "delete"))
    stable_seconds: int = setting(10, check=integer_between(0, 3600))


@dataclass(frozen=True)
class Sftp:
    host: str | None = setting(None, check=optional(host_name))
    port: int = setting(22, check=port_number)
    username: str | None = setting(None, check=optional(nonempty))
    private_key: Path | None = setting(None, check=optional(secret_file))
    private_key_passphrase_file: Path | None = setting(None, check=optional(secret_file))
    host_key_type: str | None = setting(
        None,
        check=optional(one_of("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")),
    )
    host_key_fingerprint: str | None = setting(None, check=optional(ssh_fingerprint))
    timeout_seconds: int = setting(30, check=integer_between(1, 600))
    retries: int = setting(3, check=integer_between(0, 10))
    confirm_upload: bool = setting(True, check=boolean)


@dataclass(frozen=True)
class BillingSftp(Sftp):
    """The billing system's (or clearinghouse's) SFTP server, when [billing] delivery = "sftp"."""

    folder: str = setting("charges", check=nonempty)


@dataclass(frozen=True)
class Billing:
    output_dir: Path = setting(check=file_path, required=True)
    delivery: str = setting("folder", check=one_of("folder", "sftp", "mllp"))
    profile: str = setting("generic-2.5.1", check=nonempty)
    mllp_host: str | None = setting(None, check=optional(host_name))
    mllp_port: int = setting(2576, check=port_number)
    practitioner_time: str = setting("maximize", check=one_of("pool", "physician_codes", "maximize"))
    date_of_service: str = setting("month_end", check=one_of("month_end", "threshold_met"))
    setting_kind: str = setting("physician", check=one_of("physician", "fqhc", "rhc"))
    receiving_application: str = setting("BILLING", check=nonempty)
    receiving_facility: str = setting("PRACTICE", check=nonempty)
    ack_timeout_seconds: int = setting(30, check=integer_between(1, 600))
    retries: int = setting(3, check=integer_between(0, 10))


@dataclass(frozen=True)
class Signoff:
    delivery: str = setting("folder", check=one_of("folder", "mllp"))
    folder: Path | None = setting(None, check=optional(file_path))
    ehr_mllp_host: str | None = setting(None, check=optional(host_name))
    ehr_mllp_port: int = setting(2577, check=port_number)
    ehr_application: str = setting("EHR", check=nonempty)
    ehr_facility: str = setting("PRACTICE", check=nonempty)


@dataclass(frozen=True)
class Schedule:
    inbox_every_minutes: int = setting(5, check=integer_between(1, 1440))
    queue_export_at: str = setting("18:00", check=cron_time)
    returns_pull_every_minutes: int = setting(30, check=integer_between(1, 1440))
    reconcile_at: str = setting("06:00", check=cron_time)
    dispatch_every_minutes: int = setting(15, check=integer_between(1, 1440))
    close_month_day: int = setting(5, check=integer_between(1, 28))
    close_month_at: str = setting("07:00", check=cron_time)
    key_check_at: str = setting("05:00", check=cron_time)
    retention_at: str = setting("03:30", check=cron_time)
    misfire_grace_minutes: int = setting(120, check=integer_between(1, 1440))
    run_at_start: bool = setting(False, check=boolean)


@dataclass(frozen=True)
class Retention:
    raw_hl7_days: int = setting(400, check=integer_between(1, 36_500))
    working_files_days: int = setting(7, check=integer_between(0, 3650))
    queue_copies_days: int = setting(90, check=integer_between(1, 36_500))


@dataclass(frozen=True)
class Audit:
    key_file: Path = setting(check=secret_file, required=True)


SECTIONS: dict[str, type] = {
    "practice": Practice,
    "store": Store,
    "logging": Logging,
    "mllp": Mllp,
    "intake": Intake,
    "roster": Roster,
    "identity": Identity,
    "pgp": Pgp,
    "partner": Partner,
    "drop": Drop,
    "sftp": Sftp,
    "billing": Billing,
    "billing_sftp": BillingSftp,
    "signoff": Signoff,
    "schedule": Schedule,
    "retention": Retention,
    "audit": Audit,
}
REQUIRED_SECTIONS = ("practice", "store", "intake", "roster", "identity", "pgp", "partner", "billing", "audit")


@dataclass(frozen=True)
class Config:
    source: Path
    practice: Practice
    store: Store
    logging: Logging
    mllp: Mllp
    intake: Intake
    roster: Roster
    identity: Identity
    pgp: Pgp
    partner: Partner
    drop: Drop
    sftp: Sftp
    billing: Billing
    billing_sftp: BillingSftp
    signoff: Signoff
    schedule: Schedule
    retention: Retention
    audit: Audit

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.practice.time_zone)


def config_path(given: str | None) -> Path:
    """--config, else $CCM_CONNECTOR_CONFIG, else ./connector.toml."""
    return Path(given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def read_toml(file: Path, missing_hint: str = "") -> dict:
    """A configuration file's TOML; InputError naming the file when it is absent or unreadable."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{file}: configuration file not found{missing_hint}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{file}: not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{file}: cannot read configuration: {e}") from None


def load_config(file: Path) -> Config:
    """Read and validate the whole file; raise InputError listing every problem."""
    return config_from_dict(read_toml(file, " (run `ccm-connector init DIR` to make one)"), file)


def all_sections(raw: dict, file: Path, known: dict[str, type], required: tuple[str, ...], problems: list[str]) -> dict[str, Any]:
    """Every known section checked and converted; unknown or missing sections added to problems."""
    ctx = Context(base=file.resolve().parent)
    for name, value in raw.items():
        if name not in known:
            problems.append(f"[{name}]: unknown section (known: {', '.join(known)})")
        elif not isinstance(value, dict):
            problems.append(f"[{name}]: must be a table")
    for name in required:
        if name not in raw:
            problems.append(f"[{name}]: section is missing")
    return {
        name: section_values(name, cls, raw.get(name) if isinstance(raw.get(name), dict) else {}, ctx, problems)
        for name, cls in known.items()
    }


def config_from_dict(raw: dict, file: Path) -> Config:
    problems: list[str] = []
    sections = all_sections(raw, file, SECTIONS, REQUIRED_SECTIONS, problems)
    if not problems:
        problems.extend(_cross_checks(sections))
    if problems:
        raise InputError(f"{file}: invalid configuration\n  " + "\n  ".join(problems))
    return Config(source=file.resolve(), **sections)


def section_values(name: str, cls: type, values: dict, ctx: Context, problems: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            problems.append(f"[{name}] {key}: unknown key (known: {', '.join(fields)})")
    converted: dict[str, Any] = {}
    for key, f in fields.items():
        if key not in values:
            if f.metadata["required"]:
                problems.append(f"[{name}] {key}: required")
            converted[key] = f.default
            continue
        try:
            converted[key] = f.metadata["check"](values[key], ctx)
        except Invalid as e:
            problems.append(f"[{name}] {key}: {e}")
            converted[key] = f.default
    return cls(**converted)


def _cross_checks(s: dict[str, Any]) -> list[str]:
    problems = []
    drop, sftp = s["drop"], s["sftp"]
    if drop.kind == "local" and drop.local_path is None:
        problems.append('[drop] local_path: required when kind = "local"')
    if drop.after_pickup == "move" and drop.processed_dir is None:
        problems.append('[drop] processed_dir: required when after_pickup = "move"')
    needs = [("sftp", sftp, "the drop uses SFTP")] if drop.kind == "sftp" else []
    if s["billing"].delivery == "sftp":
        needs.append(("billing_sftp", s["billing_sftp"], 'billing delivery = "sftp"'))
    for section, values, why in needs:
        for key in ("host", "username", "private_key", "host_key_type", "host_key_fingerprint"):
            if getattr(values, key) is None:
                problems.append(f"[{section}] {key}: required when {why}")
    if s["billing"].delivery == "mllp" and s["billing"].mllp_host is None:
        problems.append('[billing] mllp_host: required when delivery = "mllp"')
    if s["signoff"].delivery == "mllp" and s["signoff"].ehr_mllp_host is None:
        problems.append('[signoff] ehr_mllp_host: required when delivery = "mllp"')
    partner = s["partner"]
    if partner.baa_effective and partner.baa_end and partner.baa_end < partner.baa_effective:
        problems.append("[partner] baa_end: is before baa_effective")
    mllp = s["mllp"]
    if (mllp.tls_certificate is None) != (mllp.tls_private_key is None):
        problems.append("[mllp] tls_certificate: TLS needs both tls_certificate and tls_private_key")
    return problems
