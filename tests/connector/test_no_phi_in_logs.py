"""No PHI in logs: a record with a known patient name and birth date goes through every
built command, and neither appears in any log line (stderr or the configured log file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ccm_connector.cli import build_parser
from ccm_connector.instance import with_values

CLI = Path(sys.executable).parent / "ccm-connector"
FAMILY, GIVEN, BIRTH = "QUIXOTEZ", "ZEBEDIAH", "19370412"
PHI = (FAMILY, GIVEN, BIRTH, "1937-04-12", "04/12/1937", "MRN-PHI-77")

HL7_FEED = "\r".join(
    [
        "MSH|^~\\&|EHR|CLINIC|CCM|PRACTICE|20261103101500-0600||ADT^A04^ADT_A01|PHI0001|P|2.5.1",
        "EVN|A04|20261103101500-0600",
        f"PID|1||MRN-PHI-77^^^CLINIC^MR||{FAMILY}^{GIVEN}||{BIRTH}|F|||1 Main St^^Springfield^IL^62701",
        "PV1|1|O",
    ]
) + "\r"

FACTS = {
    "patient": {"id": "MRN-PHI-77", "chronic_conditions": ["E11.9", "I10"]},
    "month": "2026-11",
    "billing_practitioner": "1234567893",
    "consent": {"date": "2026-01-05", "practitioner": "1234567893"},
    "initiating_visit": None,
    "care_plan": None,
    "staff": {"RN7": {"role": "clinical", "location": "US", "supervisor": "1234567893"}},
    "time": [{"id": f"{FAMILY}-note", "date": "2026-11-03", "minutes": 25, "staff": "RN7"}],
}


def command_lines(instance: Path, hl7_file: Path, facts_file: Path) -> list[list[str]]:
    """Every command of the CLI surface that terminates on its own, with realistic arguments."""
    month = ["--month", "2026-11"]
    return [
        ["doctor"],
        ["ingest", str(hl7_file)],
        ["mapping", "check", str(hl7_file), "--json"],
        ["queue", "export"],
        ["returns", "pull"],
        ["reconcile", *month, "--json"],
        ["signoff", "--patient", "MRN-PHI-77", *month, "--npi", "1234567893"],
        ["close-month", *month],
        ["billing", "void", "--patient", "MRN-PHI-77", *month],
        ["status", "--json"],
        ["report", *month, "--html", str(instance / "report.html")],
        ["rules", "check", str(facts_file)],
        ["audit", "verify"],
    ]


def test_the_list_covers_every_terminating_command() -> None:
    parser = build_parser()
    top = next(a for a in parser._actions if a.dest == "command").choices
    # init is run by the fixture, listen and run by the tests below, demo by test_demo.py.
    long_running = {"run", "listen", "demo", "init"}
    listed = {line[0] for line in command_lines(Path("."), Path("x"), Path("y"))}
    assert set(top) - long_running == listed


@pytest.fixture
def logged_instance(local_instance: Path) -> Path:
    config = local_instance / "connector.toml"
    config.write_text(with_values(config.read_text(), {("logging", "file"): '"data/connector.log"', ("logging", "level"): '"debug"'}))
    return local_instance


def test_no_command_logs_the_patients_name_or_birth_date(logged_instance: Path, tmp_path: Path) -> None:
    hl7_file = tmp_path / "feed.hl7"
    hl7_file.write_bytes(HL7_FEED.encode())
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(json.dumps(FACTS))
    config = logged_instance / "connector.toml"
    stderr_lines: list[str] = []
    for line in command_lines(logged_instance, hl7_file, facts_file):
        result = subprocess.run([str(CLI), "--config", str(config), *line], capture_output=True, text=True, timeout=120)
        assert result.returncode in (0, 1, 2), (line, result.returncode)
        assert "Traceback" not in result.stderr, (line, result.stderr[-2000:])
        stderr_lines += [f"{line[0]}: {s}" for s in result.stderr.splitlines()]
    log_file = logged_instance / "data/connector.log"
    file_lines = log_file.read_text().splitlines() if log_file.exists() else []
    assert file_lines, "the configured log file received no lines"
    for text in stderr_lines + file_lines:
        for phi in PHI:
            assert phi not in text, f"PHI {phi!r} in log line: {text[:200]}"
    for text in file_lines:
        json.loads(text)  # every log file line is one JSON object


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_no_phi(lines: list[str]) -> None:
    for text in lines:
        for phi in PHI:
            assert phi not in text, f"PHI {phi!r} in log line: {text[:200]}"


def test_listen_logs_no_phi(logged_instance: Path) -> None:
    """The record arrives over MLLP from an independent sender (python-hl7's asyncio client)."""
    import asyncio
    import signal

    import hl7.mllp

    port = _free_port()
    config = logged_instance / "connector.toml"
    proc = subprocess.Popen([str(CLI), "--config", str(config), "listen", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening" in proc.stdout.readline()

        async def send() -> str:
            reader, writer = await asyncio.wait_for(hl7.mllp.open_hl7_connection("127.0.0.1", port), 10)
            writer.writemessage(python_hl7_message())
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 10)
            writer.close()
            return str(ack.segment("MSA")[1])

        assert asyncio.run(send()) == "AA"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    lines = stderr.splitlines() + (logged_instance / "data/connector.log").read_text().splitlines()
    assert any("hl7" in line for line in lines)
    _assert_no_phi(lines)


def python_hl7_message():
    import hl7

    return hl7.parse(HL7_FEED)


def test_run_logs_no_phi(logged_instance: Path) -> None:
    """The record arrives through the inbox and every job runs once; then SIGTERM."""
    import signal
    import time

    from ccm_connector.config import load_config
    from ccm_connector.store import open_store

    config = logged_instance / "connector.toml"
    config.write_text(with_values(config.read_text(), {("schedule", "run_at_start"): "true", ("mllp", "port"): str(_free_port())}))
    (logged_instance / "data/inbox/feed.hl7").write_bytes(HL7_FEED.encode())
    # stderr to a file: a pipe nobody reads would fill up and block the service's logging.
    err_path = logged_instance / "run.stderr"
    err = err_path.open("w")
    proc = subprocess.Popen([str(CLI), "--config", str(config), "run"], stdout=subprocess.DEVNULL, stderr=err, text=True)
    cfg = load_config(config)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            conn = open_store(cfg.store.path)
            finished = {r[0] for r in conn.execute("SELECT job FROM job_run WHERE finished_at IS NOT NULL")}
            conn.close()
            if {"inbox", "retention"} <= finished:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        err.close()
    stderr = err_path.read_text()
    conn = open_store(cfg.store.path)
    assert conn.execute("SELECT count(*) FROM patient WHERE family = ?", (FAMILY,)).fetchone()[0] == 1
    # Every job ran and was recorded. (This caught the store dropping the service's own POSIX
    # locks on the database file, which made a job's write fail with 'disk I/O error'.)
    outcomes = dict(conn.execute("SELECT job, outcome FROM job_run"))
    assert len(outcomes) == 8 and set(outcomes.values()) == {"ok"}, outcomes
    lines = stderr.splitlines() + (logged_instance / "data/connector.log").read_text().splitlines()
    _assert_no_phi(lines)
