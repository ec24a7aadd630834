"""Test-wide setup.

The repository root must not be on sys.path: our hl7/ folder would shadow python-hl7.
The project is tested as installed (`ccm_connector`), as users run it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != ROOT]
# Shared test helpers (store fixtures, peers) import as plain modules from tests/support.
sys.path.insert(0, str(ROOT / "tests" / "support"))

import pytest  # noqa: E402

from ccm_connector.instance import init_local_instance  # noqa: E402
from ccm_connector.sftp import keyring  # noqa: E402


@pytest.fixture(scope="session")
def local_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `init --local` instance per session (key generation is the slow part); copy it per test."""
    folder = Path(tmp_path_factory.mktemp("tpl", numbered=False)) / "i"
    init_local_instance(folder)
    return folder


@pytest.fixture
def local_instance(local_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of a local instance in a short path (GnuPG sockets need short paths)."""
    import shutil
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="ccm", dir="/tmp"))
    target = short / "i"
    shutil.copytree(local_template, target, symlinks=True, ignore=shutil.ignore_patterns("S.*"))
    yield target
    keyring.stop_agent(target / "gnupg")
    keyring.stop_agent(target / "partner" / "gnupg")
    shutil.rmtree(short, ignore_errors=True)
