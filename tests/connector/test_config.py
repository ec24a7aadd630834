"""Configuration validation: every class of error names the key and the problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccm_connector.config import config_path, load_config
from ccm_connector.errors import InputError
from ccm_connector.instance import template, with_values


def write_config(folder: Path, changes: dict[tuple[str, str], str] | None = None, extra: str = "") -> Path:
    """A minimal valid config (plus changes), with the secret files it points at."""
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in ("pseudonym.key", "audit.key"):
        f = secrets / name
        f.write_text("k" * 64)
        f.chmod(0o600)
    values = {
        ("pgp", "practice_fingerprint"): '"' + "A" * 40 + '"',
        ("pgp", "partner_fingerprints"): '["' + "B" * 40 + '"]',
        ("drop", "kind"): '"local"',
        ("drop", "local_path"): '"drop"',
    }
    values.update(changes or {})
    path = folder / "connector.toml"
    path.write_text(with_values(template("connector.example.toml"), values) + extra)
    return path


def problems_of(path: Path) -> str:
    with pytest.raises(InputError) as e:
        load_config(path)
    return str(e.value)


def test_the_example_with_fingerprints_and_a_local_drop_loads(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    assert cfg.practice.time_zone == "America/Chicago"
    assert cfg.mllp.port == 2575
    assert cfg.store.path == tmp_path / "data/connector.db"  # relative to the config's folder
    assert cfg.pgp.partner_fingerprints == ("B" * 40,)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ((("sftp", "port"), '"22x"'), '[sftp] port: must be 1-65535, got "22x"'),
        ((("mllp", "port"), "70000"), "[mllp] port: must be 1-65535, got 70000"),
        ((("practice", "time_zone"), '"America/Chikago"'), '[practice] time_zone: unknown time zone "America/Chikago"'),
        ((("practice", "id"), '"has space"'), "[practice] id: must be 1-40 letters"),
        ((("pgp", "practice_fingerprint"), '"ABCD"'), "[pgp] practice_fingerprint: must be a full 40-hex-digit"),
        ((("partner", "baa_effective"), '"2026-13-01"'), '[partner] baa_effective: must be a date YYYY-MM-DD, got "2026-13-01"'),
        ((("identity", "send_identifiers"), '"yes"'), '[identity] send_identifiers: must be true or false, got "yes"'),
        ((("billing", "delivery"), '"fax"'), "[billing] delivery: must be one of folder, sftp, mllp"),
        ((("practice", "billing_npis"), '["1234567890"]'), "[practice] billing_npis: item 1: must be a 10-digit NPI with a valid check digit"),
        ((("schedule", "queue_export_at"), '"25:00"'), "[schedule] queue_export_at: must be a local time HH:MM"),
        ((("drop", "kind"), '"sftp"'), "[sftp] host: required when the drop uses SFTP"),
        ((("billing", "delivery"), '"mllp"'), "[billing] mllp_host: required when delivery"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_a_bad_value_is_named_with_its_section_and_key(tmp_path: Path, change: tuple, expected: str) -> None:
    key, value = change
    assert expected in problems_of(write_config(tmp_path, {key: value}))


def test_a_misspelt_key_is_unknown(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("stable_seconds = 5", "stabel_seconds = 5"))
    assert "[intake] stabel_seconds: unknown key" in problems_of(path)


def test_an_unknown_section_is_named(tmp_path: Path) -> None:
    assert "[sfpt]: unknown section" in problems_of(write_config(tmp_path, extra='\n[sfpt]\nhost = "x"\n'))


def test_a_missing_required_key_and_section(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    text = path.read_text().replace('name = "Example Family Medicine"', "")
    text = text.replace("[audit]", "[removed_audit]").replace('key_file = "secrets/audit.key"', "")
    path.write_text(text)
    problems = problems_of(path)
    assert "[practice] name: required" in problems
    assert "[audit]: section is missing" in problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of(write_config(tmp_path, {("sftp", "port"): '"x"', ("mllp", "port"): "0"}))
    assert "[sftp] port" in problems and "[mllp] port" in problems


def test_a_secret_readable_by_group_or_others_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "secrets/audit.key").chmod(0o640)
    assert "[audit] key_file: secret file" in problems_of(path)
    assert "readable by group or others (mode 0640)" in problems_of(path)


def test_a_missing_secret_file_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "secrets/pseudonym.key").unlink()
    assert "[identity] pseudonym_key_file: secret file" in problems_of(path)


def test_a_gnupg_home_open_to_others_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "gnupg").mkdir(mode=0o755)
    (tmp_path / "gnupg").chmod(0o755)
    assert "[pgp] gnupg_home: folder" in problems_of(path)


def test_not_toml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "connector.toml"
    path.write_text("[practice\nid = 1\n")
    assert "not valid TOML" in problems_of(path)


def test_config_path_prefers_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCM_CONNECTOR_CONFIG", "/etc/ccm/x.toml")
    assert config_path("given.toml") == Path("given.toml")
    assert config_path(None) == Path("/etc/ccm/x.toml")
    monkeypatch.delenv("CCM_CONNECTOR_CONFIG")
    assert config_path(None) == Path("connector.toml")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ((("sftp", "port"), '"22x"'), '[sftp] port: must be 1-65535, got "22x"'),
        ((("practice", "time_zone"), '"Mars/Olympus"'), "[practice] time_zone: unknown time zone"),
    ],
)
def test_the_cli_exits_2_naming_the_key(tmp_path: Path, change: tuple, named: str) -> None:
    key, value = change
    path = write_config(tmp_path, {key: value})
    cli = Path(sys.executable).parent / "ccm-connector"
    result = subprocess.run([str(cli), "--config", str(path), "doctor"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert named in result.stderr


def test_the_cli_exits_2_for_a_misspelt_key(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("max_connections", "max_conections"))
    cli = Path(sys.executable).parent / "ccm-connector"
    result = subprocess.run([str(cli), "--config", str(path), "doctor"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "CCM_CONNECTOR_CONFIG": ""})
    assert result.returncode == 2
    assert "[mllp] max_conections: unknown key" in result.stderr
