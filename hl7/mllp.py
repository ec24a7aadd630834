"""MLLP (minimal lower layer protocol) over asyncio: a server for the EHR and a small client.

Framing: 0x0B, the message, 0x1C 0x0D. The server keeps a connection open for as many messages
as the sender likes, answers each frame on the same connection before reading the next (the
sender waits for the ACK anyway), and enforces a maximum frame size, an idle timeout and a
connection limit; TLS is an `ssl.SSLContext` away.

The server calls a `Receiver` synchronously on the event loop for each frame: commit-then-ACK
means the ACK cannot leave before the store's commit, so there is nothing to gain from a thread
hop, and one writer keeps SQLite simple. Practice volumes are far below what one loop serves.

- `frame(data, peer)` returns the ACK bytes (unframed), or None to close the connection without
  an ACK (the store is unusable: the sender will resend later).
- `junk(data, peer, reason)` is told about bytes outside any frame; no reply is owed for them.
- `oversize(head, size, peer)` returns the ACK for a frame over the limit (the first bytes are
  given so the ACK can echo MSH-10); the connection is then closed, since the rest of the
  oversize frame cannot be told apart from the next one.

This module knows nothing about CCM records or the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Protocol

START = b"\x0b"
END = b"\x1c\x0d"
_READ = 65536
_HEAD = 8192


class Receiver(Protocol):
    def frame(self, data: bytes, peer: str) -> bytes | None: ...

    def junk(self, data: bytes, peer: str, reason: str) -> None: ...

    def oversize(self, head: bytes, size: int, peer: str) -> bytes: ...

    def event(self, name: str, peer: str, **fields: object) -> None: ...


@dataclass(frozen=True)
class Limits:
    max_frame_bytes: int = 1_048_576
    idle_timeout: float = 300.0
    max_connections: int = 10


def frame(message: bytes) -> bytes:
    return START + message + END


def server_tls(certificate: str, private_key: str) -> ssl.SSLContext:
    """A TLS context for the listener: TLS 1.2 or newer, the given certificate chain."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certificate, private_key)
    return ctx


class Server:
    """The MLLP listener. `await start()`, then `await serve_until(stop_event)` or `close()`."""

    def __init__(
        self,
        receiver: Receiver,
        host: str,
        port: int,
        limits: Limits,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.receiver = receiver
        self.host = host
        self.port = port
        self.limits = limits
        self.tls = tls
        self.active = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        """Bind and listen; returns the port (useful when asked for port 0)."""
        self._server = await asyncio.start_server(
            self._connection,
            self.host,
            self.port,
            ssl=self.tls,
            ssl_handshake_timeout=30 if self.tls else None,
            limit=_READ,
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        return self.port

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; give open connections `grace` seconds to finish, then cut them."""
        if self._server is not None:
            self._server.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if isinstance(peer_info, tuple) else "unknown"
        if self.active >= self.limits.max_connections:
            self.receiver.event(
                "mllp.refused",
                peer,
                reason="connection limit reached",
                limit=self.limits.max_connections,
            )
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        self.active += 1
        if task is not None:
            self._tasks.add(task)
        self.receiver.event("mllp.connected", peer, active=self.active)
        reason = "closed by peer"
        try:
            reason = await self._exchange(reader, writer, peer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            reason = "connection error"
        except asyncio.CancelledError:
            reason = "listener stopping"
            raise
        finally:
            self.active -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)
            self.receiver.event("mllp.disconnected", peer, reason=reason, active=self.active)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> str:
        limit = self.limits.max_frame_bytes
        buf = bytearray()
        junk_bytes = 0
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(_READ), self.limits.idle_timeout)
            except TimeoutError:
                if buf.strip():
                    self.receiver.junk(
                        bytes(buf[:limit]), peer, "connection idle inside an unfinished frame"
                    )
                return "idle timeout"
            if not chunk:
                if buf.strip():
                    self.receiver.junk(
                        bytes(buf[:limit]), peer, "connection closed inside an unfinished frame"
                    )
                return "closed by peer"
            buf += chunk
            while buf:
                start = buf.find(START)
                if start != 0:
                    lead = bytes(buf if start == -1 else buf[:start])
                    del buf[: len(lead)]
                    if lead.strip():
                        junk_bytes += len(lead)
                        self.receiver.junk(lead[:limit], peer, "bytes outside an MLLP frame")
                        if junk_bytes > limit:
                            return "too many bytes outside frames"
                    if start == -1:
                        break
                    continue
                end = buf.find(END, 1)
                restart = buf.find(START, 1, end if end != -1 else len(buf))
                if restart != -1:
                    self.receiver.junk(
                        bytes(buf[:restart]), peer, "a frame started before the previous one ended"
                    )
                    del buf[:restart]
                    continue
                if end == -1:
                    if len(buf) - 1 > limit:
                        await self._reply(
                            writer,
                            self.receiver.oversize(bytes(buf[1 : 1 + _HEAD]), len(buf) - 1, peer),
                        )
                        return "frame over the size limit"
                    break
                data = bytes(buf[1:end])
                del buf[: end + 2]
                if len(data) > limit:
                    await self._reply(writer, self.receiver.oversize(data[:_HEAD], len(data), peer))
                    return "frame over the size limit"
                ack = self.receiver.frame(data, peer)
                if ack is None:
                    return "not acknowledged: store unavailable"
                await self._reply(writer, ack)

    async def _reply(self, writer: asyncio.StreamWriter, ack: bytes) -> None:
        writer.write(frame(ack))
        await asyncio.wait_for(writer.drain(), self.limits.idle_timeout)


class ClientError(ConnectionError):
    """No complete ACK arrived (timeout, closed connection, or an oversize reply)."""


class Client:
    """A small MLLP client: one message at a time, each waiting for its complete ACK frame."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        max_frame_bytes: int = 1_048_576,
    ) -> None:
        self.host, self.port, self.tls, self.timeout, self.max_frame_bytes = (
            host,
            port,
            tls,
            timeout,
            max_frame_bytes,
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buf = bytearray()

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.tls, limit=_READ), self.timeout
        )

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), self.timeout)
            self._writer = None

    async def send(self, message: bytes) -> bytes:
        """Send one message; return the reply frame's content. Raises ClientError on no reply."""
        if self._writer is None or self._reader is None:
            raise ClientError("not connected")
        try:
            self._writer.write(frame(message))
            await asyncio.wait_for(self._writer.drain(), self.timeout)
            return await asyncio.wait_for(self._read_frame(), self.timeout)
        except TimeoutError:
            raise ClientError(f"no complete reply within {self.timeout:g} s") from None

    async def _read_frame(self) -> bytes:
        assert self._reader is not None
        while True:
            start = self._buf.find(START)
            if start > 0:
                del self._buf[:start]
            if start != -1:
                end = self._buf.find(END, 1)
                if end != -1:
                    data = bytes(self._buf[1:end])
                    del self._buf[: end + 2]
                    return data
            if len(self._buf) > self.max_frame_bytes:
                raise ClientError("reply frame over the size limit")
            chunk = await self._reader.read(_READ)
            if not chunk:
                raise ClientError("connection closed before a complete reply")
            self._buf += chunk
