"""The review packet and its hash: what a signature binds to."""

from __future__ import annotations

import copy
import json

from hypothesis import given
from hypothesis import strategies as st

from ccm_connector.packet import canonical, content_hash, packet_hash, packet_text, review_packet

FACTS = {
    "patient": {"id": "MRN1", "chronic_conditions": ["E11.9", "I10"]},
    "month": "2026-11",
    "billing_practitioner": "1234567893",
    "consent": {"date": "2026-01-05", "practitioner": "1234567893"},
    "initiating_visit": None,
    "care_plan": {"date": "2026-01-06", "elements": ["goals"]},
    "time": [{"id": "E1", "date": "2026-11-03", "minutes": 25, "staff": "RN7", "counted_for": None}],
}
DECISION = {
    "patient": "MRN1", "month": "2026-11", "program": "ccm", "billable": True,
    "lines": [{"code": "99490", "units": 1, "date_of_service": "2026-11-30"}],
    "minutes": {"countable": 25, "excluded": 0}, "findings": [], "rules": "cms-2026",
}
RECON = [{"code": "UNSUPPORTED_ENTRY", "severity": "exclude", "entry": "E9", "source": None, "message": "refers to no practice record", "minutes": 10}]
LOG = [{"entry": "E1", "date": "2026-11-03", "minutes": 25, "performer": "RN7", "activity": "call", "sources": ["TP1"], "counted": 25}]


def packet() -> dict:
    return review_packet(FACTS, DECISION, RECON, LOG, None)


def test_canonical_json_ignores_key_order() -> None:
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == '{"a":[1,{"c":3,"d":2}],"b":1}'
    assert content_hash({"b": 1, "a": 2}) == content_hash({"a": 2, "b": 1})


def test_the_same_content_gives_the_same_hash() -> None:
    assert packet_hash(packet()) == packet_hash(copy.deepcopy(packet()))


def test_any_change_to_facts_log_or_decision_changes_the_hash() -> None:
    base = packet_hash(packet())
    facts = copy.deepcopy(FACTS)
    facts["time"][0]["minutes"] = 26
    assert packet_hash(review_packet(facts, DECISION, RECON, LOG, None)) != base
    log = copy.deepcopy(LOG)
    log[0]["performer"] = "MA3"
    assert packet_hash(review_packet(FACTS, DECISION, RECON, log, None)) != base
    assert packet_hash(review_packet(FACTS, DECISION, [], LOG, None)) != base
    assert packet_hash(review_packet(FACTS, DECISION, RECON, LOG, {"id": 1, "revises": "P", "changes": []})) != base


def test_the_packet_summarises_time_and_reads_as_text() -> None:
    p = packet()
    assert p["time_summary"] == {"countable": 25, "excluded_by_rules": 0, "excluded_by_reconciliation": 10, "by_staff": {"RN7": 25}}
    text = "\n".join(packet_text(p))
    assert "99490 x1" in text and "UNSUPPORTED_ENTRY" in text and "Log E1" in text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.text(st.characters(codec=None, categories=["Cs", "Cc", "Lo"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_text_is_what_the_standard_library_writes(value) -> None:
    # Anyone can recompute a packet hash with json.dumps: orjson must write the same text.
    assert canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
