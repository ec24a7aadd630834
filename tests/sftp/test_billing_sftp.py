"""Billing output delivered to the billing system's SFTP server (a real sshd, host key pinned)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import exchange_support as support  # noqa: E402  (tests/support is on sys.path)
from billing_fixtures import NPI, add_patient, add_return, add_touchpoint

from ccm_connector.billing import close_month
from ccm_connector.config import load_config
from ccm_connector.month_close import reconcile_month
from ccm_connector.signoff import signoff_command
from ccm_connector.store import open_store


def billing_sftp_values(server, folder: Path, fingerprint: str | None = None) -> dict[tuple[str, str], str]:
    values = {("billing", "delivery"): '"sftp"', ("billing", "retries"): "0", ("billing_sftp", "folder"): f'"{folder}"'}
    for (section, key), value in support.sftp_values(server, folder).items():
        if section == "sftp":
            values[("billing_sftp", key)] = value
    if fingerprint:
        values[("billing_sftp", "host_key_fingerprint")] = f'"{fingerprint}"'
    return values


def released_month(instance: Path, values: dict) -> tuple:
    support.set_values(instance / "connector.toml", values)
    cfg = load_config(instance / "connector.toml")
    conn = open_store(cfg.store.path)
    add_patient(conn, "MRN1")
    add_touchpoint(conn, "TP1", "MRN1", "RN7", dt.datetime(2026, 11, 3, 9, 0), 25)
    add_return(conn, cfg.identity.pseudonym_key_file, [{"id": "E1", "mrn": "MRN1", "sources": ["TP1"], "performer": "RN7", "date": "2026-11-03", "minutes": 25}])
    reconcile_month(cfg, "2026-11", conn)
    signoff_command(cfg, conn, "MRN1", "2026-11", NPI, False, None)
    return cfg, conn


def test_charges_are_published_on_the_billing_sftp_server(local_instance: Path, sshd, remote_root: Path) -> None:
    cfg, conn = released_month(local_instance, billing_sftp_values(sshd, remote_root))
    result = close_month(cfg, conn, "2026-11")
    assert result["released"] == 1
    names = sorted(p.name for p in remote_root.iterdir() if p.is_file())
    assert names == ["CH00000001.hl7", "charges-2026-11-001.csv"]  # no temporary names left behind
    assert conn.execute("SELECT count(*) FROM outbound WHERE status = 'pending'").fetchone()[0] == 0


def test_a_changed_host_key_sends_nothing_and_keeps_it_pending(local_instance: Path, sshd, remote_root: Path) -> None:
    wrong = "SHA256:" + "A" * 43
    cfg, conn = released_month(local_instance, billing_sftp_values(sshd, remote_root, wrong))
    result = close_month(cfg, conn, "2026-11")
    assert result["released"] == 1 and list(p for p in remote_root.iterdir() if p.is_file()) == []
    pending = conn.execute("SELECT kind, last_error FROM outbound WHERE status = 'pending' ORDER BY id").fetchall()
    assert {k for k, _ in pending} == {"charges", "csv"}
    assert all(err.startswith("SFTP:") for _, err in pending)


def test_doctor_checks_the_billing_sftp_endpoint(local_instance: Path, sshd, remote_root: Path) -> None:
    from ccm_connector.doctor import check_billing_sftp

    support.set_values(local_instance / "connector.toml", billing_sftp_values(sshd, remote_root))
    [ok] = check_billing_sftp(load_config(local_instance / "connector.toml"))
    assert ok.status == "ok" and "host key pinned" in ok.detail
    support.set_values(local_instance / "connector.toml", billing_sftp_values(sshd, remote_root, "SHA256:" + "B" * 43))
    [bad] = check_billing_sftp(load_config(local_instance / "connector.toml"))
    assert bad.status == "fail" and bad.what == "billing SFTP host key"
