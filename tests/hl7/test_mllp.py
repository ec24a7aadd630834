"""hl7/mllp.py: the MLLP server and client.

The first part runs the server in-process with a recording receiver: persistent connections,
split and merged frames, bytes outside frames, the size limit, the idle timeout, the connection
limit, TLS. The second part is the end-to-end check with an independent sender: python-hl7's
asyncio MLLP client streams messages over one connection to `ccm-connector listen` running as a
real subprocess, with garbage in the middle, a resend, and a SIGKILL of the listener mid-stream.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import hl7 as python_hl7
from ccm_connector import audit
from ccm_connector.config import load_config
from ccm_connector.hl7 import ack, mllp, reader
from hl7.mllp import open_hl7_connection

NOW = dt.datetime(2026, 11, 3, 16, 30, tzinfo=dt.UTC)
WAIT = 10.0  # seconds: the bound on every wait in this file


def message(control_id: str, mrn: str = "MRN1001") -> bytes:
    return (
        f"MSH|^~\\&|EHR|CLINIC|CCM|PRACTICE|20261103103000-0600||ADT^A04^ADT_A01|{control_id}|P|2.5.1\r"
        f"PID|1||{mrn}^^^CLINIC^MR||TESTPATIENT^ALPHA||19480212|F\r"
    ).encode()


class Recorder:
    """A receiver that ACKs every readable frame AA and every other one AR."""

    def __init__(self, reply: bool = True) -> None:
        self.frames: list[bytes] = []
        self.junk_seen: list[tuple[bytes, str]] = []
        self.oversized: list[int] = []
        self.events: list[str] = []
        self.reply = reply

    def frame(self, data: bytes, peer: str) -> bytes | None:
        self.frames.append(data)
        if not self.reply:
            return None
        try:
            header = reader.read_message(data).header
            return ack.build_ack(header, ack.ACCEPT, control_id="R", now=NOW)
        except reader.ReadError as e:
            return ack.build_ack(e.header, ack.REJECT, control_id="R", now=NOW, reason=e.reason)

    def junk(self, data: bytes, peer: str, reason: str) -> None:
        self.junk_seen.append((data, reason))

    def oversize(self, head: bytes, size: int, peer: str) -> bytes:
        self.oversized.append(size)
        return ack.build_ack(
            reader.peek_header(head), ack.REJECT, control_id="R", now=NOW, reason="too big"
        )

    def event(self, name: str, peer: str, **fields: object) -> None:
        self.events.append(name)


def serve(
    recorder: Recorder,
    body: Callable[[int], Awaitable[None]],
    limits: mllp.Limits | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Run the server on a free port around body(port), all bounded by WAIT."""

    async def main() -> None:
        server = mllp.Server(recorder, "127.0.0.1", 0, limits or mllp.Limits(), tls)
        port = await server.start()
        try:
            await asyncio.wait_for(body(port), WAIT)
        finally:
            await server.close(grace=1)

    asyncio.run(main())


async def read_ack(reader_: asyncio.StreamReader) -> bytes:
    data = await asyncio.wait_for(reader_.readuntil(mllp.END), WAIT)
    assert data.startswith(mllp.START)
    return data[1:-2]


def test_many_messages_on_one_connection_with_python_hl7_as_the_client() -> None:
    rec = Recorder()

    async def body(port: int) -> None:
        r, w = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
        for i in range(20):
            w.writemessage(python_hl7.parse(message(f"M{i}").decode()))
            await w.drain()
            reply = await asyncio.wait_for(r.readmessage(), WAIT)
            assert str(reply.segment("MSA")[1]) == "AA"
            assert str(reply.segment("MSA")[2]) == f"M{i}"
        w.close()
        await w.wait_closed()

    serve(rec, body)
    assert len(rec.frames) == 20
    assert rec.events.count("mllp.connected") == 1


def test_split_and_merged_frames_are_each_answered_in_order() -> None:
    rec = Recorder()

    async def body(port: int) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for byte in mllp.frame(message("S1")):  # one byte at a time
            w.write(bytes([byte]))
            await w.drain()
        assert ack.read_ack(await read_ack(r)).control_id == "S1"
        w.write(
            mllp.frame(message("S2")) + b"\r\n" + mllp.frame(message("S3"))
        )  # two frames, one write
        await w.drain()
        assert ack.read_ack(await read_ack(r)).control_id == "S2"
        assert ack.read_ack(await read_ack(r)).control_id == "S3"
        w.close()

    serve(rec, body)
    assert len(rec.frames) == 3
    assert rec.junk_seen == []  # the CR LF between frames is not junk


