"""Delivery over MLLP to a billing system (python-hl7's asyncio MLLP server as the peer):
sent only on AA with a matching MSA-2; AE, a wrong MSA-2 or silence leave the item pending."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import hl7
import hl7.mllp
from ccm_connector.delivery import deliver_pending
from ccm_connector.store import open_store


class Peer:
    """A billing system on loopback that answers each message as `mode` says."""

    def __init__(self) -> None:
        self.mode = "AA"
        self.received: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader, writer) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                self.received.append(str(message.segment("MSH")[10]))
                if self.mode == "silent":
                    continue
                control = "WRONG" if self.mode == "wrong_id" else None
                ack = message.create_ack(ack_code="AE" if self.mode == "AE" else "AA", message_id="ACK1")
                if control:
                    ack.segment("MSA")[2] = control
                writer.writemessage(ack)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(hl7.mllp.start_hl7_server(self._handle, host="127.0.0.1", port=0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> Peer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer().start()
    yield p
    p.stop()


def message(control: str) -> bytes:
    return ("MSH|^~\\&|CCMCONNECTOR|P|BILLING|P|20261204120000||DFT^P03^DFT_P03|" + control + "|P|2.5.1\rEVN|P03|20261204\r").encode()


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = open_store(tmp_path / "s.db")
    for control in ("CH1", "CH2"):
        c.execute(
            "INSERT INTO outbound (kind, subject, control_id, destination, payload, status, created_at) VALUES ('charges', ?, ?, 'mllp', ?, 'pending', ?)",
            (control, control, message(control), dt.datetime.now(dt.UTC).isoformat()),
        )
    return c


def statuses(conn: sqlite3.Connection) -> list[tuple]:
    return [tuple(r) for r in conn.execute("SELECT control_id, status, last_error FROM outbound ORDER BY id")]


def test_aa_with_matching_control_id_marks_sent(conn, peer: Peer, tmp_path: Path) -> None:
    assert deliver_pending(conn, ("charges",), "mllp", tmp_path, "127.0.0.1", peer.port, 5, 0) == 2
    assert statuses(conn) == [("CH1", "sent", None), ("CH2", "sent", None)]
    assert peer.received == ["CH1", "CH2"]
    assert deliver_pending(conn, ("charges",), "mllp", tmp_path, "127.0.0.1", peer.port, 5, 0) == 0  # nothing twice


@pytest.mark.parametrize(("mode", "error"), [("AE", "receiver answered AE"), ("wrong_id", "ACK for another message"), ("silent", "no ACK")])
def test_anything_but_a_matching_aa_stays_pending(conn, peer: Peer, tmp_path: Path, mode: str, error: str) -> None:
    peer.mode = mode
    assert deliver_pending(conn, ("charges",), "mllp", tmp_path, "127.0.0.1", peer.port, 1, 0) == 0
    first = statuses(conn)[0]
    assert first[1] == "pending" and first[2].startswith(error)


def test_no_listener_stays_pending(conn, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert deliver_pending(conn, ("charges",), "mllp", tmp_path, "127.0.0.1", port, 1, 0) == 0
    assert {s[1] for s in statuses(conn)} == {"pending"}
