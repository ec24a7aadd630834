"""Both drops against real file systems: SftpDrop against a real OpenSSH sshd, LocalDrop on disk."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import exchange_support as support  # noqa: E402  (tests/support is on sys.path)
import paramiko
import pytest

from ccm_connector.sftp import naming, transport


def endpoint(sshd, **overrides) -> transport.SftpEndpoint:
    values = dict(
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        private_key=sshd.user_key,
        host_key_type=sshd.host_key_type,
        host_key_fingerprint=sshd.host_key_fingerprint,
        timeout=10,
        retries=0,
    )
    values.update(overrides)
    return transport.SftpEndpoint(**values)


@pytest.fixture(params=["sftp", "local"])
def drop_and_root(request, remote_root: Path):
    """The same tests run on both drops; folders are absolute on SFTP, relative locally."""
    if request.param == "sftp":
        sshd = request.getfixturevalue("sshd")
        return transport.SftpDrop(endpoint(sshd)), remote_root, str(remote_root)
    return transport.LocalDrop(remote_root), remote_root, ""


def folder(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def test_publish_is_atomic_and_leaves_no_temporary_file(drop_and_root):
    drop, root, prefix = drop_and_root
    with drop:
        drop.publish(folder(prefix, "queues"), "wq_X_000001.pgp", b"sealed bytes")
        drop.publish(
            folder(prefix, "queues"), "wq_X_000001.pgp", b"sealed bytes"
        )  # a re-run: same content
        listed = drop.listing(folder(prefix, "queues"))
    assert [f.name for f in listed] == ["wq_X_000001.pgp"]
    assert (root / "queues" / "wq_X_000001.pgp").read_bytes() == b"sealed bytes"
    assert listed[0].size == len(b"sealed bytes")


def test_read_move_and_delete(drop_and_root):
    drop, root, prefix = drop_and_root
    (root / "returns" / "rt_X_R1.pgp").write_bytes(b"one")
    (root / "returns" / "rt_X_R2.pgp").write_bytes(b"two")
    (root / "processed" / "rt_X_R1.pgp").write_bytes(b"earlier file of the same name")
    with drop:
        assert drop.read(folder(prefix, "returns"), "rt_X_R1.pgp") == b"one"
        moved = drop.move(folder(prefix, "returns"), "rt_X_R1.pgp", folder(prefix, "processed"))
        drop.delete(folder(prefix, "returns"), "rt_X_R2.pgp")
        assert drop.exists(folder(prefix, "returns")) and not drop.exists(folder(prefix, "nowhere"))
    assert moved == "rt_X_R1.pgp.1", "a move never overwrites"
    assert (root / "processed" / "rt_X_R1.pgp").read_bytes() == b"earlier file of the same name"
    assert (root / "processed" / "rt_X_R1.pgp.1").read_bytes() == b"one"
    assert list((root / "returns").iterdir()) == []


def test_read_refuses_oversized_files_and_unsafe_names(drop_and_root):
    drop, root, prefix = drop_and_root
    (root / "returns" / "rt_X_R1.pgp").write_bytes(b"x" * 100)
    with drop:
        with pytest.raises(transport.TransportError, match="larger"):
            drop.read(folder(prefix, "returns"), "rt_X_R1.pgp", max_bytes=10)
        with pytest.raises(naming.UnsafeName):
            drop.read(folder(prefix, "returns"), "../queues/wq_X_000001.pgp")


def test_listing_skips_folders_and_symlinks(drop_and_root):
    drop, root, prefix = drop_and_root
    (root / "returns" / "sub").mkdir()
    (root / "returns" / "link.pgp").symlink_to("/etc/passwd")
    (root / "returns" / "rt_X_R1.pgp").write_bytes(b"one")
    with drop:
        assert [f.name for f in drop.listing(folder(prefix, "returns"))] == ["rt_X_R1.pgp"]


def test_stable_files_leaves_a_file_that_is_still_growing(remote_root: Path):
    drop = transport.LocalDrop(remote_root)
    (remote_root / "returns" / "rt_X_done.pgp").write_bytes(b"complete")
    growing = remote_root / "returns" / "rt_X_growing.pgp"
    growing.write_bytes(b"part")
    waits = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        with growing.open("ab") as f:
            f.write(b" more")

    stable = transport.stable_files(drop, "returns", 10, sleep=sleep)
    assert [f.name for f in stable] == ["rt_X_done.pgp"]
    assert waits == [10]


def test_a_changed_host_key_is_refused_never_added_and_never_retried(sshd, tmp_path):
    slept = []
    drop = transport.SftpDrop(
        endpoint(sshd, host_key_fingerprint=sshd.other_fingerprint, retries=3), sleep=slept.append
    )
    with pytest.raises(transport.HostKeyRefused, match="not the pinned") as info:
        with drop:
            pass
    assert sshd.host_key_fingerprint in str(info.value)  # it names what the server presented
    assert slept == []
    assert drop.client is None


def test_a_host_key_of_another_type_is_refused(sshd):
    drop = transport.SftpDrop(endpoint(sshd, host_key_type="ecdsa-sha2-nistp256"))
    with pytest.raises(transport.TransportError):
        with drop:
            pass


def test_the_pinned_policy_never_touches_the_host_key_store(sshd):
    policy = transport.PinnedHostKey("ssh-ed25519", sshd.host_key_fingerprint)
    client = paramiko.SSHClient()
    key = paramiko.Ed25519Key.from_private_key_file(
        str(sshd.user_key)
    )  # any ed25519 key but the host's
    with pytest.raises(transport.HostKeyRefused):
        policy.missing_host_key(client, "127.0.0.1", key)
    assert len(client.get_host_keys()) == 0


def test_unreachable_server_is_retried_with_bounded_backoff(sshd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    slept = []
    drop = transport.SftpDrop(
        endpoint(sshd, port=closed_port, retries=4, backoff_base=1, backoff_cap=3),
        sleep=slept.append,
    )
    with pytest.raises(transport.TransportError, match="after 5 attempt"):
        with drop:
            pass
    assert slept == [1, 2, 3, 3]


def test_wrong_user_key_is_refused_without_retry(sshd, tmp_path):
    support._keygen(tmp_path / "wrong_key", "not authorized")
    slept = []
    drop = transport.SftpDrop(
        endpoint(sshd, private_key=tmp_path / "wrong_key", retries=3), sleep=slept.append
    )
    with pytest.raises(transport.TransportError, match="authentication refused"):
        with drop:
            pass
    assert slept == []


def test_an_unreadable_private_key_is_a_configuration_error_not_retried(sshd, tmp_path):
    (tmp_path / "garbage").write_text("not a key")
    slept = []
    drop = transport.SftpDrop(
        endpoint(sshd, private_key=tmp_path / "garbage", retries=3), sleep=slept.append
    )
    with pytest.raises(transport.TransportError, match="cannot load the SSH private key"):
        with drop:
            pass
    assert slept == []


def test_posix_rename_fallback_when_the_server_lacks_the_extension(sshd, remote_root, monkeypatch):
    def unsupported(self, old, new):
        raise OSError("Operation unsupported")

    monkeypatch.setattr(paramiko.SFTPClient, "posix_rename", unsupported)
    drop = transport.SftpDrop(endpoint(sshd))
    with drop:
        drop.publish(
            str(remote_root / "queues"), "wq_X_000001.pgp", b"first"
        )  # target absent: rename
        drop.publish(
            str(remote_root / "queues"), "wq_X_000001.pgp", b"first"
        )  # same content present
        with pytest.raises(transport.TransportError, match="other content"):
            drop.publish(str(remote_root / "queues"), "wq_X_000001.pgp", b"different")
    assert (remote_root / "queues" / "wq_X_000001.pgp").read_bytes() == b"first"


def test_every_step_has_a_timeout(sshd):
    drop = transport.SftpDrop(endpoint(sshd, timeout=7))
    with drop:
        assert drop.sftp.get_channel().gettimeout() == 7
        assert drop.negotiated["cipher"]


def test_a_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts the TCP connection, never sends a banner
        port = server.getsockname()[1]
        key = tmp_path / "k"
        support._keygen(key, "client")
        ep = transport.SftpEndpoint(
            host="127.0.0.1",
            port=port,
            username="x",
            private_key=key,
            host_key_type="ssh-ed25519",
            host_key_fingerprint="SHA256:" + "A" * 43,
            timeout=1,
            retries=0,
        )
        started = time.monotonic()
        with pytest.raises(transport.TransportError):
            with transport.SftpDrop(ep):
                pass
        assert time.monotonic() - started < 10
