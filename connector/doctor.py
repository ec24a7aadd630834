"""`doctor`: a checklist of everything the connector needs, each item ok, warn or fail."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from . import audit, exchange
from .config import Config, Drop
from .errors import InputError, OperationalError
from .roster import load_roster
from .sftp import keyring, transport
from .store import migrations, open_store, schema_version


@dataclass(frozen=True)
class Item:
    status: str  # ok | warn | fail
    what: str
    detail: str = ""


def check_store(cfg: Config) -> list[Item]:
    try:
        conn = open_store(cfg.store.path)
    except OperationalError as e:
        return [Item("fail", "store", str(e))]
    try:
        version = schema_version(conn)
        conn.execute("SELECT count(*) FROM audit_event").fetchone()
    except sqlite3.Error as e:
        return [Item("fail", "store", f"{cfg.store.path}: {e}")]
    finally:
        conn.close()
    newest = migrations()[-1].version
    return [Item("ok", "store", f"{cfg.store.path} at schema version {version} of {newest}")]


def check_gpg(cfg: Config) -> list[Item]:
    binary = shutil.which(cfg.pgp.gpg_binary)
    if binary is None:
        return [Item("fail", "gpg binary", f"{cfg.pgp.gpg_binary!r} not found; apt-get install gnupg")]
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    items = [Item("ok", "gpg binary", version[0] if version else binary)]
    home = cfg.pgp.gnupg_home
    if not home.is_dir():
        return items + [Item("fail", "GnuPG home", f"{home} does not exist")]
    try:
        items.append(_key_item(cfg, "practice key", cfg.pgp.practice_fingerprint, need_secret=True))
        items.extend(_key_item(cfg, "partner key", fpr, need_secret=False) for fpr in cfg.pgp.partner_fingerprints)
    except keyring.KeyringError as e:
        items.append(Item("fail", "GnuPG home", str(e)))
    finally:
        keyring.stop_agent(home)
    return items


def _key_item(cfg: Config, what: str, fpr: str, need_secret: bool) -> Item:
    facts = keyring.key_facts(cfg.pgp.gnupg_home, fpr, cfg.pgp.gpg_binary)
    label = f"{what} {fpr}"
    if facts is None:
        return Item("fail", label, f"not in {cfg.pgp.gnupg_home}")
    if need_secret and not facts.secret:
        return Item("fail", label, "secret key missing: cannot sign or decrypt")
    if facts.revoked:
        return Item("fail", label, "revoked")
    if facts.expired:
        return Item("fail", label, f"expired on {facts.expires}")
    ends = facts.usable_until or facts.expires
    if ends is not None:
        days = (ends - dt.datetime.now(dt.UTC).date()).days
        if days <= 0:
            return Item("fail", label, f"unusable: it or its encryption subkey expired on {ends}")
        if days <= cfg.pgp.expiry_warning_days:
            return Item("warn", label, f"expires in {days} days ({ends}); renew and re-pin")
        return Item("ok", label, f"valid until {ends}")
    return Item("ok", label, "valid, no expiry")


def check_partner(cfg: Config) -> list[Item]:
    p = cfg.partner
    today = dt.datetime.now(cfg.zone).date()
    if p.baa_effective is None:
        return [Item("fail", "partner BAA", "[partner] baa_effective is not set: no work queue may leave")]
    if p.baa_effective > today:
        return [Item("fail", "partner BAA", f"takes effect {p.baa_effective}: no work queue may leave before then")]
    if p.baa_end is not None and p.baa_end < today:
        return [Item("fail", "partner BAA", f"ended {p.baa_end}: no work queue may leave")]
    return [Item("ok", "partner BAA", f"effective {p.baa_effective}" + (f" until {p.baa_end}" if p.baa_end else ""))]


def check_roster(cfg: Config) -> list[Item]:
    try:
        staff = load_roster(cfg.roster.file)
    except InputError as e:
        return [Item("fail", "staff roster", str(e))]
    return [Item("ok", "staff roster", f"{len(staff)} staff")]


def check_secrets(cfg: Config) -> list[Item]:
    try:
        audit.read_key(cfg.audit.key_file)
    except (OSError, ValueError) as e:
        return [Item("fail", "audit key", str(e))]
    return [Item("ok", "audit key", str(cfg.audit.key_file))]


def _drop_folders(cfg: Config) -> list[str]:
    folders = [cfg.drop.queue_dir, cfg.drop.returns_dir]
    if cfg.drop.after_pickup == "move" and cfg.drop.processed_dir:
        folders.append(cfg.drop.processed_dir)
    return folders


def check_drop(cfg: Config) -> list[Item]:
    if cfg.drop.kind == "local":
        root = cfg.drop.local_path
        missing = [d for d in _drop_folders(cfg) if not (root / d).is_dir()]
        if missing:
            return [Item("fail", "local drop", f"{root}: missing folder(s) {', '.join(missing)}")]
        return [Item("ok", "local drop", str(root))]
    where = f"{cfg.sftp.host}:{cfg.sftp.port}"
    try:
        drop = exchange.drop_for(cfg.drop, cfg.sftp)
        with drop:
            missing = [d for d in _drop_folders(cfg) if not drop.exists(d)]
            negotiated = getattr(drop, "negotiated", {})
    except transport.HostKeyRefused as e:
        return [Item("fail", "SFTP host key", str(e))]
    except (transport.TransportError, InputError) as e:
        return [Item("fail", "SFTP drop", f"{where}: {e}")]
    items = [Item("ok", "SFTP host key", f"{where} presents the pinned {cfg.sftp.host_key_type} {cfg.sftp.host_key_fingerprint}")]
    if missing:
        items.append(Item("fail", "SFTP drop", f"{where}: missing folder(s) {', '.join(missing)}"))
    else:
        algorithms = ", ".join(f"{k} {v}" for k, v in negotiated.items())
        items.append(Item("ok", "SFTP drop", f"{where} login and folders ok" + (f" ({algorithms})" if algorithms else "")))
    return items


def check_profiles(cfg: Config) -> list[Item]:
    """The EHR dialect and the billing dialect named in the configuration load and check."""
    from .mappings.billing_dialects import billing_dialect
    from .mappings.profile import load_profile

    items = []
    for what, load, name in (
        ("EHR profile", lambda n: load_profile(n, cfg.intake.profile_dir), cfg.intake.profile),
        ("billing dialect", lambda n: billing_dialect(n, cfg.intake.profile_dir), cfg.billing.profile),
    ):
        try:
            load(name)
        except InputError as e:
            items.append(Item("fail", what, str(e)))
        else:
            items.append(Item("ok", what, name))
    return items


def check_billing_sftp(cfg: Config) -> list[Item]:
    """When charges go to the billing system's SFTP server: pinned host key, login, folder."""
    if cfg.billing.delivery != "sftp":
        return []
    b = cfg.billing_sftp
    where = f"{b.host}:{b.port}"
    try:
        with exchange.drop_for(Drop(kind="sftp"), b) as drop:
            present = drop.exists(b.folder)
    except transport.HostKeyRefused as e:
        return [Item("fail", "billing SFTP host key", str(e))]
    except (transport.TransportError, InputError) as e:
        return [Item("fail", "billing SFTP", f"{where}: {e}")]
    if not present:
        return [Item("fail", "billing SFTP", f"{where}: folder {b.folder} is missing")]
    return [Item("ok", "billing SFTP", f"{where} host key pinned, login and folder {b.folder} ok")]


CHECKS: tuple[Callable[[Config], list[Item]], ...] = (
    check_store,
    check_secrets,
    check_roster,
    check_profiles,
    check_gpg,
    check_partner,
    check_drop,
    check_billing_sftp,
)


def run_checks(cfg: Config) -> list[Item]:
    items = [Item("ok", "configuration", str(cfg.source))]
    for check in CHECKS:
        items.extend(check(cfg))
    return items


def render(items: list[Item]) -> str:
    marks = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}
    lines = [f"{marks[i.status]} {i.what}" + (f": {i.detail}" if i.detail else "") for i in items]
    failed = sum(i.status == "fail" for i in items)
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)
