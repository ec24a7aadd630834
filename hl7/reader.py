"""Reading inbound HL7 v2 (ER7): bytes → messages.

`read_file(data)` takes the bytes of a file (one message, many messages, FHS/BHS batches with
or without trailers) and returns every message it holds, plus an `Unreadable` item for each
stretch of bytes that is not a message. `read_message(frame)` reads one MLLP frame and raises
`ReadError` when it is not exactly one readable message. Neither raises anything else, whatever
the bytes (tests/hl7/test_reader.py checks that with random input).

What the reader copes with, because real feeds do it (../shared/samples/hl7/SOURCES.md):

- a UTF-8 byte-order mark; CR, LF or CRLF segment ends (even mixed); blank lines; spaces and
  stray MLLP control bytes (0x0B, 0x1C) around segments;
- FHS/BHS/BTS/FTS envelopes, with or without trailers, nested oddly or not at all; a trailer
  count that does not match is reported as a note, not an error;
- MSH-18 character sets ASCII, 8859/1-9 and 15, UNICODE UTF-8 (and the ISO IR spellings);
  an empty or ASCII MSH-18 over non-ASCII bytes is read as UTF-8, else Windows-1252 (with a note);
- encoding characters other than ``^~\\&`` (positional, e.g. VistA's ``MSH^~|\\&``), and the
  broken MSH-2 forms seen in the field (``^\\&``, ``^~&``, ``^~\\\\&``): when MSH-2 holds only the
  standard characters each keeps its standard role wherever it stands;
- escape sequences ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, ``\\Xhh..\\`` (bytes in the message's character set),
  formatting (``\\.br\\`` → newline), highlighting and local sequences (dropped); an unknown or
  unterminated sequence is kept as written.

Values come back unescaped and stripped; the HL7 explicit null ``""`` reads as empty.

Why a hand-written tokeniser rather than python-hl7's ``hl7.parse`` (MEASURED on the build
machine, Python 3.11, an 8-segment MDM^T02 touchpoint): ``hl7.parse`` takes ~380 µs per message,
about as long as the durable SQLite commit the ACK waits for (~210 µs) plus the MLLP round trip,
so it alone would halve intake throughput; splitting on the delimiters takes ~4 µs and fields are
split further only when a mapping asks for them. python-hl7 also reads MSH-2 by position only
(so ``^\\&`` makes ``\\`` the repetition separator), splits files with ``str.splitlines`` (which
also breaks on 0x1C-0x1E and 0x85, i.e. "…" in Windows-1252), raises on segments before an MSH,
and its unescape logs field values (PHI) and raises on ``\\.spX\\``. python-hl7 stays the
independent peer the tests compare against and the MLLP client they send with.

This module knows nothing about CCM records or the store.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

BOM = b"\xef\xbb\xbf"
_LINE_JUNK = b" \t\x0b\x1c\x00\x1a\x0c"
_MAX_SPACING = 99  # cap on \.spN\ so a hostile count cannot blow up memory


class ReadError(ValueError):
    """Bytes that cannot be read as one HL7 message. The message is a reason without PHI."""

    def __init__(self, reason: str, header: Header | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.header = header


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The message's separators; ``None`` where MSH-2 leaves one out (it is then not used)."""

    field: str = "|"
    component: str = "^"
    repetition: str | None = "~"
    escape: str | None = "\\"
    subcomponent: str | None = "&"

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as written for these delimiters (missing ones left out from the end)."""
        chars = [self.component, self.repetition, self.escape, self.subcomponent]
        while chars and chars[-1] is None:
            chars.pop()
        return "".join(c if c is not None else "" for c in chars)


STANDARD = Delimiters()
_STANDARD_ROLES = {"^": "component", "~": "repetition", "\\": "escape", "&": "subcomponent"}


def parse_delimiters(field_sep: str, msh2: str) -> tuple[Delimiters, str | None]:
    """Delimiters from MSH-1 and MSH-2; returns them and a note when MSH-2 was repaired."""
    if len(field_sep) != 1 or field_sep.isalnum() or field_sep.isspace() or not field_sep.isascii():
        raise ReadError("MSH-1: field separator must be one ASCII punctuation character")
    if not msh2:
        raise ReadError("MSH-2: encoding characters missing")
    if not msh2.isascii() or any(c.isalnum() or c.isspace() for c in msh2):
        raise ReadError("MSH-2: encoding characters must be ASCII punctuation")
    note = None
    positional = list(msh2[:4]) + [None] * (4 - min(len(msh2), 4))
    standard_only = set(msh2) <= set(_STANDARD_ROLES)
    if standard_only and msh2 not in ("^", "^~", "^~\\", "^~\\&"):
        if len(set(msh2.replace("\\\\", "\\"))) != len(msh2.replace("\\\\", "\\")):
            raise ReadError("MSH-2: two delimiters are the same character")
        roles: dict[str, str | None] = dict.fromkeys(_STANDARD_ROLES.values())
        for c in msh2:
            roles[_STANDARD_ROLES[c]] = c
        if roles["component"] is None:
            raise ReadError("MSH-2: no component separator")
        d = Delimiters(
            field_sep,
            roles["component"],
            roles["repetition"],
            roles["escape"],
            roles["subcomponent"],
        )
        note = "MSH-2 is not in standard order; each character was read in its standard role"
    else:
        comp, rep, esc, sub = positional
        d = Delimiters(field_sep, comp, rep, esc, sub)  # type: ignore[arg-type]
    used = [
        c for c in (d.field, d.component, d.repetition, d.escape, d.subcomponent) if c is not None
    ]
    if len(set(used)) != len(used):
        raise ReadError("MSH-2: two delimiters are the same character")
    return d, note


# --- character sets --------------------------------------------------------------------------

# MSH-18 (HL7 table 0211) → Python codec; None = not declared (ASCII by default, read tolerantly).
_CHARSETS: dict[str, str | None] = {
    "": None,
    "ASCII": None,
    "ISO IR6": None,
    "US-ASCII": None,
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "ISO IR192": "utf-8",
    "ISO IR100": "iso8859-1",
    "ISO IR101": "iso8859-2",
    "ISO IR109": "iso8859-3",
    "ISO IR110": "iso8859-4",
    "ISO IR144": "iso8859-5",
    "ISO IR127": "iso8859-6",
    "ISO IR126": "iso8859-7",
    "ISO IR138": "iso8859-8",
    "ISO IR148": "iso8859-9",
    "ISO 8859-1": "iso8859-1",
    "ISO-8859-1": "iso8859-1",
    "LATIN1": "iso8859-1",
    **{f"8859/{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
}


def _codec(msh18: str) -> str | None:
    """The codec for an MSH-18 value; raises ReadError for a character set we do not read."""
    key = " ".join(msh18.upper().split())
    if key in _CHARSETS:
        return _CHARSETS[key]
    shown = key if len(key) <= 20 and key.isascii() and key.isprintable() else "(unprintable)"
    raise ReadError(
        f"MSH-18: character set {shown!r} is not supported (use UNICODE UTF-8, 8859/1 or ASCII)"
    )


def _decode(
    body: bytes, codec: str | None, declared: str, had_bom: bool
) -> tuple[str, str, str | None]:
    """Decode a message body; returns text, the codec used and a note when we had to guess."""
    if had_bom and codec not in (None, "utf-8"):
        codec, note = "utf-8", "a UTF-8 byte-order mark overrides MSH-18"
    else:
        note = None
    if codec is None:
        if body.isascii():
            return body.decode("ascii"), "ascii", note
        try:
            return (
                body.decode("utf-8"),
                "utf-8",
                f"MSH-18 is {declared or 'empty'} but the message holds UTF-8",
            )
        except UnicodeDecodeError:
            pass
        try:
            return (
                body.decode("cp1252"),
                "cp1252",
                f"MSH-18 is {declared or 'empty'}; non-ASCII bytes read as Windows-1252",
            )
        except UnicodeDecodeError:
            return (
                body.decode("iso8859-1"),
                "iso8859-1",
                f"MSH-18 is {declared or 'empty'}; non-ASCII bytes read as ISO 8859-1",
            )
    try:
        return body.decode(codec), codec, note
    except UnicodeDecodeError:
        raise ReadError(f"MSH-18: the message is not valid {codecs.lookup(codec).name}") from None


# --- escapes ---------------------------------------------------------------------------------


def unescape(text: str, d: Delimiters, charset: str = "utf-8") -> str:
    """Resolve HL7 escape sequences in one value (a field, component or subcomponent)."""
    esc = d.escape
    if esc is None or esc not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find(esc, i)
        if j == -1:
            out.append(text[i:])
            break
        out.append(text[i:j])
        end = text.find(esc, j + 1)
        if end == -1:
            out.append(text[j:])  # unterminated: keep as written
            break
        seq = text[j + 1 : end]
        replacement = _sequence(seq, d, charset)
        out.append(text[j : end + 1] if replacement is None else replacement)
        i = end + 1
    return "".join(out)


def _sequence(seq: str, d: Delimiters, charset: str) -> str | None:
    """What one escape sequence (without its escape characters) stands for; None = keep it."""
    if not seq:
        return None
    if len(seq) == 1:
        simple = {
            "F": d.field,
            "S": d.component,
            "T": d.subcomponent or "&",
            "R": d.repetition or "~",
            "E": d.escape or "\\",
            "H": "",
            "N": "",
        }
        return simple.get(seq)
    head = seq[0]
    if head == "X":
        digits = seq[1:]
        if len(digits) % 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
            return None
        raw = bytes.fromhex(digits)
        try:
            return raw.decode(charset)
        except (UnicodeDecodeError, LookupError):
            return raw.decode("iso8859-1")
    if head == ".":
        command, arg = seq[1:3], seq[3:].lstrip("+").strip()
        if command in ("br", "sp", "ce"):
            count = 1
            if command == "sp" and arg:
                if not arg.isdigit():
                    return None
                count = min(int(arg[:3]), _MAX_SPACING)
            return "\n" * count
        if command in ("fi", "nf", "in", "ti", "sk"):
            return ""
        return None
    if head in ("Z", "C", "M"):
        return ""  # locally defined / character-set switching: not supported, dropped
    return None


def escape(text: str, d: Delimiters = STANDARD) -> str:
    """Escape a value for writing into a message with these delimiters."""
    esc = d.escape or "\\"
    out = (
        text.replace(esc, f"{esc}E{esc}")
        .replace(d.field, f"{esc}F{esc}")
        .replace(d.component, f"{esc}S{esc}")
    )
    if d.subcomponent:
        out = out.replace(d.subcomponent, f"{esc}T{esc}")
    if d.repetition:
        out = out.replace(d.repetition, f"{esc}R{esc}")
    return out.replace("\r", f"{esc}X0D{esc}").replace("\n", f"{esc}.br{esc}")


# --- segments and messages -------------------------------------------------------------------


def _clean(value: str) -> str:
    value = value.strip()
    return "" if value == '""' else value


class Segment:
    """One segment. ``raw(n)`` is field n as written; ``get(n, c, s, r)`` is one value, unescaped.

    Numbering is HL7's: for MSH, field 1 is the field separator and field 2 MSH-2, so MSH-10 is
    ``get(10)`` as for any other segment.
    """

    __slots__ = ("id", "fields", "_d", "_charset")

    def __init__(self, text: str, d: Delimiters, charset: str) -> None:
        fields = text.split(d.field)
        if fields[0] in ("MSH", "FHS", "BHS"):
            fields.insert(1, d.field)
        self.id = fields[0]
        self.fields = fields
        self._d = d
        self._charset = charset

    def __repr__(self) -> str:  # no values: segments hold PHI
        return f"<Segment {self.id} with {len(self.fields) - 1} fields>"

    def raw(self, n: int) -> str:
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def repetitions(self, n: int) -> list[str]:
        """Field n's repetitions as written (an empty field has none)."""
        value = self.raw(n)
        if not value:
            return []
        rep = self._d.repetition
        if rep is None or (self.id in ("MSH", "FHS", "BHS") and n <= 2):
            return [value]
        return value.split(rep)

    def parts(self, n: int, r: int = 1) -> list[list[str]]:
        """Repetition r of field n as components of subcomponents, each unescaped and stripped."""
        reps = self.repetitions(n)
        if not 0 < r <= len(reps):
            return []
        d, cs = self._d, self._charset
        if self.id in ("MSH", "FHS", "BHS") and n <= 2:
            return [[reps[0]]]
        out = []
        for comp in reps[r - 1].split(d.component):
            subs = comp.split(d.subcomponent) if d.subcomponent else [comp]
            out.append([_clean(unescape(s, d, cs)) for s in subs])
        return out

    def get(self, n: int, c: int = 1, s: int = 1, r: int = 1) -> str:
        """One value: field n, component c, subcomponent s, repetition r (all 1-based)."""
        value = self.raw(n)
        if not value:
            return ""
        if self.id in ("MSH", "FHS", "BHS") and n <= 2:
            return value if c == 1 and s == 1 and r == 1 else ""
        d = self._d
        if d.repetition is not None and d.repetition in value:
            reps = value.split(d.repetition)
            if r > len(reps):
                return ""
            value = reps[r - 1]
        elif r != 1:
            return ""
        if d.component in value:
            comps = value.split(d.component)
            if c > len(comps):
                return ""
            value = comps[c - 1]
        elif c != 1:
            return ""
        if d.subcomponent is not None and d.subcomponent in value:
            subs = value.split(d.subcomponent)
            if s > len(subs):
                return ""
            value = subs[s - 1]
        elif s != 1:
            return ""
        return _clean(unescape(value, d, self._charset))

    def text(self, n: int, r: int = 1) -> str:
        """Field n (repetition r) as one unescaped text, delimiters left in place (for TX/FT notes)."""
        reps = self.repetitions(n)
        if not 0 < r <= len(reps):
            return ""
        return _clean(unescape(reps[r - 1], self._d, self._charset))


