"""HL7 v2 acknowledgements (original mode), built at string level: one is sent per message.

The ACK swaps sender and receiver (its MSH-3/4 are the inbound MSH-5/6 and the other way
round), echoes the inbound MSH-10 in MSA-2 exactly as written, keeps the inbound delimiters,
processing id and version, and for AE/AR carries the reason in MSA-3 and in an ERR segment
(ERR-1 for v2.3/2.4 readers, ERR-2/3/4/8 for v2.5+), escaped. Reasons never hold PHI.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .reader import STANDARD, Delimiters, Header, ReadError, escape, read_message

ACCEPT, ERROR, REJECT = "AA", "AE", "AR"

# HL7 table 0357 (message error condition codes) used in ERR-3.
ERROR_TEXT = {
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

_LOCATION = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d{1,3})\b")


def _usable(d: Delimiters) -> bool:
    used = [c for c in (d.field, d.component, d.repetition, d.escape, d.subcomponent) if c]
    return len(set(used)) == len(used) and all(len(c) == 1 and c not in "\r\n" for c in used)


def _plain(text: str, d: Delimiters) -> str:
    """Text safe to write as one value: escaped when there is an escape character, else stripped."""
    if d.escape:
        return escape(text, d)
    for c in (d.field, d.component, d.repetition, d.subcomponent, "\r", "\n"):
        if c:
            text = text.replace(c, " ")
    return text


def build_ack(
    header: Header | None,
    code: str,
    *,
    control_id: str,
    now: dt.datetime,
    application: str = "CCMCONNECTOR",
    reason: str | None = None,
    error_code: int | None = None,
) -> bytes:
    """The ACK for a message (or for unreadable bytes, when header is None or partial)."""
    if code not in (ACCEPT, ERROR, REJECT):
        raise ValueError(f"unknown acknowledgement code {code!r}")
    if header is not None and _usable(header.delimiters):
        d = header.delimiters
        copy = True
    else:
        d = STANDARD
        copy = False

    def inbound(value: str) -> str:
        if header is None:
            return ""
        if copy:
            return value
        return "" if any(c in value for c in "|^~\\&") else value

    f = d.field
    app = _plain(application, d)
    trigger = inbound(header.trigger) if header else ""
    msh = [
        "MSH",
        d.encoding_characters,
        inbound(header.receiving_application) if header and header.receiving_application else app,
        inbound(header.receiving_facility) if header else "",
        inbound(header.sending_application) if header else "",
        inbound(header.sending_facility) if header else "",
        now.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S+0000"),
        "",
        f"ACK{d.component}{trigger}{d.component}ACK" if trigger else "ACK",
        _plain(control_id, d),
        inbound(header.processing_id) if header and header.processing_id else "P",
        inbound(header.version) if header and header.version else "2.5.1",
    ]
    if header is not None and copy and header.codec not in ("ascii",) and header.charset_field:
        msh += ["", "", "", "", "", header.charset_field]
    segments = [f.join(msh), f.join(["MSA", code, inbound(header.control_id) if header else ""])]
    if code != ACCEPT:
        text = _plain(
            reason or ("Message rejected" if code == REJECT else "Error processing message"), d
        )
        segments[1] += f + text
        number = error_code or (207 if code == ERROR else 200)
        label = ERROR_TEXT.get(number, "")
        where = _LOCATION.match(reason or "")
        sub = d.subcomponent or d.component
        eld = f"{where.group(1)}{d.component}1{d.component}{where.group(2)}" if where else ""
        eld_code = f"{d.component}{number}{sub}{label}{sub}HL70357" if where else ""
        erl = f"{where.group(1)}{d.component}1{d.component}{where.group(2)}" if where else ""
        severity = "E"
        segments.append(
            f.join(
                [
                    "ERR",
                    eld + eld_code,
                    erl,
                    f"{number}{d.component}{label}{d.component}HL70357",
                    severity,
                    "",
                    "",
                    "",
                    text,
                ]
            )
        )
    codec = header.codec if header is not None and copy else "ascii"
    return ("\r".join(segments) + "\r").encode(codec, errors="replace")


@dataclass(frozen=True, slots=True)
class Ack:
    code: str  # AA | AE | AR (or CA/CE/CR in enhanced mode)
    control_id: str  # MSA-2: the MSH-10 it acknowledges
    text: str  # MSA-3 or ERR-8, '' when none


def read_ack(data: bytes) -> Ack:
    """Read an ACK (for the MLLP client and tests); ReadError when it is not one."""
    message = read_message(data)
    msa = message.first("MSA")
    if msa is None:
        raise ReadError("not an acknowledgement: no MSA segment")
    err = message.first("ERR")
    text = msa.get(3) or (err.get(8) if err is not None else "")
    return Ack(msa.get(1), msa.raw(2), text)
