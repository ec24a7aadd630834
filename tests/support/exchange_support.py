"""Shared helpers for the exchange tests (tests/sftp, tests/connector): a real OpenSSH sshd on a
random loopback port with throwaway keys, store seeding, returns, plain-gpg calls.

Not a conftest: the repository root is kept off sys.path, so test modules load this file with
`load_support()` (below, copied as a three-line idiom) and bind the fixtures they use.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ccm_connector.exchange_documents import (
    Change,
    Draft,
    Entry,
    ProposedCode,
    Return,
    build_return,
)
from ccm_connector.instance import with_values
from ccm_connector.store import open_store, transaction

SSHD = "/usr/sbin/sshd"

# The seeded patient: none of these may appear in a queue sent with identifiers off.
MRN = "MRN20417"
FAMILY = "Zebrowski"
GIVEN = "Quentin"
BIRTH = dt.date(1948, 3, 17)
MBI = "1EG4TE5MK73"
RETIRED_MRN = "MRN99881"


# --- the store -----------------------------------------------------------------------------------


def seed_store(db: Path, day: dt.date | None = None) -> dict[str, str]:
    """One enrolled patient (with a merged-away MRN), conditions, a care plan, three touchpoints."""
    day = day or dt.datetime.now(dt.UTC).date()
    start = dt.datetime.combine(day.replace(day=1), dt.time(15, 0), dt.UTC) + dt.timedelta(days=1)
    conn = open_store(db)
    try:
        with transaction(conn):
            conn.execute(
                "INSERT INTO patient (mrn, family, given, birth_date, sex, mbi) VALUES (?, ?, ?, ?, 'M', ?)",
                (MRN, FAMILY, GIVEN, BIRTH.isoformat(), MBI),
            )
            conn.execute(
                "INSERT INTO mrn_merge (retired_mrn, surviving_mrn) VALUES (?, ?)",
                (RETIRED_MRN, MRN),
            )
            conn.execute(
                "INSERT INTO consent (mrn, program, date, practitioner_npi, status, document_id)"
                " VALUES (?, 'ccm', ?, '1234567893', 'given', 'CONS-1')",
                (MRN, (day.replace(day=1) - dt.timedelta(days=30)).isoformat()),
            )
            # a patient who withdrew: never in a queue
            conn.execute(
                "INSERT INTO patient (mrn, family, given, birth_date) VALUES ('MRN555', 'Withdrawn', 'Wanda', '1950-01-01')"
            )
            conn.execute(
                "INSERT INTO consent (mrn, program, date, practitioner_npi, status, document_id)"
                " VALUES ('MRN555', 'ccm', '2020-01-01', '1234567893', 'given', 'CONS-2')"
            )
            conn.execute(
                "INSERT INTO consent (mrn, program, date, practitioner_npi, status, document_id)"
                " VALUES ('MRN555', 'ccm', '2020-02-01', '1234567893', 'withdrawn', 'CONS-3')"
            )
            for code in ("E11.9", "I10"):
                conn.execute(
                    "INSERT INTO problem (mrn, code, system, status) VALUES (?, ?, 'I10', 'active')",
                    (MRN, code),
                )
            conn.execute(
                "INSERT INTO care_plan (document_id, mrn, date, elements) VALUES ('CP-1', ?, ?, ?)",
                (
                    MRN,
                    (day.replace(day=1) - dt.timedelta(days=20)).isoformat(),
                    json.dumps(["Goals", "Medications"]),
                ),
            )
            rows = [
                (
                    "TP-1",
                    MRN,
                    "RN7",
                    start,
                    15,
                    "phone_call",
                    f"Called {GIVEN} {FAMILY} (DOB {BIRTH:%m/%d/%Y}, {MRN}) about glucose",
                ),
                (
                    "TP-2",
                    RETIRED_MRN,
                    "MA3",
                    start + dt.timedelta(hours=2),
                    10,
                    "med_reconciliation",
                    "Reconciled medications",
                ),
                (
                    "TP-3",
                    MRN,
                    "OFF1",
                    start + dt.timedelta(hours=3),
                    30,
                    "documentation",
                    "Offshore account note",
                ),
                ("TP-X", "MRN555", "RN7", start, 5, "phone_call", "Wanda Withdrawn call"),
            ]
            for tp_id, mrn, staff, when, minutes, activity, summary in rows:
                conn.execute(
                    "INSERT INTO touchpoint (id, mrn, staff_id, start_utc, start_offset, minutes, activity, summary)"
                    " VALUES (?, ?, ?, ?, -360, ?, ?, ?)",
                    (
                        tp_id,
                        mrn,
                        staff,
                        when.isoformat().replace("+00:00", "Z"),
                        minutes,
                        activity,
                        summary,
                    ),
                )
    finally:
        conn.close()
    return {"mrn": MRN}


def add_touchpoint(db: Path, tp_id: str, minutes: int = 5, staff: str = "RN7") -> None:
    conn = open_store(db)
    try:
        with transaction(conn):
            conn.execute(
                "INSERT INTO touchpoint (id, mrn, staff_id, start_utc, start_offset, minutes, activity, summary)"
                " VALUES (?, ?, ?, ?, 0, ?, 'phone_call', 'follow-up call')",
                (
                    tp_id,
                    MRN,
                    staff,
                    dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                    minutes,
                ),
            )
    finally:
        conn.close()


# --- documents -----------------------------------------------------------------------------------


def a_return(
    pseudonym: str,
    return_id: str = "R-0001",
    practice: str = "LOCALDEMO",
    entry_ids: tuple[str, ...] = ("E-1",),
    batch: str = "LOCALDEMO-000001",
) -> bytes:
    today = dt.datetime.now(dt.UTC).date()
    return build_return(
        Return(
            return_id=return_id,
            practice_id=practice,
            created=dt.datetime.now(dt.UTC),
            answers=(batch,),
            prepared_by=("OFF1",),
            entries=tuple(
                Entry(
                    eid,
                    pseudonym,
                    ("TP-1",),
                    "RN7",
                    today,
                    15,
                    "phone_call",
                    "RN called the patient about glucose.",
                )
                for eid in entry_ids
            ),
            drafts=(Draft(pseudonym, "CP-1", (Change("Goals", "revise", "A1c below 7.5"),)),),
            codes=(ProposedCode(pseudonym, f"{today:%Y-%m}", "99490", 1),),
        )
    )


# --- plain gpg -----------------------------------------------------------------------------------


def gpg_cli(
    home: Path, *args: str, data: bytes = b"", check: bool = True
) -> subprocess.CompletedProcess:
    """The plain `gpg` command line (not python-gnupg), batch mode, status on stdout when asked."""
    result = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--yes", "--no-tty", *args],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"gpg {' '.join(args)} failed: {result.stderr.decode(errors='replace')}"
        )
    return result


def short_dir(prefix: str = "g") -> Path:
    """A short private folder under /tmp (gpg-agent socket paths must fit in sun_path)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# --- a real OpenSSH sshd -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sshd:
    host: str
    port: int
    username: str
    user_key: Path
    host_key_type: str
    host_key_fingerprint: str
    other_fingerprint: str  # a key of the same type the server does NOT hold


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(path) + ".pub"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.split()[1]


