"""`init` and `doctor`: a local instance works with no outside service; a template instance says what is missing."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from ccm_connector.config import load_config
from ccm_connector.doctor import run_checks
from ccm_connector.instance import with_values

CLI = Path(sys.executable).parent / "ccm-connector"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_local_then_doctor_passes(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    created = run("init", str(folder), "--local")
    assert created.returncode == 0, created.stderr
    doctor = run("--config", str(folder / "connector.toml"), "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "all checks passed" in doctor.stdout
    for what in ("store", "practice key", "partner key", "partner BAA", "local drop", "staff roster"):
        assert f"[ ok ] {what}" in doctor.stdout


def test_init_local_makes_secrets_and_folders_private(local_instance: Path) -> None:
    for secret in ("secrets/audit.key", "secrets/pseudonym.key", "connector.toml"):
        assert mode(local_instance / secret) == 0o600, secret
    for folder in ("data", "secrets", "gnupg", "partner/gnupg", "drop/queues", "drop/returns"):
        assert mode(local_instance / folder) == 0o700, folder


def test_init_never_overwrites_an_instance(local_instance: Path) -> None:
    again = run("init", str(local_instance), "--local")
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_plain_init_writes_a_template_that_doctor_fails_until_completed(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    assert run("init", str(folder)).returncode == 0
    config = folder / "connector.toml"
    assert "#" in config.read_text()  # commented for practice IT
    doctor = run("--config", str(config), "doctor")
    # The template pins no real keys and names an SFTP drop without a host: bad configuration.
    assert doctor.returncode == 2
    assert "[sftp] host: required" in doctor.stderr


def test_doctor_fails_without_a_baa_date(local_instance: Path) -> None:
    config = local_instance / "connector.toml"
    config.write_text(with_values(config.read_text(), {("partner", "baa_effective"): '""', ("partner", "baa_end"): '""'}))
    items = run_checks(load_config(config))
    baa = next(i for i in items if i.what == "partner BAA")
    assert baa.status == "fail" and "baa_effective is not set" in baa.detail
    doctor = run("--config", str(config), "doctor")
    assert doctor.returncode == 1 and "[FAIL] partner BAA" in doctor.stdout


def test_doctor_fails_when_a_pinned_key_is_missing(local_instance: Path) -> None:
    config = local_instance / "connector.toml"
    text = config.read_text()
    cfg = load_config(config)
    config.write_text(text.replace(cfg.pgp.partner_fingerprints[0], "C" * 40))
    items = run_checks(load_config(config))
    assert any(i.status == "fail" and i.what == f"partner key {'C' * 40}" for i in items)


def test_help_lists_every_command_of_the_design() -> None:
    out = run("--help").stdout
    for command in ("init", "doctor", "run", "listen", "ingest", "mapping", "queue", "returns", "reconcile",
                    "signoff", "close-month", "billing", "status", "report", "rules", "audit", "demo"):
        assert command in out, command
