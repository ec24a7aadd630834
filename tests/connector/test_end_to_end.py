"""End to end (issue 6): HL7 feed in over MLLP, queue out, a return with planted problems back,
reconcile, sign-off over HL7, close-month; the DFT^P03 output checked with two independent HL7
libraries. Every stage is the real one: `ccm-connector listen` in a subprocess, `queue export`,
`ccm-offshore pull / validate / push`, `returns pull`, `reconcile`, `close-month` as commands on a
local instance; the practice and the offshore team come from connector/synthetic.py with a small
explicit scenario, so every planted problem is asserted by its finding code.

Four patients in October 2026 (America/Chicago):

- E2E001: 25 + 20 minutes that count (99490 + 99439); the 20-minute call is logged as 35
  (MINUTES_EXCEED_SOURCE), an entry cites no practice record (UNSUPPORTED_ENTRY), RN2's call
  overlaps RN2's call for E2E002 (OVERLAPPING_TIME), and the call at 21:10 on Oct 31 is dated
  Nov 1 as India's calendar has it (DATE_MISMATCH).
- E2E002: 22 + 10 minutes that count (99490); the other side of the overlap, a call logged with
  the offshore documentation account as performer (RECORDER_AS_PERFORMER), the 10-minute call
  logged twice (DUPLICATE_ENTRY).
- E2E003: practice time but no consent (NO_CONSENT; not queued, so UNLOGGED_PRACTICE_TIME).
- E2E004: enough time, but the only visit is a 99211 (NO_INITIATING_VISIT).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

import hl7 as python_hl7
from ccm_connector import synthetic
from ccm_connector.config import load_config
from ccm_connector.hl7 import ack, mllp, reader
from ccm_connector.sftp import keyring
from ccm_connector.signoff import dispatch_packets
from ccm_connector.store import open_store
from ccm_connector.synthetic import (
    ConsentDoc,
    PlanDoc,
    Planted,
    Practice,
    SyntheticPatient,
    SyntheticTouchpoint,
    Visit,
)

BIN = Path(sys.executable).parent
MONTH = "2026-10"
CHICAGO = ZoneInfo("America/Chicago")
NPI = synthetic.BILLING_NPI
OTHER_NPI = "1245319599"  # a valid NPI that is not the billing practitioner's
BILLABLE = {"E2E001": [("99490", 1), ("99439", 1)], "E2E002": [("99490", 1)]}
DIABETES, HYPERTENSION, HEART_FAILURE, COPD, CKD = (synthetic.CHRONIC[i] for i in (0, 2, 3, 4, 5))


def scenario() -> Practice:
    def patient(
        mrn: str,
        family: str,
        given: str,
        conditions: tuple,
        visit_code: str = "99214",
        consent: bool = True,
    ) -> SyntheticPatient:
        day = dt.date(2026, 6, 15)
        return SyntheticPatient(
            mrn,
            family,
            given,
            dt.date(1947, 5, 9),
            "F",
            "1EG4TE5MK73",
            conditions,
            dt.date(2019, 3, 4),
            Visit(day, visit_code),
            ConsentDoc(day) if consent else None,
            PlanDoc(dt.date(2026, 6, 16), synthetic.ELEMENTS, dt.date(2026, 6, 16)),
        )

    def tp(
        n: int, mrn: str, staff: str, day: int, hour: int, minute: int, minutes: int, activity: str
    ) -> SyntheticTouchpoint:
        summary = synthetic.ACTIVITIES[activity][2][0].format(c="diabetes")
        return SyntheticTouchpoint(
            f"T-{n:02d}",
            mrn,
            staff,
            dt.datetime(2026, 10, day, hour, minute, tzinfo=CHICAGO),
            minutes,
            activity,
            summary,
        )

    return Practice(
        month=MONTH,
        patients=(
            patient("E2E001", "Quillfeather", "Ottoline", (DIABETES, HYPERTENSION)),
            patient("E2E002", "Brackenridge", "Thaddeus", (HEART_FAILURE, COPD)),
            patient("E2E003", "Honeysett", "Perpetua", (DIABETES, CKD), consent=False),
            patient("E2E004", "Wolstenholme", "Barnaby", (HYPERTENSION, CKD), visit_code="99211"),
        ),
        touchpoints=(
            tp(1, "E2E001", "RN1", 6, 10, 0, 25, "PHONE"),
            tp(2, "E2E001", "RN1", 14, 10, 0, 20, "MEDREC"),
            tp(3, "E2E001", "RN2", 20, 9, 0, 15, "PHONE"),
            tp(4, "E2E001", "MA1", 31, 21, 10, 12, "PHONE"),
            tp(5, "E2E002", "RN2", 20, 9, 10, 10, "MEDREC"),
            tp(6, "E2E002", "RN1", 8, 11, 0, 22, "COORD"),
            tp(7, "E2E002", "LPN1", 22, 14, 0, 18, "EDU"),
            tp(8, "E2E002", "RN1", 27, 15, 0, 10, "REFILL"),
            tp(9, "E2E003", "RN1", 9, 16, 0, 20, "PHONE"),
            tp(10, "E2E004", "MA1", 13, 13, 0, 25, "LABS"),
        ),
        planted=Planted(
            unsupported="T-01",
            inflated=("T-02", 15),
            recorder_as_performer="T-07",
            duplicate="T-08",
            next_day="T-04",
            overlap=("T-03", "T-05"),
            no_consent="E2E003",
            not_initiated=("E2E004",),
        ),
        control_prefix="E2E",
    )


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120
    )
    if ok:
        assert out.returncode == 0, f"{args}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


class Listener:
    """`ccm-connector listen --port 0` in a subprocess; messages go to it with the MLLP client."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "ccm-connector"), "--config", str(config), "listen", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            self.stop()
            raise AssertionError(f"the listener did not start: {line!r} {log.read_text()}")
        self.port = int(line.rsplit(":", 1)[1])

    def send(self, texts: list[str]) -> list[ack.Ack]:
        async def go() -> list[ack.Ack]:
            async with mllp.Client("127.0.0.1", self.port, timeout=30) as client:
                return [ack.read_ack(await client.send(t.encode())) for t in texts]

        return asyncio.run(go())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        finally:
            self.proc.stdout.close()
            self.log.close()


