"""The whole exchange over a real OpenSSH sshd and the real gpg binary.

export (practice) -> pull (offshore) -> push (offshore) -> returns pull (practice), plus the
partner as the plain gpg command line, the doctor's endpoint check and a changed host key.
"""

from __future__ import annotations

from pathlib import Path

import exchange_support as support  # noqa: E402  (tests/support is on sys.path)
import pytest

from ccm_connector import doctor
from ccm_connector.cli import main as connector_main
from ccm_connector.config import load_config
from ccm_connector.offshore_cli import main as offshore_main
from ccm_connector.pseudonym import pseudonym, read_key
from ccm_connector.store import open_store


@pytest.fixture
def over_sftp(local_instance: Path, sshd, remote_root: Path) -> Path:
    """The local instance with both sides pointed at the sshd instead of the local drop folder."""
    support.seed_store(local_instance / "data" / "connector.db")
    values = support.sftp_values(sshd, remote_root)
    support.set_values(local_instance / "connector.toml", values)
    support.set_values(local_instance / "partner" / "offshore.toml", values)
    return local_instance


def practice(instance: Path, *args: str) -> int:
    return connector_main(["--config", str(instance / "connector.toml"), *args])


def offshore(instance: Path, *args: str) -> int:
    return offshore_main(["--config", str(instance / "partner" / "offshore.toml"), *args])


def test_full_round_trip_over_sftp(over_sftp: Path, remote_root: Path, tmp_path: Path, capsys):
    cfg = load_config(over_sftp / "connector.toml")
    assert cfg.drop.kind == "sftp"
    assert practice(over_sftp, "queue", "export") == 0
    assert [p.name for p in (remote_root / "queues").iterdir()] == ["wq_LOCALDEMO_000001.pgp"]

    assert offshore(over_sftp, "pull") == 0
    assert "LOCALDEMO-000001 (1 patients, 3 touchpoints)" in capsys.readouterr().out
    assert (over_sftp / "partner" / "work" / "LOCALDEMO-000001.xml").exists()
    assert [p.name for p in (remote_root / "processed").iterdir()] == ["wq_LOCALDEMO_000001.pgp"]

    p = pseudonym(read_key(cfg.identity.pseudonym_key_file), support.MRN)
    ret = tmp_path / "return.xml"
    ret.write_bytes(support.a_return(p))
    assert offshore(over_sftp, "push", str(ret)) == 0
    assert [p.name for p in (remote_root / "returns").iterdir()] == ["rt_LOCALDEMO_R-0001.pgp"]

    assert practice(over_sftp, "returns", "pull") == 0
    assert "1 accepted, 0 refused" in capsys.readouterr().out
    assert list((remote_root / "returns").iterdir()) == []
    assert sorted(p.name for p in (remote_root / "processed").iterdir()) == [
        "rt_LOCALDEMO_R-0001.pgp",
        "wq_LOCALDEMO_000001.pgp",
    ]
    conn = open_store(cfg.store.path)
    assert conn.execute("SELECT mrn FROM return_entry").fetchone()[0] == support.MRN
    kinds = [r[0] for r in conn.execute("SELECT kind FROM audit_event ORDER BY seq")]
    conn.close()
    assert kinds == ["queue.sealed", "file.sent", "file.received"]

    # a second run of every step changes nothing
    assert practice(over_sftp, "queue", "export") == 0
    assert offshore(over_sftp, "pull") == 0
    assert practice(over_sftp, "returns", "pull") == 0
    assert list((remote_root / "queues").iterdir()) == []


def test_a_return_made_by_plain_gpg_and_uploaded_is_accepted(
    over_sftp: Path, sshd, remote_root: Path
):
    cfg = load_config(over_sftp / "connector.toml")
    document = support.a_return(pseudonym(read_key(cfg.identity.pseudonym_key_file), support.MRN))
    sealed = support.gpg_cli(
        over_sftp / "partner" / "gnupg",
        "--encrypt",
        "--sign",
        "-u",
        cfg.pgp.partner_fingerprints[0],
        "-r",
        cfg.pgp.practice_fingerprint,
        data=document,
    ).stdout
    (remote_root / "returns" / "rt_LOCALDEMO_R-0001.pgp").write_bytes(sealed)
    assert practice(over_sftp, "returns", "pull") == 0


def test_our_queue_decrypts_with_plain_gpg_as_the_partner(over_sftp: Path, remote_root: Path):
    cfg = load_config(over_sftp / "connector.toml")
    assert practice(over_sftp, "queue", "export") == 0
    sealed = (remote_root / "queues" / "wq_LOCALDEMO_000001.pgp").read_bytes()
    result = support.gpg_cli(
        over_sftp / "partner" / "gnupg", "--status-fd", "2", "--decrypt", data=sealed
    )
    assert result.stdout.startswith(b"<?xml") and b"urn:ccm-connector:workqueue:1" in result.stdout
    status = result.stderr.decode()
    assert (
        "[GNUPG:] GOODSIG" in status
        and f"[GNUPG:] VALIDSIG {cfg.pgp.practice_fingerprint}" in status
    )


def test_a_changed_host_key_stops_the_export_before_anything_is_sealed(
    local_instance, sshd, remote_root, capsys
):
    support.seed_store(local_instance / "data" / "connector.db")
    support.set_values(
        local_instance / "connector.toml",
        support.sftp_values(sshd, remote_root, sshd.other_fingerprint),
    )
    assert practice(local_instance, "queue", "export") == 1
    assert "not the pinned" in capsys.readouterr().err
    assert list((remote_root / "queues").iterdir()) == []
    conn = open_store(local_instance / "data" / "connector.db")
    assert conn.execute("SELECT count(*) FROM queue_batch").fetchone()[0] == 0
    conn.close()


def test_doctor_checks_the_sftp_endpoint(over_sftp: Path, sshd, remote_root: Path):
    cfg = load_config(over_sftp / "connector.toml")
    items = {i.what: i for i in doctor.check_drop(cfg)}
    assert items["SFTP host key"].status == "ok" and items["SFTP drop"].status == "ok"
    (remote_root / "processed").rmdir()
    items = {i.what: i for i in doctor.check_drop(cfg)}
    assert items["SFTP drop"].status == "fail" and "processed" in items["SFTP drop"].detail
    support.set_values(
        over_sftp / "connector.toml",
        {("sftp", "host_key_fingerprint"): f'"{sshd.other_fingerprint}"'},
    )
    [item] = doctor.check_drop(load_config(over_sftp / "connector.toml"))
    assert (item.status, item.what) == ("fail", "SFTP host key")
    assert sshd.host_key_fingerprint in item.detail


def test_sftp_drop_rejects_wrong_host_key_type_from_config(over_sftp: Path):
    support.set_values(
        over_sftp / "connector.toml", {("sftp", "host_key_type"): '"ecdsa-sha2-nistp256"'}
    )
    cfg = load_config(over_sftp / "connector.toml")
    [item] = doctor.check_drop(cfg)
    assert item.status == "fail"
