"""The `returns pull` stage: signed returns from the offshore team into the store, once each.

For each file in the drop's returns folder (stable over [drop] stable_seconds):

1. The name must pass the drop's naming rules (`sftp.naming`) and be addressed to this practice;
   otherwise it is refused once (recorded by name, never read).
2. The content hash decides idempotency: a file already ingested under the same name is only
   cleaned up (a crash between commit and cleanup); the same content under another name, or a
   return id seen before, is refused as a replay. (An entry id seen before is stored and left to
   reconciliation, which excludes it as DUPLICATE_ENTRY.)
3. The envelope is opened under the acceptance rule (`sftp.envelope`); the plaintext lives in a
   private working folder only until it is parsed, and is deleted on every path.
4. The document must pass the hardened parser and return-1.xsd; its return id must match the
   file name and its practice id ours.
5. Accepted: the return, its entries, care-plan drafts and proposed codes are stored with a
   `file.received` audit event in one transaction. Refused: a `return_file` row with the
   reason, the ciphertext in `exchange_quarantine` and a `file.refused` audit event.
6. The file is then moved to [drop] processed_dir or deleted, per [drop] after_pickup.

Nothing is reconciled here; `reconcile` reads return_entry / care_plan_draft / proposed_code.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from . import audit, logs
from .config import Config
from .errors import InputError, OperationalError
from .exchange import drop_for, read_passphrase, stamp
from .exchange_documents import Return, parse_return
from .pseudonym import read_key, reverse_map
from .sftp import envelope, keyring, naming, transport
from .sftp.documents import DocumentRefused
from .store import open_store, transaction

log = logs.get_logger("returns_pull")


@dataclass
class PullResult:
    accepted: list[str] = field(default_factory=list)  # return ids
    refused: list[tuple[str, str]] = field(default_factory=list)  # (printable name, reason)
    cleaned: int = 0  # already ingested earlier; only the pickup was finished
    skipped: int = 0  # not stable yet, in flight, or a bad name already recorded

    def summary(self) -> str:
        parts = [f"returns pull: {len(self.accepted)} accepted", f"{len(self.refused)} refused"]
        if self.cleaned:
            parts.append(f"{self.cleaned} already ingested")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        text = ", ".join(parts)
        for name, reason in self.refused:
            text += f"\n  refused {name}: {reason}"
        return text


class Refusal(Exception):
    """``reason`` is free of document content (logs, audit, status, output); ``detail`` may quote
    the document (schema messages) and is kept in exchange_quarantine.detail only."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or reason


def pull_returns(cfg: Config, drop: transport.Drop | None = None) -> PullResult:
    """Run the stage once; idempotent (a file is ingested at most once, by content hash)."""
    try:
        audit_key = audit.read_key(cfg.audit.key_file)
        pseudonym_key = read_key(cfg.identity.pseudonym_key_file)
    except (OSError, ValueError) as e:
        raise InputError(f"key file: {e}") from None
    passphrase = read_passphrase(cfg.pgp.passphrase_file, "[pgp] passphrase_file")
    workdir = envelope.private_workdir(cfg.store.data_dir / "work" / "returns")
    result = PullResult()
    drop = drop or drop_for(cfg.drop, cfg.sftp)
    conn = open_store(cfg.store.path)
    try:
        with drop:
            for listed in transport.stable_files(
                drop, cfg.drop.returns_dir, cfg.drop.stable_seconds
            ):
                _one(cfg, conn, drop, listed, audit_key, pseudonym_key, passphrase, workdir, result)
    except transport.TransportError as e:
        raise OperationalError(f"returns pull: {e}") from None
    finally:
        conn.close()
        keyring.stop_agent(cfg.pgp.gnupg_home)
    return result


