"""Exchange documents on the wire: the hardened lxml parser and the shipped XSDs.

Every inbound XML byte goes through `parse_safe`: no DTD loading, no entity resolution, no
network, libxml2's size/depth limits kept (huge_tree=False), plus our own limits on bytes and
element depth. A document that declares a DOCTYPE (internal subset or not) or carries an entity
reference is refused. Schemas ship inside the package and are parsed with the same options;
an inbound document never chooses its schema.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

from lxml import etree

SAFE_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_pis=True,
    collect_ids=False,
)
MAX_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 24

WORKQUEUE_NS = "urn:ccm-connector:workqueue:1"
RETURN_NS = "urn:ccm-connector:return:1"
SCHEMAS = {WORKQUEUE_NS: "workqueue-1.xsd", RETURN_NS: "return-1.xsd"}


@dataclass(frozen=True)
class Problem:
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class DocumentRefused(Exception):
    """The bytes are not an acceptable document; ``problems`` carry line numbers where known."""

    def __init__(self, reason: str, problems: list[Problem] | None = None) -> None:
        self.reason = reason
        self.problems = problems or []
        super().__init__(
            reason + ("" if not self.problems else ": " + "; ".join(map(str, self.problems[:5])))
        )

    @property
    def summary(self) -> str:
        """The reason without any text from the document (schema messages quote values): for
        logs, the audit chain and one-line outputs."""
        if not self.problems:
            return self.reason
        first = next((p.line for p in self.problems if p.line), None)
        where = f", first at line {first}" if first else ""
        return f"{self.reason} ({len(self.problems)} problem(s){where})"


def safe_parser(**extra: object) -> etree.XMLParser:
    return etree.XMLParser(**SAFE_OPTIONS, **extra)


def parse_safe(
    data: bytes, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> etree._ElementTree:
    """Parse untrusted XML bytes with the hardened parser; raise DocumentRefused on anything odd."""
    if not isinstance(data, bytes):
        raise DocumentRefused("document must be bytes")
    if len(data) > max_bytes:
        raise DocumentRefused(f"document larger than {max_bytes} bytes")
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise DocumentRefused("DOCTYPE or entity declarations are not allowed")
    try:
        root = etree.fromstring(data, safe_parser())
    except etree.XMLSyntaxError as e:
        line = e.lineno if isinstance(e.lineno, int) else None
        raise DocumentRefused(
            "not well-formed XML", [Problem(line, e.msg or "syntax error")]
        ) from None
    tree = root.getroottree()
    # Belt and braces: the byte scan can be dodged with another encoding; the parse cannot.
    if (
        tree.docinfo.doctype
        or tree.docinfo.internalDTD is not None
        or tree.docinfo.externalDTD is not None
    ):
        raise DocumentRefused("DOCTYPE declarations are not allowed")
    for node in root.iter(etree.Entity):
        raise DocumentRefused(
            "entity references are not allowed", [Problem(node.sourceline, "entity reference")]
        )
    _check_depth(root, max_depth)
    return tree


def _check_depth(root: etree._Element, max_depth: int) -> None:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise DocumentRefused(
                f"elements nested deeper than {max_depth}", [Problem(node.sourceline, "too deep")]
            )
        stack.extend((child, depth + 1) for child in node)


@functools.cache
def schema(namespace: str) -> etree.XMLSchema:
    """The shipped XSD for a document namespace."""
    name = SCHEMAS[namespace]
    data = resources.files("ccm_connector.sftp").joinpath("schemas", name).read_bytes()
    return etree.XMLSchema(etree.fromstring(data, safe_parser()))


def validate(tree: etree._ElementTree, namespace: str) -> list[Problem]:
    """Schema problems with line numbers; empty when the document is valid."""
    root = tree.getroot()
    if etree.QName(root).namespace != namespace:
        found = etree.QName(root).namespace or "no namespace"
        return [Problem(root.sourceline, f"root element is in {found}, expected {namespace}")]
    xsd = schema(namespace)
    if xsd.validate(tree):
        return []
    return [Problem(e.line or None, e.message) for e in xsd.error_log]


def check(data: bytes, namespace: str) -> etree._ElementTree:
    """Parse safely and validate against the shipped schema; raise DocumentRefused otherwise."""
    tree = parse_safe(data)
    problems = validate(tree, namespace)
    if problems:
        raise DocumentRefused("document does not match its schema", problems)
    return tree


def serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
