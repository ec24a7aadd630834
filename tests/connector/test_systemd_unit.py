"""config/ccm-connector.service: runs `run` as an unprivileged user in a sandbox and stops with SIGTERM.

`systemd-analyze verify config/ccm-connector.service` is the check on a machine with systemd
(it only complains that /opt/ccm-connector is not installed there)."""

from __future__ import annotations

from collections import defaultdict
from importlib import resources


def unit() -> dict[str, dict[str, list[str]]]:
    text = (
        resources.files("ccm_connector.skel")
        .joinpath("ccm-connector.service")
        .read_text(encoding="utf-8")
    )
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key].append(value)
    return sections


def test_the_unit_is_packaged_and_runs_the_service() -> None:
    service = unit()["Service"]
    assert service["Type"] == ["simple"]
    assert service["User"] == ["ccm"]
    assert service["ExecStart"][0].endswith(
        "ccm-connector --config /etc/ccm-connector/connector.toml run"
    )
    assert service["Restart"] == ["on-failure"]
    assert service["KillSignal"] == ["SIGTERM"] and service["TimeoutStopSec"]
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_unit_is_sandboxed() -> None:
    service = unit()["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/ccm-connector",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
        "RestrictSUIDSGID": "yes",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    assert "@system-service" in service["SystemCallFilter"]
