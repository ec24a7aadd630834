"""doctor: pinned-key expiry warnings (30 days by default) and the local drop's folders."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ccm_connector import doctor
from ccm_connector.config import load_config
from ccm_connector.instance import with_values
from ccm_connector.sftp import keyring


def pin_extra_partner_key(instance: Path, **key_options) -> str:
    home = instance / "k"
    keyring.prepare_home(home)
    try:
        fpr = keyring.generate_key(home, "Partner rollover", "r@test.invalid", **key_options)
        keyring.import_pinned(instance / "gnupg", keyring.export_public(home, fpr), fpr)
    finally:
        keyring.stop_agent(home)
    cfg = load_config(instance / "connector.toml")
    pinned = ", ".join(f'"{f}"' for f in (*cfg.pgp.partner_fingerprints, fpr))
    config = instance / "connector.toml"
    config.write_text(
        with_values(config.read_text(), {("pgp", "partner_fingerprints"): f"[{pinned}]"})
    )
    return fpr


def items_for(instance: Path, fpr: str):
    return [i for i in doctor.check_gpg(load_config(instance / "connector.toml")) if fpr in i.what]


def test_a_pinned_key_expiring_within_30_days_warns(local_instance: Path):
    fpr = pin_extra_partner_key(local_instance, expire="20d")
    [item] = items_for(local_instance, fpr)
    assert item.status == "warn" and "expires in" in item.detail and "re-pin" in item.detail


def test_a_pinned_key_expiring_later_is_ok(local_instance: Path):
    fpr = pin_extra_partner_key(local_instance, expire="60d")
    [item] = items_for(local_instance, fpr)
    assert item.status == "ok"


def test_an_expired_pinned_key_fails(local_instance: Path):
    fpr = pin_extra_partner_key(
        local_instance, expire="1y", created=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    [item] = items_for(local_instance, fpr)
    assert item.status == "fail" and "expired" in item.detail


def test_local_drop_needs_its_processed_folder_when_files_are_moved(local_instance: Path):
    cfg = load_config(local_instance / "connector.toml")
    assert [i.status for i in doctor.check_drop(cfg)] == ["ok"]
    (local_instance / "drop" / "processed").rmdir()
    [item] = doctor.check_drop(cfg)
    assert item.status == "fail" and "processed" in item.detail