@pytest.fixture(scope="module")
def world(local_template: Path):
    """Feed → queue → offshore return → returns pull → reconcile → review packets, once."""
    short = Path(tempfile.mkdtemp(prefix="e2e", dir="/tmp"))
    instance = short / "i"
    shutil.copytree(local_template, instance, symlinks=True, ignore=shutil.ignore_patterns("S.*"))
    config = instance / "connector.toml"
    practice = scenario()
    (instance / "roster.csv").write_text(synthetic.roster_csv(practice.staff))
    listener = Listener(config, short / "listener.log")
    try:
        feed = synthetic.messages(practice)
        acks = listener.send(feed)
        cfg = load_config(config)
        run("ccm-connector", "--config", str(config), "queue", "export")
        team = instance / "partner" / "offshore.toml"
        pulled = run("ccm-offshore", "--config", str(team), "pull")
        [queue_file] = (instance / "partner" / "work").glob("LOCALDEMO-*.xml")
        created = dt.datetime(2026, 11, 1, 4, 30, tzinfo=dt.UTC)
        document = synthetic.offshore_return(
            queue_file.read_bytes(),
            synthetic.OffshoreScenario("E2E-R1", created, MONTH, practice.planted),
        )
        return_file = instance / "partner" / "work" / "return-E2E-R1.xml"
        return_file.write_bytes(document)
        run("ccm-offshore", "validate", str(return_file))
        run("ccm-offshore", "--config", str(team), "push", str(return_file))
        pulled_returns = run("ccm-connector", "--config", str(config), "returns", "pull")
        reconciled = run(
            "ccm-connector", "--config", str(config), "reconcile", "--month", MONTH, "--json"
        )
        conn = open_store(cfg.store.path)
        dispatched = dispatch_packets(cfg, conn)
        yield {
            "instance": instance,
            "config": config,
            "cfg": cfg,
            "conn": conn,
            "listener": listener,
            "practice": practice,
            "feed": feed,
            "acks": acks,
            "pulled": pulled.stdout,
            "returns": pulled_returns.stdout,
            "dispatched": dispatched,
            "results": {r["patient"]: r for r in map(json.loads, reconciled.stdout.splitlines())},
        }
        conn.close()
    finally:
        listener.stop()
        keyring.stop_agent(instance / "gnupg")
        keyring.stop_agent(instance / "partner" / "gnupg")
        shutil.rmtree(short, ignore_errors=True)


