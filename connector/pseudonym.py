"""Stable patient pseudonyms: a keyed hash of the MRN, the only patient id the offshore team sees.

pseudonym = "P" + the first 26 base32 characters (130 bits) of HMAC-SHA256(key, MRN). The key
lives in a 0600 file outside the store ([identity] pseudonym_key_file); without it a pseudonym
cannot be linked to an MRN, and with it the practice maps returns back to its own patients.
Changing the key changes every pseudonym: never rotate it while returns are outstanding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from pathlib import Path

PATTERN = re.compile(r"P[A-Z2-7]{26}")


def read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise ValueError(f"pseudonym key file {path} holds fewer than 32 bytes")
    return key


def pseudonym(key: bytes, mrn: str) -> str:
    digest = hmac.new(key, mrn.strip().encode("utf-8"), hashlib.sha256).digest()
    return "P" + base64.b32encode(digest).decode("ascii")[:26]


def reverse_map(key: bytes, mrns: Iterable[str]) -> dict[str, str]:
    """pseudonym -> MRN for the given MRNs (the practice's patients)."""
    return {pseudonym(key, mrn): mrn for mrn in mrns}
