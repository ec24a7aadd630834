"""connector/intake.py: commit-then-ACK outcomes, dedupe and conflicts, records with merges applied,
file ingest, the inbox, and the `ingest` / `mapping check` commands."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ccm_connector import audit, cli, intake
from ccm_connector.config import load_config
from ccm_connector.hl7 import ack, reader
from ccm_connector.instance import with_values
from ccm_connector.mappings.profile import load_profile
from ccm_connector.store import open_store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
KEY = b"k" * 32
NOW = dt.datetime(2026, 11, 3, 17, 0, tzinfo=dt.UTC)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def edit(data: bytes, *pairs: tuple[str, str]) -> bytes:
    for old, new in pairs:
        assert old.encode() in data, old
        data = data.replace(old.encode(), new.encode())
    return data


@pytest.fixture
def stage(tmp_path: Path) -> intake.Intake:
    conn = open_store(tmp_path / "data" / "store.db")
    return intake.Intake(
        conn,
        load_profile("generic-2.5.1"),
        ZoneInfo("America/Chicago"),
        KEY,
        "CCMCONNECTOR",
        clock=lambda: NOW,
    )


def take(stage: intake.Intake, data: bytes) -> intake.Outcome:
    return stage.take(reader.read_message(data), "test:1")


def rows(stage: intake.Intake, sql: str, *args: object) -> list[tuple]:
    return [tuple(r) for r in stage.conn.execute(sql, args).fetchall()]


def frame(stage: intake.Intake, data: bytes) -> ack.Ack:
    reply = intake.MllpReceiver(stage, 1_048_576).frame(data, "127.0.0.1:9")
    assert reply is not None
    return ack.read_ack(reply)


# --- outcomes and ACKs ------------------------------------------------------------------------------


def test_a_mapped_message_is_stored_with_its_records_then_acked_aa(stage: intake.Intake) -> None:
    assert frame(stage, fixture("mdm_touchpoint.hl7")) == ack.Ack("AA", "FX-TOUCH-0001", "")
    assert rows(
        stage,
        "SELECT id, sender, control_id, status, ack_code, records, resends, message_type FROM inbound_message",
    ) == [(1, "EHR|NORTHCLINIC", "FX-TOUCH-0001", "mapped", "AA", 2, 0, "MDM^T02")]
    assert rows(stage, "SELECT raw FROM inbound_message")[0][0] == fixture("mdm_touchpoint.hl7")
    assert rows(
        stage,
        "SELECT id, mrn, staff_id, start_utc, start_offset, minutes, activity, message_id FROM touchpoint",
    ) == [("TP-0001", "MRN1001", "RN042", "2026-11-03T16:15:00.000000Z", -360, 22, "MEDREC", 1)]
    (event,) = rows(stage, "SELECT kind, subject, detail FROM audit_event")
    assert event[:2] == ("hl7.received", "inbound_message:1")
    assert json.loads(event[2]) == {
        "ack": "AA",
        "control_id": "FX-TOUCH-0001",
        "outcome": "mapped",
        "records": 2,
        "type": "MDM^T02",
        "via": "mllp",
    }


def test_a_resend_is_acked_as_before_and_not_processed_twice(stage: intake.Intake) -> None:
    data = fixture("mdm_touchpoint.hl7")
    first = take(stage, data)
    again = take(stage, data.replace(b"\r", b"\r\n"))  # same content, other line ends
    assert (again.status, again.ack, again.message_id) == ("duplicate", "AA", first.message_id)
    assert rows(stage, "SELECT count(*), max(resends) FROM inbound_message") == [(1, 1)]
    assert rows(stage, "SELECT count(*), max(message_id) FROM touchpoint") == [(1, 1)]
    assert [k for (k,) in rows(stage, "SELECT kind FROM audit_event")] == [
        "hl7.received",
        "hl7.received",
    ]


def test_the_same_control_id_with_other_content_is_a_flagged_conflict(stage: intake.Intake) -> None:
    take(stage, fixture("mdm_touchpoint.hl7"))
    changed = edit(
        fixture("mdm_touchpoint.hl7"), ("CCM-MIN^Minutes^L||22", "CCM-MIN^Minutes^L||45")
    )
    reply = frame(stage, changed)
    assert (reply.code, reply.control_id) == ("AE", "FX-TOUCH-0001")
    assert reply.text.startswith(
        "MSH-10 already used by this sender for message 1 with different content"
    )
    assert rows(stage, "SELECT id, status, ack_code FROM inbound_message ORDER BY id") == [
        (1, "mapped", "AA"),
        (2, "conflict", "AE"),
    ]
    assert rows(stage, "SELECT minutes FROM touchpoint") == [(22,)]  # not mapped
    assert frame(stage, changed).code == "AE"  # the conflicting resend gets the same answer
    assert rows(stage, "SELECT resends FROM inbound_message WHERE id = 2") == [(1,)]
    other_sender = edit(changed, ("|EHR|NORTHCLINIC|", "|LAB|NORTHCLINIC|"))
    assert frame(stage, other_sender).code == "AA"  # MSH-10 is unique per sender only


def test_a_rejected_message_is_kept_with_its_reason_and_acked_ae(stage: intake.Intake) -> None:
    bad = edit(fixture("adt_a04_cr.hl7"), ("19480212", "Aug 15, 1942"))
    reply = frame(stage, bad)
    assert (reply.code, reply.control_id) == ("AE", "FX-A04-0001")
    assert reply.text == "PID-7: not an HL7 date/time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ])"
    raw = stage.ack_for(
        intake.Outcome("rejected", "AE", reply.text), reader.read_message(bad).header
    )
    assert reader.read_message(raw).first("ERR").get(3) == "102"
    assert rows(stage, "SELECT status, reason FROM inbound_message") == [("rejected", reply.text)]
    assert rows(stage, "SELECT count(*) FROM patient") == [(0,)]


def test_an_ignored_message_is_acked_aa_with_its_reason_stored(stage: intake.Intake) -> None:
    siu = edit(fixture("adt_a04_cr.hl7"), ("ADT^A04^ADT_A01", "SIU^S12^SIU_S12"))
    assert frame(stage, siu).code == "AA"
    assert rows(stage, "SELECT status, reason FROM inbound_message") == [
        ("ignored", "MSH-9: message type SIU^S12 is not mapped by profile generic-2.5.1")
    ]


def test_unreadable_frames_are_quarantined_and_acked_ar(stage: intake.Intake) -> None:
    reply = frame(stage, b"\x00\xffnot hl7")
    assert (reply.code, reply.control_id, reply.text) == (
        "AR",
        "",
        "no MSH segment: not an HL7 message",
    )
    reply = frame(stage, fixture("adt_a04_bad_utf8.hl7"))
    assert (reply.code, reply.control_id) == ("AR", "FX-BADUTF8-0001")
    assert rows(stage, "SELECT id, reason, control_id FROM quarantine") == [
        (1, "no MSH segment: not an HL7 message", None),
        (2, "MSH-18: the message is not valid utf-8", "FX-BADUTF8-0001"),
    ]
    assert rows(stage, "SELECT subject FROM audit_event") == [("quarantine:1",), ("quarantine:2",)]


def test_an_oversize_frame_is_quarantined_in_part(stage: intake.Intake) -> None:
    receiver = intake.MllpReceiver(stage, 2048)
    head = fixture("adt_a04_cr.hl7")
    parsed = ack.read_ack(receiver.oversize(head, 10_000, "127.0.0.1:9"))
    assert (parsed.code, parsed.control_id) == ("AR", "FX-A04-0001")
    assert "frame of 10000 bytes exceeds the 2048-byte limit" in parsed.text
    assert rows(stage, "SELECT size, length(content) FROM quarantine") == [(10_000, len(head))]


def test_no_ack_when_the_store_cannot_take_the_message(stage: intake.Intake) -> None:
    stage.conn.close()
    assert (
        intake.MllpReceiver(stage, 1_048_576).frame(fixture("adt_a04_cr.hl7"), "127.0.0.1:9")
        is None
    )


def test_a_mapping_bug_is_a_rejection_not_a_crash(
    stage: intake.Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> object:
        raise KeyError("boom")

    monkeypatch.setattr(intake.mapping, "apply", broken)
    reply = frame(stage, fixture("adt_a04_cr.hl7"))
    assert (reply.code, reply.text) == (
        "AE",
        "internal error while mapping (KeyError); reported in the log",
    )


# --- records ----------------------------------------------------------------------------------------


def test_a_merge_moves_existing_records_and_later_ones_follow_the_survivor(
    stage: intake.Intake,
) -> None:
    retired = ("MRN1001^^^NORTHCLINIC^MR", "MRN9009^^^NORTHCLINIC^MR")
    take(stage, edit(fixture("mdm_touchpoint.hl7"), retired))
    take(stage, edit(fixture("ppr_pc1_problems.hl7"), retired))
    take(stage, fixture("adt_a04_cr.hl7"))  # the survivor's own record
    assert take(stage, fixture("adt_a40_merge.hl7")).status == "mapped"
    assert rows(stage, "SELECT DISTINCT mrn FROM touchpoint") == [("MRN1001",)]
    assert rows(stage, "SELECT DISTINCT mrn FROM problem") == [("MRN1001",)]
    assert rows(stage, "SELECT mrn FROM patient") == [("MRN1001",)]
    later = edit(fixture("mdm_consent.hl7"), retired)
    assert take(stage, later).status == "mapped"
    assert rows(stage, "SELECT mrn FROM consent") == [("MRN1001",)]
    # a second merge makes the chain flat
    onward = edit(
        fixture("adt_a40_merge.hl7"),
        ("FX-A40-0001", "FX-A40-0002"),
        ("MRG|MRN9009", "MRG|MRN1001"),
        ("PID|1||MRN1001", "PID|1||MRN2000"),
    )
    assert take(stage, onward).status == "mapped"
    assert rows(stage, "SELECT retired_mrn, surviving_mrn FROM mrn_merge ORDER BY retired_mrn") == [
        ("MRN1001", "MRN2000"),
        ("MRN9009", "MRN2000"),
    ]
    assert rows(stage, "SELECT DISTINCT mrn FROM touchpoint") == [("MRN2000",)]
    back = edit(
        fixture("adt_a40_merge.hl7"),
        ("FX-A40-0001", "FX-A40-0003"),
        ("MRG|MRN9009", "MRG|MRN2000"),
        ("PID|1||MRN1001", "PID|1||MRN9009"),
    )
    result = take(stage, back)
    assert (result.status, result.ack, result.reason) == (
        "rejected",
        "AE",
        "MRG-1: the merge would make the retired MRN its own survivor",
    )


def test_a_document_id_reused_for_another_patient_is_rejected_and_nothing_is_stored(
    stage: intake.Intake,
) -> None:
    take(stage, fixture("mdm_touchpoint.hl7"))
    other = edit(
        fixture("mdm_touchpoint.hl7"),
        ("FX-TOUCH-0001", "FX-TOUCH-0002"),
        ("MRN1001^^^", "MRN7777^^^"),
    )
    result = take(stage, other)
    assert (result.status, result.ack, result.reason) == (
        "rejected",
        "AE",
        "TXA-12: this touchpoint document id is already recorded for another patient",
    )
    assert rows(stage, "SELECT mrn FROM patient") == [
        ("MRN1001",)
    ]  # the new patient was rolled back too
    assert rows(stage, "SELECT status, records FROM inbound_message WHERE id = 2") == [
        ("rejected", 0)
    ]


def test_a_corrected_document_replaces_the_touchpoint(stage: intake.Intake) -> None:
    take(stage, fixture("mdm_touchpoint.hl7"))
    corrected = edit(
        fixture("mdm_touchpoint.hl7"),
        ("FX-TOUCH-0001", "FX-TOUCH-0009"),
        ("MDM^T02^MDM_T02", "MDM^T08^MDM_T02"),
        ("CCM-MIN^Minutes^L||22", "CCM-MIN^Minutes^L||18"),
    )
    assert take(stage, corrected).status == "mapped"
    assert rows(stage, "SELECT id, minutes, message_id FROM touchpoint") == [("TP-0001", 18, 2)]


def test_services_stays_problems_care_plans(stage: intake.Intake) -> None:
    take(stage, fixture("generic_dft_p03.hl7"))
    assert rows(
        stage, "SELECT date, code, practitioner_npi, transaction_id FROM service ORDER BY code"
    ) == [
        ("2026-11-04", "99214", "1234567893", "TX-2"),
        ("2026-11-04", "G0181", "1245319599", "TX-1"),
    ]
    take(stage, fixture("generic_dft_p03_credit.hl7"))
    assert rows(stage, "SELECT code FROM service") == [("99214",)]
    take(stage, fixture("adt_a01_inpatient.hl7"))
    take(stage, fixture("adt_a03_discharge.hl7"))
    assert rows(stage, "SELECT mrn, admitted, discharged, kind, visit_id FROM stay") == [
        ("MRN1001", "2026-11-05", "2026-11-12", "inpatient", "V-7001")
    ]
    take(stage, fixture("ppr_pc1_problems.hl7"))
    take(stage, fixture("ppr_pc3_delete.hl7"))
    assert rows(stage, "SELECT code, status FROM problem ORDER BY code") == [
        ("E11.9", "active"),
        ("I10", "deleted"),
        ("J45.909", "resolved"),
    ]
    take(stage, fixture("mdm_care_plan.hl7"))
    assert rows(stage, "SELECT document_id, date, elements, shared_on FROM care_plan") == [
        (
            "CP-0001",
            "2026-11-02",
            '["problems", "goals", "medications", "symptoms", "interventions"]',
            "2026-11-03",
        )
    ]


def test_the_audit_chain_holds_and_carries_no_patient_data(stage: intake.Intake) -> None:
    for name in ("mdm_touchpoint.hl7", "adt_a04_cr.hl7", "junk_then_message.hl7"):
        intake.ingest_bytes(stage, fixture(name), name)
    assert audit.verify(stage.conn, KEY).ok
    text = " ".join(
        " ".join(map(str, r)) for r in rows(stage, "SELECT subject, detail FROM audit_event")
    )
    for phi in ("TESTPATIENT", "ALPHA", "MRN1001", "19480212", "1948-02-12", "medication list"):
        assert phi not in text


# --- files and the inbox ----------------------------------------------------------------------------


def test_ingesting_a_file_counts_every_outcome(stage: intake.Intake) -> None:
    tally = intake.ingest_bytes(
        stage, fixture("junk_then_message.hl7") + fixture("adt_a04_cr.hl7"), "x.hl7"
    )
    assert dict(tally.counts) == {"unreadable": 1, "mapped": 1, "duplicate": 1}
    assert tally.needs_attention
    assert rows(stage, "SELECT source FROM inbound_message") == [("file:x.hl7#2",)]
    assert rows(stage, "SELECT source FROM quarantine") == [("file:x.hl7#1",)]


def test_the_inbox_takes_only_stable_files_and_moves_them(
    stage: intake.Intake, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    now = time.time()
    for name, data, age in [
        ("a.hl7", fixture("batch_with_trailers.hl7"), 60),
        ("b.hl7", fixture("junk_then_message.hl7"), 60),
        ("c.hl7", fixture("mdm_touchpoint.hl7"), 1),  # still being written
        (".partial", fixture("mdm_consent.hl7"), 60),
    ]:
        (inbox / name).write_bytes(data)
        os.utime(inbox / name, (now - age, now - age))
    tally = intake.pickup_inbox(stage, inbox, stable_seconds=5, now=now)
    assert tally.files == 2
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["a.hl7"]
    assert sorted(p.name for p in (inbox / "error").iterdir()) == ["b.hl7"]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [".partial", "c.hl7"]
    # the same name again later does not overwrite the first
    (inbox / "a.hl7").write_bytes(fixture("batch_with_trailers.hl7"))
    os.utime(inbox / "a.hl7", (now - 60, now - 60))
    again = intake.pickup_inbox(stage, inbox, stable_seconds=5, now=now)
    assert dict(again.counts) == {"duplicate": 2}
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["a.hl7", "a.hl7.1"]


# --- the commands -----------------------------------------------------------------------------------


def run(config: Path, *args: str) -> int:
    return cli.main(["--config", str(config), *args])


def test_ingest_prints_a_summary_and_exits_2_after_processing_the_readable_files(
    local_instance: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = local_instance / "connector.toml"
    missing = local_instance / "missing.hl7"
    code = run(
        config,
        "ingest",
        str(FIXTURES / "batch_with_trailers.hl7"),
        str(missing),
        str(FIXTURES / "junk_then_message.hl7"),
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert (
        out.strip()
        == "ingested 2 file(s): 2 mapped, 0 ignored, 0 rejected, 0 conflict, 1 duplicate, 1 unreadable; 1 file(s) could not be read"
    )
    assert f"{missing}: no such file" in err
    assert run(config, "ingest", str(FIXTURES / "mdm_touchpoint.hl7")) == 0
    db = sqlite3.connect(load_config(config).store.path)
    assert db.execute("SELECT count(*) FROM inbound_message").fetchone()[0] == 3


def test_ingest_exits_1_when_the_store_is_unusable(
    local_instance: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = local_instance / "connector.toml"
    (local_instance / "blocker").write_text("a file where the store's folder should be")
    config.write_text(
        with_values(config.read_text(), {("store", "path"): '"blocker/connector.db"'})
    )
    assert run(config, "ingest", str(FIXTURES / "adt_a04_cr.hl7")) == 1
    assert "cannot open store" in capsys.readouterr().err


def test_mapping_check_prints_one_json_line_per_message_and_writes_nothing(
    local_instance: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = local_instance / "connector.toml"
    store_path = load_config(config).store.path
    code = run(
        config,
        "mapping",
        "check",
        str(FIXTURES / "junk_then_message.hl7"),
        str(FIXTURES / "adt_a01_inpatient.hl7"),
        "--json",
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [
        (line["index"], line["control_id"], line["type"], line["action"]) for line in lines
    ] == [
        (1, None, None, "rejected"),
        (2, "FX-A04-0001", "ADT^A04", "mapped"),
        (1, "FX-A01-0001", "ADT^A01", "mapped"),
    ]
    assert lines[0]["reason"] == "segments outside any message (no MSH before them)"
    assert lines[2]["file"] == str(FIXTURES / "adt_a01_inpatient.hl7")
    assert lines[2]["records"][1] == {
        "kind": "stay",
        "mrn": "MRN1001",
        "admitted": "2026-11-05",
        "discharged": None,
        "stay_kind": "inpatient",
        "visit_id": "V-7001",
    }
    assert set(lines[0]) == {"file", "index", "control_id", "type", "action", "reason", "records"}
    assert not store_path.exists()


def test_mapping_check_with_another_profile_and_its_failures(
    local_instance: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = local_instance / "connector.toml"
    assert (
        run(
            config,
            "mapping",
            "check",
            str(FIXTURES / "pmdsoft_dft_p03.hl7"),
            "--profile",
            "pmdsoft-2.3",
            "--json",
        )
        == 0
    )
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (
        line["records"][1]["codes"] == ["99490"]
        and line["records"][1]["practitioner_npi"] == "1356421622"
    )
    assert (
        run(
            config,
            "mapping",
            "check",
            str(FIXTURES / "adt_a04_cr.hl7"),
            "--profile",
            "nosuch",
            "--json",
        )
        == 2
    )
    assert "mapping profile 'nosuch' not found" in capsys.readouterr().err
    assert (
        run(
            config,
            "mapping",
            "check",
            str(local_instance / "missing.hl7"),
            str(FIXTURES / "adt_a04_cr.hl7"),
        )
        == 2
    )
    out, err = capsys.readouterr()
    assert "missing.hl7: no such file" in err
    assert "FX-A04-0001 ADT^A04 mapped [patient]" in out


def test_serve_mllp_serves_in_a_thread_until_told_to_stop(local_instance: Path) -> None:
    """The entry point `run` uses (connector/service.py): no signal handlers, a stop event."""
    import asyncio
    import socket
    import threading

    from ccm_connector.hl7 import mllp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = local_instance / "connector.toml"
    config.write_text(with_values(config.read_text(), {("mllp", "port"): str(port)}))
    cfg = load_config(config)
    stop = threading.Event()
    thread = threading.Thread(target=intake.serve_mllp, args=(cfg, stop), daemon=True)
    thread.start()

    async def send() -> ack.Ack:
        for _ in range(100):  # the listener binds within a few hundred milliseconds
            try:
                async with mllp.Client("127.0.0.1", port, timeout=10) as client:
                    return ack.read_ack(await client.send(fixture("mdm_touchpoint.hl7")))
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError("the listener never accepted a connection")

    try:
        assert asyncio.run(send()) == ack.Ack("AA", "FX-TOUCH-0001", "")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    db = sqlite3.connect(cfg.store.path)
    assert db.execute("SELECT count(*) FROM touchpoint").fetchone()[0] == 1
