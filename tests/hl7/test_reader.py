"""hl7/reader.py: line endings, BOM, batches, character sets, delimiters, escapes, and random input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hl7 as python_hl7
from ccm_connector.hl7 import reader
from ccm_connector.hl7.reader import (
    STANDARD,
    Delimiters,
    ReadError,
    escape,
    parse_delimiters,
    read_file,
    read_message,
    unescape,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def only_message(name: str) -> reader.Message:
    contents = read_file(fixture(name))
    assert len(contents.items) == 1, contents.items
    item = contents.items[0]
    assert isinstance(item, reader.Message), item
    return item


# --- line endings, BOM, character sets ---------------------------------------------------------


def test_cr_lf_and_crlf_files_read_as_the_same_message() -> None:
    cr, lf, crlf = (only_message(f"adt_a04_{e}.hl7") for e in ("cr", "lf", "crlf"))
    assert cr.content_hash == lf.content_hash == crlf.content_hash
    assert [s.id for s in lf.segments] == ["MSH", "EVN", "PID", "PV1"]
    assert lf.first("PID").get(5, 2) == "ALPHA"


def test_a_utf8_bom_is_skipped_and_the_text_is_utf8() -> None:
    m = only_message("adt_a04_bom_utf8.hl7")
    assert m.msh.id == "MSH"
    assert m.first("PID").get(5, 2) == "ZOË"
    assert m.charset == "utf-8"


def test_msh18_8859_1_is_decoded_as_latin1() -> None:
    m = only_message("adt_a04_8859-1.hl7")
    assert m.charset == "iso8859-1"
    assert m.first("PID").get(5) == "MÜLLERTEST"
    assert m.first("PID").get(5, 2) == "JOSÉ"


def test_declared_utf8_that_is_not_utf8_is_unreadable_with_its_control_id() -> None:
    (item,) = read_file(fixture("adt_a04_bad_utf8.hl7")).items
    assert isinstance(item, reader.Unreadable)
    assert item.reason == "MSH-18: the message is not valid utf-8"
    assert item.header is not None and item.header.control_id == "FX-BADUTF8-0001"


def test_undeclared_non_ascii_is_read_as_utf8_else_windows_1252_with_a_note() -> None:
    base = "MSH|^~\\&|A|B|C|D|20260101||ADT^A04|X1|P|2.5.1\rPID|1||M1^^^^MR||CAFÉ^ANA"
    utf8 = read_message(base.encode("utf-8"))
    assert utf8.first("PID").get(5) == "CAFÉ" and utf8.charset == "utf-8"
    assert any("UTF-8" in n for n in utf8.notes)
    cp = read_message(base.replace("CAFÉ", "CAFÉ \u2026").encode("cp1252"))  # C9 20 85: not UTF-8
    assert cp.first("PID").get(5) == "CAFÉ …" and cp.charset == "cp1252"
    assert any("Windows-1252" in n for n in cp.notes)


@pytest.mark.parametrize("declared", ["UNICODE UTF-16", "UNICODE", "ISO IR87", "EBCDIC"])
def test_character_sets_we_do_not_read_are_refused(declared: str) -> None:
    with pytest.raises(ReadError, match="MSH-18: character set .* is not supported"):
        read_message(
            f"MSH|^~\\&|A|B|C|D|20260101||ADT^A04|X1|P|2.5.1||||||{declared}\rPID|1".encode()
        )


def test_a_bom_overrides_a_conflicting_msh18() -> None:
    data = (
        reader.BOM
        + "MSH|^~\\&|A|B|C|D|20260101||ADT^A04|X1|P|2.5.1||||||8859/1\rPID|1||M^^^^MR||ZOË".encode()
    )
    (m,) = read_file(data).messages
    assert m.first("PID").get(5) == "ZOË"
    assert "byte-order mark" in " ".join(m.notes)


# --- files, batches, junk ------------------------------------------------------------------------


def test_a_batch_with_trailers_yields_its_messages_and_no_notes() -> None:
    contents = read_file(fixture("batch_with_trailers.hl7"))
    assert [m.control_id for m in contents.messages] == ["FX-A04-0001", "FX-A08-0002"]
    assert len(contents.items) == 2
    assert contents.notes == ()


def test_a_batch_without_trailers_is_read_and_noted() -> None:
    contents = read_file(fixture("batch_without_trailers.hl7"))
    assert [m.type for m in contents.messages] == ["ADT^A04", "ADT^A08"]
    assert set(contents.notes) == {
        "a batch without its BTS trailer",
        "a file without its FTS trailer",
    }


def test_a_trailer_count_that_does_not_match_is_noted() -> None:
    contents = read_file(fixture("batch_bad_count.hl7"))
    assert len(contents.messages) == 2
    assert contents.notes == ("BTS-1 says 3 messages, the batch holds 2",)


def test_many_messages_separated_by_blank_lines() -> None:
    contents = read_file(fixture("many_messages.hl7"))
    assert [m.control_id for m in contents.messages] == [
        "FX-A04-0001",
        "FX-A08-0002",
        "FX-A04-0003",
    ]
    assert [m.index for m in contents.messages] == [1, 2, 3]


def test_lines_before_any_msh_are_one_unreadable_item_and_the_message_after_them_is_read() -> None:
    items = read_file(fixture("junk_then_message.hl7")).items
    assert isinstance(items[0], reader.Unreadable)
    assert items[0].reason == "segments outside any message (no MSH before them)"
    assert isinstance(items[1], reader.Message) and items[1].control_id == "FX-A04-0001"


def test_a_nested_batch_header_ends_the_message_it_interrupts() -> None:
    data = b"BHS|^~\\&|A\rMSH|^~\\&|A|B|C|D|20260101||ADT^A04|X1|P|2.5\rEVN|A04\rBHS|^~\\&|A\rPID|1\rBTS|1\r"
    items = read_file(data).items
    assert isinstance(items[0], reader.Message) and [s.id for s in items[0].segments] == [
        "MSH",
        "EVN",
    ]
    assert isinstance(items[1], reader.Unreadable)
    assert "a BHS before the previous batch's BTS" in read_file(data).notes


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b" \r\n \n", "empty file"),
        (b"FHS|^~\\&\rFTS|0", "no HL7 message found"),
    ],
)
def test_a_file_without_messages_is_one_unreadable_item(data: bytes, reason: str) -> None:
    (item,) = read_file(data).items
    assert isinstance(item, reader.Unreadable) and item.reason == reason


def test_stray_mllp_bytes_and_trailing_spaces_around_segments_are_dropped() -> None:
    data = b"\x0bMSH|^~\\&|A|B|C|D|20260101||ADT^A04|X1|P|2.5 \r\nPID|1||M1^^^^MR||DOE  \r\x1c\r\x0b\r\n"
    (m,) = read_file(data).messages
    assert [s.id for s in m.segments] == ["MSH", "PID"]
    assert m.msh.get(12) == "2.5"


def test_read_message_wants_exactly_one_message() -> None:
    one = fixture("adt_a04_cr.hl7")
    assert read_message(one).control_id == "FX-A04-0001"
    with pytest.raises(ReadError, match="holds 2 messages") as two:
        read_message(one + one.replace(b"FX-A04-0001", b"FX-A04-0002"))
    assert two.value.header is not None and two.value.header.control_id == "FX-A04-0001"
    with pytest.raises(ReadError, match="no MSH segment"):
        read_message(b"this is not HL7")
    with pytest.raises(ReadError, match="segments before the MSH"):
        read_message(b"PID|1\r" + one)


@pytest.mark.parametrize(
    "msh, reason",
    [
        (b"MSH|", "MSH-2: encoding characters missing"),
        (b"MSH||A|B", "MSH-2: encoding characters missing"),
        (b"MSH|^~\\&|A|B|C|D|20260101||ADT^A04||P|2.5", "MSH-10: message control id missing"),
        (b"MSH|^~\\&|A|B|C|D|20260101|||X1|P|2.5", "MSH-9: message type missing"),
        (
            b"MSH|^^\\&|A|B|C|D|20260101||ADT|X1|P|2.5",
            "MSH-2: two delimiters are the same character",
        ),
        (b"MSH|^~\\a|A", "MSH-2: encoding characters must be ASCII punctuation"),
    ],
)
def test_broken_msh_segments_are_refused_with_the_field_named(msh: bytes, reason: str) -> None:
    with pytest.raises(ReadError) as e:
        read_message(msh + b"\rPID|1")
    assert e.value.reason == reason


# --- delimiters ------------------------------------------------------------------------------------


def test_other_encoding_characters_are_honoured() -> None:
    m = only_message("delimiters_custom.hl7")
    assert m.delimiters == Delimiters("*", ":", "%", "\\", "!")
    assert m.type == "ADT^A04" and m.control_id == "FX-DELIM-0001"
    pid = m.first("PID")
    assert pid.get(3) == "MRN2002" and pid.get(3, 5) == "MR"
    assert pid.get(3, 1, 1, 2) == "OTHER9"
    assert pid.get(5) == "O:BRIEN-TEST"  # \S\ is the component separator, here ':'


def test_vista_style_caret_field_separator() -> None:
    m = read_message(
        b"MSH^~|\\&^VISTA^500^CCM^PR^20260101^^ADT~A04^V1^P^2.4\rPID^1^^M77~~~VA~MR^^DOE~JO"
    )
    assert m.delimiters == Delimiters("^", "~", "|", "\\", "&")
    assert m.type == "ADT^A04" and m.first("PID").get(5, 2) == "JO"


@pytest.mark.parametrize(
    "msh2, expected",
    [
        ("^~\\&", STANDARD),
        ("^\\&", Delimiters("|", "^", None, "\\", "&")),  # ruby-hl7 adt_a01.hl7
        ("^~&", Delimiters("|", "^", "~", None, "&")),  # ruby-hl7 realm-bad-batch.hl7
        ("^~\\\\&", STANDARD),  # LinuxForHealth sample_*.hl7 (a Java escape artefact)
        ("^~\\&#", STANDARD),  # v2.7 truncation character
        ("^~", Delimiters("|", "^", "~", None, None)),
        ("~|\\&", Delimiters("|", "~", "|", "\\", "&")),
    ],
)
def test_msh2_forms(msh2: str, expected: Delimiters) -> None:
    if (
        expected.component == "~"
    ):  # positional, with '|' as repetition: needs another field separator
        with pytest.raises(ReadError):
            parse_delimiters("|", msh2)
        return
    assert parse_delimiters("|", msh2)[0] == expected


def test_a_message_whose_msh2_lacks_the_repetition_character_keeps_tildes_as_text() -> None:
    m = only_message("delimiters_msh2_missing_repetition.hl7")
    assert m.delimiters.repetition is None
    assert m.first("PID").get(5) == "TEST~TILDE"
    assert m.notes == (
        "MSH-2 is not in standard order; each character was read in its standard role",
    )


# --- segments and escapes ---------------------------------------------------------------------------


def test_field_numbering_and_access() -> None:
    m = only_message("adt_a04_cr.hl7")
    assert m.msh.get(1) == "|" and m.msh.get(2) == "^~\\&" and m.msh.get(10) == "FX-A04-0001"
    pid = m.first("PID")
    assert (
        pid.get(3) == "MRN1001" and pid.get(3, 5) == "MR" and pid.get(3, 1, 1, 2) == "1EG4TE5MK73"
    )
    assert pid.get(3, 9) == "" and pid.get(99) == "" and pid.get(3, 1, 1, 3) == ""
    assert pid.repetitions(3) == ["MRN1001^^^NORTHCLINIC^MR", "1EG4TE5MK73^^^CMS^MC"]
    assert pid.parts(3, 2) == [["1EG4TE5MK73"], [""], [""], ["CMS"], ["MC"]]
    assert m.sender == "EHR|NORTHCLINIC" and m.version == "2.5.1" and m.processing_id == "P"
    assert "TESTPATIENT" not in repr(pid) and "TESTPATIENT" not in repr(m)


def test_explicit_null_and_padding_read_as_plain_values() -> None:
    m = read_message(b'MSH|^~\\&|A|B|C|D|20260101||ADT^A04|X1|P|2.5\rPID|1|""|  M1 ^^^^MR||DOE^""')
    pid = m.first("PID")
    assert pid.get(2) == "" and pid.get(3) == "M1" and pid.get(5, 2) == ""


def test_escape_sequences_in_a_note() -> None:
    m = only_message("escapes.hl7")
    note = m.every("OBX")[2].text(5)
    assert note == "A|B^C&D~E\\ one\ntwo bold AB \\unknown\\ tail\n\nend"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain", "plain"),
        ("\\F\\\\S\\\\T\\\\R\\\\E\\", "|^&~\\"),
        ("a\\.br\\b\\.sp3\\c", "a\nb\n\n\nc"),
        ("\\.sp99999999\\", "\n" * 99),
        ("\\.spX\\", "\\.spX\\"),
        ("\\X0D0A\\", "\r\n"),
        ("\\XE9\\", "é"),
        ("\\XZZ\\", "\\XZZ\\"),
        ("\\H\\b\\N\\\\Zx\\\\C2842\\\\M248443\\", "b"),
        ("unterminated \\F", "unterminated \\F"),
        ("\\\\", "\\\\"),
        ("C:\\temp\\x", "C:\\temp\\x"),
    ],
)
def test_unescape(text: str, expected: str) -> None:
    assert unescape(text, STANDARD, "iso8859-1") == expected


def test_escape_writes_every_delimiter_and_line_break_as_a_sequence() -> None:
    assert escape("a|b^c&d~e\\f\rg\nh") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X0D\\g\\.br\\h"


def test_peek_header_finds_the_control_id_of_an_unreadable_frame() -> None:
    header = reader.peek_header(
        b"\xef\xbb\xbf\rMSH|^~\\&|EHR|F|CCM|P|2026||ADT^A01|CTL-9|P|2.5||||||KOI8"
    )
    assert header is not None
    assert (header.control_id, header.sending_application, header.message_code, header.trigger) == (
        "CTL-9",
        "EHR",
        "ADT",
        "A01",
    )
    assert reader.peek_header(b"no header here") is None


# --- properties -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_never_raise_from_read_file(data: bytes) -> None:
    contents = read_file(data)
    assert contents.items
    for item in contents.items:
        assert isinstance(item, (reader.Message, reader.Unreadable))


_PIECES = st.sampled_from(
    [
        b"MSH|^~\\&|",
        b"MSH|",
        b"MSH^~|\\&^",
        b"\r",
        b"\n",
        b"\r\n",
        b"|",
        b"^",
        b"~",
        b"\\",
        b"&",
        b"BHS|",
        b"BTS|1",
        b"FHS|^~\\&|",
        b"PID|1",
        b"\x0b",
        b"\x1c",
        b"\xef\xbb\xbf",
        b"ADT^A04",
        b"X1",
        b"||||||UNICODE UTF-8",
        b"8859/1",
        b"\xe9",
        b"\\X0D\\",
        b"\\.sp9\\",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.binary(max_size=6)), max_size=40))
def test_hl7_shaped_noise_only_ever_raises_read_error(parts: list[bytes]) -> None:
    data = b"".join(parts)
    read_file(data)
    try:
        m = read_message(data)
    except ReadError as e:
        assert e.reason and "\r" not in e.reason
        return
    for seg in m.segments:  # every accessor works on whatever came in
        for n in range(0, min(len(seg.fields), 8)):
            seg.get(n, 2, 2, 2)
            seg.text(n)
            seg.parts(n)


_VALUE = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc")), st.sampled_from("\r\n|^~&\\")
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_VALUE, min_size=1, max_size=3), min_size=1, max_size=6))
def test_escaped_values_round_trip_through_a_message(fields: list[list[str]]) -> None:
    encoded = "|".join("^".join(escape(v) for v in comps) for comps in fields)
    text = f"MSH|^~\\&|A|B|C|D|20260101||ZZZ^Z01|RT1|P|2.5.1||||||UNICODE UTF-8\rZRT|{encoded}"
    seg = read_message(text.encode("utf-8")).first("ZRT")
    for n, comps in enumerate(fields, start=1):
        for c, value in enumerate(comps, start=1):
            got = seg.get(n, c)
            assert got == reader._clean(value)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(st.text(alphabet="ABCXYZ019 .-", max_size=8), min_size=1, max_size=3),
        min_size=1,
        max_size=6,
    )
)
def test_field_values_agree_with_python_hl7(fields: list[list[str]]) -> None:
    """python-hl7 as an independent reader of the same text."""
    encoded = "|".join("^".join(comps) for comps in fields)
    text = f"MSH|^~\\&|A|B|C|D|20260101||ZZZ^Z01|RT2|P|2.5.1\rZRT|{encoded}"
    ours = read_message(text.encode()).first("ZRT")
    theirs = python_hl7.parse(text).segment("ZRT")
    for n, comps in enumerate(fields, start=1):
        for c in range(1, len(comps) + 1):
            expected = theirs.extract_field(
                field_num=n, repeat_num=1, component_num=c, subcomponent_num=1
            )
            assert ours.get(n, c) == expected.strip()