def _one(
    cfg: Config,
    conn: sqlite3.Connection,
    drop: transport.Drop,
    listed: transport.Listed,
    audit_key: bytes,
    pseudonym_key: bytes,
    passphrase: str | None,
    workdir: Path,
    result: PullResult,
) -> None:
    name = listed.name
    if naming.is_in_flight(name):
        result.skipped += 1
        return
    shown = naming.shown(name)
    try:
        parsed = naming.parse_return_name(name)
        if parsed.practice != cfg.practice.id:
            raise naming.UnsafeName("return addressed to another practice")
    except naming.UnsafeName as e:
        _refuse_name(conn, audit_key, shown, str(e), result)
        return

    data = drop.read(cfg.drop.returns_dir, name)
    file_hash = hashlib.sha256(data).hexdigest()
    seen = conn.execute(
        "SELECT id, name, status FROM return_file WHERE content_hash = ?", (file_hash,)
    ).fetchone()
    if seen is not None:
        if seen["name"] == shown:
            result.cleaned += 1  # ours from an earlier run that stopped before the cleanup
        else:
            _quarantine_replay(conn, audit_key, shown, file_hash, data, seen["name"], result)
        _after_pickup(cfg, drop, name)
        return

    try:
        opened = envelope.open_envelope(
            cfg.pgp.gnupg_home,
            data,
            cfg.pgp.partner_fingerprints,
            workdir,
            passphrase,
            cfg.pgp.gpg_binary,
        )
    except envelope.Refused as e:
        _refuse_file(conn, audit_key, shown, file_hash, data, e.reason, e.signer, result)
    except keyring.KeyringError as e:
        raise OperationalError(f"returns pull: {e}") from None
    else:
        plaintext = opened.read_and_remove()
        try:
            ret = _checked(cfg, conn, parsed.return_id, plaintext)
        except Refusal as e:
            _refuse_file(
                conn, audit_key, shown, file_hash, data, e.reason, opened.signer, result, e.detail
            )
        else:
            _accept(
                conn,
                audit_key,
                shown,
                file_hash,
                data,
                plaintext,
                ret,
                opened.signer,
                pseudonym_key,
            )
            result.accepted.append(ret.return_id)
            logs.event(
                log,
                "return.accepted",
                return_id=ret.return_id,
                entries=len(ret.entries),
                signer=opened.signer,
            )
    _after_pickup(cfg, drop, name)


def _checked(
    cfg: Config, conn: sqlite3.Connection, name_return_id: str, plaintext: bytes
) -> Return:
    try:
        ret = parse_return(plaintext)
    except DocumentRefused as e:
        raise Refusal(e.summary, str(e)) from None
    if ret.practice_id != cfg.practice.id:
        raise Refusal("return is for another practice")
    if ret.return_id != name_return_id:
        raise Refusal("file name does not match the return id inside")
    if conn.execute("SELECT 1 FROM return_file WHERE return_id = ?", (ret.return_id,)).fetchone():
        raise Refusal(f"replay: return {ret.return_id} was already ingested")
    return ret


def _accept(
    conn: sqlite3.Connection,
    audit_key: bytes,
    shown: str,
    file_hash: str,
    data: bytes,
    plaintext: bytes,
    ret: Return,
    signer: str,
    pseudonym_key: bytes,
) -> None:
    mrns = [r[0] for r in conn.execute("SELECT mrn FROM patient")]
    mrns += [r[0] for r in conn.execute("SELECT retired_mrn FROM mrn_merge")]
    to_mrn = reverse_map(pseudonym_key, mrns)
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO return_file (content_hash, name, size, received_at, status, signer, return_id, document_hash,"
            " prepared_by, answers, created) VALUES (?, ?, ?, ?, 'accepted', ?, ?, ?, ?, ?, ?)",
            (
                file_hash,
                shown,
                len(data),
                stamp(),
                signer,
                ret.return_id,
                hashlib.sha256(plaintext).hexdigest(),
                json.dumps(list(ret.prepared_by)),
                json.dumps(list(ret.answers)),
                stamp(ret.created),
            ),
        )
        file_id = cur.lastrowid
        conn.executemany(
            "INSERT INTO return_entry (entry_id, return_file_id, pseudonym, mrn, touchpoint_ids, performer, date,"
            " minutes, activity, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.entry_id,
                    file_id,
                    e.pseudonym,
                    to_mrn.get(e.pseudonym),
                    json.dumps(list(e.touchpoint_ids)),
                    e.performer,
                    e.date.isoformat(),
                    e.minutes,
                    e.activity,
                    e.description,
                )
                for e in ret.entries
            ],
        )
        conn.executemany(
            "INSERT INTO care_plan_draft (return_file_id, pseudonym, mrn, revises, changes) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    file_id,
                    d.pseudonym,
                    to_mrn.get(d.pseudonym),
                    d.revises,
                    json.dumps(
                        [
                            {"element": c.element, "action": c.action, "text": c.text}
                            for c in d.changes
                        ]
                    ),
                )
                for d in ret.drafts
            ],
        )
        conn.executemany(
            "INSERT INTO proposed_code (return_file_id, pseudonym, mrn, month, code, units) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (file_id, c.pseudonym, to_mrn.get(c.pseudonym), c.month, c.code, c.units)
                for c in ret.codes
            ],
        )
        audit.record(
            conn,
            audit_key,
            "file.received",
            file_hash,
            file=shown,
            return_id=ret.return_id,
            answers=list(ret.answers),
            entries=len(ret.entries),
            drafts=len(ret.drafts),
            codes=len(ret.codes),
            signer=signer,
            unknown_patients=sum(1 for e in ret.entries if e.pseudonym not in to_mrn),
        )