def test_bytes_outside_frames_are_reported_and_the_stream_goes_on() -> None:
    rec = Recorder()

    async def body(port: int) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.0\r\n" + mllp.frame(message("G1")))
        await w.drain()
        assert ack.read_ack(await read_ack(r)).control_id == "G1"
        w.write(mllp.START + b"MSH|half a frame" + mllp.frame(message("G2")))  # a frame restarted
        await w.drain()
        assert ack.read_ack(await read_ack(r)).control_id == "G2"
        w.write(mllp.frame(b"not hl7 at all"))
        await w.drain()
        assert ack.read_ack(await read_ack(r)).code == "AR"
        w.write(mllp.frame(message("G3")))
        await w.drain()
        assert ack.read_ack(await read_ack(r)).control_id == "G3"
        w.close()

    serve(rec, body)
    reasons = [reason for _, reason in rec.junk_seen]
    assert reasons == [
        "bytes outside an MLLP frame",
        "a frame started before the previous one ended",
    ]


def test_an_oversize_frame_gets_ar_and_the_connection_is_closed() -> None:
    rec = Recorder()

    async def body(port: int) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        big = message("BIG1") + b"OBX|1|TX|||" + b"x" * 5000 + b"\r"
        w.write(mllp.frame(big))
        await w.drain()
        parsed = ack.read_ack(await read_ack(r))
        assert (parsed.code, parsed.control_id) == ("AR", "BIG1")
        assert await asyncio.wait_for(r.read(), WAIT) == b""  # closed by the server
        w.close()

    serve(rec, body, mllp.Limits(max_frame_bytes=2048))
    assert rec.frames == [] and rec.oversized and rec.oversized[0] > 2048


def test_an_idle_connection_is_closed() -> None:
    rec = Recorder()

    async def body(port: int) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(mllp.START + b"MSH|never finished")
        await w.drain()
        assert await asyncio.wait_for(r.read(), WAIT) == b""
        w.close()

    serve(rec, body, mllp.Limits(idle_timeout=0.3))
    assert [reason for _, reason in rec.junk_seen] == ["connection idle inside an unfinished frame"]


def test_connections_over_the_limit_are_refused() -> None:
    rec = Recorder()

    async def body(port: int) -> None:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(mllp.frame(message("L1")))
        await w1.drain()
        await read_ack(r1)  # the first connection is established and served
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(r2.read(), WAIT) == b""
        w1.write(mllp.frame(message("L2")))
        await w1.drain()
        assert ack.read_ack(await read_ack(r1)).control_id == "L2"
        w1.close()
        w2.close()

    serve(rec, body, mllp.Limits(max_connections=1))
    assert "mllp.refused" in rec.events