def state(world: dict, mrn: str) -> str:
    return (
        world["conn"]
        .execute("SELECT state FROM patient_month WHERE mrn = ? AND month = ?", (mrn, MONTH))
        .fetchone()[0]
    )


def test_the_feed_is_acknowledged_and_the_exchange_goes_round(world: dict) -> None:
    assert [(a.code, a.control_id) for a in world["acks"]] == [
        ("AA", reader.read_message(m.encode()).control_id) for m in world["feed"]
    ]
    conn = world["conn"]
    assert conn.execute("SELECT count(*) FROM touchpoint").fetchone()[0] == 10
    assert conn.execute("SELECT count(*) FROM inbound_message WHERE status = 'mapped'").fetchone()[
        0
    ] == len(world["feed"])
    # E2E003 has no consent: it is not enrolled, so its call never leaves the practice.
    [(touchpoints,)] = conn.execute("SELECT touchpoints FROM queue_batch").fetchall()
    assert touchpoints == 9
    assert "pulled 1 work queue(s)" in world["pulled"] and "0 refused" in world["pulled"]
    assert world["returns"].startswith("returns pull: 1 accepted, 0 refused")
    assert (
        conn.execute("SELECT count(*) FROM return_entry").fetchone()[0] == 11
    )  # 9 + duplicate + no record


def test_every_planted_problem_is_found_by_its_code(world: dict) -> None:
    results = world["results"]

    def found(mrn: str) -> set[tuple[str, str | None]]:
        return {(f["code"], f["source"]) for f in results[mrn]["reconciliation"]}

    e2e001 = found("E2E001")
    assert ("UNSUPPORTED_ENTRY", None) in e2e001
    assert ("MINUTES_EXCEED_SOURCE", "T-02") in e2e001
    assert ("OVERLAPPING_TIME", "T-03") in e2e001
    assert ("DATE_MISMATCH", "T-04") in e2e001
    assert ("CODE_MISMATCH", None) in e2e001  # the team proposed 99439 x2 from its own padded log
    excess = next(
        f for f in results["E2E001"]["reconciliation"] if f["code"] == "MINUTES_EXCEED_SOURCE"
    )
    assert "15 excluded" in excess["message"]
    e2e002 = found("E2E002")
    assert {
        ("OVERLAPPING_TIME", "T-05"),
        ("RECORDER_AS_PERFORMER", "T-07"),
        ("DUPLICATE_ENTRY", "T-08"),
    } <= e2e002
    assert ("UNLOGGED_PRACTICE_TIME", "T-09") in found("E2E003")
    assert {
        f["code"] for f in results["E2E003"]["decision"]["findings"] if f["severity"] == "block"
    } >= {"NO_CONSENT"}
    assert {
        f["code"] for f in results["E2E004"]["decision"]["findings"] if f["severity"] == "block"
    } == {"NO_INITIATING_VISIT"}
    # Only what the practice's records support counts, dated and attributed as the practice recorded it.
    minutes = {mrn: r["decision"]["minutes"]["countable"] for mrn, r in results.items()}
    assert minutes == {"E2E001": 45, "E2E002": 32, "E2E003": 0, "E2E004": 25}
    lines = {
        mrn: [(ln["code"], ln["units"]) for ln in r["decision"]["lines"]]
        for mrn, r in results.items()
        if r["decision"]["billable"]
    }
    assert lines == BILLABLE
    assert world["dispatched"]["queued"] == 2


