"""Fixtures for the secure-drop tests: a real sshd and real gpg keys, made once per session."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import exchange_support as support  # noqa: E402  (tests/support is on sys.path)
import pytest

from ccm_connector.sftp import keyring


@dataclass(frozen=True)
class Keys:
    practice_home: Path
    practice: str
    partner_home: Path
    partner: str
    stranger_home: Path
    stranger: str  # present in the practice keyring, never pinned
    expired_home: Path
    expired: str  # pinned by the practice, expired since 2021


@pytest.fixture(scope="session")
def keys() -> Iterator[Keys]:
    base = support.short_dir("gk")
    homes = {name: base / name for name in ("p", "o", "s", "e")}
    for home in homes.values():
        keyring.prepare_home(home)
    # The practice key is back-dated so that the expired partner key can sign (at its own time)
    # a message encrypted to it.
    practice = keyring.generate_key(
        homes["p"],
        "Practice",
        "p@test.invalid",
        expire="0",
        created=dt.datetime(2019, 1, 1, tzinfo=dt.UTC),
    )
    partner = keyring.generate_key(homes["o"], "Partner", "o@test.invalid")
    stranger = keyring.generate_key(homes["s"], "Stranger", "s@test.invalid")
    expired = keyring.generate_key(
        homes["e"],
        "Expired partner",
        "e@test.invalid",
        expire="1y",
        created=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    )
    practice_pub = keyring.export_public(homes["p"], practice)
    keyring.import_pinned(homes["p"], keyring.export_public(homes["o"], partner), partner)
    keyring.import_pinned(homes["p"], keyring.export_public(homes["e"], expired), expired)
    keyring.gpg_for(homes["p"]).import_keys(
        keyring.export_public(homes["s"], stranger)
    )  # present, not pinned
    for home in (homes["o"], homes["s"], homes["e"]):
        keyring.import_pinned(home, practice_pub, practice)
    yield Keys(homes["p"], practice, homes["o"], partner, homes["s"], stranger, homes["e"], expired)
    for home in homes.values():
        keyring.stop_agent(home)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with support.running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def remote_root(tmp_path: Path) -> Path:
    """Fresh queues/returns/processed folders on the (local) SFTP server's file system."""
    return support.make_remote_root(tmp_path)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = support.short_dir("w")
    yield path
    shutil.rmtree(path, ignore_errors=True)
