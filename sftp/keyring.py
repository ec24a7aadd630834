"""A private GnuPG home for the connector: creation, key generation, key facts.

The home is 0700 with our own gpg.conf (never `verbose`: status-line spoofing, CVE-2018-12020)
and gpg-agent.conf (no passphrase caching). Keys are named by full 40-hex fingerprints only.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import gnupg

GPG_CONF = "no-greeting\nno-verbose\nno-emit-version\nno-comments\nkeyid-format none\nwith-fingerprint\n"
AGENT_CONF = "default-cache-ttl 0\nmax-cache-ttl 0\nallow-loopback-pinentry\n"
# gpg-agent's socket must fit in sun_path (108 bytes) when it lives in the home folder.
MAX_HOME_LENGTH = 80
FINGERPRINT = re.compile(r"[0-9A-F]{40}")


class KeyringError(Exception):
    pass


@dataclass(frozen=True)
class KeyFacts:
    fingerprint: str
    secret: bool
    expires: dt.date | None
    revoked: bool
    expired: bool
    user_ids: tuple[str, ...]
    # The earliest date on which the key stops being usable for the exchange: the primary's
    # expiry or, if sooner, that of its last valid encryption subkey (None: no expiry).
    usable_until: dt.date | None = None


def prepare_home(home: Path) -> None:
    """Create (or tighten) the home folder and write our configuration files."""
    if len(str(home.resolve())) > MAX_HOME_LENGTH:
        raise KeyringError(f"GnuPG home path is longer than {MAX_HOME_LENGTH} characters; choose a shorter path")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    for name, text in (("gpg.conf", GPG_CONF), ("gpg-agent.conf", AGENT_CONF)):
        fd = os.open(home / name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)


def gpg_for(home: Path, binary: str = "gpg") -> gnupg.GPG:
    if shutil.which(binary) is None and not Path(binary).exists():
        raise KeyringError(f"gpg binary {binary!r} not found; install GnuPG (apt-get install gnupg)")
    return gnupg.GPG(gnupghome=str(home), gpgbinary=binary)


def stop_agent(home: Path) -> None:
    """Kill the home's gpg-agent (it caches and holds sockets that race folder removal)."""
    if shutil.which("gpgconf"):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, check=False)


def generate_key(
    home: Path,
    name: str,
    email: str,
    expire: str = "2y",
    passphrase: str | None = None,
    created: dt.datetime | None = None,
) -> str:
    """Make an Ed25519 signing key with a Curve25519 encryption subkey; return its fingerprint.

    ``created`` back-dates the key (tests of expired keys); ``expire`` counts from creation.
    """
    lines = [
        "Key-Type: EDDSA",
        "Key-Curve: ed25519",
        "Key-Usage: sign",
        "Subkey-Type: ECDH",
        "Subkey-Curve: cv25519",
        "Subkey-Usage: encrypt",
        f"Name-Real: {name}",
        f"Name-Email: {email}",
        f"Expire-Date: {expire}",
    ]
    if created is not None:
        lines.append(f"Creation-Date: {created.astimezone(dt.UTC):%Y%m%dT%H%M%S}")
    lines.append(f"Passphrase: {passphrase}" if passphrase else "%no-protection")
    lines.append("%commit")
    result = gpg_for(home).gen_key("\n".join(lines) + "\n")
    fpr = str(result.fingerprint or "")
    if not FINGERPRINT.fullmatch(fpr):
        raise KeyringError(f"key generation failed: {result.status or 'no fingerprint returned'}")
    return fpr


def export_public(home: Path, fingerprint: str) -> str:
    armored = gpg_for(home).export_keys(fingerprint)
    if not armored:
        raise KeyringError(f"no public key {fingerprint} in {home}")
    return armored


def import_pinned(home: Path, armored: str, fingerprint: str) -> None:
    """Import a partner's public key and mark exactly that fingerprint ultimately trusted.

    Trust is only safe because every use of the keyring pins full fingerprints.
    """
    gpg = gpg_for(home)
    result = gpg.import_keys(armored)
    if fingerprint not in (result.fingerprints or []):
        raise KeyringError(f"the key file does not hold the pinned fingerprint {fingerprint}")
    gpg.trust_keys([fingerprint], "TRUST_ULTIMATE")


def key_facts(home: Path, fingerprint: str, binary: str = "gpg") -> KeyFacts | None:
    """What the keyring knows of one key, or None when it is absent."""
    gpg = gpg_for(home, binary)
    secret = {k["fingerprint"] for k in gpg.list_keys(secret=True)}
    for key in gpg.list_keys():
        if key["fingerprint"] != fingerprint:
            continue
        expires = _date(key.get("expires"))
        validity = key.get("trust", "")
        return KeyFacts(
            fingerprint=fingerprint,
            secret=fingerprint in secret,
            expires=expires,
            revoked=validity == "r",
            expired=validity == "e" or (expires is not None and expires <= dt.datetime.now(dt.UTC).date()),
            user_ids=tuple(key.get("uids", ())),
            usable_until=_usable_until(expires, key.get("subkey_info") or {}),
        )
    return None


def _date(timestamp: str | None) -> dt.date | None:
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).date() if timestamp else None


def _usable_until(primary: dt.date | None, subkeys: dict) -> dt.date | None:
    """Primary expiry, or the later-expiring valid encryption subkey's if that comes first."""
    encryption = [
        info for info in subkeys.values() if "e" in (info.get("cap") or "") and info.get("trust") not in ("e", "r")
    ]
    if not encryption:
        return primary
    ends = [_date(info.get("expires")) for info in encryption]
    sub = None if any(e is None for e in ends) else max(ends)
    candidates = [d for d in (primary, sub) if d is not None]
    return min(candidates) if candidates else None