def _packets(world: dict) -> dict[str, str]:
    cfg = world["cfg"]
    folder = cfg.signoff.folder or cfg.store.data_dir / "outbox" / "ehr"
    out = {}
    for path in folder.glob("*.hl7"):
        message = reader.read_message(path.read_bytes())
        if message.first("TXA").get(2) == "CCM-REVIEW":
            out[message.first("PID").get(3)] = path.read_bytes().decode()
    return out


def test_signoff_over_hl7_then_close_month_bills_exactly_the_held_codes_once(world: dict) -> None:
    packets = _packets(world)
    assert set(packets) == set(BILLABLE)
    for mrn in BILLABLE:
        txa = reader.read_message(packets[mrn].encode()).first("TXA")
        assert txa.get(12).startswith("CCMRV-") and txa.get(17) == "DO"
    at = dt.datetime(2026, 11, 3, 8, 30, tzinfo=CHICAGO)
    # Another practitioner's signature does not sign.
    world["listener"].send(
        [
            synthetic.review_answer(
                packets["E2E001"], at, "E2E-SIGN-0", synthetic.Signer(npi=OTHER_NPI, family="OTHER")
            )
        ]
    )
    assert state(world, "E2E001") == "awaiting_signoff"
    # The billing practitioner signs both in the EHR: MDM^T04 for one, T08 (edit) for the other.
    world["listener"].send(
        [
            synthetic.review_answer(packets["E2E001"], at, "E2E-SIGN-1"),
            synthetic.review_answer(
                packets["E2E002"], at, "E2E-SIGN-2", status="LA", trigger="T08"
            ),
        ]
    )
    assert {mrn: state(world, mrn) for mrn in BILLABLE} == {"E2E001": "signed", "E2E002": "signed"}
    via = {
        r["mrn"]: r["via"]
        for r in world["conn"].execute(
            "SELECT mrn, via FROM signoff WHERE voided_at IS NULL AND outcome = 'approved'"
        )
    }
    assert set(via) == set(BILLABLE) and all(v.startswith("hl7:") for v in via.values())

    config = str(world["config"])
    first = run("ccm-connector", "--config", config, "close-month", "--month", MONTH)
    assert "released 2 patient-months (3 charge lines)" in first.stdout
    billing = world["cfg"].billing.output_dir
    dft_files = sorted(billing.glob("*.hl7"))
    assert len(dft_files) == 2
    stored = {
        r["mrn"]: [(ln["code"], ln["units"]) for ln in json.loads(r["decision"])["lines"]]
        for r in world["conn"].execute(
            "SELECT mrn, decision FROM patient_month WHERE month = ? AND state = 'released'",
            (MONTH,),
        )
    }
    assert stored == BILLABLE
    billed = {}
    for path in dft_files:
        text = path.read_bytes().decode()
        assert parse_message(
            text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
        ).validate()
        message = python_hl7.parse(text)
        assert str(message.segment("MSH")[9]) == "DFT^P03^DFT_P03"
        mrn = str(message.segment("PID")[3][0][0])
        ft1 = message.segments("FT1")
        billed[mrn] = [(str(s[7][0][0]), int(str(s[10]))) for s in ft1]
        assert all(str(s[4][0][0]) == "20261031" for s in ft1)  # month-end date of service
        assert all(str(s[20][0][0]) == NPI for s in ft1)
    assert billed == stored
    before = {p.name: p.read_bytes() for p in billing.rglob("*") if p.is_file()}
    outbound = world["conn"].execute("SELECT count(*) FROM outbound").fetchone()[0]

    second = run("ccm-connector", "--config", config, "close-month", "--month", MONTH)
    assert "released 0 patient-months (0 charge lines)" in second.stdout
    assert {p.name: p.read_bytes() for p in billing.rglob("*") if p.is_file()} == before
    assert world["conn"].execute("SELECT count(*) FROM outbound").fetchone()[0] == outbound