def _refuse_file(
    conn: sqlite3.Connection,
    audit_key: bytes,
    shown: str,
    file_hash: str,
    data: bytes,
    reason: str,
    signer: str | None,
    result: PullResult,
    detail: str | None = None,
) -> None:
    detail = detail or reason
    with transaction(conn):
        conn.execute(
            "INSERT INTO return_file (content_hash, name, size, received_at, status, reason, signer)"
            " VALUES (?, ?, ?, ?, 'refused', ?, ?)",
            (file_hash, shown, len(data), stamp(), reason, signer),
        )
        conn.execute(
            "INSERT INTO exchange_quarantine (at, direction, name, content_hash, reason, detail, content)"
            " VALUES (?, 'inbound', ?, ?, ?, ?, ?)",
            (stamp(), shown, file_hash, reason, detail, data),
        )
        audit.record(
            conn, audit_key, "file.refused", file_hash, file=shown, reason=reason, signer=signer
        )
    result.refused.append((shown, reason))
    logs.event(log, "return.refused", content_hash=file_hash, reason=reason, signer=signer)


def _quarantine_replay(
    conn: sqlite3.Connection,
    audit_key: bytes,
    shown: str,
    file_hash: str,
    data: bytes,
    first_name: str,
    result: PullResult,
) -> None:
    reason = f"replay: the same file was already received as {first_name}"
    with transaction(conn):
        conn.execute(
            "INSERT INTO exchange_quarantine (at, direction, name, content_hash, reason, content) VALUES (?, 'inbound', ?, ?, ?, ?)",
            (stamp(), shown, file_hash, reason, data),
        )
        audit.record(conn, audit_key, "file.refused", file_hash, file=shown, reason=reason)
    result.refused.append((shown, reason))
    logs.event(log, "return.refused", content_hash=file_hash, reason="replay")


def _refuse_name(
    conn: sqlite3.Connection, audit_key: bytes, shown: str, reason: str, result: PullResult
) -> None:
    """A name we will not use: recorded once (by its printable form), never read, left in place."""
    if conn.execute(
        "SELECT 1 FROM exchange_quarantine WHERE name = ? AND content_hash IS NULL AND reason = ?",
        (shown, reason),
    ).fetchone():
        result.skipped += 1
        return
    with transaction(conn):
        conn.execute(
            "INSERT INTO exchange_quarantine (at, direction, name, reason) VALUES (?, 'inbound', ?, ?)",
            (stamp(), shown, reason),
        )
        audit.record(conn, audit_key, "file.refused", shown, reason=reason)
    result.refused.append((shown, reason))
    logs.event(log, "return.refused", reason=reason)


def _after_pickup(cfg: Config, drop: transport.Drop, name: str) -> None:
    if cfg.drop.after_pickup == "move" and cfg.drop.processed_dir:
        drop.move(cfg.drop.returns_dir, name, cfg.drop.processed_dir)
    else:
        drop.delete(cfg.drop.returns_dir, name)
