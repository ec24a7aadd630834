"""The OpenPGP envelope: seal (encrypt + sign) to pinned fingerprints, open with the acceptance rule.

Outbound: one OpenPGP message, encrypted (AES256, binary) to full 40-hex recipient fingerprints
and signed by our key; never a cleartext signature.

Inbound is accepted only when all of these hold (measured python-gnupg 0.5.7 / GnuPG 2.2 pitfalls:
decryption success is not authenticity, ``valid`` alone is not "our partner", a tampered stream
still writes its plaintext):

    ok  and  returncode == 0  and  valid  and  signer fingerprint in the pinned list
    and  no key_status  and  no problems  and  the signer key is neither expired nor revoked

The plaintext is written by gpg into a private 0700 working folder and is deleted on any
failure; callers get a path only after every check passed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import keyring

CIPHER_ARGS = ["--cipher-algo", "AES256", "--digest-algo", "SHA256"]


class SealError(Exception):
    """Encryption or signing failed (a key missing, unusable or expired, a bad passphrase)."""


class Refused(Exception):
    """An inbound file failed the acceptance rule; ``reason`` says which part, without content."""

    def __init__(self, reason: str, signer: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.signer = signer


@dataclass(frozen=True)
class Opened:
    plaintext: Path  # inside the private working folder; the caller deletes it when done
    signer: str  # the pinned primary fingerprint that signed
    signing_key: str  # the (sub)key fingerprint that made the signature

    def read_and_remove(self) -> bytes:
        try:
            return self.plaintext.read_bytes()
        finally:
            remove_quietly(self.plaintext)


def _fingerprints(values: Iterable[str], what: str) -> list[str]:
    out = []
    for v in values:
        if not isinstance(v, str) or not keyring.FINGERPRINT.fullmatch(v):
            raise SealError(f"{what} must be full 40-hex fingerprints")
        out.append(v)
    if not out:
        raise SealError(f"no {what} given")
    return out


def seal(
    home: Path,
    data: bytes,
    recipients: Iterable[str],
    signer: str,
    passphrase: str | None = None,
    binary: str = "gpg",
) -> bytes:
    """Encrypt ``data`` to the pinned recipients and sign it with ``signer``; return the binary message."""
    recipients = _fingerprints(recipients, "recipients")
    (signer,) = _fingerprints([signer], "signer")
    gpg = keyring.gpg_for(home, binary)
    # trust-model always is safe here only because every recipient is a pinned full fingerprint;
    # gpg still refuses expired or revoked keys.
    result = gpg.encrypt(
        data,
        recipients,
        sign=signer,
        passphrase=passphrase,
        armor=False,
        always_trust=True,
        extra_args=CIPHER_ARGS,
    )
    if not result.ok or result.returncode != 0 or not result.data:
        detail = result.status_detail or ""
        raise SealError(
            f"gpg could not encrypt and sign: {result.status or 'failed'}"
            + (f" ({detail})" if detail else "")
        )
    return bytes(result.data)


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def private_workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def open_envelope(
    home: Path,
    ciphertext: bytes,
    pinned: Iterable[str],
    workdir: Path,
    passphrase: str | None = None,
    binary: str = "gpg",
) -> Opened:
    """Decrypt into ``workdir`` and apply the acceptance rule; raise Refused (plaintext deleted) otherwise."""
    pinned_set = set(_fingerprints(pinned, "pinned signers"))
    private_workdir(workdir)
    out = workdir / f"open-{secrets.token_hex(8)}.tmp"
    gpg = keyring.gpg_for(home, binary)
    try:
        result = gpg.decrypt(ciphertext, passphrase=passphrase, output=str(out))
        signing_key = result.fingerprint or None
        signer = getattr(result, "pubkey_fingerprint", None) or signing_key
        if not result.ok or result.returncode != 0:
            raise Refused(f"decryption failed: {result.status or 'gpg error'}", signer)
        if result.key_status:
            raise Refused(f"signature not acceptable: {result.key_status}", signer)
        # A message for several recipients reports NO_SECKEY for the keys we do not hold; that is
        # not a signature problem. Every other entry is.
        problems = [p for p in result.problems if p.get("status") != "no secret key"]
        if problems:
            raise Refused(
                f"signature not acceptable: {problems[0].get('status', 'problem')}", signer
            )
        if not signer:
            raise Refused("not signed")
        if not result.valid:
            raise Refused("signature not valid", signer)
        if signer not in pinned_set:
            raise Refused(f"signed by a key that is not pinned: {signer}", signer)
        facts = keyring.key_facts(home, signer, binary)
        if facts is None:
            raise Refused(f"signer key {signer} is not in the keyring", signer)
        if facts.revoked:
            raise Refused(f"signer key {signer} is revoked", signer)
        if facts.expired:
            raise Refused(f"signer key {signer} expired on {facts.expires}", signer)
        if not out.is_file():
            raise Refused("gpg reported success but wrote no plaintext", signer)
        os.chmod(out, 0o600)
        return Opened(plaintext=out, signer=signer, signing_key=signing_key or signer)
    except BaseException:
        remove_quietly(out)
        raise