@contextlib.contextmanager
def running_sshd(folder: Path) -> Iterator[Sshd]:
    """OpenSSH sshd on 127.0.0.1:<random>, host and user keys made here, internal-sftp, no passwords."""
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} is not installed: apt-get install openssh-server")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation folder
    folder.mkdir(parents=True, exist_ok=True)
    host_fpr = _keygen(folder / "host_ed25519", "test host")
    other_fpr = _keygen(folder / "other_ed25519", "not the host")
    _keygen(folder / "user_ed25519", "test user")
    shutil.copy(folder / "user_ed25519.pub", folder / "authorized_keys")
    os.chmod(folder / "user_ed25519", 0o600)
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {folder / 'host_ed25519'}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "AuthenticationMethods publickey",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "LogLevel ERROR",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    log = open(folder / "sshd.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {proc.returncode}: {(folder / 'sshd.log').read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(4).startswith(b"SSH-"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not start listening within 15 s")
            time.sleep(0.05)
        yield Sshd(
            "127.0.0.1",
            port,
            getpass.getuser(),
            folder / "user_ed25519",
            "ssh-ed25519",
            host_fpr,
            other_fpr,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def sftp_values(
    server: Sshd, root: Path, fingerprint: str | None = None
) -> dict[tuple[str, str], str]:
    """TOML values that point a connector.toml or offshore.toml at the test sshd."""
    return {
        ("drop", "kind"): '"sftp"',
        ("drop", "queue_dir"): f'"{root / "queues"}"',
        ("drop", "returns_dir"): f'"{root / "returns"}"',
        ("drop", "processed_dir"): f'"{root / "processed"}"',
        ("sftp", "host"): f'"{server.host}"',
        ("sftp", "port"): str(server.port),
        ("sftp", "username"): f'"{server.username}"',
        ("sftp", "private_key"): f'"{server.user_key}"',
        ("sftp", "host_key_type"): f'"{server.host_key_type}"',
        ("sftp", "host_key_fingerprint"): f'"{fingerprint or server.host_key_fingerprint}"',
        ("sftp", "timeout_seconds"): "10",
        ("sftp", "retries"): "0",
    }


def set_values(path: Path, values: dict[tuple[str, str], str]) -> None:
    path.write_text(with_values(path.read_text(encoding="utf-8"), values), encoding="utf-8")


def make_remote_root(base: Path) -> Path:
    root = Path(tempfile.mkdtemp(prefix="drop", dir=base))
    for name in ("queues", "returns", "processed"):
        (root / name).mkdir()
    return root
