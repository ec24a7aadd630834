"""The `queue export` stage over a local instance (real gpg, local drop)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import exchange_support as support  # noqa: E402  (tests/support is on sys.path)
import pytest

from ccm_connector import audit
from ccm_connector.cli import main as cli_main
from ccm_connector.config import load_config
from ccm_connector.errors import InputError
from ccm_connector.exchange_documents import read_workqueue
from ccm_connector.instance import with_values
from ccm_connector.pseudonym import pseudonym, read_key
from ccm_connector.queue_export import export_queue, next_threshold, redact
from ccm_connector.sftp import documents, envelope, transport
from ccm_connector.store import open_store

NS = {"wq": documents.WORKQUEUE_NS}


@pytest.fixture
def instance(local_instance: Path) -> Path:
    support.seed_store(local_instance / "data" / "connector.db")
    return local_instance


def cfg_of(folder: Path, **values: str):
    config = folder / "connector.toml"
    if values:
        pairs = {tuple(k.split("__")): v for k, v in values.items()}
        config.write_text(with_values(config.read_text(), pairs))
    return load_config(config)


def open_as_partner(folder: Path, data: bytes) -> bytes:
    cfg = cfg_of(folder)
    opened = envelope.open_envelope(
        folder / "partner" / "gnupg", data, [cfg.pgp.practice_fingerprint], support.short_dir("o")
    )
    return opened.read_and_remove()


def queue_files(folder: Path) -> list[Path]:
    return sorted((folder / "drop" / "queues").iterdir())


def test_export_seals_publishes_and_records_one_batch(instance):
    cfg = cfg_of(instance)
    result = export_queue(cfg)
    assert result.batch_id == "LOCALDEMO-000001" and result.file_name == "wq_LOCALDEMO_000001.pgp"
    assert result.patients == 1 and result.touchpoints == 3
    [file] = queue_files(instance)
    sealed = file.read_bytes()
    document = open_as_partner(instance, sealed)
    summary = read_workqueue(document)  # valid against the shipped XSD, as the team checks it
    assert (summary.batch_id, summary.patients, summary.touchpoints) == ("LOCALDEMO-000001", 1, 3)

    conn = open_store(cfg.store.path)
    batch = conn.execute("SELECT * FROM queue_batch").fetchone()
    assert batch["status"] == "sent" and batch["sent_at"]
    assert batch["content_hash"] == __import__("hashlib").sha256(sealed).hexdigest()
    assert json.loads(batch["recipients"]) == [
        *cfg.pgp.partner_fingerprints,
        cfg.pgp.practice_fingerprint,
    ]
    items = {
        (r["kind"], r["item_key"]) for r in conn.execute("SELECT kind, item_key FROM queue_item")
    }
    assert (
        ("touchpoint", "TP-1") in items
        and ("touchpoint", "TP-2") in items
        and ("care_plan", "CP-1") in items
    )
    assert ("touchpoint", "TP-X") not in items, "a withdrawn patient's touchpoints never leave"
    events = [
        (r["kind"], r["subject"]) for r in conn.execute("SELECT kind, subject FROM audit_event")
    ]
    assert ("queue.sealed", "LOCALDEMO-000001") in events
    assert ("file.sent", batch["content_hash"]) in events
    sent = json.loads(
        conn.execute("SELECT detail FROM audit_event WHERE kind = 'file.sent'").fetchone()[0]
    )
    assert (
        sent["signer"] == cfg.pgp.practice_fingerprint
        and cfg.pgp.partner_fingerprints[0] in sent["recipients"]
    )
    assert audit.verify(conn, audit.read_key(cfg.audit.key_file)).ok
    conn.close()


def test_the_queue_content(instance):
    cfg = cfg_of(instance)
    export_queue(cfg)
    root = documents.parse_safe(
        open_as_partner(instance, queue_files(instance)[0].read_bytes())
    ).getroot()
    [patient] = root.findall("wq:patients/wq:patient", NS)
    assert patient.get("pseudonym") == pseudonym(
        read_key(cfg.identity.pseudonym_key_file), support.MRN
    )
    enrollment = patient.find("wq:enrollment", NS)
    assert (enrollment.get("program"), enrollment.get("billingPractitioner")) == (
        "ccm",
        "1234567893",
    )
    # RN7 15 + MA3 10 (recorded under the merged-away MRN) count; the offshore account's 30 do not.
    assert patient.find("wq:monthToDate", NS).get("countableMinutes") == "25"
    assert enrollment.get("nextThreshold") == "40"
    tps = {t.get("id"): t for t in patient.iterfind("wq:touchpoints/wq:touchpoint", NS)}
    assert set(tps) == {"TP-1", "TP-2", "TP-3"}
    assert (
        tps["TP-1"].get("role") == "clinical" and tps["TP-1"].get("start") == "09:00"
    )  # Chicago time
    assert {c.get("code") for c in patient.iterfind("wq:conditions/wq:condition", NS)} == {
        "E11.9",
        "I10",
    }
    assert [e.text for e in patient.iterfind("wq:carePlan/wq:element", NS)] == [
        "Goals",
        "Medications",
    ]
    staff = {m.get("id"): m.get("role") for m in root.iterfind("wq:staff/wq:member", NS)}
    assert staff == {"RN7": "clinical", "MA3": "clinical", "OFF1": "non_clinical"}
    assert root.get("identifiers") == "false" and patient.find("wq:identifiers", NS) is None


def test_with_identifiers_off_no_name_birth_date_or_mrn_appears(instance):
    export_queue(cfg_of(instance))
    sealed = queue_files(instance)[0].read_bytes()
    text = open_as_partner(instance, sealed).decode()
    for needle in (support.MRN, support.RETIRED_MRN, support.FAMILY, support.GIVEN, support.MBI):
        assert needle.lower() not in text.lower()
    for form in ("1948-03-17", "03/17/1948", "3/17/1948", "19480317"):
        assert form not in text
    assert "[redacted]" in text  # TP-1's summary named the patient; the words were removed
    assert "Wanda" not in text and "Withdrawn" not in text


def test_nothing_in_the_queue_file_is_readable_without_a_key(instance):
    export_queue(cfg_of(instance))
    sealed = queue_files(instance)[0].read_bytes()
    for needle in (
        b"workQueue",
        b"urn:ccm-connector",
        b"TP-1",
        b"Goals",
        b"E11.9",
        support.MRN.encode(),
        b"<?xml",
    ):
        assert needle not in sealed
    stranger = support.short_dir("s")
    envelope.keyring.prepare_home(stranger)
    result = support.gpg_cli(stranger, "--decrypt", data=sealed, check=False)
    envelope.keyring.stop_agent(stranger)
    assert result.returncode != 0 and result.stdout == b""


def test_with_identifiers_on_they_are_sent(instance):
    cfg = cfg_of(instance, identity__send_identifiers="true")
    export_queue(cfg)
    root = documents.parse_safe(
        open_as_partner(instance, queue_files(instance)[0].read_bytes())
    ).getroot()
    ids = root.find("wq:patients/wq:patient/wq:identifiers", NS)
    assert (ids.get("mrn"), ids.get("family"), ids.get("birthDate")) == (
        support.MRN,
        support.FAMILY,
        "1948-03-17",
    )


def test_a_second_run_sends_nothing_and_new_touchpoints_go_in_the_next_batch(instance):
    cfg = cfg_of(instance)
    export_queue(cfg)
    again = export_queue(cfg)
    assert again.batch_id is None and "nothing new" in again.summary()
    assert len(queue_files(instance)) == 1
    support.add_touchpoint(cfg.store.path, "TP-4", minutes=20)
    third = export_queue(cfg)
    assert third.batch_id == "LOCALDEMO-000002" and third.touchpoints == 1
    root = documents.parse_safe(
        open_as_partner(instance, queue_files(instance)[1].read_bytes())
    ).getroot()
    assert [t.get("id") for t in root.iterfind(".//wq:touchpoint", NS)] == ["TP-4"]
    assert root.find(".//wq:monthToDate", NS).get("countableMinutes") == "45"
    assert root.find(".//wq:enrollment", NS).get("nextThreshold") == "60"


class FailingOnce:
    """A drop whose first publish fails after sealing (a crash or a dropped connection)."""

    def __init__(self, inner: transport.Drop) -> None:
        self.inner, self.failed = inner, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def publish(self, folder, name, data):
        if not self.failed:
            self.failed = True
            raise transport.TransportError("connection dropped")
        return self.inner.publish(folder, name, data)


def test_an_export_interrupted_after_sealing_re_sends_the_same_bytes(instance):
    cfg = cfg_of(instance)
    drop = FailingOnce(transport.LocalDrop(instance / "drop"))
    with pytest.raises(Exception, match="connection dropped"):
        export_queue(cfg, drop=drop)
    conn = open_store(cfg.store.path)
    row = conn.execute("SELECT status, content_hash, sealed FROM queue_batch").fetchone()
    conn.close()
    assert row["status"] == "sealed" and queue_files(instance) == []
    support.add_touchpoint(
        cfg.store.path, "TP-5"
    )  # new work arriving meanwhile goes in a new batch
    result = export_queue(cfg, drop=drop)
    assert result.republished == ("wq_LOCALDEMO_000001.pgp",)
    files = queue_files(instance)
    assert [f.name for f in files] == ["wq_LOCALDEMO_000001.pgp", "wq_LOCALDEMO_000002.pgp"]
    assert files[0].read_bytes() == bytes(row["sealed"]), (
        "never rebuilt: byte for byte what was sealed"
    )
    conn = open_store(cfg.store.path)
    assert [r[0] for r in conn.execute("SELECT status FROM queue_batch ORDER BY sequence")] == [
        "sent",
        "sent",
    ]
    conn.close()


@pytest.mark.parametrize(
    "values, reason",
    [
        ({"partner__baa_effective": '""'}, "baa_effective is not set"),
        ({"partner__baa_effective": '"2999-01-01"', "partner__baa_end": '""'}, "in the future"),
        (
            {"partner__baa_effective": '"2020-01-01"', "partner__baa_end": '"2021-01-01"'},
            "has ended",
        ),
    ],
)
def test_no_queue_leaves_without_a_baa_in_force(instance, values, reason):
    cfg = cfg_of(instance, **values)
    with pytest.raises(InputError, match=reason):
        export_queue(cfg)
    assert queue_files(instance) == []
    conn = open_store(cfg.store.path)
    assert conn.execute("SELECT count(*) FROM queue_batch").fetchone()[0] == 0
    conn.close()


def test_cli_queue_export_with_no_baa_exits_2(instance, capsys):
    cfg_of(instance, partner__baa_effective='""')
    assert cli_main(["--config", str(instance / "connector.toml"), "queue", "export"]) == 2
    assert "baa_effective" in capsys.readouterr().err
    assert queue_files(instance) == []


def test_cli_queue_export_prints_one_line(instance, capsys):
    assert cli_main(["--config", str(instance / "connector.toml"), "queue", "export"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "queue export: sent wq_LOCALDEMO_000001.pgp (batch LOCALDEMO-000001: 1 patient(s), 3 new touchpoint(s))"
    ]


def test_next_threshold_and_redaction():
    assert next_threshold((20, 40, 60), 0) == 20
    assert next_threshold((20, 40, 60), 20) == 40
    assert next_threshold((20, 40, 60), 60) is None
    assert next_threshold((), 5) is None
    patient = {"family": "Lee", "given": "Al", "mbi": None, "birth_date": "1950-02-03"}
    text = redact(
        "Al Lee (02/03/1950, MRN7) called; Allegra and Leeds unaffected", patient, {"MRN7"}
    )
    assert (
        text
        == "[redacted] [redacted] ([redacted], [redacted]) called; Allegra and Leeds unaffected"
    )


def test_export_time_decides_the_period_in_the_practice_zone(instance):
    cfg = cfg_of(instance, partner__baa_effective='"2020-01-01"')
    # 03:00 UTC on the 1st is still the previous month in Chicago.
    now = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
    export_queue(cfg, now=now)
    root = documents.parse_safe(
        open_as_partner(instance, queue_files(instance)[0].read_bytes())
    ).getroot()
    assert root.get("period") == "2026-11"
