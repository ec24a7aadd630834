"""`ccm-offshore`: the offshore team's side of the secure drop.

- ``pull``: download each new work queue, open it (decrypt; accepted only if signed by a pinned
  practice key), validate it against workqueue-1.xsd, and write ``<batch id>.xml`` into the
  work folder. A ledger in the work folder (``.ccm-offshore-ledger.json``) records the content
  hash of every file handled, so a second pull never handles the same content twice.
- ``validate FILE``: check a return against return-1.xsd through the hardened parser; problems
  are printed as ``FILE:LINE: message``.
- ``push FILE``: validate, sign with the team's key, encrypt to the practice's pinned key(s) (and
  the team's own), and publish as ``rt_<practice>_<returnId>.pgp``. The sealed bytes are kept in
  ``.outbox/`` until the upload is confirmed, so a retried push re-sends identical bytes.

Exit codes: 0 success, 1 an operational failure or a refused queue, 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, OperationalError
from .exchange import drop_for, read_passphrase, stamp
from .exchange_documents import parse_return, read_workqueue
from .offshore_config import OffshoreConfig, load_offshore_config, offshore_config_path
from .sftp import envelope, keyring, naming, transport
from .sftp.documents import DocumentRefused

PROG = "ccm-offshore"
LEDGER = ".ccm-offshore-ledger.json"


# --- the ledger: what this team has handled, by content hash ------------------------------------


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def load_ledger(work_dir: Path) -> dict[str, Any]:
    path = work_dir / LEDGER
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        ledger = {}
    except (OSError, ValueError) as e:
        raise OperationalError(f"{path}: cannot read the ledger: {e}") from None
    for key in ("pulled", "refused", "pushed"):
        ledger.setdefault(key, {})
    return ledger


def save_ledger(work_dir: Path, ledger: dict[str, Any]) -> None:
    _write_private(work_dir / LEDGER, json.dumps(ledger, indent=1, sort_keys=True).encode())


# --- pull ----------------------------------------------------------------------------------------


@dataclass
class Pulled:
    into: Path
    queues: list[str] = field(default_factory=list)  # "batch (n patients, m touchpoints)"
    refused: list[tuple[str, str]] = field(default_factory=list)
    already: int = 0

    def summary(self) -> str:
        text = f"pulled {len(self.queues)} work queue(s) into {self.into}"
        if self.queues:
            text += ": " + ", ".join(self.queues)
        text += f"; {len(self.refused)} refused"
        if self.already:
            text += f"; {self.already} already pulled"
        for name, reason in self.refused:
            text += f"\n  refused {name}: {reason}"
        return text


def pull(
    cfg: OffshoreConfig, into: Path | None = None, drop: transport.Drop | None = None
) -> Pulled:
    work_dir = _private_dir(cfg.team.work_dir)
    target = _private_dir(into or work_dir)
    opening = envelope.private_workdir(work_dir / ".opening")
    passphrase = read_passphrase(cfg.pgp.passphrase_file, "[pgp] passphrase_file")
    ledger = load_ledger(work_dir)
    out = Pulled(target)
    drop = drop or drop_for(cfg.drop, cfg.sftp)
    try:
        with drop:
            for listed in transport.stable_files(drop, cfg.drop.queue_dir, cfg.drop.stable_seconds):
                if naming.is_in_flight(listed.name):
                    continue
                _pull_one(cfg, drop, listed.name, target, opening, passphrase, ledger, out)
    except transport.TransportError as e:
        raise OperationalError(f"pull: {e}") from None
    except keyring.KeyringError as e:
        raise OperationalError(f"pull: {e}") from None
    finally:
        keyring.stop_agent(cfg.pgp.gnupg_home)
    return out


def _pull_one(
    cfg: OffshoreConfig,
    drop: transport.Drop,
    name: str,
    target: Path,
    opening: Path,
    passphrase: str | None,
    ledger: dict[str, Any],
    out: Pulled,
) -> None:
    shown = naming.shown(name)
    try:
        parsed = naming.parse_queue_name(name)
        if parsed.practice != cfg.team.practice_id:
            raise naming.UnsafeName("work queue of another practice")
    except naming.UnsafeName as e:
        out.refused.append((shown, str(e)))
        return
    data = drop.read(cfg.drop.queue_dir, name)
    file_hash = hashlib.sha256(data).hexdigest()
    if file_hash in ledger["pulled"]:
        out.already += 1
        _after_pickup(cfg, drop, name)
        return
    if file_hash in ledger["refused"]:
        out.refused.append((shown, ledger["refused"][file_hash]["reason"]))
        return
    try:
        opened = envelope.open_envelope(
            cfg.pgp.gnupg_home,
            data,
            cfg.pgp.practice_fingerprints,
            opening,
            passphrase,
            cfg.pgp.gpg_binary,
        )
        plaintext = opened.read_and_remove()
        try:
            summary = read_workqueue(plaintext)
        except DocumentRefused as e:
            raise envelope.Refused(e.summary, opened.signer) from None
        if summary.practice_id != cfg.team.practice_id or summary.sequence != parsed.sequence:
            raise envelope.Refused("file name does not match the queue inside", opened.signer)
    except envelope.Refused as e:
        ledger["refused"][file_hash] = {"name": shown, "reason": e.reason, "at": stamp()}
        save_ledger(cfg.team.work_dir, ledger)
        out.refused.append((shown, e.reason))
        return
    _write_private(target / f"{naming.check_safe(summary.batch_id)}.xml", plaintext)
    ledger["pulled"][file_hash] = {
        "name": shown,
        "batch": summary.batch_id,
        "at": stamp(),
        "signer": opened.signer,
    }
    save_ledger(cfg.team.work_dir, ledger)
    out.queues.append(
        f"{summary.batch_id} ({summary.patients} patients, {summary.touchpoints} touchpoints)"
    )
    _after_pickup(cfg, drop, name)


def _after_pickup(cfg: OffshoreConfig, drop: transport.Drop, name: str) -> None:
    if cfg.drop.after_pickup == "move" and cfg.drop.processed_dir:
        drop.move(cfg.drop.queue_dir, name, cfg.drop.processed_dir)
    else:
        drop.delete(cfg.drop.queue_dir, name)


# --- validate and push ---------------------------------------------------------------------------


def _read_file(file: str) -> bytes:
    try:
        return Path(file).read_bytes()
    except OSError as e:
        raise InputError(f"{file}: cannot read: {e.strerror}") from None


def validate_file(file: str) -> str:
    """One-line verdict for a valid return; InputError listing ``FILE:LINE: message`` otherwise."""
    data = _read_file(file)
    try:
        ret = parse_return(data)
    except DocumentRefused as e:
        lines = [f"{file}:{p.line or 0}: {p.message}" for p in e.problems] or [
            f"{file}: {e.reason}"
        ]
        raise InputError(f"{file}: invalid return ({e.reason})\n" + "\n".join(lines)) from None
    return (
        f"{file}: valid return {ret.return_id} for {ret.practice_id}: {len(ret.entries)} entries, "
        f"{len(ret.drafts)} care-plan drafts, {len(ret.codes)} proposed codes"
    )


def push(cfg: OffshoreConfig, file: str, drop: transport.Drop | None = None) -> str:
    validate_file(file)
    data = _read_file(file)
    ret = parse_return(data)
    if ret.practice_id != cfg.team.practice_id:
        raise InputError(
            f"{file}: practiceId {ret.practice_id!r} is not this team's practice {cfg.team.practice_id!r}"
        )
    name = naming.return_name(cfg.team.practice_id, ret.return_id)
    work_dir = _private_dir(cfg.team.work_dir)
    outbox = _private_dir(work_dir / ".outbox")
    ledger = load_ledger(work_dir)
    document_hash = hashlib.sha256(data).hexdigest()
    record = ledger["pushed"].get(ret.return_id)
    if record is not None and record["document_hash"] != document_hash:
        raise InputError(
            f"{file}: return {ret.return_id} was already pushed with other content; give the corrected return a new returnId"
        )
    if record is not None and record["status"] == "sent":
        return f"push: {name} was already sent ({record['content_hash'][:12]}); nothing to do"
    if record is None:
        recipients = list(dict.fromkeys([*cfg.pgp.practice_fingerprints, cfg.pgp.team_fingerprint]))
        passphrase = read_passphrase(cfg.pgp.passphrase_file, "[pgp] passphrase_file")
        try:
            sealed = envelope.seal(
                cfg.pgp.gnupg_home,
                data,
                recipients,
                cfg.pgp.team_fingerprint,
                passphrase,
                cfg.pgp.gpg_binary,
            )
        except (envelope.SealError, keyring.KeyringError) as e:
            raise OperationalError(f"push: {e}") from None
        finally:
            keyring.stop_agent(cfg.pgp.gnupg_home)
        _write_private(outbox / name, sealed)
        record = {
            "document_hash": document_hash,
            "content_hash": hashlib.sha256(sealed).hexdigest(),
            "file": name,
        }
        record["status"] = "sealed"
        ledger["pushed"][ret.return_id] = record
        save_ledger(work_dir, ledger)
    sealed = (outbox / name).read_bytes()
    drop = drop or drop_for(cfg.drop, cfg.sftp)
    try:
        with drop:
            drop.publish(cfg.drop.returns_dir, name, sealed)
    except transport.TransportError as e:
        raise OperationalError(f"push: {e}") from None
    record.update(status="sent", sent_at=stamp())
    save_ledger(work_dir, ledger)
    (outbox / name).unlink()
    return f"push: sent {name} ({len(ret.entries)} entries, sha256 {record['content_hash'][:12]})"


# --- command line --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Pull work queues and push signed returns."
    )
    parser.add_argument(
        "--config",
        help="offshore configuration file (default: $CCM_OFFSHORE_CONFIG or ./offshore.toml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "pull", help="download, verify, decrypt and validate the work queue into a folder"
    )
    p.add_argument("--into", help="folder for the decrypted queues (default: [team] work_dir)")
    p = sub.add_parser("validate", help="check a return document against its schema")
    p.add_argument("file")
    p = sub.add_parser("push", help="validate, sign, encrypt and upload a return")
    p.add_argument("file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "validate":
            print(validate_file(args.file))
            return 0
        cfg = load_offshore_config(offshore_config_path(args.config))
        if args.command == "pull":
            result = pull(cfg, Path(args.into) if args.into else None)
            print(result.summary())
            return 1 if result.refused else 0
        print(push(cfg, args.file))
        return 0
    except InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except OperationalError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
