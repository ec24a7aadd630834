"""The hardened parser and the shipped schemas."""

from __future__ import annotations

import datetime as dt

import exchange_support as support  # noqa: E402  (tests/support is on sys.path)
import pytest
from lxml import etree

from ccm_connector.exchange_documents import parse_return
from ccm_connector.sftp import documents
from ccm_connector.sftp.documents import RETURN_NS, DocumentRefused

PSEUDONYM = "P" + "A" * 26


def test_a_valid_return_parses_into_its_content():
    ret = parse_return(support.a_return(PSEUDONYM, entry_ids=("E-1", "E-2")))
    assert ret.return_id == "R-0001" and ret.practice_id == "LOCALDEMO"
    assert [e.entry_id for e in ret.entries] == ["E-1", "E-2"]
    assert ret.entries[0].touchpoint_ids == ("TP-1",)
    assert ret.drafts[0].revises == "CP-1" and ret.drafts[0].changes[0].action == "revise"
    assert ret.codes[0].code == "99490" and ret.codes[0].units == 1
    assert ret.created.tzinfo is not None and ret.created <= dt.datetime.now(dt.UTC)


def test_schema_failures_carry_line_numbers():
    data = support.a_return(PSEUDONYM).replace(b'minutes="15"', b'minutes="0"')
    with pytest.raises(DocumentRefused, match="schema") as info:
        parse_return(data)
    line = next(i for i, text in enumerate(data.splitlines(), 1) if b'minutes="0"' in text)
    assert any(p.line == line and "minutes" in p.message for p in info.value.problems)


def test_duplicate_entry_ids_fail_the_schema():
    with pytest.raises(DocumentRefused, match="schema"):
        parse_return(support.a_return(PSEUDONYM, entry_ids=("E-1", "E-1")))


def test_a_document_in_another_namespace_is_refused():
    with pytest.raises(DocumentRefused, match="schema") as info:
        documents.check(b"<return xmlns='urn:other'/>", RETURN_NS)
    assert "expected urn:ccm-connector:return:1" in info.value.problems[0].message


def test_a_doctype_is_refused_even_without_entities():
    data = support.a_return(PSEUDONYM).replace(b"<return", b"<!DOCTYPE return>\n<return", 1)
    with pytest.raises(DocumentRefused, match="DOCTYPE"):
        parse_return(data)


def test_a_doctype_hidden_in_another_encoding_is_refused():
    data = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r><r/>'.encode("utf-16")
    with pytest.raises(DocumentRefused, match="DOCTYPE"):
        documents.parse_safe(data)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lolz>&lol4;</lolz>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<r>&x;</r>"""


@pytest.mark.parametrize(
    "data", [BILLION_LAUGHS, EXTERNAL], ids=["billion-laughs", "external-entity"]
)
def test_entity_declarations_and_expansion_are_refused(data):
    with pytest.raises(DocumentRefused) as info:
        documents.parse_safe(data)
    assert "root:" not in str(info.value)


def test_the_parser_itself_never_expands_entities():
    """Belt and braces under the byte scan: the parser options alone keep entities unexpanded."""
    root = etree.fromstring(EXTERNAL, documents.safe_parser())
    assert b"root:" not in etree.tostring(root)


def test_size_and_depth_limits():
    with pytest.raises(DocumentRefused, match="larger"):
        documents.parse_safe(b"<a/>" + b" " * 100, max_bytes=50)
    deep = b"<a>" * 30 + b"</a>" * 30
    with pytest.raises(DocumentRefused, match="deeper"):
        documents.parse_safe(deep)


def test_malformed_xml_is_refused_with_its_line():
    with pytest.raises(DocumentRefused, match="well-formed") as info:
        documents.parse_safe(b"<a>\n<b>\n</a>")
    assert info.value.problems[0].line in (2, 3)