@dataclass(frozen=True, slots=True)
class Header:
    """What an ACK needs from a message's MSH (raw field text as written, in its delimiters)."""

    delimiters: Delimiters
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    message_code: str = ""
    trigger: str = ""
    processing_id: str = ""
    version: str = ""
    charset_field: str = ""
    codec: str = "ascii"


def _header_from_fields(fields: list[str], d: Delimiters, codec: str) -> Header:
    """fields as Segment.fields of an MSH (fields[n] = MSH-n)."""

    def raw(n: int) -> str:
        return fields[n] if n < len(fields) else ""

    def first_component(value: str) -> str:
        if d.repetition:
            value = value.split(d.repetition)[0]
        return value.split(d.component)[0].strip()

    msg_type = raw(9).split(d.component)
    return Header(
        delimiters=d,
        sending_application=raw(3),
        sending_facility=raw(4),
        receiving_application=raw(5),
        receiving_facility=raw(6),
        control_id=raw(10).strip(),
        message_code=msg_type[0].strip(),
        trigger=msg_type[1].strip() if len(msg_type) > 1 else "",
        processing_id=first_component(raw(11)),
        version=first_component(raw(12)),
        charset_field=raw(18),
        codec=codec,
    )


class Message:
    """One HL7 message as read: its segments, delimiters, character set and identity."""

    __slots__ = (
        "index",
        "raw",
        "segments",
        "delimiters",
        "charset",
        "content_hash",
        "notes",
        "header",
    )

    def __init__(
        self,
        index: int,
        raw: bytes,
        segments: tuple[Segment, ...],
        delimiters: Delimiters,
        charset: str,
        content_hash: str,
        notes: tuple[str, ...],
        header: Header | None = None,
    ) -> None:
        self.index = index
        self.raw = raw
        self.segments = segments
        self.delimiters = delimiters
        self.charset = charset
        self.content_hash = content_hash
        self.notes = notes
        self.header = header or _header_from_fields(segments[0].fields, delimiters, charset)

    def __repr__(self) -> str:
        return f"<Message {self.index} {self.type} {len(self.segments)} segments>"

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def type(self) -> str:
        """MSH-9 as code^trigger, e.g. ADT^A01 (just the code when there is no trigger)."""
        code, trigger = self.msh.get(9, 1), self.msh.get(9, 2)
        return f"{code}^{trigger}" if trigger else code

    @property
    def version(self) -> str:
        return self.msh.get(12)

    @property
    def processing_id(self) -> str:
        return self.msh.get(11)

    @property
    def sender(self) -> str:
        """MSH-3 and MSH-4 as written, joined by '|': the namespace of MSH-10."""
        return f"{self.msh.raw(3)}|{self.msh.raw(4)}"

    def first(self, segment_id: str) -> Segment | None:
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        return None

    def every(self, segment_id: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.id == segment_id]


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Bytes where a message should be, and why they cannot be read (no PHI in the reason)."""

    index: int
    raw: bytes
    reason: str
    header: Header | None = None


@dataclass(frozen=True, slots=True)
class FileContents:
    items: tuple[Message | Unreadable, ...]
    notes: tuple[str, ...]

    @property
    def messages(self) -> list[Message]:
        return [i for i in self.items if isinstance(i, Message)]


# --- splitting ---------------------------------------------------------------------------------


def _lines(data: bytes) -> Iterator[bytes]:
    """Segment lines: any line end, trimmed of blanks and stray framing bytes, empty ones dropped."""
    if data.startswith(BOM):
        data = data[3:]
    for line in data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r"):
        line = line.strip(_LINE_JUNK)
        if line.startswith(BOM):
            line = line[3:].strip(_LINE_JUNK)
        if line:
            yield line


def _kind(line: bytes) -> bytes:
    """MSH/FHS/BHS/BTS/FTS when the line is that segment, else b''."""
    head = line[:3]
    if head in (b"MSH", b"FHS", b"BHS"):
        return head if len(line) > 3 and not line[3:4].isalnum() else b""
    if head in (b"BTS", b"FTS"):
        return head if len(line) == 3 or not line[3:4].isalnum() else b""
    return b""


def _trailer_count(line: bytes) -> int | None:
    sep = line[3:4]
    parts = line.split(sep) if sep else []
    try:
        return int(parts[1].strip()) if len(parts) > 1 and parts[1].strip() else None
    except ValueError:
        return None


def split(data: bytes) -> tuple[list[tuple[str, list[bytes]]], list[str]]:
    """Cut a file into ('message'|'junk', lines) chunks, dropping batch envelopes; plus notes."""
    chunks: list[tuple[str, list[bytes]]] = []
    notes: list[str] = []
    current: list[bytes] | None = None
    junk: list[bytes] | None = None
    batch_count: int | None = None  # messages since the last BHS, None outside a batch
    file_count: int | None = None
    batches = 0

    def close() -> None:
        nonlocal current, junk
        if current is not None:
            chunks.append(("message", current))
            current = None
        if junk is not None:
            chunks.append(("junk", junk))
            junk = None

    for line in _lines(data):
        kind = _kind(line)
        if kind == b"MSH":
            if junk is not None:
                chunks.append(("junk", junk))
                junk = None
            if current is not None:
                chunks.append(("message", current))
            current = [line]
            if batch_count is not None:
                batch_count += 1
            if file_count is not None:
                file_count += 1
        elif kind:
            close()
            if kind == b"FHS":
                if file_count is not None:
                    notes.append("a second FHS before FTS")
                file_count = 0
            elif kind == b"BHS":
                if batch_count is not None:
                    notes.append("a BHS before the previous batch's BTS")
                batch_count = 0
                batches += 1
            elif kind == b"BTS":
                expected = _trailer_count(line)
                if batch_count is None:
                    notes.append("a BTS without a BHS")
                elif expected is not None and expected != batch_count:
                    notes.append(f"BTS-1 says {expected} messages, the batch holds {batch_count}")
                batch_count = None
            elif kind == b"FTS":
                expected = _trailer_count(line)
                if file_count is None:
                    notes.append("an FTS without an FHS")
                elif expected is not None and expected != batches:
                    notes.append(f"FTS-1 says {expected} batches, the file holds {batches}")
                file_count = None
        elif current is not None:
            current.append(line)
        else:
            if junk is None:
                junk = []
            junk.append(line)
    close()
    if batch_count is not None:
        notes.append("a batch without its BTS trailer")
    if file_count is not None:
        notes.append("a file without its FTS trailer")
    return chunks, notes


def _message(lines: list[bytes], index: int, had_bom: bool, raw: bytes | None = None) -> Message:
    msh = lines[0]
    sep = msh[3:4]
    end = msh.find(sep, 4)
    msh2 = msh[4:] if end == -1 else msh[4:end]
    msh_fields = msh.split(sep)
    try:
        d, note = parse_delimiters(sep.decode("latin-1"), msh2.decode("latin-1"))
    except ReadError as e:
        raise ReadError(e.reason, _peek(msh, STANDARD)) from None
    notes = [note] if note else []
    declared = msh_fields[17].decode("latin-1") if len(msh_fields) > 17 else ""
    if d.repetition:
        declared = declared.split(d.repetition)[0]
    declared = declared.split(d.component)[0].strip()
    body = b"\r".join(lines)
    try:
        codec = _codec(declared)
        text, used, charset_note = _decode(body, codec, declared.upper(), had_bom)
    except ReadError as e:
        raise ReadError(e.reason, _peek(msh, d)) from None
    if charset_note:
        notes.append(charset_note)
    segments = tuple(Segment(s, d, used) for s in text.split("\r"))
    header = _header_from_fields(segments[0].fields, d, used)
    if not segments[0].get(9, 1):
        raise ReadError("MSH-9: message type missing", header)
    if not segments[0].get(10):
        raise ReadError("MSH-10: message control id missing", header)
    return Message(
        index,
        raw if raw is not None else body,
        segments,
        d,
        used,
        hashlib.sha256(body).hexdigest(),
        tuple(notes),
        header,
    )


def _peek(msh: bytes, d: Delimiters) -> Header | None:
    """Best-effort MSH fields for an ACK when the message cannot be read; never raises."""
    try:
        text = msh.decode("latin-1")
        fields = text.split(text[3])
        fields.insert(1, text[3])
        sep = text[3]
        if d.field != sep:
            d = Delimiters(sep, d.component, d.repetition, d.escape, d.subcomponent)
        return _header_from_fields(fields, d, "iso8859-1")
    except (IndexError, ValueError):
        return None


def read_file(data: bytes) -> FileContents:
    """Every message in a file's bytes (single, many, batches), and what could not be read."""
    chunks, notes = split(data)
    had_bom = data.startswith(BOM)
    items: list[Message | Unreadable] = []
    for i, (kind, lines) in enumerate(chunks, start=1):
        if kind == "junk":
            items.append(
                Unreadable(
                    i, b"\r".join(lines), "segments outside any message (no MSH before them)"
                )
            )
            continue
        try:
            items.append(_message(lines, i, had_bom))
        except ReadError as e:
            items.append(Unreadable(i, b"\r".join(lines), e.reason, e.header))
    if not items:
        items.append(Unreadable(1, data, "no HL7 message found" if data.strip() else "empty file"))
    return FileContents(tuple(items), tuple(notes))