def test_a_receiver_that_cannot_store_closes_the_connection_without_an_ack() -> None:
    rec = Recorder(reply=False)

    async def body(port: int) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(mllp.frame(message("N1")))
        await w.drain()
        assert await asyncio.wait_for(r.read(), WAIT) == b""
        w.close()

    serve(rec, body)
    assert len(rec.frames) == 1


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_tls_with_our_client(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    rec = Recorder()
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def body(port: int) -> None:
        async with mllp.Client("localhost", port, tls=client_ctx, timeout=WAIT) as client:
            for i in range(3):
                assert ack.read_ack(await client.send(message(f"T{i}"))) == ack.Ack(
                    "AA", f"T{i}", ""
                )

    serve(rec, body, tls=mllp.server_tls(str(cert), str(key)))
    assert len(rec.frames) == 3


def test_the_client_gives_up_on_a_silent_server() -> None:
    async def main() -> None:
        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read(100)
            await asyncio.sleep(2)
            w.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = mllp.Client("127.0.0.1", port, timeout=0.3)
        await client.connect()
        with pytest.raises(mllp.ClientError, match="no complete reply"):
            await client.send(message("Q1"))
        await client.close()
        server.close()

    asyncio.run(main())


# --- end to end: `ccm-connector listen` as a subprocess, python-hl7 as the sender ------------------

CLI = Path(sys.executable).parent / "ccm-connector"


def touchpoint(n: int) -> bytes:
    return (
        "\r".join(
            [
                f"MSH|^~\\&|EHR|CLINIC|CCM|PRACTICE|20261103103000-0600||MDM^T02^MDM_T02|E2E-{n:04d}|P|2.5.1",
                "EVN|T02|20261103103000-0600",
                f"PID|1||MRN{1000 + n % 7}^^^CLINIC^MR||TESTPATIENT^ALPHA||19480212|F",
                "PV1|1|O",
                f"TXA|1|CCM-TOUCH|TX|20261103101500-0600|RN042^NURSE^NORA||20261103103000-0600|||||TP-E2E-{n:04d}||||AU",
                f"OBX|1|NM|CCM-MIN^Minutes^L||{5 + n % 20}",
                "OBX|2|CE|CCM-ACT^Activity^L||CALL",
                "OBX|3|TX|CCM-NOTE^Summary^L||Called about medication refills.",
            ]
        ).encode()
        + b"\r"
    )


class Listener:
    """`ccm-connector listen --port 0` as a subprocess; the port is read from its first line."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [str(CLI), "--config", str(config), "listen", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()  # type: ignore[arg-type]
        line: list[str] = []
        reader_thread = threading.Thread(
            target=lambda: line.append(self.proc.stdout.readline()), daemon=True
        )  # type: ignore[union-attr]
        reader_thread.start()
        reader_thread.join(WAIT)
        assert line and line[0].startswith("listening on 127.0.0.1:"), (
            line,
            self.proc.poll(),
            self.stderr[-5:],
        )
        self.port = int(line[0].rsplit(":", 1)[1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(WAIT)


async def send_stream(
    port: int,
    items: list[bytes],
    acked: dict[str, str],
    kill_after: int | None = None,
    killer: Callable[[], None] | None = None,
) -> int:
    """Send items over one connection, one at a time, recording control id → ACK code.

    With kill_after, the listener is killed right after that item is written (before its ACK
    is read): returns the index of the first item whose ACK never came."""
    r, w = await asyncio.wait_for(open_hl7_connection("127.0.0.1", port, encoding="utf-8"), WAIT)
    try:
        for i, raw in enumerate(items):
            w.writeblock(raw)
            await w.drain()
            if kill_after is not None and i == kill_after and killer is not None:
                killer()
            try:
                reply = await asyncio.wait_for(r.readmessage(), WAIT)
            except (asyncio.IncompleteReadError, ConnectionError):
                return i
            sent = reader.read_message(raw).control_id if raw.startswith(b"MSH") else ""
            assert str(reply.segment("MSA")[2]) == sent, "the ACK must answer the message just sent"
            acked[sent or f"garbage#{i}"] = str(reply.segment("MSA")[1])
        return len(items)
    finally:
        w.close()


def test_stream_with_garbage_resend_and_sigkill_loses_no_acked_message(
    local_instance: Path,
) -> None:
    config = local_instance / "connector.toml"
    cfg = load_config(config)
    stream = [touchpoint(n) for n in range(40)]
    stream.insert(10, b"\x00\x01 definitely not HL7 \xff")  # garbage in the middle
    stream.insert(15, touchpoint(3))  # a resend of a message already ACKed
    acked: dict[str, str] = {}

    first = Listener(config)
    stopped_at = asyncio.run(
        send_stream(first.port, stream, acked, kill_after=30, killer=first.kill)
    )
    assert stopped_at == 30, "the kill should cut the stream at the message in flight"
    assert first.proc.returncode == -signal.SIGKILL

    second = Listener(config)
    asyncio.run(
        send_stream(second.port, stream[stopped_at:], acked)
    )  # the sender resends what was not ACKed
    assert second.stop() == 0
    assert "Traceback" not in "".join(first.stderr + second.stderr)

    assert acked["garbage#10"] == "AR"
    assert all(code == "AA" for cid, code in acked.items() if cid.startswith("E2E-"))
    assert sorted(cid for cid in acked if cid.startswith("E2E-")) == [
        f"E2E-{n:04d}" for n in range(40)
    ]

    db = sqlite3.connect(cfg.store.path)
    rows = dict(
        db.execute(
            "SELECT control_id, count(*) FROM inbound_message GROUP BY control_id"
        ).fetchall()
    )
    assert rows == {f"E2E-{n:04d}": 1 for n in range(40)}, "every ACKed message stored, none twice"
    assert db.execute("SELECT count(*) FROM touchpoint").fetchone()[0] == 40
    assert (
        db.execute("SELECT resends FROM inbound_message WHERE control_id = 'E2E-0003'").fetchone()[
            0
        ]
        >= 1
    )
    assert db.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1
    assert audit.verify(db, audit.read_key(cfg.audit.key_file)).ok
    db.close()
