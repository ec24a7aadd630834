"""Reconcile → sign-off → close-month → void, over a real store and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from billing_fixtures import NPI, add_patient, add_return, add_touchpoint
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from lxml import etree

import hl7 as python_hl7
from ccm_connector.billing import close_month, transaction_id, void
from ccm_connector.config import load_config
from ccm_connector.documentation import schema
from ccm_connector.errors import InputError
from ccm_connector.month_close import reconcile_month
from ccm_connector.signoff import dispatch_packets, signoff_command
from ccm_connector.store import open_store

CLI = Path(sys.executable).parent / "ccm-connector"


@pytest.fixture
def setup(local_instance: Path):
    cfg = load_config(local_instance / "connector.toml")
    conn = open_store(cfg.store.path)
    add_patient(conn, "MRN1")
    add_touchpoint(conn, "TP1", "MRN1", "RN7", dt.datetime(2026, 11, 3, 9, 0), 25)
    add_touchpoint(conn, "TP2", "MRN1", "MA3", dt.datetime(2026, 11, 12, 14, 0), 20)
    add_return(conn, cfg.identity.pseudonym_key_file, [
        {"id": "E1", "mrn": "MRN1", "sources": ["TP1"], "performer": "RN7", "date": "2026-11-03", "minutes": 25},
        {"id": "E2", "mrn": "MRN1", "sources": ["TP2"], "performer": "MA3", "date": "2026-11-12", "minutes": 20},
    ])
    return cfg, conn, local_instance


def cli(instance: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "--config", str(instance / "connector.toml"), *args], capture_output=True, text=True, timeout=120)


def test_reconcile_json_is_one_object_per_patient_month(setup) -> None:
    cfg, conn, instance = setup
    out = cli(instance, "reconcile", "--month", "2026-11", "--json")
    assert out.returncode == 0, out.stderr
    [obj] = [json.loads(line) for line in out.stdout.splitlines()]
    assert obj["patient"] == "MRN1" and obj["month"] == "2026-11"
    assert [(ln["code"], ln["units"]) for ln in obj["decision"]["lines"]] == [("99490", 1), ("99439", 1)]
    assert set(obj["reconciliation"][0]) == {"code", "severity", "entry", "source", "message"} if obj["reconciliation"] else True
    readable = cli(instance, "reconcile", "--month", "2026-11")
    assert "MRN1: 45 countable min; 99490x1, 99439x1" in readable.stdout


def test_rerunning_reconcile_never_double_counts(setup) -> None:
    cfg, conn, _ = setup
    first = reconcile_month(cfg, "2026-11", conn)
    again = reconcile_month(cfg, "2026-11", conn)
    assert first[0].decision == again[0].decision and not again[0].changed
    add_return(conn, cfg.identity.pseudonym_key_file, [
        {"id": "E1", "mrn": "MRN1", "sources": ["TP1"], "performer": "RN7", "date": "2026-11-03", "minutes": 25}], name="r2")
    replay = reconcile_month(cfg, "2026-11", conn)[0]
    assert replay.decision["minutes"]["countable"] == 45
    assert "DUPLICATE_ENTRY" in {f["code"] for f in replay.reconciliation}


def test_a_bad_month_argument_exits_2(setup) -> None:
    assert cli(setup[2], "reconcile", "--month", "2026-13").returncode == 2


def test_signoff_binds_to_the_packet_and_a_change_voids_it(setup) -> None:
    cfg, conn, instance = setup
    reconcile_month(cfg, "2026-11", conn)
    wrong = cli(instance, "signoff", "--patient", "MRN1", "--month", "2026-11", "--npi", "1987654328")
    assert wrong.returncode == 2 and "not its billing practitioner" in wrong.stderr
    ok = cli(instance, "signoff", "--patient", "MRN1", "--month", "2026-11", "--npi", NPI)
    assert ok.returncode == 0 and "signed" in ok.stdout
    # New EHR time arrives: the packet changes, the signature is void, and the month asks again.
    add_touchpoint(conn, "TP3", "MRN1", "RN7", dt.datetime(2026, 11, 20, 8, 0), 5)
    reconcile_month(cfg, "2026-11", conn)
    state = conn.execute("SELECT state FROM patient_month WHERE mrn = 'MRN1'").fetchone()[0]
    assert state == "awaiting_signoff"
    assert conn.execute("SELECT void_reason FROM signoff").fetchone()[0] == "the packet changed after signing"
    assert close_month(cfg, conn, "2026-11")["released"] == 0


def test_reject_needs_a_reason_and_does_not_release(setup) -> None:
    cfg, conn, instance = setup
    reconcile_month(cfg, "2026-11", conn)
    assert cli(instance, "signoff", "--patient", "MRN1", "--month", "2026-11", "--npi", NPI, "--reject").returncode == 2
    out = cli(instance, "signoff", "--patient", "MRN1", "--month", "2026-11", "--npi", NPI, "--reject", "--reason", "care plan draft incomplete")
    assert out.returncode == 0 and "rejected" in out.stdout
    assert close_month(cfg, conn, "2026-11")["released"] == 0


def test_close_month_releases_once_with_valid_hl7_csv_and_package(setup) -> None:
    cfg, conn, instance = setup
    reconcile_month(cfg, "2026-11", conn)
    signoff_command(cfg, conn, "MRN1", "2026-11", NPI, False, None)
    first = cli(instance, "close-month", "--month", "2026-11")
    assert first.returncode == 0 and "released 1 patient-months (2 charge lines)" in first.stdout
    second = cli(instance, "close-month", "--month", "2026-11")
    assert "released 0 patient-months" in second.stdout
    billing = cfg.billing.output_dir
    [dft] = sorted(billing.glob("*.hl7"))
    text = dft.read_bytes().decode()
    parsed = python_hl7.parse(text)
    ft1 = parsed.segments("FT1")
    assert [str(s[7][0][0]) for s in ft1] == ["99490", "99439"]
    assert [str(s[10]) for s in ft1] == ["1", "1"]
    assert str(ft1[0][2]) == transaction_id(cfg.practice.id, "MRN1", "2026-11", "99490", 1)
    assert len(ft1[0][19]) == 2  # two ICD-10 diagnoses
    assert str(ft1[0][20][0][0]) == NPI
    assert parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    [csv_file] = sorted(billing.glob("charges-2026-11-*.csv"))
    rows = csv_file.read_text().splitlines()
    assert len(rows) == 3 and rows[1].split(",")[8] == "99490"
    [xml_file] = sorted((billing / "packages").glob("*.xml"))
    doc = etree.parse(str(xml_file), etree.XMLParser(resolve_entities=False, no_network=True))
    assert schema().validate(doc)
    html = (billing / "packages" / xml_file.name.replace(".xml", ".html")).read_text()
    assert "CCM documentation package" in html and "TP1" in html and "Signed by NPI 1234567893" in html
    # Every file that left is in the audit chain with its content hash.
    import hashlib

    delivered = {json.loads(r[0])["name"]: json.loads(r[0])["sha256"] for r in conn.execute("SELECT detail FROM audit_event WHERE kind = 'file.delivered'")}
    assert delivered[dft.name] == hashlib.sha256(dft.read_bytes()).hexdigest()
    assert csv_file.name in delivered and xml_file.name in delivered


def test_void_sends_a_reversal_and_reopens_the_month(setup) -> None:
    cfg, conn, instance = setup
    reconcile_month(cfg, "2026-11", conn)
    signoff_command(cfg, conn, "MRN1", "2026-11", NPI, False, None)
    close_month(cfg, conn, "2026-11")
    out = cli(instance, "billing", "void", "--patient", "MRN1", "--month", "2026-11")
    assert out.returncode == 0, out.stderr
    reversal = [p for p in cfg.billing.output_dir.glob("RV*.hl7")]
    assert len(reversal) == 1
    ft1 = python_hl7.parse(reversal[0].read_bytes().decode()).segments("FT1")
    assert {str(s[6]) for s in ft1} == {"CD"}
    assert conn.execute("SELECT state FROM patient_month").fetchone()[0] == "awaiting_signoff"
    with pytest.raises(InputError, match="nothing released"):
        void(cfg, conn, "MRN1", "2026-11")
    # Signed again, it is released again, with new transaction ids.
    signoff_command(cfg, conn, "MRN1", "2026-11", NPI, False, None)
    assert close_month(cfg, conn, "2026-11")["released"] == 1
    ids = [r[0] for r in conn.execute("SELECT transaction_id FROM billing_line")]
    assert len(ids) == len(set(ids)) == 6


def test_review_packets_are_sent_once_per_packet(setup) -> None:
    cfg, conn, _ = setup
    reconcile_month(cfg, "2026-11", conn)
    assert dispatch_packets(cfg, conn)["queued"] == 1
    assert dispatch_packets(cfg, conn)["queued"] == 0
    [doc] = list((cfg.store.data_dir / "outbox" / "ehr").glob("*.hl7"))
    mdm = python_hl7.parse(doc.read_bytes().decode())
    txa = mdm.segment("TXA")
    assert str(txa[2]) == "CCM-REVIEW" and str(txa[17]) == "DO" and str(txa[12]).startswith("CCMRV-")
    assert parse_message(doc.read_bytes().decode(), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()


def test_a_crash_after_release_redelivers_the_same_bytes(setup) -> None:
    cfg, conn, _ = setup
    reconcile_month(cfg, "2026-11", conn)
    signoff_command(cfg, conn, "MRN1", "2026-11", NPI, False, None)
    close_month(cfg, conn, "2026-11")
    [dft] = sorted(cfg.billing.output_dir.glob("CH*.hl7"))
    original = dft.read_bytes()
    # Simulate a crash between the release commit and delivery: the file never landed.
    dft.unlink()
    conn.execute("UPDATE outbound SET status = 'pending' WHERE kind = 'charges'")
    assert close_month(cfg, conn, "2026-11") == {"released": 0, "lines": 0, "delivered": 1}
    assert dft.read_bytes() == original


def with_draft(cfg, conn) -> None:
    from billing_fixtures import add_batch

    add_batch(conn, "B1", "2026-11")
    add_return(conn, cfg.identity.pseudonym_key_file, [], name="r2", answers=["B1"],
               drafts=[("MRN1", "PLAN-MRN1", [{"element": "goals", "action": "revise", "text": "A1c below 7.5"},
                                               {"element": "caregiver", "action": "add", "text": "daughter helps weekly"}])])


def test_an_approved_care_plan_draft_becomes_the_current_plan_and_goes_to_the_ehr(setup) -> None:
    cfg, conn, instance = setup
    with_draft(cfg, conn)
    [result] = reconcile_month(cfg, "2026-11", conn)
    packet = json.loads(conn.execute("SELECT packet FROM patient_month").fetchone()[0])
    assert packet["care_plan"]["draft"]["revises"] == "PLAN-MRN1"
    signoff_command(cfg, conn, "MRN1", "2026-11", NPI, False, None)
    plan = conn.execute("SELECT * FROM care_plan WHERE document_id LIKE 'CCMPLAN-%'").fetchone()
    assert "caregiver" in json.loads(plan["elements"]) and "goals" in json.loads(plan["elements"])
    dispatch_packets(cfg, conn)  # delivers pending EHR documents, the care plan among them
    docs = [python_hl7.parse(p.read_bytes().decode()) for p in (cfg.store.data_dir / "outbox" / "ehr").glob("CP*.hl7")]
    assert len(docs) == 1 and str(docs[0].segment("TXA")[2]) == "CCM-PLAN" and str(docs[0].segment("TXA")[12]) == plan["document_id"]
    # Re-running reconcile neither duplicates the plan nor decides the draft again.
    reconcile_month(cfg, "2026-11", conn)
    assert conn.execute("SELECT count(*) FROM care_plan_review").fetchone()[0] == 1
    assert conn.execute("SELECT state FROM patient_month").fetchone()[0] == "signed"  # a December plan does not touch November


def test_a_rejected_draft_goes_back_to_the_team_with_the_reason(setup) -> None:
    from ccm_connector.exchange_documents import WorkQueue, build_workqueue
    from ccm_connector.pseudonym import read_key
    from ccm_connector.queue_export import select_work, time_rules
    from ccm_connector.roster import load_roster

    cfg, conn, instance = setup
    with_draft(cfg, conn)
    reconcile_month(cfg, "2026-11", conn)
    signoff_command(cfg, conn, "MRN1", "2026-11", NPI, True, "goal not measurable")
    review = conn.execute("SELECT outcome, reason FROM care_plan_review").fetchone()
    assert tuple(review) == ("rejected", "goal not measurable")
    work = select_work(conn, load_roster(cfg.roster.file), cfg.zone, "2026-12", read_key(cfg.identity.pseudonym_key_file), False, time_rules("2026-12", "physician"))
    [patient] = [p for p in work.queue_patients if p.plan_reviews]
    assert patient.plan_reviews[0].reason == "goal not measurable" and patient.plan_reviews[0].return_id == "r2"
    queue = WorkQueue("B2", 2, cfg.practice.id, "2026-12", dt.datetime(2026, 12, 4, tzinfo=dt.UTC), cfg.practice.time_zone, False, tuple(work.staff), tuple(work.queue_patients))
    xml = build_workqueue(queue)  # validates against workqueue-1.xsd
    assert b'outcome="rejected"' in xml and b"goal not measurable" in xml


def test_the_date_a_plan_reached_the_patient_is_recorded_from_the_cli(setup) -> None:
    cfg, conn, instance = setup
    out = cli(instance, "signoff", "--patient", "MRN1", "--care-plan-shared", "2026-02-01")
    assert out.returncode == 0, out.stderr
    assert conn.execute("SELECT shared_on FROM care_plan WHERE document_id = 'PLAN-MRN1'").fetchone()[0] == "2026-02-01"
    assert cli(instance, "signoff", "--patient", "MRN1", "--care-plan-shared", "2025-01-01").returncode == 2


def test_a_death_reported_by_the_ehr_excludes_later_time_and_warns(setup) -> None:
    cfg, conn, instance = setup
    conn.execute("UPDATE patient SET death_date = '2026-11-10' WHERE mrn = 'MRN1'")
    [result] = reconcile_month(cfg, "2026-11", conn)
    findings = {(f["code"], f.get("entry")) for f in result.decision["findings"]}
    assert ("AFTER_DEATH", "E2") in findings  # TP2 on Nov 12, after the death
    assert any(code == "PATIENT_DECEASED" for code, _ in findings)
    assert result.decision["minutes"] == {"countable": 25, "excluded": 20}


def test_moderate_or_high_mdm_documented_by_the_billing_practitioner_bills_complex_ccm(setup) -> None:
    cfg, conn, instance = setup
    add_touchpoint(conn, "TP3", "MRN1", "RN7", dt.datetime(2026, 11, 20, 9, 0), 25)
    add_touchpoint(conn, "TP4", "MRN1", "DR1", dt.datetime(2026, 11, 21, 9, 0), 10)
    add_return(conn, cfg.identity.pseudonym_key_file, [
        {"id": "E3", "mrn": "MRN1", "sources": ["TP3"], "performer": "RN7", "date": "2026-11-20", "minutes": 25},
        {"id": "E4", "mrn": "MRN1", "sources": ["TP4"], "performer": "DR1", "date": "2026-11-21", "minutes": 10}], name="r2")
    [plain] = reconcile_month(cfg, "2026-11", conn)
    assert [ln["code"] for ln in plain.decision["lines"]] == ["99490", "99439"]  # 80 min, no attestation
    conn.execute("UPDATE touchpoint SET mdm = 'high' WHERE id = 'TP4'")
    [result] = reconcile_month(cfg, "2026-11", conn)
    assert json.loads(conn.execute("SELECT facts FROM patient_month").fetchone()[0])["complex_mdm"] is True
    assert [ln["code"] for ln in result.decision["lines"]] == ["99487"]