def read_message(frame: bytes) -> Message:
    """Exactly one message from one MLLP frame; ReadError (with a best-effort header) otherwise."""
    chunks, _ = split(frame)
    messages = [lines for kind, lines in chunks if kind == "message"]
    if not messages:
        raise ReadError("no MSH segment: not an HL7 message")
    if len(messages) > 1:
        raise ReadError(
            f"the frame holds {len(messages)} messages; send one message per frame",
            peek_header(frame),
        )
    if any(kind == "junk" for kind, _ in chunks):
        raise ReadError("segments before the MSH segment", peek_header(frame))
    return _message(messages[0], 1, frame.startswith(BOM), raw=frame)


def peek_header(data: bytes) -> Header | None:
    """The first MSH's fields, read as leniently as possible (for ACKing unreadable frames)."""
    try:
        for line in _lines(data[:65536]):
            if _kind(line) == b"MSH":
                sep = line[3:4].decode("latin-1")
                end = line.find(line[3:4], 4)
                msh2 = (line[4:] if end == -1 else line[4:end]).decode("latin-1")
                try:
                    d, _ = parse_delimiters(sep, msh2)
                except ReadError:
                    d = Delimiters(sep)  # may collide; the ACK builder checks before using them
                return _peek(line, d)
    except (ValueError, IndexError):
        return None
    return None
