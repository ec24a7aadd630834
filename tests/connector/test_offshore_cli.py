"""`ccm-offshore` over an `init --local` instance: the simulated partner works as configured."""

from __future__ import annotations

import json
from pathlib import Path

import exchange_support as support  # noqa: E402  (tests/support is on sys.path)
import pytest

from ccm_connector.cli import main as connector_main
from ccm_connector.config import load_config
from ccm_connector.offshore_cli import main as offshore_main
from ccm_connector.offshore_config import load_offshore_config
from ccm_connector.pseudonym import pseudonym, read_key
from ccm_connector.store import open_store


@pytest.fixture
def instance(local_instance: Path) -> Path:
    support.seed_store(local_instance / "data" / "connector.db")
    return local_instance


def run(instance: Path, *args: str) -> int:
    return offshore_main(["--config", str(instance / "partner" / "offshore.toml"), *args])


def practice(instance: Path, *args: str) -> int:
    return connector_main(["--config", str(instance / "connector.toml"), *args])


def the_return(instance: Path, tmp_path: Path, **kw) -> Path:
    cfg = load_config(instance / "connector.toml")
    p = pseudonym(read_key(cfg.identity.pseudonym_key_file), support.MRN)
    path = tmp_path / "return.xml"
    path.write_bytes(support.a_return(p, **kw))
    return path


def test_init_local_configures_the_partner_completely(instance):
    cfg = load_offshore_config(instance / "partner" / "offshore.toml")
    practice_cfg = load_config(instance / "connector.toml")
    assert cfg.team.practice_id == practice_cfg.practice.id
    assert cfg.pgp.practice_fingerprints == (practice_cfg.pgp.practice_fingerprint,)
    assert cfg.pgp.team_fingerprint == practice_cfg.pgp.partner_fingerprints[0]
    assert (
        cfg.drop.kind == "local" and cfg.drop.local_path.resolve() == (instance / "drop").resolve()
    )
    assert cfg.team.work_dir == (instance / "partner" / "work")


def test_export_pull_push_pull_round_trip_on_the_local_instance(instance, tmp_path, capsys):
    assert practice(instance, "queue", "export") == 0
    assert run(instance, "pull") == 0
    out = capsys.readouterr().out
    assert "pulled 1 work queue(s)" in out and "LOCALDEMO-000001 (1 patients, 3 touchpoints)" in out
    queue = instance / "partner" / "work" / "LOCALDEMO-000001.xml"
    assert b"urn:ccm-connector:workqueue:1" in queue.read_bytes()
    assert (queue.stat().st_mode & 0o777) == 0o600
    assert (instance / "drop" / "processed" / "wq_LOCALDEMO_000001.pgp").exists()
    assert run(instance, "pull") == 0
    assert "pulled 0 work queue(s)" in capsys.readouterr().out

    ret = the_return(instance, tmp_path)
    assert run(instance, "push", str(ret)) == 0
    assert capsys.readouterr().out.startswith("push: sent rt_LOCALDEMO_R-0001.pgp")
    assert [p.name for p in (instance / "drop" / "returns").iterdir()] == [
        "rt_LOCALDEMO_R-0001.pgp"
    ]
    assert run(instance, "push", str(ret)) == 0  # idempotent
    assert "already sent" in capsys.readouterr().out

    assert practice(instance, "returns", "pull") == 0
    assert capsys.readouterr().out.startswith("returns pull: 1 accepted, 0 refused")
    conn = open_store(instance / "data" / "connector.db")
    [entry] = conn.execute("SELECT entry_id, mrn FROM return_entry").fetchall()
    conn.close()
    assert tuple(entry) == ("E-1", support.MRN)


def test_push_refuses_new_content_under_a_used_return_id(instance, tmp_path, capsys):
    ret = the_return(instance, tmp_path)
    assert run(instance, "push", str(ret)) == 0
    ret.write_bytes(ret.read_bytes().replace(b'minutes="15"', b'minutes="16"'))
    assert run(instance, "push", str(ret)) == 2
    assert "already pushed with other content" in capsys.readouterr().err


