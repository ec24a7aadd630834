"""What the exchange stages share: the drop and key settings from configuration and the BAA
guard. Used by `queue_export`, `returns_pull`, `doctor` and `ccm-offshore`. (Job runs are
recorded by `jobs.run_job` around a scheduled stage, not by the stages.)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from .config import Drop, Partner, Sftp
from .errors import InputError
from .sftp import transport


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp(when: dt.datetime | None = None) -> str:
    return (when or now_utc()).astimezone(dt.UTC).isoformat(timespec="seconds")


def read_passphrase(path: Path | None, what: str) -> str | None:
    """A passphrase from its 0600 file (checked by config); one line, no control characters."""
    if path is None:
        return None
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{what}: cannot read {path}: {e}") from None
    if not value or any(ord(c) < 32 for c in value):
        raise InputError(f"{what}: {path} must hold one line without control characters")
    return value


def drop_for(drop: Drop, sftp: Sftp) -> transport.Drop:
    """The configured drop: a local folder or the partner's SFTP server (host key pinned)."""
    if drop.kind == "local":
        assert drop.local_path is not None  # config cross-check
        return transport.LocalDrop(drop.local_path)
    endpoint = transport.SftpEndpoint(
        host=sftp.host,
        port=sftp.port,
        username=sftp.username,
        private_key=sftp.private_key,
        private_key_passphrase=read_passphrase(
            sftp.private_key_passphrase_file, "[sftp] private_key_passphrase_file"
        ),
        host_key_type=sftp.host_key_type,
        host_key_fingerprint=sftp.host_key_fingerprint,
        timeout=sftp.timeout_seconds,
        retries=sftp.retries,
        confirm_upload=sftp.confirm_upload,
    )
    return transport.SftpDrop(endpoint)


def baa_problem(partner: Partner, today: dt.date) -> str | None:
    """Why no work queue may leave today, or None when the BAA is in force."""
    if partner.baa_effective is None:
        return "[partner] baa_effective is not set: no work queue may leave without a Business Associate Agreement"
    if partner.baa_effective > today:
        return f"[partner] baa_effective is {partner.baa_effective}, in the future: no work queue may leave before then"
    if partner.baa_end is not None and partner.baa_end < today:
        return (
            f"[partner] baa_end was {partner.baa_end}: the Business Associate Agreement has ended"
        )
    return None
