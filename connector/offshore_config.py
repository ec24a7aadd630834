"""The offshore team's configuration (offshore.toml), validated like connector.toml.

It reuses the connector's checks and section dataclasses: [drop] and [sftp] are the very same
sections (same keys, same rules); [team] and [pgp] are the team's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import (
    Drop,
    Sftp,
    all_sections,
    file_path,
    identifier,
    list_of,
    nonempty,
    optional,
    pgp_fingerprint,
    private_dir,
    read_toml,
    secret_file,
    setting,
)
from .errors import InputError

CONFIG_ENV = "CCM_OFFSHORE_CONFIG"
DEFAULT_CONFIG = "offshore.toml"


@dataclass(frozen=True)
class Team:
    name: str = setting(check=nonempty, required=True)
    practice_id: str = setting(check=identifier, required=True)
    work_dir: Path = setting(check=file_path, required=True)


@dataclass(frozen=True)
class TeamPgp:
    gnupg_home: Path = setting(check=private_dir, required=True)
    gpg_binary: str = setting("gpg", check=nonempty)
    team_fingerprint: str = setting(check=pgp_fingerprint, required=True)
    passphrase_file: Path | None = setting(None, check=optional(secret_file))
    practice_fingerprints: tuple = setting(check=list_of(pgp_fingerprint, minimum=1), required=True)


SECTIONS: dict[str, type] = {"team": Team, "pgp": TeamPgp, "drop": Drop, "sftp": Sftp}
REQUIRED = ("team", "pgp", "drop")


@dataclass(frozen=True)
class OffshoreConfig:
    source: Path
    team: Team
    pgp: TeamPgp
    drop: Drop
    sftp: Sftp


def offshore_config_path(given: str | None) -> Path:
    """--config, else $CCM_OFFSHORE_CONFIG, else ./offshore.toml."""
    return Path(given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_offshore_config(file: Path) -> OffshoreConfig:
    raw = read_toml(file, " (the offshore configuration; `ccm-connector init DIR --local` writes one)")
    problems: list[str] = []
    sections = all_sections(raw, file, SECTIONS, REQUIRED, problems)
    if not problems:
        drop, sftp = sections["drop"], sections["sftp"]
        if drop.kind == "local" and drop.local_path is None:
            problems.append('[drop] local_path: required when kind = "local"')
        if drop.after_pickup == "move" and drop.processed_dir is None:
            problems.append('[drop] processed_dir: required when after_pickup = "move"')
        if drop.kind == "sftp":
            for key in ("host", "username", "private_key", "host_key_type", "host_key_fingerprint"):
                if getattr(sftp, key) is None:
                    problems.append(f'[sftp] {key}: required when kind = "sftp"')
    if problems:
        raise InputError(f"{file}: invalid configuration\n  " + "\n  ".join(problems))
    return OffshoreConfig(source=file.resolve(), **sections)
