"""Sign-off through the EHR: our MDM^T02 review packet out, the physician's MDM answer in."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from billing_fixtures import NPI, add_patient, add_return, add_touchpoint

import hl7 as python_hl7
from ccm_connector.config import load_config
from ccm_connector.month_close import reconcile_month
from ccm_connector.signoff import dispatch_packets
from ccm_connector.store import open_store

CLI = Path(sys.executable).parent / "ccm-connector"
OTHER_NPI = "1987654328"


@pytest.fixture
def sent(local_instance: Path):
    cfg = load_config(local_instance / "connector.toml")
    conn = open_store(cfg.store.path)
    add_patient(conn, "MRN1")
    add_touchpoint(conn, "TP1", "MRN1", "RN7", dt.datetime(2026, 11, 3, 9, 0), 25)
    add_return(conn, cfg.identity.pseudonym_key_file, [{"id": "E1", "mrn": "MRN1", "sources": ["TP1"], "performer": "RN7", "date": "2026-11-03", "minutes": 25}])
    reconcile_month(cfg, "2026-11", conn)
    dispatch_packets(cfg, conn)
    [doc] = (cfg.store.data_dir / "outbox" / "ehr").glob("RV*.hl7")
    document_id = str(python_hl7.parse(doc.read_bytes().decode()).segment("TXA")[12])
    return cfg, conn, local_instance, document_id


def answer(document_id: str, control: str, event: str = "T04", status: str = "AU", npi: str = NPI, availability: str = "AV", note: str = "") -> bytes:
    segments = [
        f"MSH|^~\\&|EHR|CLINIC|CCMCONNECTOR|LOCALDEMO|20261202101500-0600||MDM^{event}^MDM_T02|{control}|P|2.5.1",
        f"EVN|{event}|20261202101500-0600",
        "PID|1||MRN1^^^CLINIC^MR||DOE^JANE||19500203|F",
        "PV1|1|O",
        f"TXA|1|CCM-REVIEW|TX|20261202101500-0600|||20261202101500-0600|||||{document_id}|||||{status}||{availability}|||{npi}^REYES^DANA^^^^^^NPI",
    ]
    if note:
        segments.append(f"OBX|1|TX|CCM-NOTE^Note^L||{note}||||||F")
    return ("\r".join(segments) + "\r").encode()


def ingest(instance: Path, data: bytes, tmp_path: Path) -> subprocess.CompletedProcess:
    f = tmp_path / "answer.hl7"
    f.write_bytes(data)
    return subprocess.run([str(CLI), "--config", str(instance / "connector.toml"), "ingest", str(f)], capture_output=True, text=True, timeout=120)


def state(conn) -> str:
    return conn.execute("SELECT state FROM patient_month WHERE mrn = 'MRN1'").fetchone()[0]


def message_status(conn, control: str) -> tuple:
    return tuple(conn.execute("SELECT status, ack_code FROM inbound_message WHERE control_id = ?", (control,)).fetchone())


def test_an_authenticated_answer_from_the_billing_practitioner_signs(sent, tmp_path: Path) -> None:
    cfg, conn, instance, document_id = sent
    assert ingest(instance, answer(document_id, "A1"), tmp_path).returncode == 0
    assert state(conn) == "signed"
    assert conn.execute("SELECT via FROM signoff").fetchone()[0].startswith("hl7:")
    assert message_status(conn, "A1") == ("mapped", "AA")


def test_another_practitioner_does_not_sign(sent, tmp_path: Path) -> None:
    cfg, conn, instance, document_id = sent
    ingest(instance, answer(document_id, "A2", status="LA", npi=OTHER_NPI), tmp_path)
    assert state(conn) == "awaiting_signoff"
    assert message_status(conn, "A2") == ("rejected", "AE")
    assert conn.execute("SELECT count(*) FROM signoff").fetchone()[0] == 0


@pytest.mark.parametrize(("event", "status", "availability"), [("T04", "IN", "AV"), ("T08", "DO", "CA"), ("T11", "AU", "AV")])
def test_a_rejection_status_rejects_with_the_reason(sent, tmp_path: Path, event: str, status: str, availability: str) -> None:
    cfg, conn, instance, document_id = sent
    ingest(instance, answer(document_id, "A3", event=event, status=status, availability=availability, note="minutes look inflated"), tmp_path)
    assert state(conn) == "rejected"
    assert tuple(conn.execute("SELECT outcome, reason FROM signoff").fetchone()) == ("rejected", "minutes look inflated")


def test_an_answer_to_a_packet_that_has_changed_since_does_not_sign(sent, tmp_path: Path) -> None:
    cfg, conn, instance, document_id = sent
    add_touchpoint(conn, "TP2", "MRN1", "RN7", dt.datetime(2026, 11, 20, 9, 0), 5)
    reconcile_month(cfg, "2026-11", conn)  # new practice time: a new packet
    ingest(instance, answer(document_id, "A4"), tmp_path)
    assert state(conn) == "awaiting_signoff"
    assert message_status(conn, "A4") == ("rejected", "AE")


def test_a_cancellation_of_a_ccm_document_is_ignored_not_applied(sent, tmp_path: Path) -> None:
    cfg, conn, instance, _ = sent
    cancel = (
        b"MSH|^~\\&|EHR|CLINIC|CCMCONNECTOR|LOCALDEMO|20261202101500-0600||MDM^T11^MDM_T01|C11|P|2.5.1\r"
        b"EVN|T11|20261202101500-0600\rPID|1||MRN1^^^CLINIC^MR||DOE^JANE||19500203|F\rPV1|1|O\r"
        b"TXA|1|CCM-TOUCH|TX|20261103090000-0600|RN7||20261202101500-0600|||||TP1|||||AU\r"
        b"OBX|1|NM|CCM-MIN^Minutes^L||90|min\rOBX|2|CE|CCM-ACT^Activity^L||MEDREC\r"
    )
    ingest(instance, cancel, tmp_path)
    assert message_status(conn, "C11") == ("ignored", "AA")
    assert conn.execute("SELECT minutes FROM touchpoint WHERE id = 'TP1'").fetchone()[0] == 25
