"""The documentation package of a released patient-month: XML (with its XSD) and HTML (XSLT).

What an auditor asks for in an Additional Documentation Request: the time summary, the
activity log with each entry's practice source, the care-plan elements, consent and
initiating-visit evidence, the findings, and the sign-off that released it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from lxml import etree

from .sftp.documents import safe_parser  # the one hardened parser (no DTD, entities, network)

NS = "urn:ccm-connector:package:1"


class PackageError(ValueError):
    pass


@cache
def schema() -> etree.XMLSchema:
    text = resources.files("ccm_connector").joinpath("schemas", "package-1.xsd").read_bytes()
    return etree.XMLSchema(etree.fromstring(text, safe_parser()))


@cache
def stylesheet() -> etree.XSLT:
    text = resources.files("ccm_connector").joinpath("schemas", "package-1.xsl").read_bytes()
    # No document(), no file or network access from the transform.
    return etree.XSLT(etree.fromstring(text, safe_parser()), access_control=etree.XSLTAccessControl.DENY_ALL)


def _el(parent: etree._Element, name: str, text: str | None = None, **attrs: object) -> etree._Element:
    el = etree.SubElement(parent, f"{{{NS}}}{name}", {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = text
    return el


def _bool(value: bool) -> str:
    return "true" if value else "false"


def package_xml(practice: str, packet: dict, signoff: dict, lines: list[tuple[str, str, int, str]]) -> bytes:
    """Build and validate the package; `lines` are (transaction id, code, units, date of service)."""
    decision = packet["decision"]
    root = etree.Element(f"{{{NS}}}package", nsmap={None: NS}, version="1")
    _el(root, "patientMonth", practice=practice, patient=packet["patient"], month=packet["month"], program=packet["program"],
        billingPractitioner=packet["billing_practitioner"], rules=decision["rules"], packetHash=signoff["packet_hash"])
    charges = _el(root, "charges")
    for txn, code, units, dos in lines:
        _el(charges, "line", transactionId=txn, code=code, units=units, dateOfService=dos)
    s = packet["time_summary"]
    summary = _el(root, "timeSummary", countable=s["countable"], excludedByRules=s["excluded_by_rules"], excludedByReconciliation=s["excluded_by_reconciliation"])
    for staff, minutes in s["by_staff"].items():
        _el(summary, "staff", id=staff, minutes=minutes)
    log = _el(root, "activityLog")
    for e in packet["activity_log"]:
        entry = _el(log, "entry", id=e["entry"], date=e["date"], minutes=e["minutes"], counted=e["counted"], performer=e["performer"], activity=e["activity"])
        _el(entry, "description", e.get("description") or "")
        for src in e.get("source_records", []):
            _el(entry, "source", touchpoint=src["id"], staff=src["staff"], localStart=src["local_start"], minutes=src["minutes"], activity=src["activity"])
        for code in e.get("findings", []):
            _el(entry, "finding", code)
    plan = packet["care_plan"]["current"]
    if plan:
        el = _el(root, "carePlan", date=plan["date"], reviewed=plan.get("reviewed"), sharedWithPatient=plan.get("shared_with_patient"))
        for name in plan["elements"]:
            _el(el, "element", name)
    if packet["consent"]:
        _el(root, "consent", date=packet["consent"]["date"], practitioner=packet["consent"]["practitioner"])
    visit = packet["initiating_visit"]
    if visit:
        _el(root, "initiatingVisit", date=visit["date"], code=visit["code"], practitioner=visit["practitioner"], ccmDiscussed=_bool(visit["ccm_discussed"]))
    findings = _el(root, "findings")
    for f in decision["findings"]:
        _el(findings, "finding", f["message"], code=f["code"], severity=f["severity"], source="rules", entry=f.get("entry"))
    for f in packet["reconciliation"]:
        _el(findings, "finding", f["message"], code=f["code"], severity=f["severity"], source="reconciliation", entry=f.get("entry"))
    _el(root, "signoff", npi=signoff["npi"], at=signoff["at"], via=signoff["via"], packetHash=signoff["packet_hash"])
    if not schema().validate(root):
        first = schema().error_log[0]
        raise PackageError(f"documentation package does not validate: line {first.line}: {first.message}")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def package_html(xml: bytes) -> bytes:
    doc = etree.fromstring(xml, safe_parser())
    return bytes(stylesheet()(doc))