def test_push_refuses_an_invalid_return_and_sends_nothing(instance, tmp_path, capsys):
    ret = the_return(instance, tmp_path)
    ret.write_bytes(ret.read_bytes().replace(b'code="99490"', b'code="99-90"'))
    assert run(instance, "push", str(ret)) == 2
    assert "code" in capsys.readouterr().err
    assert list((instance / "drop" / "returns").iterdir()) == []


def test_push_refuses_a_return_for_another_practice(instance, tmp_path, capsys):
    ret = the_return(instance, tmp_path, practice="OTHER")
    assert run(instance, "push", str(ret)) == 2
    assert "not this team's practice" in capsys.readouterr().err


def test_validate_reports_problems_with_line_numbers(tmp_path, capsys):
    good = tmp_path / "good.xml"
    good.write_bytes(support.a_return("P" + "A" * 26))
    assert offshore_main(["validate", str(good)]) == 0
    assert "valid return R-0001 for LOCALDEMO: 1 entries" in capsys.readouterr().out
    data = good.read_bytes().replace(b'minutes="15"', b'minutes="zero"')
    bad = tmp_path / "bad.xml"
    bad.write_bytes(data)
    line = next(i for i, text in enumerate(data.splitlines(), 1) if b'minutes="zero"' in text)
    assert offshore_main(["validate", str(bad)]) == 2
    assert f"{bad}:{line}: " in capsys.readouterr().err
    doctype = tmp_path / "doctype.xml"
    doctype.write_bytes(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><return>&a;</return>')
    assert offshore_main(["validate", str(doctype)]) == 2
    assert "DOCTYPE" in capsys.readouterr().err
    assert offshore_main(["validate", str(tmp_path / "missing.xml")]) == 2


def test_pull_refuses_a_queue_not_signed_by_the_practice(instance, capsys):
    cfg = load_offshore_config(instance / "partner" / "offshore.toml")
    # the partner signing a "queue" itself: encrypted to the team, but not by a pinned practice key
    fake = support.gpg_cli(
        cfg.pgp.gnupg_home,
        "--encrypt",
        "--sign",
        "-u",
        cfg.pgp.team_fingerprint,
        "-r",
        cfg.pgp.team_fingerprint,
        data=b"<x/>",
    ).stdout
    (instance / "drop" / "queues" / "wq_LOCALDEMO_000009.pgp").write_bytes(fake)
    assert run(instance, "pull") == 1
    assert "not pinned" in capsys.readouterr().out
    assert list((instance / "partner" / "work").glob("*.xml")) == []
    ledger = json.loads((instance / "partner" / "work" / ".ccm-offshore-ledger.json").read_text())
    assert len(ledger["refused"]) == 1


def test_bad_offshore_configuration_exits_2(tmp_path, capsys):
    config = tmp_path / "offshore.toml"
    config.write_text(
        '[team]\nname = "x"\npractice_id = "bad id!"\nwork_dir = "w"\n[drop]\nkind = "ftp"\n'
    )
    assert offshore_main(["--config", str(config), "pull"]) == 2
    err = capsys.readouterr().err
    assert (
        "[team] practice_id" in err and "[drop] kind" in err and "[pgp]: section is missing" in err
    )


def test_a_push_interrupted_during_upload_re_sends_the_same_sealed_bytes(instance, tmp_path):
    from ccm_connector.offshore_cli import load_ledger, push
    from ccm_connector.sftp import transport

    cfg = load_offshore_config(instance / "partner" / "offshore.toml")
    ret = the_return(instance, tmp_path)

    class Dropped(transport.LocalDrop):
        def publish(self, folder, name, data):
            raise transport.TransportError("connection dropped")

    with pytest.raises(Exception, match="connection dropped"):
        push(cfg, str(ret), drop=Dropped(instance / "drop"))
    record = load_ledger(cfg.team.work_dir)["pushed"]["R-0001"]
    assert record["status"] == "sealed"
    kept = (cfg.team.work_dir / ".outbox" / "rt_LOCALDEMO_R-0001.pgp").read_bytes()
    assert "sent" in push(cfg, str(ret))
    sent = (instance / "drop" / "returns" / "rt_LOCALDEMO_R-0001.pgp").read_bytes()
    assert sent == kept
    assert load_ledger(cfg.team.work_dir)["pushed"]["R-0001"]["status"] == "sent"
    assert not (cfg.team.work_dir / ".outbox" / "rt_LOCALDEMO_R-0001.pgp").exists()
