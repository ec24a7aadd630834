"""The documentation package: XML valid against its shipped XSD, HTML with no outside references."""

from __future__ import annotations

import pytest
from lxml import etree, html

from ccm_connector.documentation import PackageError, package_html, package_xml
from ccm_connector.packet import review_packet

FACTS = {
    "patient": {"id": "MRN1", "chronic_conditions": ["E11.9", "I10"]},
    "month": "2026-11",
    "billing_practitioner": "1234567893",
    "consent": {"date": "2026-01-05", "practitioner": "1234567893"},
    "initiating_visit": {"date": "2026-01-05", "code": "99214", "practitioner": "1234567893", "ccm_discussed": True},
    "care_plan": {"date": "2026-01-06", "reviewed": "2026-10-01", "shared_with_patient": "2026-01-07", "elements": ["goals", "problems"]},
    "time": [{"id": "E1", "date": "2026-11-03", "minutes": 25, "staff": "RN7", "counted_for": None}],
}
DECISION = {
    "patient": "MRN1", "month": "2026-11", "program": "ccm", "billable": True,
    "lines": [{"code": "99490", "units": 1, "date_of_service": "2026-11-30"}],
    "minutes": {"countable": 25, "excluded": 0}, "findings": [], "rules": "cms-2026",
}
LOG = [{"entry": "E1", "date": "2026-11-03", "minutes": 25, "performer": "RN7", "activity": "call", "description": "called <patient> & pharmacy",
        "sources": ["TP1"], "source_records": [{"id": "TP1", "staff": "RN7", "local_start": "2026-11-03T09:00-06:00", "minutes": 25, "activity": "call"}],
        "counted": 25, "findings": []}]
SIGNOFF = {"npi": "1234567893", "at": "2026-12-02T10:00:00+00:00", "via": "cli", "packet_hash": "abc"}


def test_the_package_validates_and_renders() -> None:
    xml = package_xml("PRACTICE", review_packet(FACTS, DECISION, [], LOG, None), SIGNOFF, [("T1", "99490", 1, "2026-11-30")])
    root = etree.fromstring(xml)
    assert root.tag == "{urn:ccm-connector:package:1}package"
    page = html.fromstring(package_html(xml))
    text = page.text_content()
    assert "called <patient> & pharmacy" in text  # escaped by the serializer, shown as text
    assert "99490" in text and "TP1" in text and "Signed by NPI 1234567893" in text
    refs = [v for el in page.iter() for k, v in el.attrib.items() if k in ("src", "href")]
    assert refs == [] and not page.xpath("//script")


def test_a_package_that_breaks_its_schema_is_refused() -> None:
    with pytest.raises(PackageError, match="does not validate"):
        package_xml("PRACTICE", review_packet(FACTS, DECISION, [], LOG, None), SIGNOFF, [("T1", "99490", 0, "2026-11-30")])
