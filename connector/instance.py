"""A connector instance folder: `init DIR` and `init DIR --local`.

`init DIR` writes the documented configuration, a roster template, fresh secrets and the data
folders, to be filled in for a real install. `--local` makes a self-contained instance that
needs no outside service: a local drop folder in place of SFTP, a GnuPG home with a practice
key, and a simulated offshore partner (its own GnuPG home and key) pinned on both sides, with
its `ccm-offshore` configuration in DIR/partner/offshore.toml (same drop, work folder
DIR/partner/work), so `queue export`, `ccm-offshore pull/push` and `returns pull` work as made.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import InputError, OperationalError
from .sftp import keyring
from .store import make_private_dir

CONFIG_NAME = "connector.toml"
OFFSHORE_CONFIG_NAME = "offshore.toml"


@dataclass(frozen=True)
class Instance:
    folder: Path
    config: Path
    practice_fingerprint: str | None = None
    partner_fingerprint: str | None = None


def template(name: str) -> str:
    return resources.files("ccm_connector.skel").joinpath(name).read_text(encoding="utf-8")


def with_values(toml_text: str, values: dict[tuple[str, str], str]) -> str:
    """Set `key = value` lines in a commented TOML text, keeping comments; values are TOML literals."""
    section = None
    out = []
    pending = dict(values)
    for line in toml_text.splitlines(keepends=True):
        header = re.match(r"\s*\[([A-Za-z_]+)\]\s*$", line)
        if header:
            section = header.group(1)
        m = re.match(r"(\s*)([A-Za-z0-9_]+)(\s*=\s*)(\"[^\"]*\"|\[[^\]]*\]|[^#\s]+)(.*)", line, re.S)
        if m and (section, m.group(2)) in pending:
            line = m.group(1) + m.group(2) + m.group(3) + pending.pop((section, m.group(2))) + m.group(5)
        out.append(line)
    if pending:
        raise KeyError(f"keys not in template: {sorted(pending)}")
    return "".join(out)


def write_secret(path: Path, data: bytes) -> None:
    """Create a secret file 0600 from the start (no chmod race, CVE-2022-24302)."""
    make_private_dir(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_private_text(path: Path, text: str) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _fresh_folder(folder: Path) -> None:
    if (folder / CONFIG_NAME).exists():
        raise InputError(f"{folder / CONFIG_NAME}: already exists; init never overwrites an instance")
    folder.mkdir(parents=True, exist_ok=True)


def _common_files(folder: Path) -> None:
    for name in ("data", "data/inbox", "secrets", "billing"):
        make_private_dir(folder / name)
    write_secret(folder / "secrets/pseudonym.key", secrets.token_hex(32).encode() + b"\n")
    write_secret(folder / "secrets/audit.key", secrets.token_hex(32).encode() + b"\n")
    roster = folder / "roster.csv"
    if not roster.exists():
        roster.write_text(template("roster.example.csv"), encoding="utf-8")


def init_instance(folder: Path) -> Instance:
    """A documented configuration to be completed by practice IT (doctor says what is missing)."""
    _fresh_folder(folder)
    _common_files(folder)
    keyring.prepare_home(folder / "gnupg")
    config = folder / CONFIG_NAME
    write_private_text(config, template("connector.example.toml"))
    return Instance(folder, config)


def init_local_instance(folder: Path, today: dt.date | None = None) -> Instance:
    """A self-contained instance with a simulated offshore partner; works with no outside service."""
    _fresh_folder(folder)
    _common_files(folder)
    today = today or dt.date.today()
    practice_home, partner_home = folder / "gnupg", folder / "partner" / "gnupg"
    try:
        keyring.prepare_home(practice_home)
        keyring.prepare_home(partner_home)
        practice_fpr = keyring.generate_key(practice_home, "CCM Connector (local practice)", "practice@ccm-connector.invalid")
        partner_fpr = keyring.generate_key(partner_home, "Simulated offshore partner", "partner@ccm-connector.invalid")
        keyring.import_pinned(practice_home, keyring.export_public(partner_home, partner_fpr), partner_fpr)
        keyring.import_pinned(partner_home, keyring.export_public(practice_home, practice_fpr), practice_fpr)
    except keyring.KeyringError as e:
        raise OperationalError(f"init --local: {e}") from None
    finally:
        keyring.stop_agent(practice_home)
        keyring.stop_agent(partner_home)
    for name in ("drop/queues", "drop/returns", "drop/processed"):
        make_private_dir(folder / name)
    values = {
        ("practice", "id"): '"LOCALDEMO"',
        ("practice", "name"): '"Local demonstration practice"',
        ("practice", "billing_npis"): '["1234567893"]',
        ("pgp", "practice_fingerprint"): f'"{practice_fpr}"',
        ("pgp", "partner_fingerprints"): f'["{partner_fpr}"]',
        ("partner", "name"): '"Simulated offshore partner"',
        ("partner", "baa_effective"): f'"{today.isoformat()}"',
        ("partner", "baa_end"): f'"{today.replace(year=today.year + 1, day=min(today.day, 28)).isoformat()}"',
        ("drop", "kind"): '"local"',
        ("drop", "local_path"): '"drop"',
        ("drop", "stable_seconds"): "0",
        ("intake", "stable_seconds"): "0",
    }
    config = folder / CONFIG_NAME
    write_private_text(config, with_values(template("connector.example.toml"), values))
    _simulated_partner_config(folder, practice_fpr, partner_fpr)
    return Instance(folder, config, practice_fpr, partner_fpr)


def _simulated_partner_config(folder: Path, practice_fpr: str, partner_fpr: str) -> None:
    """DIR/partner/offshore.toml: the simulated team's `ccm-offshore` setup over the same local drop."""
    make_private_dir(folder / "partner" / "work")
    values = {
        ("team", "name"): '"Simulated offshore partner"',
        ("team", "practice_id"): '"LOCALDEMO"',
        ("team", "work_dir"): '"work"',
        ("pgp", "team_fingerprint"): f'"{partner_fpr}"',
        ("pgp", "practice_fingerprints"): f'["{practice_fpr}"]',
        ("drop", "kind"): '"local"',
        ("drop", "local_path"): '"../drop"',
        ("drop", "stable_seconds"): "0",
    }
    write_private_text(folder / "partner" / OFFSHORE_CONFIG_NAME, with_values(template("offshore.example.toml"), values))
