"""Moving sealed bytes to and from the drop: an SFTP server (paramiko) or a local folder.

Both drops have the same interface and rules:

- ``publish(folder, name, data)`` writes ``.<name>.part`` and renames it to ``name``, so a reader
  never sees a partial file. On SFTP the rename is OpenSSH's ``posix-rename@openssh.com``
  (atomic, overwrites). Fallback when a server lacks that extension: if ``name`` does not exist,
  a plain SFTP ``rename`` (atomic, refuses to overwrite); if it exists with the same size, the
  earlier upload of the same content stands and the temporary file is removed; otherwise the
  publish fails and is retried on the next run (names are only ever reused for identical content).
- ``listing(folder)`` gives regular files with size and mtime; `stable_files` picks only the
  files whose size and mtime did not change over ``stable_seconds``.
- ``read(folder, name)`` with a size limit; ``move`` to another folder (never overwriting) or
  ``delete``.
- Every name passes ``naming.check_safe`` before it is used.

SFTP specifics: key authentication only (no agent, no ~/.ssh key search); the server host key is
pinned by type and SHA256 fingerprint and compared with the key the server presents; an unknown
or changed key is refused and never added. Every step has a timeout; transient failures are
retried with bounded exponential backoff.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import paramiko

from . import naming

MAX_FILE_BYTES = 64 * 1024 * 1024
T = TypeVar("T")

# Key-type names as pinned in configuration -> the host-key algorithms that present that key type.
HOST_KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "rsa-sha2-512": ("rsa-sha2-512",),
    "rsa-sha2-256": ("rsa-sha2-256",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}
KEY_NAMES = {alg: ("ssh-rsa" if alg.startswith("rsa-") else alg) for alg in HOST_KEY_ALGORITHMS}


class TransportError(Exception):
    """The drop could not be reached or an operation on it failed (after retries)."""


class HostKeyRefused(TransportError):
    """The server presented a host key other than the pinned one. Never retried."""


@dataclass(frozen=True)
class Listed:
    name: str
    size: int
    mtime: int


class Drop(Protocol):
    def __enter__(self) -> Drop: ...
    def __exit__(self, *exc: object) -> None: ...
    def listing(self, folder: str) -> list[Listed]: ...
    def read(self, folder: str, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes: ...
    def publish(self, folder: str, name: str, data: bytes) -> None: ...
    def move(self, folder: str, name: str, to_folder: str) -> str: ...
    def delete(self, folder: str, name: str) -> None: ...
    def exists(self, folder: str) -> bool: ...


def stable_files(
    drop: Drop, folder: str, stable_seconds: int, sleep: Callable[[float], None] = time.sleep
) -> list[Listed]:
    """Files whose size and mtime stayed the same over ``stable_seconds`` (one wait per call)."""
    first = drop.listing(folder)
    if stable_seconds <= 0 or not first:
        return first
    sleep(stable_seconds)
    second = {f.name: f for f in drop.listing(folder)}
    return [f for f in first if second.get(f.name) == f]


def fingerprint_of(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint form, as `ssh-keygen -lf` prints it (no padding)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# --- local folder --------------------------------------------------------------------------------


class LocalDrop:
    """A folder with the drop's layout (demos, tests, a mounted share)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> LocalDrop:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _dir(self, folder: str) -> Path:
        path = self.root / folder
        if not path.is_dir():
            raise TransportError(f"drop folder {path} does not exist")
        return path

    def exists(self, folder: str) -> bool:
        return (self.root / folder).is_dir()

    def listing(self, folder: str) -> list[Listed]:
        out = []
        with os.scandir(self._dir(folder)) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    out.append(Listed(entry.name, st.st_size, int(st.st_mtime)))
        return sorted(out, key=lambda f: f.name)

    def read(self, folder: str, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        path = self._dir(folder) / naming.check_safe(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise TransportError(
                f"cannot open {naming.shown(name)} in {folder}: {e.strerror}"
            ) from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise TransportError(f"{naming.shown(name)} in {folder} is not a regular file")
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise TransportError(
                f"{naming.shown(name)} in {folder} is larger than {max_bytes} bytes"
            )
        return data

    def publish(self, folder: str, name: str, data: bytes) -> None:
        target_dir = self._dir(folder)
        final = target_dir / naming.check_safe(name)
        temp = target_dir / naming.temp_name(name)
        try:
            temp.unlink()
        except FileNotFoundError:
            pass
        fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
        dir_fd = os.open(target_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def move(self, folder: str, name: str, to_folder: str) -> str:
        source = self._dir(folder) / naming.check_safe(name)
        target_dir = self._dir(to_folder)
        for candidate in _move_names(name):
            try:
                os.link(source, target_dir / candidate, follow_symlinks=False)
            except FileExistsError:
                continue
            os.unlink(source)
            return candidate
        raise TransportError(
            f"cannot move {naming.shown(name)}: too many files of that name in {to_folder}"
        )

    def delete(self, folder: str, name: str) -> None:
        (self._dir(folder) / naming.check_safe(name)).unlink()


def _move_names(name: str) -> list[str]:
    """The name itself, then name.1 ... name.99: a move never overwrites an earlier file."""
    return [name] + [f"{name}.{i}" for i in range(1, 100)]


# --- SFTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SftpEndpoint:
    host: str
    port: int
    username: str
    private_key: Path
    host_key_type: str
    host_key_fingerprint: str
    private_key_passphrase: str | None = None
    timeout: float = 30
    retries: int = 3
    confirm_upload: bool = True
    backoff_base: float = 0.5
    backoff_cap: float = 10.0


class PinnedHostKey(paramiko.RejectPolicy):
    """RejectPolicy that lets through exactly the pinned key (type and fingerprint); never adds it.

    The client starts with an empty host-key store, so every connection comes here; anything
    but the pinned key is refused like an unknown host.
    """

    def __init__(self, key_type: str, fingerprint: str) -> None:
        self.key_names = {KEY_NAMES[key_type]}
        self.fingerprint = fingerprint
        self.seen: str | None = None

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self.seen = f"{key.get_name()} {fingerprint_of(key)}"
        if key.get_name() in self.key_names and fingerprint_of(key) == self.fingerprint:
            return  # accepted for this connection only; the host-key store is not touched
        raise HostKeyRefused(
            f"SFTP server {hostname} presented host key {self.seen}, not the pinned "
            f"{'/'.join(sorted(self.key_names))} {self.fingerprint}; refusing to connect"
        )


# Worth another attempt: the connection or the network failed. SFTP status errors (no such file,
# permission denied, "Failure") are answers from the server and are not retried.
_TRANSIENT = (
    TimeoutError,
    ConnectionError,
    EOFError,
    socket.gaierror,
    paramiko.SSHException,
    paramiko.ssh_exception.NoValidConnectionsError,
)
_NETWORK_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.ENETDOWN}
_PERMANENT = (HostKeyRefused, paramiko.AuthenticationException, paramiko.BadHostKeyException)


class SftpDrop:
    """The partner's SFTP server. Use as a context manager: one connection per stage run."""

    def __init__(self, endpoint: SftpEndpoint, sleep: Callable[[float], None] = time.sleep) -> None:
        if endpoint.host_key_type not in HOST_KEY_ALGORITHMS:
            raise TransportError(f"unsupported host key type {endpoint.host_key_type!r}")
        self.endpoint = endpoint
        self.sleep = sleep
        self.client: paramiko.SSHClient | None = None
        self.sftp: paramiko.SFTPClient | None = None
        self.negotiated: dict[str, str] = {}

    # connection ----------------------------------------------------------------------------------

    def __enter__(self) -> SftpDrop:
        self._retrying("connect", lambda: None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for thing in (self.sftp, self.client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing must not mask the real outcome
                    pass
        self.sftp = self.client = None

    def _private_key(self) -> paramiko.PKey:
        ep = self.endpoint
        try:
            return paramiko.PKey.from_path(ep.private_key, ep.private_key_passphrase)
        except (OSError, paramiko.SSHException, ValueError) as e:
            raise TransportError(
                f"cannot load the SSH private key {ep.private_key}: {type(e).__name__}: {e}"
            ) from None

    def _connect(self) -> paramiko.SFTPClient:
        ep = self.endpoint
        pkey = self._private_key()  # a key-file problem is configuration: never retried
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(PinnedHostKey(ep.host_key_type, ep.host_key_fingerprint))
        allowed = set(HOST_KEY_ALGORITHMS[ep.host_key_type])
        # Offer only the pinned key type, so a server holding several keys shows the pinned one.
        others = sorted({a for algs in HOST_KEY_ALGORITHMS.values() for a in algs} - allowed)
        try:
            client.connect(
                ep.host,
                port=ep.port,
                username=ep.username,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=False,
                timeout=ep.timeout,
                banner_timeout=ep.timeout,
                auth_timeout=ep.timeout,
                channel_timeout=ep.timeout,
                disabled_algorithms={"keys": others},
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(ep.timeout)
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            self.negotiated = {
                "cipher": str(transport.remote_cipher),
                "mac": str(transport.remote_mac),
                "kex": str(getattr(transport, "kex_engine", None).__class__.__name__),
            }
        self.client, self.sftp = client, sftp
        return sftp

    def _retrying(
        self,
        what: str,
        op: Callable[[], T] | Callable[[paramiko.SFTPClient], T],
        needs_sftp: bool = False,
    ) -> T:
        ep = self.endpoint
        attempt = 0
        while True:
            try:
                sftp = self.sftp or self._connect()
                return op(sftp) if needs_sftp else op()  # type: ignore[call-arg]
            except _PERMANENT as e:
                self.close()
                if isinstance(e, HostKeyRefused):
                    raise
                raise TransportError(
                    f"SFTP {what} on {ep.host}:{ep.port}: authentication refused ({type(e).__name__})"
                ) from None
            except TransportError:
                raise
            except FileNotFoundError:
                raise
            except OSError as e:
                if isinstance(e, _TRANSIENT) or e.errno in _NETWORK_ERRNOS:
                    error: BaseException = e
                else:
                    raise TransportError(
                        f"SFTP {what} on {ep.host}:{ep.port}: {type(e).__name__}: {e}"
                    ) from None
            except _TRANSIENT as e:
                error = e
            self.close()
            if attempt >= ep.retries:
                raise TransportError(
                    f"SFTP {what} on {ep.host}:{ep.port} failed after {attempt + 1} attempt(s): "
                    f"{type(error).__name__}: {error}"
                ) from None
            self.sleep(min(ep.backoff_cap, ep.backoff_base * 2**attempt))
            attempt += 1

    def _op(self, what: str, op: Callable[[paramiko.SFTPClient], T]) -> T:
        return self._retrying(what, op, needs_sftp=True)

    # operations ----------------------------------------------------------------------------------

    def exists(self, folder: str) -> bool:
        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                return stat.S_ISDIR(sftp.stat(folder).st_mode or 0)
            except FileNotFoundError:
                return False

        return self._op(f"stat {folder}", op)

    def listing(self, folder: str) -> list[Listed]:
        def op(sftp: paramiko.SFTPClient) -> list[Listed]:
            out = []
            for attr in sftp.listdir_attr(folder):
                if attr.st_mode is not None and stat.S_ISREG(attr.st_mode):
                    out.append(
                        Listed(attr.filename, int(attr.st_size or 0), int(attr.st_mtime or 0))
                    )
            return sorted(out, key=lambda f: f.name)

        return self._op(f"list {folder}", op)

    def read(self, folder: str, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        path = f"{folder}/{naming.check_safe(name)}"

        def op(sftp: paramiko.SFTPClient) -> bytes:
            attr = sftp.lstat(path)
            if attr.st_mode is None or not stat.S_ISREG(attr.st_mode):
                raise TransportError(f"{naming.shown(name)} in {folder} is not a regular file")
            if (attr.st_size or 0) > max_bytes:
                raise TransportError(
                    f"{naming.shown(name)} in {folder} is larger than {max_bytes} bytes"
                )
            buf = io.BytesIO()
            sftp.getfo(path, buf)
            return buf.getvalue()

        data = self._op(f"read {path}", op)
        if len(data) > max_bytes:
            raise TransportError(
                f"{naming.shown(name)} in {folder} grew past {max_bytes} bytes while read"
            )
        return data

    def publish(self, folder: str, name: str, data: bytes) -> None:
        final = f"{folder}/{naming.check_safe(name)}"
        temp = f"{folder}/{naming.temp_name(name)}"

        def op(sftp: paramiko.SFTPClient) -> None:
            sftp.putfo(
                io.BytesIO(data), temp, file_size=len(data), confirm=self.endpoint.confirm_upload
            )
            try:
                sftp.posix_rename(temp, final)
                return
            except OSError:
                pass  # no posix-rename@openssh.com on this server: the documented fallback
            try:
                existing = sftp.stat(final)
            except FileNotFoundError:
                sftp.rename(temp, final)
                return
            if existing.st_size == len(data):
                sftp.remove(temp)  # the same content (names are never reused) is already there
                return
            raise TransportError(
                f"{final} exists with other content and the server cannot rename over it"
            )

        self._op(f"publish {final}", op)

    def move(self, folder: str, name: str, to_folder: str) -> str:
        source = f"{folder}/{naming.check_safe(name)}"

        def op(sftp: paramiko.SFTPClient) -> str:
            for candidate in _move_names(name):
                target = f"{to_folder}/{candidate}"
                try:
                    sftp.stat(target)
                    continue
                except FileNotFoundError:
                    pass
                sftp.rename(source, target)  # plain rename: refuses to overwrite
                return candidate
            raise TransportError(
                f"cannot move {naming.shown(name)}: too many files of that name in {to_folder}"
            )

        return self._op(f"move {source}", op)

    def delete(self, folder: str, name: str) -> None:
        path = f"{folder}/{naming.check_safe(name)}"
        self._op(f"delete {path}", lambda sftp: sftp.remove(path))
