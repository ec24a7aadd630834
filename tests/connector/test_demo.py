"""`ccm-connector demo`: a whole month for the synthetic practice, run as a user runs it."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import hl7 as python_hl7
from ccm_connector import synthetic
from ccm_connector.sftp import keyring

CLI = Path(sys.executable).parent / "ccm-connector"
MONTH = "2026-11"  # the month before the demo's fixed date


@pytest.fixture(scope="module")
def demo():
    out = Path(tempfile.mkdtemp(prefix="d", dir="/tmp"))  # exists and is empty: the demo may use it
    try:
        result = subprocess.run(
            [str(CLI), "demo", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=out.parent,
        )
        yield out, result
    finally:
        keyring.stop_agent(out / "gnupg")
        keyring.stop_agent(out / "partner" / "gnupg")
        shutil.rmtree(out, ignore_errors=True)


def test_the_demo_runs_the_month_and_says_what_happened(demo) -> None:
    out, result = demo
    assert result.returncode == 0, result.stderr
    practice = synthetic.generate(7, MONTH)
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == f"CCM Connector demo: synthetic practice LOCALDEMO, month {MONTH} (America/Chicago), seed 7"
    )
    said = {line.split(":", 1)[0].strip(): line for line in lines}
    sent = len(synthetic.messages(practice))
    assert (
        f"{sent} messages sent over MLLP to 127.0.0.1:" in said["HL7"]
        and f"ACKed AA {sent} " in said["HL7"]
    )
    assert re.search(r"sent wq_LOCALDEMO_000001\.pgp to the local drop", said["queue export"])
    assert (
        "pushed it as rt_LOCALDEMO_DEMO-2026-11-01.pgp" in said["offshore team"]
        and "1 care-plan draft" in said["offshore team"]
    )
    assert said["returns pull"].startswith("returns pull: return DEMO-2026-11-01 accepted")
    for code in (
        "UNSUPPORTED_ENTRY 1",
        "MINUTES_EXCEED_SOURCE 1",
        "RECORDER_AS_PERFORMER 1",
        "DUPLICATE_ENTRY 1",
        "DATE_MISMATCH 1",
        "OVERLAPPING_TIME 2",
        "CODE_MISMATCH",
    ):
        assert code in said["reconciliation findings"]
    for code in (
        "NO_CONSENT 1",
        "NO_INITIATING_VISIT",
        "CARE_PLAN_INCOMPLETE 1",
        "DURING_INPATIENT_STAY",
        "BELOW_THRESHOLD",
    ):
        assert code in said["rules findings"]
    queued = [t for t in practice.touchpoints if t.mrn != practice.planted.no_consent]
    entries = len(queued) + 2  # + the duplicate and the entry with no practice record
    assert (
        f"{entries} log entries checked against the practice's records, 7 with findings"
        in said[f"reconcile {MONTH}"]
    )
    billable = int(re.search(r"(\d+) billable", said[f"reconcile {MONTH}"]).group(1))
    assert (
        f"{billable} review packets (MDM^T02) to the EHR; 1 signed over HL7 (MDM^T04), {billable - 1} with `signoff`"
        in said["sign-off"]
    )
    released = re.search(
        r"released (\d+) patient-months \((\d+) charge lines\)", said["close-month"]
    )
    assert int(released.group(1)) == billable and re.search(
        r"estimated revenue \$\d+\.\d\d", said["close-month"]
    )
    assert said["files"].startswith(
        f"files: {out / 'billing'} ({billable} DFT^P03 .hl7, 1 CSV, {billable} documentation packages"
    )
    # stdout carries counts and codes, never a patient.
    assert not any(name in result.stdout for name in practice.names())
    assert not any(p.mrn in result.stdout for p in practice.patients)


def test_the_demo_leaves_the_exchange_the_billing_files_and_the_report(demo) -> None:
    out, result = demo
    assert result.returncode == 0, result.stderr
    practice = synthetic.generate(7, MONTH)
    sealed = sorted(p.name for p in (out / "drop").rglob("*.pgp"))
    assert sealed == ["rt_LOCALDEMO_DEMO-2026-11-01.pgp", "wq_LOCALDEMO_000001.pgp"]
    for path in (out / "drop").rglob("*.pgp"):
        data = path.read_bytes()
        assert b"<?xml" not in data and b"touchpoint" not in data  # encrypted, not plaintext
    billing = out / "billing"
    dft = sorted(billing.glob("*.hl7"))
    assert dft
    codes = []
    for path in dft:
        message = python_hl7.parse(path.read_bytes().decode())
        assert str(message.segment("MSH")[9]) == "DFT^P03^DFT_P03"
        codes += [(str(s[7][0][0]), int(str(s[10]))) for s in message.segments("FT1")]
    assert {c for c, _ in codes} <= {"99490", "99439", "99426", "99427"}
    [charges] = billing.glob("charges-2026-11-*.csv")
    rows = list(csv.DictReader(charges.open()))
    assert sorted((r["code"], int(r["units"])) for r in rows) == sorted(codes)
    assert (
        len(list((billing / "packages").glob("*.xml")))
        == len(dft)
        == len(list((billing / "packages").glob("*.html")))
    )
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and MONTH[:4] in page
    assert any(
        p.mrn in page for p in practice.patients
    )  # the practice's own report names patients by MRN


def test_no_patient_data_in_the_logs(demo) -> None:
    out, result = demo
    practice = synthetic.generate(7, MONTH)
    log = (out / "demo.log").read_text()
    assert (
        '"event": "hl7.received"' in log and '"event": "demo.finished"' in log
    )  # the stages did log
    for text in (result.stderr, log):
        assert [n for n in practice.names() if n.lower() in text.lower()] == []
        assert [p.mrn for p in practice.patients if p.mrn in text] == []
        assert [p.mbi for p in practice.patients if p.mbi in text] == []


def test_the_demo_never_overwrites_an_instance(demo) -> None:
    out, _ = demo
    before = sorted(str(p) for p in out.rglob("*") if not p.name.startswith("S."))
    again = subprocess.run(
        [str(CLI), "demo", "--out", str(out)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2
    assert f"{out}: already exists and is not empty" in again.stderr
    assert sorted(str(p) for p in out.rglob("*") if not p.name.startswith("S.")) == before


def test_a_month_without_rules_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(CLI), "demo", "--out", str(tmp_path / "x"), "--month", "2019-05"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--month: no rule set covers 2019-05" in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_folder_too_deep_for_gnupg_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 90)
    result = subprocess.run(
        [str(CLI), "demo", "--out", str(deep)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "too long a path for GnuPG" in result.stderr
    assert not deep.exists()
