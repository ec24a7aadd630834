"""The `returns pull` stage over a local instance (real gpg, local drop)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import exchange_support as support  # noqa: E402  (tests/support is on sys.path)
import pytest

from ccm_connector import audit, logs
from ccm_connector.cli import main as cli_main
from ccm_connector.config import load_config
from ccm_connector.instance import with_values
from ccm_connector.pseudonym import pseudonym, read_key
from ccm_connector.returns_pull import pull_returns
from ccm_connector.sftp import envelope, keyring
from ccm_connector.store import open_store


@pytest.fixture
def instance(local_instance: Path) -> Path:
    support.seed_store(local_instance / "data" / "connector.db")
    return local_instance


def cfg_of(folder: Path, **values: str):
    config = folder / "connector.toml"
    if values:
        config.write_text(
            with_values(config.read_text(), {tuple(k.split("__")): v for k, v in values.items()})
        )
    return load_config(config)


def patient_pseudonym(cfg) -> str:
    return pseudonym(read_key(cfg.identity.pseudonym_key_file), support.MRN)


def seal_as_partner(folder: Path, document: bytes) -> bytes:
    cfg = cfg_of(folder)
    partner = cfg.pgp.partner_fingerprints[0]
    return envelope.seal(
        folder / "partner" / "gnupg", document, [cfg.pgp.practice_fingerprint], partner
    )


def drop_return(folder: Path, name: str, sealed: bytes) -> Path:
    path = folder / "drop" / "returns" / name
    path.write_bytes(sealed)
    return path


def rows(cfg, sql: str, *args) -> list:
    conn = open_store(cfg.store.path)
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def workdir_empty(cfg) -> bool:
    work = cfg.store.data_dir / "work" / "returns"
    return not work.exists() or list(work.iterdir()) == []


def test_an_accepted_return_lands_in_the_store_ready_for_reconciliation(instance):
    cfg = cfg_of(instance)
    p = patient_pseudonym(cfg)
    sealed = seal_as_partner(instance, support.a_return(p, entry_ids=("E-1", "E-2")))
    drop_return(instance, "rt_LOCALDEMO_R-0001.pgp", sealed)
    result = pull_returns(cfg)
    assert result.accepted == ["R-0001"] and result.refused == []
    [file] = rows(cfg, "SELECT * FROM return_file")
    assert file["status"] == "accepted" and file["return_id"] == "R-0001"
    assert file["content_hash"] == hashlib.sha256(sealed).hexdigest()
    assert file["signer"] == cfg.pgp.partner_fingerprints[0]
    assert json.loads(file["answers"]) == ["LOCALDEMO-000001"] and json.loads(
        file["prepared_by"]
    ) == ["OFF1"]
    entries = rows(cfg, "SELECT * FROM return_entry ORDER BY entry_id")
    assert [(e["entry_id"], e["mrn"], json.loads(e["touchpoint_ids"])) for e in entries] == [
        ("E-1", support.MRN, ["TP-1"]),
        ("E-2", support.MRN, ["TP-1"]),
    ]
    [draft] = rows(cfg, "SELECT * FROM care_plan_draft")
    assert draft["revises"] == "CP-1" and json.loads(draft["changes"])[0]["action"] == "revise"
    [code] = rows(cfg, "SELECT * FROM proposed_code")
    assert (code["mrn"], code["code"], code["units"]) == (support.MRN, "99490", 1)
    assert (instance / "drop" / "processed" / "rt_LOCALDEMO_R-0001.pgp").exists()
    assert list((instance / "drop" / "returns").iterdir()) == []
    assert workdir_empty(cfg)
    kinds = [r["kind"] for r in rows(cfg, "SELECT kind FROM audit_event")]
    assert kinds == ["file.received"]
    conn = open_store(cfg.store.path)
    assert audit.verify(conn, audit.read_key(cfg.audit.key_file)).ok
    conn.close()


def test_a_second_pull_ingests_nothing_and_after_pickup_delete_removes_the_file(instance):
    cfg = cfg_of(instance, drop__after_pickup='"delete"')
    drop_return(
        instance,
        "rt_LOCALDEMO_R-0001.pgp",
        seal_as_partner(instance, support.a_return(patient_pseudonym(cfg))),
    )
    assert pull_returns(cfg).accepted == ["R-0001"]
    again = pull_returns(cfg)
    assert again.accepted == [] and again.refused == []
    assert list((instance / "drop" / "returns").iterdir()) == []
    assert list((instance / "drop" / "processed").iterdir()) == []
    assert len(rows(cfg, "SELECT * FROM return_entry")) == 1


def test_a_crash_between_commit_and_cleanup_only_finishes_the_cleanup(instance, monkeypatch):
    cfg = cfg_of(instance)
    drop_return(
        instance,
        "rt_LOCALDEMO_R-0001.pgp",
        seal_as_partner(instance, support.a_return(patient_pseudonym(cfg))),
    )
    from ccm_connector import returns_pull

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(returns_pull, "_after_pickup", crash)
    with pytest.raises(KeyboardInterrupt):
        pull_returns(cfg)
    monkeypatch.undo()
    result = pull_returns(cfg)
    assert result.cleaned == 1 and result.accepted == [] and result.refused == []
    assert len(rows(cfg, "SELECT * FROM return_entry")) == 1
    assert (instance / "drop" / "processed" / "rt_LOCALDEMO_R-0001.pgp").exists()


def test_a_replayed_return_is_refused(instance):
    cfg = cfg_of(instance)
    p = patient_pseudonym(cfg)
    sealed = seal_as_partner(instance, support.a_return(p))
    drop_return(instance, "rt_LOCALDEMO_R-0001.pgp", sealed)
    pull_returns(cfg)
    # the same bytes under another name
    drop_return(instance, "rt_LOCALDEMO_R-0002.pgp", sealed)
    # the same return re-encrypted (new ciphertext, same return id)
    drop_return(instance, "rt_LOCALDEMO_R-0001.pgp", seal_as_partner(instance, support.a_return(p)))
    # a new return that re-uses an entry id: stored, for reconciliation to exclude (DUPLICATE_ENTRY)
    drop_return(
        instance,
        "rt_LOCALDEMO_R-0003.pgp",
        seal_as_partner(instance, support.a_return(p, return_id="R-0003")),
    )
    result = pull_returns(cfg)
    reasons = dict(result.refused)
    assert result.accepted == ["R-0003"]
    assert set(reasons) == {"rt_LOCALDEMO_R-0001.pgp", "rt_LOCALDEMO_R-0002.pgp"}
    assert "replay: the same file was already received" in reasons["rt_LOCALDEMO_R-0002.pgp"]
    assert "replay: return R-0001 was already ingested" in reasons["rt_LOCALDEMO_R-0001.pgp"]
    entries = rows(cfg, "SELECT entry_id, return_file_id FROM return_entry ORDER BY return_file_id")
    assert [e["entry_id"] for e in entries] == ["E-1", "E-1"]
    assert len(rows(cfg, "SELECT * FROM exchange_quarantine")) == 2
    assert workdir_empty(cfg)


def refused_once(instance, name: str, sealed: bytes, reason: str) -> None:
    cfg = cfg_of(instance)
    drop_return(instance, name, sealed)
    result = pull_returns(cfg)
    assert result.accepted == []
    assert len(result.refused) == 1 and reason in result.refused[0][1]
    [file] = rows(cfg, "SELECT * FROM return_file")
    assert file["status"] == "refused" and reason in file["reason"]
    [q] = rows(cfg, "SELECT * FROM exchange_quarantine")
    assert q["content"] == sealed and reason in q["reason"]  # ciphertext kept, never the plaintext
    assert rows(cfg, "SELECT * FROM return_entry") == []
    assert workdir_empty(cfg), "decrypted bytes are deleted"
    assert [r["kind"] for r in rows(cfg, "SELECT kind FROM audit_event")] == ["file.refused"]


def test_a_return_that_fails_its_xsd_is_refused(instance):
    cfg = cfg_of(instance)
    bad = support.a_return(patient_pseudonym(cfg)).replace(b'minutes="15"', b'minutes="-5"')
    refused_once(instance, "rt_LOCALDEMO_R-0001.pgp", seal_as_partner(instance, bad), "schema")


def test_a_return_with_a_doctype_is_refused(instance):
    cfg = cfg_of(instance)
    bad = support.a_return(patient_pseudonym(cfg)).replace(
        b"<return", b'<!DOCTYPE return [<!ENTITY x "y">]>\n<return', 1
    )
    refused_once(instance, "rt_LOCALDEMO_R-0001.pgp", seal_as_partner(instance, bad), "DOCTYPE")


def test_an_unsigned_return_is_refused(instance):
    cfg = cfg_of(instance)
    unsigned = support.gpg_cli(
        instance / "partner" / "gnupg",
        "--encrypt",
        "-r",
        cfg.pgp.practice_fingerprint,
        data=support.a_return("P" + "A" * 26),
    ).stdout
    refused_once(instance, "rt_LOCALDEMO_R-0001.pgp", unsigned, "not signed")


def test_a_return_signed_by_an_unpinned_key_in_the_keyring_is_refused(instance):
    cfg = cfg_of(instance)
    home = support.short_dir("x")
    keyring.prepare_home(home)
    stranger = keyring.generate_key(home, "Stranger", "x@test.invalid")
    keyring.gpg_for(cfg.pgp.gnupg_home).import_keys(keyring.export_public(home, stranger))
    keyring.import_pinned(
        home,
        keyring.export_public(cfg.pgp.gnupg_home, cfg.pgp.practice_fingerprint),
        cfg.pgp.practice_fingerprint,
    )
    sealed = envelope.seal(
        home, support.a_return("P" + "A" * 26), [cfg.pgp.practice_fingerprint], stranger
    )
    keyring.stop_agent(home)
    refused_once(instance, "rt_LOCALDEMO_R-0001.pgp", sealed, "not pinned")


def test_a_tampered_return_is_refused(instance):
    sealed = bytearray(seal_as_partner(instance, support.a_return("P" + "A" * 26)))
    sealed[len(sealed) // 2] ^= 0x40
    refused_once(instance, "rt_LOCALDEMO_R-0001.pgp", bytes(sealed), "")


def test_a_name_that_does_not_match_the_return_id_is_refused(instance):
    sealed = seal_as_partner(instance, support.a_return("P" + "A" * 26, return_id="R-0009"))
    refused_once(instance, "rt_LOCALDEMO_R-0001.pgp", sealed, "does not match the return id")


@pytest.mark.parametrize(
    "name, reason",
    [
        ("rt_LOCALDEMO_R1\n.pgp", "control character"),
        ("rt_LOCALDEMO_..R1.pgp", "'..'"),
        ("rt_OTHER_R1.pgp", "another practice"),
        ("notes.txt", "not a return file name"),
    ],
)
def test_bad_names_are_refused_once_and_never_read(instance, name, reason):
    cfg = cfg_of(instance)
    path = drop_return(instance, name, b"never read")
    first = pull_returns(cfg)
    assert len(first.refused) == 1 and reason in first.refused[0][1]
    second = pull_returns(cfg)
    assert second.refused == [] and second.skipped == 1
    [q] = rows(cfg, "SELECT * FROM exchange_quarantine")
    assert q["content"] is None and q["content_hash"] is None and "\n" not in q["name"]
    assert path.exists(), "left where it is; nothing is built from its name"
    assert rows(cfg, "SELECT * FROM return_file") == []


def test_a_path_traversal_name_from_the_server_is_refused_without_a_read(instance):
    """A hostile server listing a name with ../ (impossible on a local disk): refused, never read."""
    from ccm_connector.sftp import transport

    cfg = cfg_of(instance)

    class HostileDrop(transport.LocalDrop):
        def listing(self, folder):
            return [transport.Listed("../queues/rt_LOCALDEMO_R1.pgp", 10, 0)]

        def read(self, *args, **kwargs):
            raise AssertionError("a refused name is never read")

    result = pull_returns(cfg, drop=HostileDrop(instance / "drop"))
    assert result.refused == [
        ("../queues/rt_LOCALDEMO_R1.pgp", "file name contains a path separator")
    ]


def test_files_in_flight_are_skipped(instance):
    cfg = cfg_of(instance)
    drop_return(instance, ".rt_LOCALDEMO_R-0001.pgp.part", b"half")
    result = pull_returns(cfg)
    assert result.refused == [] and result.skipped == 1
    assert rows(cfg, "SELECT * FROM exchange_quarantine") == []


def test_cli_returns_pull_exit_codes(instance, capsys):
    cfg = cfg_of(instance)
    config = str(instance / "connector.toml")
    assert cli_main(["--config", config, "returns", "pull"]) == 0
    assert capsys.readouterr().out.startswith("returns pull: 0 accepted, 0 refused")
    drop_return(instance, "rt_LOCALDEMO_R-0001.pgp", b"not openpgp")
    assert cli_main(["--config", config, "returns", "pull"]) == 1
    out = capsys.readouterr().out
    assert "1 refused" in out and "rt_LOCALDEMO_R-0001.pgp: decryption failed" in out
    assert cfg.store.path.exists()


def test_schema_messages_quoting_the_document_stay_out_of_logs_audit_and_output(instance):
    cfg = cfg_of(instance)
    bad = support.a_return(patient_pseudonym(cfg)).replace(
        f'patient="{patient_pseudonym(cfg)}"'.encode(), b'patient="Quentin Zebrowski"', 1
    )
    drop_return(instance, "rt_LOCALDEMO_R-0001.pgp", seal_as_partner(instance, bad))
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(logs.JsonLines().format(record))

    handler = Capture()
    root = logging.getLogger(logs.ROOT)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        result = pull_returns(cfg)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    [(_, reason)] = result.refused
    assert "schema" in reason and "line" in reason and "Zebrowski" not in reason
    assert any("return.refused" in line for line in lines)
    assert not any("Zebrowski" in line for line in lines)
    assert all("Zebrowski" not in r["detail"] for r in rows(cfg, "SELECT detail FROM audit_event"))
    [file] = rows(cfg, "SELECT reason FROM return_file")
    assert "Zebrowski" not in file["reason"]  # status and reports show this one
    [q] = rows(cfg, "SELECT reason, detail FROM exchange_quarantine")
    assert "Zebrowski" not in q["reason"]
    assert "Zebrowski" in q["detail"], "the full schema message is kept for investigation"
